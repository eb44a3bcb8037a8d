"""Health engine: rules to states, root causes, incidents, site roll-up, flapping, staleness."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.health.hospital import hospital
from vigie.core.results import ProbeResult, Sample
from vigie.monitor.config import LoadedConfig, load_config
from vigie.monitor.health.engine import HealthEngine, build_engine
from vigie.monitor.health.states import State
from vigie.probes import default_registry


class Clock:
    """A clock the test moves by hand, passed in as a dependency (not a patch)."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


def load(tmp_path: Path, config: dict[str, object]) -> LoadedConfig:
    """Write a config and load it."""
    path = tmp_path / "vigie.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return load_config(path, default_registry(), env={})


@pytest.fixture
def clock() -> Clock:
    """A hand-moved clock."""
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, clock: Clock) -> HealthEngine:
    """An engine on the test hospital, every check reporting success."""
    loaded = load(tmp_path, hospital())
    eng = build_engine(loaded.config, loaded.plan, clock=clock)
    feed_all(eng, failing=set())
    return eng


UP = ProbeResult(True, 0.01)
DOWN = ProbeResult(False, 0.5, error="timeout after 0.5s")


def ups_result(on_battery: bool, runtime: float = 3600) -> ProbeResult:
    """A UPS result with its battery samples."""
    return ProbeResult(
        True,
        0.01,
        (
            Sample("ups_on_battery", float(on_battery)),
            Sample("ups_battery_runtime_seconds", runtime),
        ),
    )


def feed_all(
    engine: HealthEngine,
    failing: set[str],
    ups: ProbeResult | None = None,
    ups_ids: set[str] | None = None,
) -> None:
    """Give every check a result: failing components' checks fail; UPSes get ups samples."""
    for check_id in engine.checks:
        comp = check_id.removeprefix("chk-")
        if ups is not None and comp.startswith("ups-") and (ups_ids is None or comp in ups_ids):
            engine.observe(check_id, ups)
        else:
            engine.observe(check_id, DOWN if comp in failing else UP)


def test_all_ok(engine: HealthEngine) -> None:
    """With every check up, every component is OK and there is no incident."""
    snap = engine.evaluate()
    assert {c.state for c in snap.components.values()} == {State.OK}
    assert snap.incidents == {}
    assert set(snap.sites.values()) == {State.OK}


def test_server_crash_one_incident_naming_its_applications(engine: HealthEngine) -> None:
    """A crashed server is the one root cause; its failing apps are IMPACTED, not paged."""
    failing = {"srv-00", "app-dpi-00", "app-pacs-20"}
    feed_all(engine, failing)
    snap = engine.evaluate()
    assert list(snap.incidents) == ["component:srv-00"]
    incident = snap.incidents["component:srv-00"]
    assert incident.severity == "critical"
    assert [a.id for a in incident.applications] == ["app-dpi-00", "app-pacs-20"]
    assert incident.applications[0].degraded_mode.startswith("Procédure dégradée DP-12")
    assert "Dossier patient 00" in incident.summary
    assert snap.components["app-dpi-00"].state is State.IMPACTED
    assert snap.components["app-dpi-00"].roots == ("srv-00",)
    assert snap.components["srv-00"].state is State.DOWN


def test_san_failure_spares_redundant_applications(engine: HealthEngine) -> None:
    """SAN Nord down: its servers and apps are impacted; apps with a Bellevue path stay OK."""
    nord_servers = {f"srv-{i:02d}" for i in range(10)}
    nord_apps = {
        c
        for c in engine.topology.components
        if c.startswith("app-") and int(c[-2:]) < 30 and int(c[-2:]) % 20 < 10
    }
    feed_all(engine, {"san-nord", *nord_servers, *nord_apps})
    snap = engine.evaluate()
    assert list(snap.incidents) == ["component:san-nord"]
    incident = snap.incidents["component:san-nord"]
    assert {a.id for a in incident.applications} == nord_apps
    assert [a.criticality for a in incident.applications] == sorted(
        a.criticality for a in incident.applications
    )
    assert snap.components["app-dpi-30"].state is State.OK  # any_of: a Bellevue server is up


def test_a_site_whose_ups_all_fell_silent_on_battery_has_no_runtime_left(
    engine: HealthEngine, clock: Clock
) -> None:
    """Both UPS stop answering during the cut: 'batteries exhausted', no stale or 0 minutes."""
    nord_ups = {"ups-nord-1", "ups-nord-2"}
    feed_all(engine, set(), ups=ups_result(True, 660), ups_ids=nord_ups)
    assert "about 11 minutes of runtime left" in engine.evaluate().incidents["site:nord"].summary
    clock.now += 600
    feed_all(engine, nord_ups)  # their cards are dark: failed polls, no battery samples
    summary = engine.evaluate().incidents["site:nord"].summary
    assert summary.startswith("Datacenter Nord: mains lost at "), summary
    assert "batteries exhausted" in summary and "runtime left" not in summary, summary


def test_redundancy_loss_is_a_warning(engine: HealthEngine) -> None:
    """One UPS of an A/B pair down: dependents stay OK, a warning says redundancy is lost."""
    feed_all(engine, {"ups-bellevue-1"})
    snap = engine.evaluate()
    assert snap.components["san-bellevue"].state is State.OK
    incident = snap.incidents["component:ups-bellevue-1"]
    assert incident.severity == "warning"
    assert "running without redundancy" in incident.summary


def test_site_power_cut_is_one_site_incident(engine: HealthEngine, clock: Clock) -> None:
    """Nord on battery: one site incident with the runtime left; later failures join it."""
    nord_ups = {"ups-nord-1", "ups-nord-2"}
    feed_all(engine, set(), ups=ups_result(True, 660), ups_ids=nord_ups)
    snap = engine.evaluate()
    assert list(snap.incidents) == ["site:nord"]
    summary = snap.incidents["site:nord"].summary
    assert summary.startswith("Datacenter Nord: mains lost at ")
    assert "on battery, about 11 minutes of runtime left" in summary
    started = snap.incidents["site:nord"].started_at
    clock.now += 600
    failing = {"san-nord", *(f"srv-{i:02d}" for i in range(10))}
    failing |= {
        c
        for c in engine.topology.components
        if c.startswith("app-") and int(c[-2:]) % 20 < 10 and int(c[-2:]) < 30
    }
    feed_all(engine, failing, ups=ups_result(True, 60), ups_ids=nord_ups)
    snap = engine.evaluate()
    assert list(snap.incidents) == ["site:nord"], "late failures join the site incident"
    incident = snap.incidents["site:nord"]
    assert incident.started_at == started
    assert (
        "about 1 minute of runtime left; 20 applications impacted, 10 more at risk"
        in incident.summary
    )
    clock.now += 60  # mains back; the SAN and 4 servers are not yet
    still = {"san-nord", "srv-00", "srv-01", "srv-02", "srv-03"}
    feed_all(engine, still | {c for c in failing if c.startswith("app-")})
    snap = engine.evaluate()
    assert list(snap.incidents) == ["site:nord"], "the recovery stays in the site incident"
    assert "mains lost" not in snap.incidents["site:nord"].summary
    assert "components" in snap.incidents["site:nord"].summary
    assert snap.incidents["site:nord"].started_at == started
    clock.now += 60
    feed_all(engine, set())
    engine.evaluate()
    clock.now += 31
    feed_all(engine, set())
    assert engine.evaluate().incidents == {}, "all back: the site incident resolves, once"


def test_root_recovers_dependent_stays_down_becomes_own_incident(
    engine: HealthEngine, clock: Clock
) -> None:
    """When the root recovers and a dependent stays down, the dependent gets its own incident."""
    feed_all(engine, {"srv-01", "app-labo-01"})
    assert list(engine.evaluate().incidents) == ["component:srv-01"]
    feed_all(engine, {"app-labo-01"})
    snap = engine.evaluate()
    assert sorted(snap.incidents) == ["component:app-labo-01", "component:srv-01"]
    assert snap.incidents["component:app-labo-01"].applications[0].id == "app-labo-01"
    clock.now += 31  # past health.resolve_hold: the server's incident resolves
    feed_all(engine, {"app-labo-01"})
    assert list(engine.evaluate().incidents) == ["component:app-labo-01"]


def test_failure_within_resolve_hold_continues_the_incident(
    engine: HealthEngine, clock: Clock
) -> None:
    """A root that fails again within resolve_hold continues its incident (same start)."""
    feed_all(engine, {"srv-04"})
    started = engine.evaluate().incidents["component:srv-04"].started_at
    clock.now += 5
    feed_all(engine, set())
    assert "component:srv-04" in engine.evaluate().incidents, "held open after recovery"
    clock.now += 20
    feed_all(engine, {"srv-04"})
    assert engine.evaluate().incidents["component:srv-04"].started_at == started
    clock.now += 5
    feed_all(engine, set())
    engine.evaluate()
    clock.now += 31
    feed_all(engine, set())
    assert engine.evaluate().incidents == {}


def test_for_and_clear_for_hysteresis(tmp_path: Path, clock: Clock) -> None:
    """A rule fires only after `for`, and clears only after `clear_for` of its clear condition."""
    config = hospital()
    config["rules"] = [
        {
            "name": "slow",
            "expr": "probe_duration_seconds > 1",
            "clear_expr": "probe_duration_seconds < 0.5",
            "severity": "degraded",
            "for": "30s",
            "clear_for": "60s",
            "checks": ["chk-san-nord"],
        }
    ]
    loaded = load(tmp_path, config)
    eng = build_engine(loaded.config, loaded.plan, clock=clock)
    feed_all(eng, set())

    def san(duration: float) -> State:
        eng.observe("chk-san-nord", ProbeResult(True, duration))
        return eng.evaluate().components["san-nord"].state

    assert san(2.0) is State.OK
    clock.now += 29
    assert san(2.0) is State.OK
    clock.now += 2
    assert san(2.0) is State.DEGRADED
    reasons = eng.snapshot.components["san-nord"].reasons
    assert reasons == ("chk-san-nord: slow: probe_duration_seconds (2) > 1",)
    clock.now += 10
    assert san(0.8) is State.DEGRADED, "between thresholds: still degraded"
    assert san(0.2) is State.DEGRADED
    clock.now += 59
    assert san(0.2) is State.DEGRADED
    clock.now += 2
    assert san(0.2) is State.OK


def test_flapping_holds_one_incident(engine: HealthEngine, clock: Clock) -> None:
    """A component flapping fast becomes FLAPPING and keeps one open incident."""
    keys = []
    for i in range(12):
        clock.now += 10
        feed_all(engine, {"srv-15"} if i % 2 == 0 else set())
        keys.append(tuple(engine.evaluate().incidents))
    assert engine.snapshot.components["srv-15"].state is State.FLAPPING
    assert keys[-4:] == [("component:srv-15",)] * 4
    starts = {engine.snapshot.incidents["component:srv-15"].started_at}
    clock.now += 10
    feed_all(engine, set())
    assert {engine.evaluate().incidents["component:srv-15"].started_at} == starts


def test_stale_checks_make_unknown(engine: HealthEngine, clock: Clock) -> None:
    """No result for 3 intervals makes a component UNKNOWN."""
    clock.now += 3.5
    for check_id in engine.checks:
        if check_id != "chk-srv-03":
            engine.observe(check_id, UP)
    snap = engine.evaluate()
    assert snap.components["srv-03"].state is State.UNKNOWN
    assert snap.components["app-rdv-03"].state is State.OK


def test_maintenance_marks_incident(engine: HealthEngine) -> None:
    """A component in maintenance still changes state; its incident says it is not paged."""
    engine.maintenance["srv-02"] = "firmware upgrade"
    feed_all(engine, {"srv-02"})
    snap = engine.evaluate()
    assert snap.components["srv-02"].state is State.DOWN
    incident = snap.incidents["component:srv-02"]
    assert incident.maintenance and "not paged" in incident.description


def test_mass_failure_rolls_up_to_site(engine: HealthEngine) -> None:
    """Most of Bellevue failing within the window is one site incident, not 30."""
    bellevue = {
        c
        for c, spec in engine.topology.components.items()
        if engine.topology.datacenter(spec.site) == "bellevue"
    }
    bellevue -= {"ups-bellevue-1", "ups-bellevue-2"}
    feed_all(engine, bellevue)
    snap = engine.evaluate()
    assert list(snap.incidents) == ["site:bellevue"]
    assert snap.sites["bellevue"] is State.DOWN
    assert snap.incidents["site:bellevue"].summary.startswith("Datacenter Bellevue: ")


# --- Confirmation: a dependent failing a moment before its cause is seen is held ------------

Step = tuple[float, dict[str, ProbeResult]]
"""Seconds to move the clock, then the results that arrive (by component), then evaluate."""


def hospital_engine(tmp_path: Path, clock: Clock, **health: object) -> HealthEngine:
    """An engine on the test hospital (10 s checks) with these settings, every check OK."""
    config = hospital(interval="10s")
    config["health"] = health
    loaded = load(tmp_path, config)
    eng = build_engine(loaded.config, loaded.plan, clock=clock)
    feed_all(eng, failing=set())
    eng.evaluate()
    return eng


def play(engine: HealthEngine, clock: Clock, steps: list[Step]) -> dict[str, bool]:
    """Play the steps; return the open incidents with their confirmed flag."""
    for advance, results in steps:
        clock.now += advance
        for comp, result in results.items():
            engine.observe(f"chk-{comp}", result)
        snapshot = engine.evaluate()
    return {key: i.confirmed for key, i in snapshot.incidents.items()}


CONFIRM_CASES: list[tuple[str, dict[str, object], list[Step], dict[str, bool]]] = [
    (
        "app fails first: held",
        {},
        [(1, {"app-dpi-00": DOWN})],
        {"component:app-dpi-00": False},
    ),
    (
        "server fails 5 s later: the app's incident is absorbed, the server's is held",
        {"resolve_hold": "30s"},
        [(1, {"app-dpi-00": DOWN}), (5, {"srv-00": DOWN})],
        {"component:srv-00": False},
    ),
    (
        "then the server's UPS and SAN report: the server's incident is confirmed",
        {},
        [
            (1, {"app-dpi-00": DOWN}),
            (5, {"srv-00": DOWN}),
            (0.5, {"ups-nord-1": UP, "ups-nord-2": UP, "san-nord": UP}),
        ],
        {"component:srv-00": True},
    ),
    (
        "app alone, its server's check reports OK after: confirmed",
        {},
        [(1, {"app-labo-01": DOWN}), (0.4, {"srv-01": UP})],
        {"component:app-labo-01": True},
    ),
    (
        "app alone, no result from its server yet, before the bound (10 s + 0.5 s): held",
        {},
        [(1, {"app-labo-01": DOWN}), (10.4, {})],
        {"component:app-labo-01": False},
    ),
    (
        "app alone, no result from its server, bound passed: confirmed",
        {},
        [(1, {"app-labo-01": DOWN}), (10.5, {})],
        {"component:app-labo-01": True},
    ),
    (
        "confirm_max caps the bound",
        {"confirm_max": "1s"},
        [(1, {"app-labo-01": DOWN}), (1.0, {})],
        {"component:app-labo-01": True},
    ),
    (
        "confirm_max 0: no hold",
        {"confirm_max": 0},
        [(1, {"app-labo-01": DOWN})],
        {"component:app-labo-01": True},
    ),
    (
        "a UPS failing is a sign of power loss: held until its site's power devices report",
        {},
        [(1, {"ups-bellevue-1": DOWN})],
        {"component:ups-bellevue-1": False},
    ),
    (
        "the other UPS of the site reports on mains: no power cut, the UPS is confirmed",
        {},
        [(1, {"ups-bellevue-1": DOWN}), (0.2, {"ups-bellevue-2": UP})],
        {"component:ups-bellevue-1": True},
    ),
    (
        "no answer from the other UPS: confirmed after its interval and timeout (10.5 s)",
        {},
        [(1, {"ups-bellevue-1": DOWN}), (10.5, {})],
        {"component:ups-bellevue-1": True},
    ),
    (
        "a redundancy group: every member's check must report",
        {},
        [(1, {"app-dpi-30": DOWN}), (0.2, {"srv-00": UP})],
        {"component:app-dpi-30": False},
    ),
    (
        "a redundancy group: both members reported",
        {},
        [(1, {"app-dpi-30": DOWN}), (0.2, {"srv-00": UP, "srv-10": UP})],
        {"component:app-dpi-30": True},
    ),
]


@pytest.mark.parametrize(
    ("health", "steps", "expected"),
    [c[1:] for c in CONFIRM_CASES],
    ids=[c[0] for c in CONFIRM_CASES],
)
def test_confirmation(
    tmp_path: Path,
    clock: Clock,
    health: dict[str, object],
    steps: list[Step],
    expected: dict[str, bool],
) -> None:
    """A root with dependencies is confirmed once their checks report after it, or the bound."""
    engine = hospital_engine(tmp_path, clock, **health)
    assert play(engine, clock, steps) == expected


def test_confirmed_incident_keeps_its_start_and_stays_confirmed(
    tmp_path: Path, clock: Clock
) -> None:
    """Confirmation changes no start time, and a confirmed incident is never held again."""
    engine = hospital_engine(tmp_path, clock)
    clock.now += 1
    began = clock.now
    engine.observe("chk-app-labo-01", DOWN)
    engine.evaluate()
    clock.now += 0.3
    engine.observe("chk-srv-01", UP)
    incident = engine.evaluate().incidents["component:app-labo-01"]
    assert (incident.confirmed, incident.started_at) == (True, began)
    clock.now += 0.2
    engine.observe("chk-app-labo-01", DOWN)
    assert engine.evaluate().incidents["component:app-labo-01"].confirmed


def test_held_incident_absorbed_is_not_held_open_by_resolve_hold(
    tmp_path: Path, clock: Clock
) -> None:
    """An unconfirmed incident absorbed by its cause goes at once, despite resolve_hold."""
    engine = hospital_engine(tmp_path, clock, resolve_hold="30s")
    clock.now += 1
    engine.observe("chk-app-dpi-00", DOWN)
    engine.evaluate()
    clock.now += 5
    engine.observe("chk-srv-00", DOWN)
    snapshot = engine.evaluate()
    assert "component:app-dpi-00" not in snapshot.incidents
    assert snapshot.components["app-dpi-00"].state is State.IMPACTED
    assert snapshot.incidents["component:srv-00"].impacted == ("app-dpi-00",)


def test_restart_keeps_paged_incidents_confirmed_and_holds_held_ones_again(
    tmp_path: Path, clock: Clock
) -> None:
    """Saved incidents were paged: restored confirmed; a held one is not saved, so held again."""
    engine = hospital_engine(tmp_path, clock)
    clock.now += 1
    engine.observe("chk-ups-bellevue-1", DOWN)  # confirmed: the other UPS is on mains
    engine.observe("chk-ups-bellevue-2", UP)
    engine.observe("chk-app-dpi-00", DOWN)  # held
    engine.evaluate()
    starts, since = engine.durable_state()
    assert list(starts) == ["component:ups-bellevue-1"]
    clock.now += 2
    loaded = load(tmp_path, hospital(interval="10s"))
    fresh = build_engine(loaded.config, loaded.plan, clock=clock)
    fresh.restore(starts, since)
    fresh.observe("chk-ups-bellevue-1", DOWN)
    fresh.observe("chk-app-dpi-00", DOWN)
    incidents = fresh.evaluate().incidents
    assert incidents["component:ups-bellevue-1"].confirmed
    assert not incidents["component:app-dpi-00"].confirmed
    clock.now += 10.5  # the bound runs from the restart, not from the first start
    assert fresh.evaluate().incidents["component:app-dpi-00"].confirmed


def test_held_roots_do_not_make_a_mass_failure(tmp_path: Path, clock: Clock) -> None:
    """Applications failing before their servers are seen do not roll up a site on their own."""
    engine = hospital_engine(tmp_path, clock)
    clock.now += 1
    apps = [c for c in engine.topology.members["nord"] if c.startswith("app-")]
    for app in apps:
        engine.observe(f"chk-{app}", DOWN)
    for i in range(10):
        engine.observe(f"chk-srv-{i:02d}", DOWN)
    incidents = engine.evaluate().incidents
    assert "site:nord" not in incidents
    assert not any(i.confirmed for i in incidents.values())
