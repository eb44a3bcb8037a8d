"""Outages replayed on a generated hospital at the engine level, on a fake clock.

A world holds what is really broken; every check polls it on its own grid (interval and
phase), a failed poll lands after its timeout, a good one at once. The health engine sees only
those results; its snapshots go through the real incident notifier to a pager that counts
pages (an alert key starting to fire) and resolves. Used by the property test (a few dozen
seeds) and by the bench (hundreds).
"""

from __future__ import annotations

import functools
import heapq
import json
import random
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from tests.health.hospital import GEN_TIMEOUT, generated_hospital
from vigie.core.results import ProbeResult, Sample
from vigie.monitor.alerting.model import Alert
from vigie.monitor.config import LoadedConfig, load_config
from vigie.monitor.health.alerts import IncidentNotifier
from vigie.monitor.health.engine import HealthEngine, build_engine
from vigie.monitor.health.topology import AnyOf, dependency_members
from vigie.monitor.ondemand import OnDemandGate, OnDemandMetrics
from vigie.probes import default_registry

START = 1_790_000_000.0
TICK = 1.0  # the runner evaluates at least every tick
COALESCE = 1.0  # results within a second are one batch (the runner: 0.2 s; cheaper here)
UP_DELAY = 0.05


class FakeClock:
    """The simulation's time, passed to the engine as its clock."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class QuietLog:
    """A logger that keeps nothing: hundreds of seeds would log millions of state changes."""

    def _drop(self, *args: Any, **kwargs: Any) -> None:
        """Drop a log line."""

    debug = info = warning = error = _drop


@dataclass
class Page:
    """One alert key starting to fire (a page) or stopping (a resolve)."""

    at: float
    key: str
    root: str
    firing: bool


class Pager:
    """The alerting side (AlertSync): keeps the firing set, records pages and resolves."""

    def __init__(self, clock: FakeClock, on_page: Callable[[Alert], None]) -> None:
        self._clock = clock
        self._active: dict[str, Alert] = {}
        self._on_page = on_page
        self.log: list[Page] = []
        self.changes: list[list[Alert]] = []  # each new firing set, to replay to a real pager

    def sync(self, alerts: Iterable[Alert], at: datetime | None = None) -> None:
        """Make these alerts the firing set (as the dispatcher does)."""
        wanted = {a.key: a for a in alerts}
        if wanted.keys() != self._active.keys():
            self.changes.append(list(wanted.values()))
        for key, alert in wanted.items():
            if key not in self._active:
                self.log.append(Page(self._clock.now, key, alert.labels["root_cause"], True))
                self._on_page(alert)
        for key, alert in self._active.items():
            if key not in wanted:
                self.log.append(Page(self._clock.now, key, alert.labels["root_cause"], False))
        self._active = wanted

    def active(self) -> dict[str, Alert]:
        """Return the firing alerts by key."""
        return dict(self._active)


@dataclass
class Fault:
    """One scripted outage: what breaks, the incident keys it must page, when it happens."""

    kind: str
    target: str
    expect: tuple[str, ...]
    start: float = 0.0
    end: float = 0.0
    pages: int = 0  # pages sent from the fault to the end of its settling


@dataclass
class Outcome:
    """What a seed replay saw: faults with their pages, and the property violations."""

    seed: int
    components: int
    faults: list[Fault] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    evaluations: int = 0
    ondemand: int = 0  # on-demand runs granted
    refused: int = 0  # on-demand runs refused for the budget
    changes: list[list[Alert]] = field(default_factory=list)  # the firing sets, in order
    latencies: list[tuple[str, float]] = field(default_factory=list)  # fault kind, to 1st page


HOSPITALS = 2
"""Seeds share this many generated hospitals (loading one takes a second); phases, fault
choices and timings still come from each seed."""


@functools.lru_cache(maxsize=HOSPITALS)
def load_generated(seed: int, hypervisors: int = 20, apps: int = 240) -> LoadedConfig:
    """Load (validated, as the daemon does) the generated hospital of a seed; cached."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vigie.yaml"
        config = generated_hospital(seed, hypervisors=hypervisors, apps=apps)
        path.write_text(json.dumps(config))  # JSON is YAML, and much faster to write
        return load_config(path, default_registry(), env={})


class World:
    """What is really broken, and the results a poll of each check gets from it."""

    def __init__(self, engine: HealthEngine) -> None:
        self.topo = engine.topology
        self.broken: set[str] = set()  # broken by themselves (a dead UPS, a crashed server)
        self.down: set[str] = set()  # really not working, as a poll sees it (after jitter)
        self.on_battery: set[str] = set()
        self.changed_at: dict[str, float] = {}

    def effective(self, broken: set[str]) -> set[str]:
        """Return every component not working when `broken` are broken (topology order)."""
        down: set[str] = set()
        for cid in self.topo.order:
            if cid in broken:
                down.add(cid)
                continue
            for dep in self.topo.deps[cid]:
                members = dependency_members(dep)
                need = dep.need if isinstance(dep, AnyOf) else 1
                if sum(1 for m in members if m not in down) < min(need, len(members)):
                    down.add(cid)
                    break
        return down

    def result(self, cid: str) -> ProbeResult:
        """Return what a poll of the component's check gets now."""
        if cid in self.down:
            return ProbeResult(False, 2.0, error="timeout after 2s")
        if self.topo.components[cid].kind == "ups":
            battery = cid in self.on_battery
            return ProbeResult(
                True,
                0.01,
                (
                    Sample("ups_on_battery", float(battery)),
                    Sample("ups_battery_runtime_seconds", 900.0 if battery else 3600.0),
                ),
            )
        return ProbeResult(True, 0.01)


class Simulation:
    """One seed: a hospital, a world, checks on their grids, the engine and a pager."""

    def __init__(
        self,
        seed: int,
        *,
        ondemand_rate: float = 50.0,
        hospital: int | None = None,
        **shape: int,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed * 7919 + 1)
        loaded = load_generated(seed % HOSPITALS if hospital is None else hospital, **shape)
        self.clock = FakeClock()
        self.registry = CollectorRegistry()
        self.gate = OnDemandGate(
            OnDemandMetrics(self.registry),
            rate=ondemand_rate,
            clock=self.clock,
            logger=QuietLog(),
        )
        self.engine = build_engine(
            loaded.config,
            loaded.plan,
            clock=self.clock,
            logger=QuietLog(),
            run_now=self.run_now if ondemand_rate > 0 else None,
        )
        self.world = World(self.engine)
        self.pager = Pager(self.clock, self._check_fresh)
        self.notifier = IncidentNotifier(self.pager)
        self.outcome = Outcome(seed, len(self.engine.topology.components))
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._dirty = False
        self._next_eval = START
        self.taken: dict[str, float] = {}  # check -> when its last delivered result was taken
        self._inflight: set[str] = set()
        self._wake: set[str] = set()
        self.ancestors = {cid: self._ancestors(cid) for cid in self.engine.topology.components}
        for check in self.engine.checks.values():
            phase = self.rng.uniform(0, check.check.interval)
            self.at(START + phase, functools.partial(self.poll, check.check.id, scheduled=True))

    # --- events ----------------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Schedule an action at a simulated instant."""
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, action))

    def run_until(self, end: float) -> None:
        """Play every event up to `end`, evaluating as the runner does (ticks, coalescing)."""
        while True:
            nxt = self._events[0][0] if self._events else end
            if self._next_eval <= min(nxt, end):
                self.clock.now = self._next_eval
                self.evaluate()
                continue
            if nxt > end:
                break
            when, _, action = heapq.heappop(self._events)
            self.clock.now = when
            action()
        self.clock.now = end

    def evaluate(self) -> None:
        """Evaluate and publish, as HealthRunner.evaluate does; next one per tick or dirt."""
        self._dirty = False
        snapshot = self.engine.evaluate()
        self.outcome.evaluations += 1
        self.notifier.update(snapshot)
        self._next_eval = self.clock.now + TICK

    def poll(self, check_id: str, *, scheduled: bool) -> None:
        """Poll a check now: its result lands after its duration; scheduled polls repeat.

        As the scheduler does, a check runs once at a time: a tick during a run is skipped, an
        on-demand run asked during one starts when it ends.
        """
        check = self.engine.checks[check_id].check
        if scheduled:
            self.at(
                self.clock.now + check.interval,
                functools.partial(self.poll, check_id, scheduled=True),
            )
        if check_id in self._inflight:
            if not scheduled:
                self._wake.add(check_id)
            return
        self._inflight.add(check_id)
        comp = self.engine.check_components[check_id][0]
        result = self.world.result(comp)
        taken = self.clock.now
        delay = check.timeout if not result.success else UP_DELAY
        self.at(taken + delay, lambda: self.deliver(check_id, result, taken))

    def run_now(self, check_id: str, reason: str) -> bool:
        """The scheduler's on-demand seam: the gate decides, a granted run starts now."""
        check = self.engine.checks[check_id].check
        if not self.gate.allow(check_id, check.timeout, reason):
            return False
        self.outcome.ondemand += 1
        self.at(self.clock.now, lambda: self.poll(check_id, scheduled=False))
        return True

    def deliver(self, check_id: str, result: ProbeResult, taken: float) -> None:
        """A result reaches the engine (ResultStore listener)."""
        self._inflight.discard(check_id)
        if check_id in self._wake:
            self._wake.discard(check_id)
            self.at(self.clock.now, functools.partial(self.poll, check_id, scheduled=False))
        self.taken[check_id] = taken
        if self.engine.observe(check_id, result) and not self._dirty:
            self._dirty = True
            self._next_eval = min(self._next_eval, self.clock.now + COALESCE)

    # --- the world changing ----------------------------------------------------------------

    def set_down(self, cid: str, down: bool) -> None:
        """Change what polls of a component see, now."""
        if down == (cid in self.world.down):
            return
        (self.world.down.add if down else self.world.down.discard)(cid)
        self.world.changed_at[cid] = self.clock.now

    def break_(self, broken: Iterable[str], *, jitter: float = 1.0) -> None:
        """Break components now; their dependents follow, each after a random short delay."""
        self._move({*self.world.broken, *broken}, jitter)

    def repair(self, repaired: Iterable[str], *, jitter: float = 3.0) -> None:
        """Repair components now; dependents come back after them (booting), in random order."""
        self._move(self.world.broken - set(repaired), jitter)

    def _move(self, broken: set[str], jitter: float) -> None:
        """Go to a new broken set: each changed component changes after those it needs."""
        before = self.world.effective(self.world.broken)
        self.world.broken = broken
        after = self.world.effective(broken)
        when: dict[str, float] = {}
        for cid in self.engine.topology.order:
            if (cid in before) == (cid in after):
                continue
            deps = [
                when.get(m, 0.0)
                for d in self.engine.topology.deps[cid]
                for m in dependency_members(d)
            ]
            base = max([self.clock.now, *deps])
            when[cid] = base + self.rng.uniform(0.0, jitter)
            self.at(when[cid], functools.partial(self.set_down, cid, cid in after))

    def _ancestors(self, cid: str) -> set[str]:
        """Return every component cid depends on, directly or not."""
        seen: set[str] = set()
        stack = [m for d in self.engine.topology.deps.get(cid, ()) for m in dependency_members(d)]
        while stack:
            member = stack.pop()
            if member not in seen:
                seen.add(member)
                stack.extend(
                    m
                    for d in self.engine.topology.deps.get(member, ())
                    for m in dependency_members(d)
                )
        return seen

    def _check_fresh(self, alert: Alert) -> None:
        """A page must come from results taken after the last change of what it depends on."""
        root = alert.labels.get("component", "")
        if not root:
            return
        changed = max(
            (self.world.changed_at.get(a, 0.0) for a in self.ancestors.get(root, ())),
            default=0.0,
        )
        for check_id in self.engine.component_checks.get(root, ()):
            taken = self.taken.get(check_id, 0.0)
            if taken < changed:
                self.outcome.problems.append(
                    f"t={self.clock.now - START:.1f}s: {alert.key} paged from a result of "
                    f"{check_id} taken at t={taken - START:.1f}s, before a dependency changed "
                    f"at t={changed - START:.1f}s"
                )

    # --- scenarios -------------------------------------------------------------------------

    def faults(self, kinds: Iterable[str] | None = None, first_only: bool = False) -> list[Fault]:
        """Pick this seed's faults: power cuts (a datacenter, a room), a SAN, a switch, two
        server crashes; shuffled.

        `kinds` keeps only those kinds (the quick property test plays one fault a seed).
        """
        topo = self.engine.topology
        rng = self.rng
        dcs = sorted(s for s, spec in topo.sites.items() if not spec.parent)
        rooms = sorted(s for s, spec in topo.sites.items() if spec.parent)
        by_kind: dict[str, list[str]] = {}
        for cid, spec in topo.components.items():
            by_kind.setdefault(spec.kind, []).append(cid)
        dc = rng.choice(dcs)
        san = rng.choice(sorted(by_kind["san_array"]))
        room = rng.choice(rooms)
        servers = rng.sample(sorted(by_kind["server"]), 2)
        power_room = rng.choice(rooms)
        faults = [
            Fault("power", dc, (f"site:{dc}",)),
            Fault("room-power", power_room, (f"site:{power_room}",)),
            Fault("san", san, (f"component:{san}",)),
            Fault("switch", f"sw-{room}", (f"component:sw-{room}",)),
            *(Fault("crash", s, (f"component:{s}",)) for s in servers),
        ]
        rng.shuffle(faults)
        if kinds is not None:
            wanted = set(kinds)
            faults = [f for f in faults if f.kind in wanted]
        return faults[:1] if first_only else faults

    def play(self, fault: Fault) -> None:
        """Run one fault: break, hold, repair, then let everything settle."""
        rng = self.rng
        fault.start = self.clock.now
        if fault.kind in ("power", "room-power"):  # a datacenter's mains, or a room's feed
            ups = sorted(
                c
                for c in self.engine.topology.site_members(fault.target)
                if self.engine.topology.components[c].kind == "ups"
            )
            for cid in ups:  # mains lost: every UPS of the site on battery (one utility feed)
                self._battery(cid, True)
            self.run_until(self.clock.now + rng.uniform(15, 45))  # then the batteries run out
            self.break_(ups, jitter=0.5)
            self.run_until(self.clock.now + rng.uniform(30, 60))
            for cid in ups:  # mains back
                self.world.on_battery.discard(cid)
            self.repair(ups)
        else:
            self.break_([fault.target])
            self.run_until(self.clock.now + rng.uniform(40, 90))  # seen: 2 intervals at least
            # Repaired: what it stopped comes back with it (paused I/O resumes, VMs restart
            # elsewhere), in random order as polls see it; only a power cut's boots take time.
            self.repair([fault.target], jitter=0.0)
        fault.end = self.clock.now
        self.settle()

    def settle(self, longest: float = 240.0) -> None:
        """Run until all is quiet again: world repaired, every check fresh, nothing open."""
        deadline = self.clock.now + longest
        self.run_until(self.clock.now + 30.0)
        while self.clock.now < deadline:
            self.run_until(self.clock.now + 5.0)
            if not self.engine.snapshot.incidents and not self.pager.active():
                changed = max(self.world.changed_at.values(), default=START)
                worst = max(c.check.interval for c in self.engine.checks.values())
                if self.clock.now - changed > worst + GEN_TIMEOUT + TICK:
                    return

    def _battery(self, ups: str, on: bool) -> None:
        (self.world.on_battery.add if on else self.world.on_battery.discard)(ups)
        self.world.changed_at[ups] = self.clock.now

    def replay(self, kinds: Iterable[str] | None = None, first_only: bool = False) -> Outcome:
        """Warm up, play the faults, then judge the pages against the properties."""
        self._next_eval = START + 20  # every check has reported once
        self.run_until(START + 25)
        if self.pager.log:
            self.outcome.problems.append(f"pages while all is well: {self.pager.log}")
        for fault in self.faults(kinds, first_only):
            self.outcome.faults.append(fault)
            first = len(self.pager.log)
            self.play(fault)
            self._judge(fault, self.pager.log[first:])
        self.outcome.pages = self.pager.log
        self.outcome.changes = self.pager.changes
        self.outcome.refused = int(
            self.registry.get_sample_value("vigie_ondemand_refused_total", {"reason": "budget"})
            or 0
        )
        return self.outcome

    def _judge(self, fault: Fault, log: list[Page]) -> None:
        """Exactly one page per expected root cause, nothing else, every page resolved."""
        pages = [p for p in log if p.firing]
        fault.pages = len(pages)
        keys = sorted(p.key.rsplit("/", 1)[0] for p in pages)
        where = f"{fault.kind} {fault.target} at t={fault.start - START:.1f}s"
        if keys != sorted(fault.expect):
            self.outcome.problems.append(
                f"{where}: expected one page each for {list(fault.expect)}, got "
                + ", ".join(f"{p.key} at t={p.at - START:.1f}s" for p in pages)
            )
        # Active confirmation: paged one detection (interval + timeout) and about one timeout
        # of confirmation after the fault, not a second interval (evaluations: 1 s apart).
        if pages and self.gate.rate >= 50:
            worst = max(c.check.interval for c in self.engine.checks.values())
            bound = worst + 2 * GEN_TIMEOUT + 3 * TICK
            late = pages[0].at - fault.start
            if late > bound:
                self.outcome.problems.append(
                    f"{where}: first page {late:.1f}s after the fault, over {bound:g}s"
                )
            self.outcome.latencies.append((fault.kind, late))
        resolved = {p.key for p in log if not p.firing}
        unresolved = [p.key for p in pages if p.key not in resolved]
        still = sorted(self.pager.active())
        if unresolved or still:
            self.outcome.problems.append(
                f"{where}: not resolved after the repair: {sorted({*unresolved, *still})}"
            )


def replay(
    seed: int,
    kinds: Iterable[str] | None = None,
    first_only: bool = False,
    *,
    ondemand_rate: float = 50.0,
    hospital: int | None = None,
    **shape: int,
) -> Outcome:
    """Replay one seed; the outcome lists its problems (empty when every property held).

    hospital: the generated hospital's seed (default: one of HOSPITALS, shared by seeds).
    """
    sim = Simulation(seed, ondemand_rate=ondemand_rate, hospital=hospital, **shape)
    return sim.replay(kinds, first_only)
