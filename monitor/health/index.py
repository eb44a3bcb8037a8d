"""Component statuses with the indexes the incident pass reads, kept up to date per change.

The engine recomputes only the components a result or a timer touched; this index takes each
new status and updates, in time proportional to that one change, what the incident pass would
otherwise rebuild from every component at each evaluation: the roots, what each root impacts,
what fails at each site, the state counts behind site states, and the components in WARNING.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

from vigie.monitor.health.model import Topology
from vigie.monitor.health.snapshot import ComponentStatus
from vigie.monitor.health.states import FAILING, State, worst


class StatusIndex:
    """The latest status of every component, and what the incident pass looks up in it."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        # Sites a component counts in: for the roll-up (its datacenter and its room), and for
        # site states (its own site and its datacenter).
        self._rollup_sites: dict[str, tuple[str, ...]] = {}
        self._state_sites: dict[str, tuple[str, ...]] = {}
        for cid, spec in topology.components.items():
            dc = topology.dc[cid]
            room = spec.site if spec.site in topology.rooms else None
            self._rollup_sites[cid] = (dc,) if room is None else (dc, room)
            own = (spec.site,) if spec.site else ()
            self._state_sites[cid] = (*own, dc) if spec.site and dc != spec.site else own
        self.status: dict[str, ComponentStatus] = {}
        self.roots: set[str] = set()
        self.impacted: dict[str, set[str]] = collections.defaultdict(set)
        self.failing: set[str] = set()
        self.failing_at: dict[str, set[str]] = collections.defaultdict(set)
        self.warning: set[str] = set()
        self._counts: dict[str, collections.Counter[State]] = collections.defaultdict(
            collections.Counter
        )

    def clear(self) -> None:
        """Forget every status (a full recompute rebuilds them all)."""
        self.status.clear()
        self.roots.clear()
        self.impacted.clear()
        self.failing.clear()
        self.failing_at.clear()
        self.warning.clear()
        self._counts.clear()

    def put(self, new: ComponentStatus) -> ComponentStatus | None:
        """Record a component's new status and return its previous one."""
        cid = new.id
        old = self.status.get(cid)
        self.status[cid] = new
        if old is not None:
            if old.state is new.state and old.roots == new.roots:
                return old  # what the indexes read of it is unchanged
            self._drop(old)
        if new.roots == (cid,):
            self.roots.add(cid)
        if new.state is State.IMPACTED:
            for root in new.roots:
                self.impacted[root].add(cid)
        if new.state in FAILING:
            self.failing.add(cid)
            for site in self._rollup_sites.get(cid, ()):
                self.failing_at[site].add(cid)
        if new.state is State.WARNING:
            self.warning.add(cid)
        for site in self._state_sites.get(cid, ()):
            self._counts[site][new.state] += 1
        return old

    def _drop(self, old: ComponentStatus) -> None:
        """Take a status out of the indexes."""
        cid = old.id
        if old.roots == (cid,):
            self.roots.discard(cid)
        if old.state is State.IMPACTED:
            for root in old.roots:
                impacted = self.impacted.get(root)
                if impacted is not None:
                    impacted.discard(cid)
                    if not impacted:
                        del self.impacted[root]
        if old.state in FAILING:
            self.failing.discard(cid)
            for site in self._rollup_sites.get(cid, ()):
                self.failing_at[site].discard(cid)
        self.warning.discard(cid)
        for site in self._state_sites.get(cid, ()):
            self._counts[site][old.state] -= 1

    def ordered_roots(self) -> list[ComponentStatus]:
        """Return the components that are their own root cause, in dependency order."""
        index = self.topology.index
        return [self.status[c] for c in sorted(self.roots, key=index.__getitem__)]

    def site_states(self, ratio: float) -> dict[str, State]:
        """Return each site's state: DOWN when `ratio` of it fails, DEGRADED when less."""
        out = {site: State.OK for site in self.topology.sites}
        for site, counts in self._counts.items():
            present = [s for s, n in counts.items() if n > 0]
            if not present:
                continue
            failing = sum(counts[s] for s in present if s.failing)
            if failing == 0:
                out[site] = worst([s for s in present if s is not State.UNKNOWN] or [State.OK])
            elif failing >= ratio * sum(counts[s] for s in present):
                out[site] = State.DOWN
            else:
                out[site] = State.DEGRADED
        return out

    def warnings(self) -> Mapping[str, ComponentStatus]:
        """Return the components in WARNING, in dependency order."""
        index = self.topology.index
        return {c: self.status[c] for c in sorted(self.warning, key=index.__getitem__)}
