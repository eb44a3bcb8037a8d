"""The topology model the engine runs on: sites and components as a dependency graph.

`topology.py` holds the config's specs (what a YAML file says); this module builds, once per
load, the graph and indexes the engine walks at each evaluation (dependency order, dependents,
members of each site, checks attached by id or by selector).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from vigie.monitor.health.topology import (
    AnyOf,
    ComponentSpec,
    Dependency,
    SiteSpec,
    dependency_members,
)

APPLICATION_KINDS = frozenset({"application", "business_service"})
POWER_KINDS = frozenset({"ups", "pdu"})


class Topology:
    """Sites and components with their dependency graph, in dependency order."""

    def __init__(self, sites: Iterable[SiteSpec], components: Iterable[ComponentSpec]) -> None:
        self.sites = {s.id: s for s in sites}
        self.components = {c.id: c for c in components}
        self.deps: dict[str, list[Dependency]] = {
            cid: [*c.depends_on, *c.powered_by] for cid, c in self.components.items()
        }
        self.order = self._order()
        self.index = {cid: i for i, cid in enumerate(self.order)}
        # Each dependency as (members, how many must be healthy), built once for evaluate.
        self.groups: dict[str, list[tuple[tuple[str, ...], int]]] = {
            cid: [
                (
                    tuple(dependency_members(d)),
                    min(d.need if isinstance(d, AnyOf) else 1, len(dependency_members(d))),
                )
                for d in deps
            ]
            for cid, deps in self.deps.items()
        }
        # Every component each one depends on directly, in any group (read on a recovery).
        self.upstream: dict[str, frozenset[str]] = {
            cid: frozenset(m for members, _ in groups for m in members)
            for cid, groups in self.groups.items()
        }
        self.dependents: dict[str, list[str]] = collections.defaultdict(list)
        for cid, deps in self.deps.items():
            for dep in deps:
                for member in dependency_members(dep):
                    self.dependents[member].append(cid)
        # Indexes so that attaching 20,000 checks to 5,000 components stays linear.
        self.by_check: dict[str, list[str]] = collections.defaultdict(list)
        self.by_selector: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        for comp in self.components.values():
            for check_id in comp.checks:
                self.by_check[check_id].append(comp.id)
            if comp.selector:
                self.by_selector[min(comp.selector.items())].append(comp.id)
        self.dc = {cid: self._datacenter(c.site) for cid, c in self.components.items()}
        self.members: dict[str, list[str]] = collections.defaultdict(list)
        for cid, dc in self.dc.items():
            self.members[dc].append(cid)
        self.in_room: dict[str, list[str]] = collections.defaultdict(list)
        for cid, comp in self.components.items():
            if comp.site and comp.site in self.sites and self.sites[comp.site].parent:
                self.in_room[comp.site].append(cid)
        self.at_risk = {site: self._at_risk_apps(site) for site in self.sites}
        self.datacenters = [s for s, spec in self.sites.items() if not spec.parent]
        self.rooms = [s for s, spec in self.sites.items() if spec.parent]
        self.ups = {
            site: [c for c in self.site_members(site) if self.components[c].kind == "ups"]
            for site in self.sites
        }
        self.member_sets = {site: frozenset(self.site_members(site)) for site in self.sites}
        self.power_members = {
            dc: [c for c in members if self.components[c].kind in POWER_KINDS]
            for dc, members in self.members.items()
        }

    def _order(self) -> list[str]:
        """Dependencies before dependents (the config validation rejects cycles)."""
        done: set[str] = set()
        order: list[str] = []

        def visit(cid: str) -> None:
            if cid in done:
                return
            done.add(cid)
            for dep in self.deps.get(cid, ()):
                for member in dependency_members(dep):
                    if member in self.components:
                        visit(member)
            order.append(cid)

        for cid in self.components:
            visit(cid)
        return order

    def _at_risk_apps(self, site: str) -> list[str]:
        """Applications that depend, directly or not, on a component of this datacenter."""
        start = list(self.members.get(site, ()))
        seen = set(start)
        queue = collections.deque(start)
        while queue:
            for nxt in self.dependents.get(queue.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return [c for c in seen if self.components[c].kind in APPLICATION_KINDS]

    def site_members(self, site: str) -> list[str]:
        """Return the components of a datacenter (its rooms included) or of a room."""
        spec = self.sites.get(site)
        return (
            self.in_room.get(site, [])
            if spec is not None and spec.parent
            else self.members.get(site, [])
        )

    def datacenter(self, site: str | None) -> str:
        """Return the top-level site a site or room belongs to."""
        return self._datacenter(site)

    def _datacenter(self, site: str | None) -> str:
        """Return the top-level site a site or room belongs to."""
        seen: set[str] = set()
        while (
            site is not None and site in self.sites and self.sites[site].parent and site not in seen
        ):
            seen.add(site)
            site = self.sites[site].parent
        return site or ""

    def site_name(self, site: str) -> str:
        """Return a site's human name, or its id."""
        spec = self.sites.get(site)
        return spec.name if spec is not None and spec.name else site

    def redundant_only(self, root: str) -> bool:
        """True when everything depending on root reaches it through a redundancy group."""
        for dependent in self.dependents.get(root, ()):
            for dep in self.deps[dependent]:
                if isinstance(dep, str) and dep == root:
                    return False
        return bool(self.dependents.get(root))
