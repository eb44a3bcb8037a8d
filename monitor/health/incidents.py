"""From component statuses to incidents: site roll-up, root causes, and the resolve hold.

One incident per root cause. A site losing power, or failing wholesale for several causes,
is one site incident that absorbs the roots inside it; every other root is an incident of its
own; an incident whose cause cleared stays open for `health.resolve_hold` so that a failure
coming back within it continues the same incident. What needs the engine's check state (power
signs, confirmation) is decided by the engine and given here as plain inputs.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence, Set
from dataclasses import dataclass

from vigie.monitor.health import wording
from vigie.monitor.health.model import APPLICATION_KINDS, Topology
from vigie.monitor.health.snapshot import ComponentStatus, ImpactedApp, Incident
from vigie.monitor.health.states import State

PowerLoss = tuple[float, float | None]
"""(when mains were lost, the shortest runtime left in seconds if a UPS reports it)."""


@dataclass(frozen=True, slots=True)
class IncidentInputs:
    """What one incident pass reads: this evaluation's statuses and the engine's decisions."""

    topology: Topology
    components: Mapping[str, ComponentStatus]
    now: float
    roots: Sequence[ComponentStatus]  # components that are their own root cause, in order
    impacted_by: Mapping[str, Collection[str]]  # root -> the IMPACTED components it explains
    failing_at: Mapping[str, Set[str]]  # datacenter or room -> its failing components
    confirmed: Mapping[str, bool]  # root -> known to be one (not held for its dependencies)
    pending: Mapping[str, bool]  # datacenter -> its power devices have not all answered yet
    power: Mapping[str, PowerLoss | None]  # site -> power loss, when every UPS is on battery
    open: Mapping[str, Incident]  # the incidents open before this pass
    started: MutableMapping[str, float]  # incident key -> start, kept across passes
    maintenance: Mapping[str, str]  # component or site id -> maintenance window


def impacted_by(components: Iterable[ComponentStatus]) -> dict[str, list[str]]:
    """Return each root's IMPACTED components."""
    out: dict[str, list[str]] = collections.defaultdict(list)
    for comp in components:
        if comp.state is State.IMPACTED:
            for root in comp.roots:
                out[root].append(comp.id)
    return out


def applications(
    topology: Topology, ids: Iterable[str], components: Mapping[str, ComponentStatus]
) -> list[ImpactedApp]:
    """Return the applications among ids, most critical first."""
    specs = topology.components
    apps = []
    for cid in ids:
        spec = specs[cid]
        if spec.kind in APPLICATION_KINDS:
            apps.append(
                _application(
                    cid,
                    spec.name or cid,
                    spec.criticality or 4,
                    components[cid].state,
                    spec.degraded_mode,
                    spec.runbook_url,
                    spec.team,
                )
            )
    return sorted(apps, key=lambda a: (a.criticality, a.id))


@functools.lru_cache(maxsize=8192)
def _application(  # noqa: PLR0917 - ImpactedApp's fields, as its own constructor takes them
    cid: str, name: str, criticality: int, state: State, mode: str, runbook: str, team: str
) -> ImpactedApp:
    """One value per application and state: a site incident lists hundreds at each evaluation
    while it is open (and its description's lines are cached by them)."""
    return ImpactedApp(cid, name, criticality, state, mode, runbook, team)


def make_incident(
    inputs: IncidentInputs,
    key: str,
    root: str,
    *,
    site: str,
    severity: str,
    started: float,
    summary: str,
    impacted: list[str],
    apps: list[ImpactedApp],
    site_wide: bool = False,
    component: str = "",
    confirmed: bool = True,
) -> Incident:
    """Assemble an incident; its start is the first one seen for its key."""
    started = inputs.started.setdefault(key, started)
    components = inputs.components
    root_spec = inputs.topology.components.get(root)
    maintenance = (
        components[root].maintenance
        if root in components
        else site.removeprefix("site:") in inputs.maintenance
        or key.removeprefix("site:") in inputs.maintenance
    )
    lines: list[str] = []
    if root in components:
        lines.extend(components[root].reasons)
    lines.extend(wording.application_line(app) for app in apps)
    if maintenance:
        lines.append(wording.MAINTENANCE)
    runbook = (
        root_spec.runbook_url
        if root_spec and root_spec.runbook_url
        else next((a.runbook_url for a in apps if a.runbook_url), "")
    )
    return Incident(
        key=key,
        root_cause=root,
        site=site if not site_wide else key.removeprefix("site:"),
        severity=severity,
        started_at=started,
        summary=summary,
        description=wording.description(lines),
        impacted=tuple(impacted),
        applications=tuple(apps),
        site_wide=site_wide,
        maintenance=maintenance,
        runbook_url=runbook,
        component=component,
        confirmed=confirmed,
    )


# --- Site roll-up ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteRules:
    """When failures at a site are one site incident (health.site_window, health.site_ratio)."""

    window: float
    ratio: float


@dataclass(frozen=True, slots=True)
class _Rooms:
    """Rooms as the roll-up sees them: those on battery, and what open room incidents hold."""

    dark: frozenset[str]
    held: frozenset[str]


def site_rollup(inputs: IncidentInputs, rules: SiteRules) -> tuple[dict[str, Incident], set[str]]:
    """Return the site incidents and the roots they absorb.

    Datacenters first; then rooms (an A/B UPS pair losing mains is its room's one cause) whose
    datacenter has no incident of its own.
    """
    topo = inputs.topology
    rooms = _Rooms(
        dark=frozenset(r for r in topo.rooms if inputs.power.get(r) is not None),
        # What open room incidents hold (their rooms and what those impacted, a SAN's servers
        # in the next room): it follows its room's recovery, not a mass failure of its own.
        held=frozenset(
            c
            for r in topo.rooms
            for c in (inputs.open[f"site:{r}"].impacted if f"site:{r}" in inputs.open else ())
        ),
    )
    incidents: dict[str, Incident] = {}
    absorbed: set[str] = set()
    for site in [*topo.datacenters, *topo.rooms]:
        if topo.sites[site].parent and f"site:{topo.datacenter(site)}" in incidents:
            continue
        found = _site_incident(inputs, rules, rooms, site)
        if found is not None:
            incidents[found[0].key] = found[0]
            absorbed.update(found[1])
    return incidents, absorbed


def _site_incident(
    inputs: IncidentInputs, rules: SiteRules, rooms: _Rooms, site: str
) -> tuple[Incident, list[str]] | None:
    """Return a site's incident and the roots it absorbs, or None when it has none."""
    topo, components, now = inputs.topology, inputs.components, inputs.now
    room = bool(topo.sites[site].parent)
    power = inputs.power.get(site)
    key = f"site:{site}"
    before = inputs.open.get(key)
    followed = set(before.impacted) if room and before is not None else set()
    members = topo.member_sets.get(site, frozenset())
    size = len(members) + sum(1 for c in followed if c not in members and c in components)
    failing_ids = {
        *inputs.failing_at.get(site, ()),
        *(c for c in followed if c in components and components[c].state.failing),
    }
    if power is None and not failing_ids:
        return None  # neither mains lost, nor a mass failure, nor a recovery to follow
    site_roots = [
        r
        for r in inputs.roots
        if (
            topo.components[r.id].site == site or r.id in followed
            if room
            else topo.dc[r.id] == site
        )
    ]
    failing = [components[c] for c in failing_ids]
    opened = inputs.started.get(key)
    recent = [c for c in failing if now - c.since <= rules.window]
    mass = (
        not room
        and size >= 3
        and len(recent) >= rules.ratio * size
        and _causes(inputs, rooms, site, site_roots) > 1
    )
    # Once open, the site incident follows the recovery: it stays while anything that
    # failed during it is still failing, so the recovery ends with one resolve.
    during = [c for c in failing if c.since >= opened - rules.window] if opened is not None else []
    if power is None and not mass and not during:
        return None
    impacted = sorted(
        {c.id for c in failing} | {i for r in site_roots for i in inputs.impacted_by.get(r.id, ())}
    )
    apps = applications(topo, impacted, components)
    name = topo.site_name(site)
    # Vigie replicas that fell with the site (kind monitor): the survivor names them.
    lost = sorted(
        topo.components[c.id].name or c.id
        for c in failing
        if topo.components[c.id].kind == "monitor"
    )
    if power is not None:
        what, started = wording.mains_lost(*power), power[0]
        summary = wording.site_summary(name, what, len(apps), len(topo.at_risk[site]))
    else:
        if mass:
            what = wording.mass_failure(len(failing), size)
            started = min(c.since for c in recent)
        else:
            what = wording.recovering(len(failing), size)
            started = opened if opened is not None else now
        summary = wording.site_summary(name, what, len(apps))
    if lost:
        summary = wording.replicas_lost(summary, lost)
    incident = make_incident(
        inputs,
        key,
        key,
        site=site,
        severity="critical",
        started=started,
        summary=summary,
        impacted=impacted,
        apps=apps,
        site_wide=True,
        # A room's power while its datacenter's power devices have not all answered:
        # maybe the whole datacenter's, so not paged yet.
        confirmed=not (
            room
            and inputs.pending.get(topo.datacenter(site), False)
            and not (before is not None and before.confirmed)
        ),
    )
    return incident, [r.id for r in site_roots]


def _causes(
    inputs: IncidentInputs, rooms: _Rooms, site: str, site_roots: Iterable[ComponentStatus]
) -> int:
    """Count a datacenter's distinct causes: a mass failure with one is that root's incident.

    Held roots do not count: most are dependents whose cause is not seen yet. A room on
    battery is one cause, however many of its UPS are down.
    """
    topo = inputs.topology
    return sum(
        1
        for r in site_roots
        if inputs.confirmed[r.id]
        and topo.components[r.id].site not in rooms.dark
        and r.id not in rooms.held
    ) + sum(
        1
        for r in topo.rooms
        if topo.datacenter(r) == site and (r in rooms.dark or f"site:{r}" in inputs.open)
    )


# --- Root causes -----------------------------------------------------------------------------


def root_causes(inputs: IncidentInputs, absorbed: set[str]) -> dict[str, Incident]:
    """Return one incident for each root cause no site incident absorbed."""
    topo = inputs.topology
    incidents: dict[str, Incident] = {}
    for root in inputs.roots:
        if root.id in absorbed:
            continue
        impacted = sorted(inputs.impacted_by.get(root.id, ()))
        apps = applications(topo, [root.id, *impacted], inputs.components)
        spec = topo.components[root.id]
        # A lost Vigie replica leaves the others watching: redundancy lost, as a UPS of a pair.
        redundant_only = not impacted and (spec.kind == "monitor" or topo.redundant_only(root.id))
        key = f"component:{root.id}"
        incidents[key] = make_incident(
            inputs,
            key,
            root.id,
            site=root.site,
            severity="warning" if redundant_only else "critical",
            started=root.since,
            summary=wording.component_summary(
                spec.name or root.id, root.state, apps, redundant_only
            ),
            impacted=impacted,
            apps=apps,
            component=root.id,
            confirmed=inputs.confirmed[root.id],
        )
    return incidents


# --- Resolve hold ----------------------------------------------------------------------------


def hold_resolved(
    incidents: dict[str, Incident],
    open_before: Mapping[str, Incident],
    last_seen: dict[str, float],
    now: float,
    hold: float,
) -> None:
    """Keep an incident whose cause cleared open for `hold` seconds; note when each was seen.

    A failure coming back within the hold continues the same incident (one page, not one per
    flap). A held (unconfirmed) incident was never paged: it goes at once.
    """
    for key, previous in open_before.items():
        if key not in incidents and previous.confirmed and now - last_seen.get(key, now) < hold:
            incidents[key] = previous
    for key, incident in incidents.items():
        if open_before.get(key) is not incident:
            last_seen[key] = now
