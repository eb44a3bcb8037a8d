"""Topology validation: unknown references and cycles are errors, loose ends are warnings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

from vigie.monitor.health.maintenance import MaintenanceSpec
from vigie.monitor.health.topology import (
    AnyOf,
    ComponentSpec,
    RuleSpec,
    SiteSpec,
    dependency_members,
    find_cycle,
    selector_matches,
)
from vigie.probes.base import Check

Loc = tuple[int | str, ...]
Problem = tuple[Loc, str]


def validate_topology(
    sites: list[SiteSpec],
    components: list[ComponentSpec],
    rules: list[RuleSpec],
    plan: Mapping[str, Check],
    maintenance: Sequence[MaintenanceSpec] = (),
    *,
    invalid: Mapping[str, Set[str]] | None = None,
) -> tuple[list[Problem], list[Problem]]:
    """Return (errors, warnings), each with the config location it is about.

    `invalid` holds, under "checks", "components" and "sites", the ids of entries that are in
    the file but were refused (their own error is reported): a reference to one is no error,
    so that one mistake gives one error and not a cascade of "unknown" ones.
    """
    errors: list[Problem] = []
    warnings: list[Problem] = []
    refused: Mapping[str, Set[str]] = invalid or {}
    bad_checks = refused.get("checks", set())
    bad_comps = refused.get("components", set())
    bad_sites = refused.get("sites", set())
    site_ids: dict[str, int] = {}
    for i, site in enumerate(sites):
        if site.id in site_ids:
            errors.append((("sites", i, "id"), f"duplicate site id {site.id!r}"))
        site_ids.setdefault(site.id, i)
    known_sites = {*site_ids, *bad_sites}
    for i, site in enumerate(sites):
        if site.parent is not None and site.parent not in known_sites:
            errors.append((("sites", i, "parent"), f"unknown site {site.parent!r}"))
    parents = {s.id: [s.parent] for s in sites if s.parent is not None}
    while (site_cycle := find_cycle(parents)) is not None:  # every cycle, each once
        errors.append(
            (
                ("sites", site_ids[site_cycle[0]], "parent"),
                "site parent cycle: " + " -> ".join(site_cycle),
            )
        )
        for site_id in site_cycle:
            parents.pop(site_id, None)
    comp_ids: dict[str, int] = {}
    for i, comp in enumerate(components):
        if comp.id in comp_ids:
            errors.append((("components", i, "id"), f"duplicate component id {comp.id!r}"))
        comp_ids.setdefault(comp.id, i)
    fed: set[str] = set()
    for i, comp in enumerate(components):
        if comp.site is not None and comp.site not in known_sites:
            known = ", ".join(sorted(site_ids)) or "none defined"
            errors.append(
                (("components", i, "site"), f"unknown site {comp.site!r}; known sites: {known}")
            )
        for field in ("depends_on", "powered_by"):
            for j, dep in enumerate(getattr(comp, field)):
                for member in dependency_members(dep):
                    if member not in comp_ids and member not in bad_comps:
                        errors.append(
                            ((("components", i, field, j)), f"unknown component {member!r}")
                        )
                if isinstance(dep, AnyOf) and dep.need > len(set(dep.any_of)):
                    members = len(set(dep.any_of))
                    errors.append(
                        (
                            ("components", i, field, j, "need"),
                            f"need ({dep.need}) is more than the group's {members} member(s):"
                            " it can never be met",
                        )
                    )
        for j, check_id in enumerate(comp.checks):
            if check_id not in plan and check_id not in bad_checks:
                errors.append((("components", i, "checks", j), f"unknown check {check_id!r}"))
            fed.add(check_id)
        matched = (
            [cid for cid, c in plan.items() if selector_matches(comp.selector, dict(c.labels))]
            if comp.selector  # an empty selector feeds nothing: skip the scan of every check
            else []
        )
        fed.update(matched)
        if not comp.checks and not matched and comp.kind != "business_service":
            warnings.append((("components", i), f"component {comp.id!r} has no checks"))
    edges = {
        c.id: [m for d in (*c.depends_on, *c.powered_by) for m in dependency_members(d)]
        for c in components
    }
    cycle = find_cycle(edges)
    if cycle is not None:
        errors.append(
            (
                ("components", comp_ids[cycle[0]], "depends_on"),
                "dependency cycle: " + " -> ".join(cycle),
            )
        )
    for i, win in enumerate(maintenance):
        if win.target not in comp_ids and win.target not in known_sites | bad_comps:
            errors.append(
                (("maintenance", i, "target"), f"unknown component or site {win.target!r}")
            )
    for i, rule in enumerate(rules):
        for j, check_id in enumerate(rule.checks):
            if check_id not in plan and check_id not in bad_checks:
                errors.append((("rules", i, "checks", j), f"unknown check {check_id!r}"))
    if components:
        checks = list(plan)
        for index, check_id in enumerate(checks):
            if check_id not in fed:
                warnings.append((("checks", index), f"check {check_id!r} feeds no component"))
    return errors, warnings
