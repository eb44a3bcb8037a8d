"""Incremental health: a result that changes nothing costs nothing, and the incremental
evaluation always equals a full recompute.

The oracle: two engines on the same generated hospital (tests/health/hospital.py) take the
same random results (failures of a few components or of a whole datacenter, repairs, UPS on
battery with their runtime left, checks going silent, maintenance windows) on the same clock;
one evaluates incrementally, the other recomputes everything (`evaluate(full=True)`). After
every step their snapshots, and the on-demand runs they asked for, must be equal.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.health.sim import FakeClock, QuietLog, load_generated
from vigie.core.results import ProbeResult, Sample
from vigie.monitor.health.engine import HealthEngine, Snapshot, build_engine

UP = ProbeResult(True, 0.01)
DOWN = ProbeResult(False, 2.0, error="timeout after 2s")
STEPS = (0.0, 0.2, 1.0, 1.0, 2.0, 5.0, 12.0, 40.0, 130.0, 400.0)
"""Clock moves between steps: results in one batch, ticks, `for` and staleness, flap window."""

Asked = list[tuple[float, str, str]]


def ups_result(runtime: float) -> ProbeResult:
    """A UPS on battery with this runtime left."""
    return ProbeResult(
        True,
        0.01,
        (Sample("ups_on_battery", 1.0), Sample("ups_battery_runtime_seconds", runtime)),
    )


def engine(clock: FakeClock, asked: Asked, hospital: int) -> HealthEngine:
    """An engine on a small generated hospital whose on-demand runs are recorded."""
    loaded = load_generated(hospital, hypervisors=4, apps=40)

    def run_now(check_id: str, reason: str) -> bool:
        asked.append((clock.now, check_id, reason))
        return True

    return build_engine(loaded.config, loaded.plan, clock=clock, logger=QuietLog(), run_now=run_now)


def difference(got: Snapshot, want: Snapshot) -> str:
    """Say where two snapshots differ first."""
    for name in ("components", "incidents", "sites", "warnings"):
        mine, theirs = getattr(got, name), getattr(want, name)
        for key in sorted({*mine, *theirs}):
            if mine.get(key) != theirs.get(key):
                return f"{name}[{key}]:\n  incremental {mine.get(key)}\n  full {theirs.get(key)}"
    return f"at: {got.at} != {want.at}"


class World:
    """What is broken, what runs on battery, and the result a check of each component gets."""

    def __init__(self, eng: HealthEngine, rng: random.Random) -> None:
        self.rng = rng
        self.topo = eng.topology
        self.broken: set[str] = set()
        self.battery: dict[str, float] = {}  # UPS -> runtime left

    def result(self, component: str) -> ProbeResult:
        """Return what a poll of the component gets now."""
        if component in self.broken:
            return DOWN
        runtime = self.battery.get(component)
        return UP if runtime is None else ups_result(runtime)

    def move(self) -> None:
        """Change the world at random: break, repair, lose or regain mains, drain batteries."""
        rng, topo = self.rng, self.topo
        roll = rng.random()
        if roll < 0.2:
            self.broken.update(rng.sample(sorted(topo.components), rng.randint(1, 3)))
        elif roll < 0.25:
            self.broken.update(topo.site_members(rng.choice(topo.datacenters)))
        elif roll < 0.45 and self.broken:
            repaired = rng.randint(1, min(20, len(self.broken)))
            self.broken.difference_update(rng.sample(sorted(self.broken), repaired))
        elif roll < 0.55:
            site = rng.choice([*topo.datacenters, *topo.rooms])
            self.battery.update(dict.fromkeys(topo.ups[site], 1800.0))
        elif roll < 0.65:
            self.battery.clear()
        for ups in self.battery:
            self.battery[ups] = max(0.0, self.battery[ups] - rng.choice((0.0, 60.0)))


def replay(seed: int, steps: int) -> tuple[int, int]:
    """Drive both engines; assert they agree after every step; return (results, changes)."""
    rng = random.Random(seed)
    clock = FakeClock()
    asked: tuple[Asked, Asked] = ([], [])
    inc = engine(clock, asked[0], seed % 2)
    full = engine(clock, asked[1], seed % 2)
    world = World(inc, rng)
    checks = sorted(inc.checks)
    fed = changed = 0
    for step in range(steps):
        clock.now += rng.choice(STEPS)
        world.move()
        share = rng.choice((0.0, 0.05, 0.3, 1.0))  # sometimes silent: staleness decides
        for check_id in rng.sample(checks, int(share * len(checks))):
            result = world.result(inc.check_components[check_id][0])
            fed += 1
            changed += inc.observe(check_id, result)
            full.observe(check_id, result)
        if rng.random() < 0.05:
            window = {rng.choice([*inc.topology.components, *inc.topology.sites]): "test"}
            inc.maintenance = full.maintenance = window if not inc.maintenance else {}
        got, want = inc.evaluate(), full.evaluate(full=True)
        assert got == want, f"seed {seed}, step {step}: {difference(got, want)}"
        # Reasons are kept as facts and compared so: written out, they must read the same.
        for cid, status in got.components.items():
            assert status.reasons == want.components[cid].reasons, f"seed {seed}, {cid}"
        assert asked[0] == asked[1], f"seed {seed}, step {step}: on-demand runs differ"
    return fed, changed


@pytest.mark.parametrize("seed", range(12))
def test_incremental_equals_full_recompute(seed: int) -> None:
    """After every step of random results, incremental and full evaluations agree."""
    fed, changed = replay(seed, steps=120)
    assert fed > 0
    assert changed < fed, "every result changed something: the test proves nothing"


def quiet_engine() -> tuple[HealthEngine, FakeClock, Callable[[ProbeResult], None]]:
    """An engine with every check passing and evaluated once; and a way to feed them all."""
    clock = FakeClock()
    eng = engine(clock, [], 0)

    def feed(result: ProbeResult) -> None:
        for check_id in eng.checks:
            eng.observe(check_id, result)

    feed(UP)
    eng.evaluate()
    return eng, clock, feed


def test_a_result_that_changes_nothing_is_not_a_change() -> None:
    """A check passing again changes no rule: observe says so and evaluate recomputes nothing."""
    eng, clock, _ = quiet_engine()
    first = eng.snapshot
    clock.now += 1.0
    assert not any(eng.observe(check_id, UP) for check_id in eng.checks)
    snap = eng.evaluate()
    assert snap.components is first.components  # the same statuses, not rebuilt
    assert snap.at == clock.now and eng.revision == 1


def test_a_failure_recomputes_what_depends_on_it() -> None:
    """A server failing is a change: it and its dependents are seen; the rest stays shared."""
    eng, clock, _ = quiet_engine()
    before = eng.snapshot.components
    server = next(c for c, s in eng.topology.components.items() if s.kind == "server")
    clock.now += 1.0
    assert eng.observe(eng.component_checks[server][0], DOWN)
    snap = eng.evaluate()
    assert snap.components[server].own.failing
    changed = {c for c in snap.components if snap.components[c] is not before[c]}
    assert server in changed
    assert changed <= {server, *downstream(eng, server)}


def test_a_changing_result_works_out_its_check_state_as_it_arrives() -> None:
    """The check's new state is worked out by observe, and the evaluation reads that one."""
    eng, clock, _ = quiet_engine()
    server = next(c for c, s in eng.topology.components.items() if s.kind == "server")
    check_id = eng.component_checks[server][0]
    clock.now += 1.0
    assert eng.observe(check_id, DOWN)
    health = eng.checks[check_id]
    worked_out = (health.cached, health.cached_why)
    assert worked_out[0] is not None and worked_out[0].failing
    snap = eng.evaluate()
    assert snap.components[server].own is worked_out[0]
    assert (health.cached, health.cached_why) == worked_out  # read, not worked out again


def test_a_component_recomputed_again_and_again_keeps_one_timer() -> None:
    """A server flapping every second has it and its dependents recomputed each time; each
    keeps one timer (its earliest), not one more per evaluation to pop and recompute later."""
    eng, clock, feed = quiet_engine()
    server = next(c for c, s in eng.topology.components.items() if s.kind == "server")
    check_id = eng.component_checks[server][0]
    for step in range(60):
        clock.now += 1.0
        feed(UP)  # the others stay fresh: their timers fall due and are set again
        eng.observe(check_id, DOWN if step % 2 == 0 else UP)
        eng.evaluate()
    due = [cid for _, cid in eng._timers]
    assert len(due) == len(set(due)) <= len(eng.topology.components)
    assert server in due  # still timed: staleness, its rules' timers


def downstream(eng: HealthEngine, cid: str) -> set[str]:
    """Return every component that depends on cid, directly or not."""
    seen: set[str] = set()
    stack = [cid]
    while stack:
        for nxt in eng.topology.dependents.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_silence_still_turns_unknown_on_time() -> None:
    """With no result at all, the staleness timer alone turns components UNKNOWN."""
    eng, clock, feed = quiet_engine()
    clock.now += 3 * 15.0 + 1.0  # past 3 intervals of the slowest checks
    snap = eng.evaluate()
    assert {s.state.name for s in snap.components.values()} == {"UNKNOWN"}
    clock.now += 1.0
    feed(UP)
    assert {s.state.name for s in eng.evaluate().components.values()} == {"OK"}
