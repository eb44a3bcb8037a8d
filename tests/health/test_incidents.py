"""Incidents from statuses: site roll-up, one incident per root cause, the resolve hold."""

from __future__ import annotations

from collections.abc import Mapping

from vigie.monitor.health.incidents import (
    IncidentInputs,
    PowerLoss,
    SiteRules,
    hold_resolved,
    impacted_by,
    root_causes,
    site_rollup,
)
from vigie.monitor.health.model import Topology
from vigie.monitor.health.snapshot import ComponentStatus, Incident
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import ComponentSpec, SiteSpec

NOW = 1_790_000_000.0
RULES = SiteRules(window=120.0, ratio=0.5)


def topology() -> Topology:
    """One datacenter: two UPS, two servers on their own, an application on each server."""
    specs = [
        {"id": "ups-a", "kind": "ups", "site": "nord"},
        {"id": "ups-b", "kind": "ups", "site": "nord"},
        {"id": "srv-1", "kind": "server", "site": "nord", "powered_by": ["ups-a", "ups-b"]},
        {"id": "srv-2", "kind": "server", "site": "nord"},
        {"id": "dpi", "kind": "application", "site": "nord", "name": "Dossier patient",
         "criticality": 1, "depends_on": ["srv-1"]},
        {"id": "labo", "kind": "application", "site": "nord", "criticality": 2,
         "depends_on": ["srv-2"]},
    ]  # fmt: skip
    return Topology(
        [SiteSpec(id="nord", name="Datacenter Nord")],
        [ComponentSpec.model_validate(s) for s in specs],
    )


def statuses(
    topo: Topology, down: set[str], impacted: Mapping[str, str]
) -> dict[str, ComponentStatus]:
    """Statuses: `down` are their own roots, `impacted` maps a component to its root."""
    out = {}
    for cid in topo.order:
        spec = topo.components[cid]
        state = State.DOWN if cid in down else State.IMPACTED if cid in impacted else State.OK
        roots = (cid,) if cid in down else (impacted[cid],) if cid in impacted else ()
        out[cid] = ComponentStatus(cid, spec.kind, "nord", state, state, NOW - 10, (), roots)
    return out


def inputs(
    topo: Topology,
    comps: dict[str, ComponentStatus],
    *,
    power: Mapping[str, PowerLoss | None] | None = None,
    open_: Mapping[str, Incident] | None = None,
    confirmed: bool = True,
) -> IncidentInputs:
    """The inputs of one pass at NOW."""
    roots = [c for c in comps.values() if c.roots == (c.id,)]
    return IncidentInputs(
        topology=topo,
        components=comps,
        now=NOW,
        roots=roots,
        impacted_by=impacted_by(comps.values()),
        failing_at={"nord": {c.id for c in comps.values() if c.state.failing}},  # no rooms
        confirmed={r.id: confirmed for r in roots},
        pending={},
        power=power or {},
        open=open_ or {},
        started={},
        maintenance={},
    )


def test_one_incident_per_root_with_its_applications() -> None:
    """A server down is one critical incident naming the application it takes down."""
    topo = topology()
    comps = statuses(topo, {"srv-1"}, {"dpi": "srv-1"})
    p = inputs(topo, comps)
    sites, absorbed = site_rollup(p, RULES)
    assert sites == {} and absorbed == set()
    found = root_causes(p, absorbed)
    assert list(found) == ["component:srv-1"]
    inc = found["component:srv-1"]
    assert inc.severity == "critical" and inc.impacted == ("dpi",)
    assert inc.summary == "srv-1 is DOWN; 1 application impacted: Dossier patient"
    assert "[tier 1] Dossier patient: IMPACTED" in inc.description
    assert inc.started_at == NOW - 10 and p.started == {"component:srv-1": NOW - 10}


def test_a_ups_of_a_pair_is_a_warning() -> None:
    """One UPS of an A/B pair down impacts nothing: a warning, running without redundancy."""
    topo = topology()
    found = root_causes(inputs(topo, statuses(topo, {"ups-a"}, {})), set())
    assert found["component:ups-a"].severity == "warning"
    assert found["component:ups-a"].summary == "ups-a is DOWN: running without redundancy"


def test_mass_failure_of_several_causes_is_one_site_incident() -> None:
    """Two confirmed roots taking most of a datacenter: one site incident absorbs both."""
    topo = topology()
    comps = statuses(topo, {"srv-1", "srv-2"}, {"dpi": "srv-1", "labo": "srv-2"})
    p = inputs(topo, comps)
    sites, absorbed = site_rollup(p, RULES)
    assert list(sites) == ["site:nord"] and absorbed == {"srv-1", "srv-2"}
    inc = sites["site:nord"]
    assert inc.site_wide and inc.site == "nord"
    assert inc.impacted == ("dpi", "labo", "srv-1", "srv-2")
    assert inc.summary == "Datacenter Nord: 4 of 6 components failing; 2 applications impacted"
    assert root_causes(p, absorbed) == {}


def test_held_roots_are_not_causes_of_a_mass_failure() -> None:
    """Unconfirmed roots do not make a site incident: each waits as its own."""
    topo = topology()
    comps = statuses(topo, {"srv-1", "srv-2"}, {"dpi": "srv-1", "labo": "srv-2"})
    p = inputs(topo, comps, confirmed=False)
    assert site_rollup(p, RULES) == ({}, set())
    assert {i.confirmed for i in root_causes(p, set()).values()} == {False}


def test_mains_lost_is_the_site_incident_from_when_it_was_lost() -> None:
    """Every UPS on battery: the site's incident starts when mains were lost."""
    topo = topology()
    p = inputs(topo, statuses(topo, set(), {}), power={"nord": (NOW - 300, 600.0)})
    sites, _ = site_rollup(p, RULES)
    inc = sites["site:nord"]
    assert inc.started_at == NOW - 300
    assert (
        "on battery, about 10 minutes of runtime left; 0 applications impacted, 2 more at risk"
        in inc.summary
    )


def test_resolve_hold_keeps_paged_incidents_only() -> None:
    """A cleared, paged incident stays for the hold; a held (never paged) one goes at once."""
    topo = topology()
    paged = root_causes(inputs(topo, statuses(topo, {"srv-1"}, {"dpi": "srv-1"})), set())
    held = root_causes(
        inputs(topo, statuses(topo, {"srv-2"}, {"labo": "srv-2"}), confirmed=False), set()
    )
    before = {**paged, **held}
    last_seen: dict[str, float] = {}
    hold_resolved(dict(before), {}, last_seen, NOW, 30.0)
    assert last_seen == {"component:srv-1": NOW, "component:srv-2": NOW}
    now_open: dict[str, Incident] = {}
    hold_resolved(now_open, before, last_seen, NOW + 10, 30.0)
    assert list(now_open) == ["component:srv-1"]
    later: dict[str, Incident] = {}
    hold_resolved(later, before, last_seen, NOW + 31, 30.0)
    assert later == {}
