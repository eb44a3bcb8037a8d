"""Health benchmark: recompute after a site-wide failure at 5,000 components, and fault to page.

Part 1 drives the health engine API directly (`observe`, `evaluate`) with a hand-moved clock
on a generated hospital group: a micro-benchmark of the engine alone (no scheduler, no
probes). It times the incremental evaluation after each site-wide failure (p99 over many, in
CPU time and wall clock), a full recompute of the same state beside it, and the per-result
cost when a result changes nothing; the garbage collector is set as `vigie run` sets it
(`vigie.monitor.heap.settle`) and its collections during each evaluation are counted
(`gc.callbacks`). Part 2 runs `vigie run` with an http check against an aiohttp server the
bench flips to 500, and a real Alertmanager, and times fault -> alert held there.

The engine part alone: `python -m tests.bench.health` (`--quick` for a smaller group).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml
from aiohttp import web

from tests.bench.common import OUT, ROOT, free_port, log
from tests.health.hospital import generated_hospital
from vigie.core.results import ProbeResult
from vigie.monitor import heap
from vigie.monitor.config import load_config
from vigie.monitor.health.engine import HealthEngine, Snapshot, build_engine
from vigie.monitor.health.states import State
from vigie.probes import default_registry

if TYPE_CHECKING:
    from tests.health.sim import Outcome

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
DATACENTERS = ("nord", "sud", "bellevue", "est")
CHECKS_PER_COMPONENT = 4
SHOWN = 8  # failures listed one by one in the report
RECOMPUTE_GOAL_MS = 50.0
"""Goal for the evaluation after a site-wide failure at 5k components, judged on the p99 of
its CPU time (the wall clock, which adds waiting for a CPU on a loaded host, is reported)."""

UP = ProbeResult(True, 0.01)
DOWN = ProbeResult(False, 1.0, error="timeout after 1s")


@dataclass(frozen=True)
class Shape:
    """Sizes of one datacenter of the generated hospital (tests/health/hospital.py), 2 rooms.

    Each room has an A/B UPS pair, a PDU per UPS and a switch; each datacenter a SAN array.
    """

    hypervisors: int  # per room
    vms_per_host: int
    apps: int  # per datacenter

    @property
    def per_dc(self) -> int:
        """Return the components of one datacenter."""
        hosts = 2 * self.hypervisors
        return 2 * 5 + 1 + hosts + hosts * self.vms_per_host + self.apps


FULL_SHAPE = Shape(hypervisors=50, vms_per_host=3, apps=839)  # 1,250 a DC
QUICK_SHAPE = Shape(hypervisors=10, vms_per_host=3, apps=159)  # 250 a DC


class Clock:
    """A clock the bench moves by hand (the engine takes it as a dependency)."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


def hospital_group(shape: Shape) -> dict[str, Any]:
    """Return the generated hospital (the property test's generator) at the bench's size.

    4 datacenters of 2 rooms, every check every 30 s, several checks per component; one
    application in three has a VM in the next datacenter too (a redundancy group): a
    datacenter lost leaves those running.
    """
    return generated_hospital(
        0,
        datacenters=DATACENTERS,
        hypervisors=shape.hypervisors,
        vms_per_host=shape.vms_per_host,
        apps=shape.apps * len(DATACENTERS),
        checks_per_component=CHECKS_PER_COMPONENT,
        intervals=(30.0,),
    )


@dataclass
class Recompute:
    """One site-wide failure: time to feed its results and to evaluate."""

    site: str
    failed_checks: int
    observe_ms: float
    evaluate_ms: float  # the incremental evaluation (what `vigie run` does), wall clock
    evaluate_cpu_ms: float  # the same, in CPU time of the process (what a busy host hides)
    incidents: int
    site_incident: bool
    impacted: int
    apps_hit: int
    apps_spared: int
    young_gc: int = 0  # collections of the young generations during the evaluation
    full_gc: int = 0  # full (generation 2) collections during the evaluation
    gc_ms: float = 0.0  # CPU time those collections took


class Collections:
    """Counts the garbage collector's passes by generation and their CPU time (`gc.callbacks`)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.ms = [0.0, 0.0, 0.0]
        self.worst_ms = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """Note a collection's start, or count it with its duration when it stops."""
        if phase == "start":
            self._started = time.process_time()
            return
        gen = info["generation"]
        took = (time.process_time() - self._started) * 1000
        self.count[gen] += 1
        self.ms[gen] += took
        self.worst_ms[gen] = max(self.worst_ms[gen], took)

    def snapshot(self) -> tuple[int, int, float]:
        """Return (young collections, full collections, their CPU ms) so far."""
        return self.count[0] + self.count[1], self.count[2], sum(self.ms)

    @contextlib.contextmanager
    def counting(self) -> Iterator[Collections]:
        """Count the collections run inside the block."""
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


@dataclass
class EngineResults:
    """What the engine benchmark measured."""

    components: int = 0
    checks: int = 0
    load_s: float = 0.0
    build_s: float = 0.0
    feed_all_ms: float = 0.0
    first_eval_ms: float = 0.0
    steady_eval_ms: list[float] = field(default_factory=list)
    recovery_eval_ms: list[float] = field(default_factory=list)
    failures: list[Recompute] = field(default_factory=list)
    full_eval_ms: list[float] = field(default_factory=list)  # full recompute, same state
    unchanged_observe_us: float = 0.0  # per result, when it changes nothing
    unchanged_changed: int = 0  # of those results, how many observe said changed something
    unchanged_eval_us: float = 0.0  # evaluate() after them, nothing failing
    unchanged_eval_full_ms: float = 0.0  # a full recompute of that same state
    settle_ms: float = 0.0  # heap.settle() once built: one collection, then gc.freeze()
    frozen: int = 0  # objects gc.freeze() moved out of later collections
    load_start: float = 0.0  # the host's 1-minute load average before the failures
    load: float = 0.0  # the same at the end (other work on it)
    gc_count: list[int] = field(default_factory=lambda: [0, 0, 0])  # over the failures part
    gc_worst_ms: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


def _timed_ms(func: Any, *args: Any) -> tuple[Any, float]:
    """Return func(*args) and the milliseconds it took."""
    t0 = time.perf_counter()
    value = func(*args)
    return value, (time.perf_counter() - t0) * 1000


def _feed(engine: HealthEngine, check_ids: list[str], result: ProbeResult) -> None:
    """Give each check the same result."""
    for check_id in check_ids:
        engine.observe(check_id, result)


def _dc_checks(engine: HealthEngine, dc: str) -> list[str]:
    """Return the checks that fail when a datacenter loses power.

    Every component there fails, except applications with a redundancy group: their service
    address answers from the other datacenter, so their own checks still pass.
    """
    topology = engine.topology
    return [
        check_id
        for cid in topology.members.get(dc, ())
        if not (
            topology.components[cid].kind == "application"
            and any(not isinstance(d, str) for d in topology.components[cid].depends_on)
        )
        for check_id in engine.component_checks.get(cid, ())
    ]


def run_engine(shape: Shape, workdir: Path, failures: int) -> EngineResults:
    """Build the engine on the generated topology and time site-wide failures, DC by DC."""
    res = EngineResults()
    config = workdir / "hospital-group.yaml"
    config.write_text(yaml.safe_dump(hospital_group(shape), allow_unicode=True, sort_keys=False))
    t0 = time.perf_counter()
    loaded = load_config(config, default_registry(), env={})
    res.load_s = time.perf_counter() - t0
    clock = Clock()
    t0 = time.perf_counter()
    engine = build_engine(loaded.config, loaded.plan, clock=clock)
    res.build_s = time.perf_counter() - t0
    # As `vigie run` does once started: one collection, then the long-lived config and
    # topology leave the collector's scans, and young collections are rarer.
    threshold = gc.get_threshold()
    cpu = time.process_time()
    heap.settle()
    res.settle_ms = (time.process_time() - cpu) * 1000
    res.frozen = gc.get_freeze_count()
    collections = Collections()
    try:
        with collections.counting():
            _run_failures(engine, clock, res, failures, collections)
    finally:
        gc.unfreeze()  # the benchmarks after this one run with Python's own settings
        gc.set_threshold(*threshold)
    res.gc_count, res.gc_worst_ms = collections.count, collections.worst_ms
    return res


def _run_failures(
    engine: HealthEngine, clock: Clock, res: EngineResults, failures: int, gcs: Collections
) -> None:
    """Time the steady, failure and recovery recomputes of each datacenter in turn."""
    res.load_start = os.getloadavg()[0]
    res.components = len(engine.topology.components)
    res.checks = len(engine.checks)
    every = list(engine.checks)
    _, res.feed_all_ms = _timed_ms(_feed, engine, every, UP)
    snap, res.first_eval_ms = _timed_ms(engine.evaluate)
    assert not snap.incidents, "all checks up: no incident expected"
    _unchanged(engine, clock, res, every)
    apps = [c for c, s in engine.topology.components.items() if s.kind == "application"]
    for n in range(failures):
        dc = DATACENTERS[n % len(DATACENTERS)]
        clock.now += 900.0  # past the flapping window and any hold from the previous DC
        _feed(engine, every, UP)
        _, steady = _timed_ms(engine.evaluate)
        res.steady_eval_ms.append(steady)
        failing = _dc_checks(engine, dc)
        clock.now += 1.0
        _, observe_ms = _timed_ms(_feed, engine, failing, DOWN)
        young, full, gc_ms = gcs.snapshot()
        cpu = time.process_time()
        snap, evaluate_ms = _timed_ms(engine.evaluate)
        cpu_ms = (time.process_time() - cpu) * 1000
        mine = [a for a in apps if engine.topology.dc[a] == dc]
        res.failures.append(
            _recompute(dc, len(failing), (observe_ms, evaluate_ms, cpu_ms), snap, mine)
        )
        after = gcs.snapshot()
        res.failures[-1].young_gc = after[0] - young
        res.failures[-1].full_gc = after[1] - full
        res.failures[-1].gc_ms = after[2] - gc_ms
        full, full_ms = _timed_ms(lambda: engine.evaluate(full=True))
        assert full.components == snap.components and full.incidents == snap.incidents
        res.full_eval_ms.append(full_ms)
        clock.now += 30.0
        _feed(engine, every, UP)
        _, recovery = _timed_ms(engine.evaluate)
        res.recovery_eval_ms.append(recovery)
    res.load = os.getloadavg()[0]


def _unchanged(engine: HealthEngine, clock: Clock, res: EngineResults, every: list[str]) -> None:
    """Time results that change nothing (every check passing again), then the evaluation."""
    clock.now += 1.0
    t0 = time.perf_counter()
    changed = sum(engine.observe(check_id, UP) for check_id in every)
    res.unchanged_observe_us = (time.perf_counter() - t0) * 1e6 / len(every)
    res.unchanged_changed = changed
    t0 = time.perf_counter()
    for _ in range(100):
        engine.evaluate()
    res.unchanged_eval_us = (time.perf_counter() - t0) * 1e6 / 100
    _, res.unchanged_eval_full_ms = _timed_ms(lambda: engine.evaluate(full=True))


def _p99(values: list[float]) -> float:
    """Return the 99th percentile (nearest rank; the worst below 100 values)."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(0.99 * len(ranked)) - 1)] if ranked else math.nan


def _recompute(
    dc: str, failed: int, times: tuple[float, float, float], snap: Snapshot, apps: list[str]
) -> Recompute:
    """Summarise one failure's snapshot; times are (observe, evaluate, evaluate CPU)
    milliseconds; apps are the datacenter's applications."""
    observe_ms, evaluate_ms, evaluate_cpu_ms = times
    site_incident = any(i.site_wide and i.site == dc for i in snap.incidents.values())
    hit = [a for a in apps if snap.components[a].state.failing]
    impacted = sum(1 for c in snap.components.values() if c.state is State.IMPACTED)
    return Recompute(
        dc,
        failed,
        observe_ms,
        evaluate_ms,
        evaluate_cpu_ms,
        len(snap.incidents),
        site_incident,
        impacted,
        len(hit),
        len(apps) - len(hit),
    )


# --------------------------------------------------------------------------- end to end


class Flip:
    """An aiohttp server answering 200, or 500 once flipped: the application that breaks."""

    def __init__(self) -> None:
        self.status = 200
        self.url = ""

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Flip]:
        """Serve on a free loopback port for the duration of the block."""

        async def handle(_: web.Request) -> web.Response:
            return web.Response(status=self.status, text="ok\n" if self.status == 200 else "ko\n")

        app = web.Application()
        app.router.add_get("/health", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/health"
        try:
            yield self
        finally:
            await runner.cleanup()


@dataclass
class E2eParams:
    """Timing of the end-to-end run."""

    interval: float
    timeout: float
    runs: int


@dataclass
class E2eResults:
    """Fault to alert latencies."""

    params: E2eParams
    fire_s: list[float] = field(default_factory=list)
    resolve_s: list[float] = field(default_factory=list)
    alertmanager: str = ""

    @property
    def goal_s(self) -> float:
        """Return the goal: check interval + rule `for` (0: the built-in rule) + 1 s."""
        return self.params.interval + 0.0 + 1.0


def e2e_config(path: Path, p: E2eParams, target: str, am_url: str, web_port: int) -> None:
    """Write the daemon config: one application with one http check, alerting to am_url."""
    config = {
        "state_dir": str(path.parent / "state"),
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "defaults": {"interval": f"{p.interval:g}s", "timeout": f"{p.timeout:g}s"},
        "health": {"resolve_hold": 0, "flapping": {"changes": 1000}},
        "sites": [{"id": "nord", "name": "Datacenter Nord"}],
        "components": [
            {
                "id": "dpi",
                "kind": "application",
                "site": "nord",
                "name": "Dossier patient",
                "criticality": 1,
                "checks": ["dpi-web"],
            }
        ],
        "checks": [{"id": "dpi-web", "kind": "http", "target": target}],
        "alerting": {
            "alertmanagers": [am_url],
            "resend_interval": "1m",
            "backoff_initial": "100ms",
            "backoff_max": "1s",
            "vigie_instance": "bench",
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time as Go writes it (up to 9 fractional digits, `Z`)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


async def _active(session: aiohttp.ClientSession, am_url: str) -> bool:
    """Return whether Alertmanager holds an active, unexpired VigieIncident for dpi."""
    async with session.get(f"{am_url}/api/v2/alerts") as resp:
        alerts: list[dict[str, Any]] = await resp.json()
    now = datetime.now().astimezone()
    for alert in alerts:
        if alert["labels"].get("alertname") != "VigieIncident":
            continue
        ends = _parse_time(alert["endsAt"])
        if alert["status"]["state"] == "active" and ends > now:
            return True
    return False


async def _until(session: aiohttp.ClientSession, am_url: str, want: bool, limit: float) -> float:
    """Poll Alertmanager every 20 ms until the alert is (not) active; return seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if await _active(session, am_url) is want:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise TimeoutError(f"alert {'active' if want else 'resolved'} not seen within {limit:g}s")


async def _wait_ready(
    session: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process, limit: float
) -> None:
    """Wait until url answers 200 (or fail if the process died)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"{url}: the daemon exited with {proc.returncode}: see its log")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} not ready within {limit:g}s")


async def run_e2e(p: E2eParams, workdir: Path) -> E2eResults:
    """Start Alertmanager, the app and the daemon; flip the app p.runs times."""
    from tests.alerting.conftest import Alertmanager  # the alerting tests' helper

    res = E2eResults(p)
    am = Alertmanager(ALERTMANAGER, workdir / "am", "http://127.0.0.1:9/unused", ["alertname"])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await am.start(session)
        try:
            async with Flip().serving() as app:
                web_port = free_port()
                config = workdir / "vigie.yaml"
                e2e_config(config, p, app.url, am.url, web_port)
                cmd = [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)]
                with (OUT / "e2e-daemon.log").open("wb") as out:
                    proc = await asyncio.create_subprocess_exec(
                        *cmd, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT
                    )
                try:
                    await _wait_ready(session, f"http://127.0.0.1:{web_port}/-/ready", proc, 60)
                    await asyncio.sleep(p.interval)  # a health evaluation with everything OK
                    limit = 3 * p.interval + 10
                    for run in range(p.runs):
                        # Flip at a varying phase of the check's grid, as faults come.
                        await asyncio.sleep(p.interval * ((run * 0.37) % 1.0))
                        app.status = 500
                        res.fire_s.append(await _until(session, am.url, True, limit))
                        app.status = 200
                        res.resolve_s.append(await _until(session, am.url, False, limit))
                        log(
                            f"e2e run {run + 1}/{p.runs}: alert at Alertmanager after"
                            f" {res.fire_s[-1]:.2f}s, resolved after {res.resolve_s[-1]:.2f}s"
                        )
                finally:
                    await _stop(proc)
        finally:
            await am.stop()
    res.alertmanager = _am_version()
    return res


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Stop the daemon: SIGTERM, then SIGKILL after 15 s."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(15):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _am_version() -> str:
    """Return the Alertmanager version line."""
    done = subprocess.run(
        [ALERTMANAGER, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    first = (done.stdout or done.stderr).splitlines()
    return first[0].removeprefix("alertmanager, ") if first else "?"


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class HealthParams:
    """Sizes of the health benchmark."""

    shape: Shape
    failures: int
    e2e: E2eParams


FULL = HealthParams(FULL_SHAPE, 100, E2eParams(interval=2.0, timeout=1.0, runs=5))
QUICK = HealthParams(QUICK_SHAPE, 4, E2eParams(interval=2.0, timeout=1.0, runs=2))


def _ms(values: list[float]) -> str:
    """Return `median (min-max)` of millisecond values."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def _pct(values: list[float]) -> str:
    """Return `median / p99 / worst` of millisecond values."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):.1f} / {_p99(values):.1f} / {max(values):.1f}"


ENGINE_COMMAND = "python -m tests.bench.health"
"""The engine part alone (`python -m tests.bench.run --only health` runs it with part 2)."""


def engine_goals(engine: EngineResults) -> list[str]:
    """Return the goal rows the engine part measures (a Markdown table's rows)."""
    cpu = [f.evaluate_cpu_ms for f in engine.failures]
    wall = [f.evaluate_ms for f in engine.failures]
    p99 = _p99(cpu)
    ok = p99 < RECOMPUTE_GOAL_MS
    return [
        f"| Recompute states and incidents after a site-wide failure, {engine.components}"
        f" components / {engine.checks} checks, p99 of CPU time < {RECOMPUTE_GOAL_MS:g} ms"
        f" (micro-benchmark of the engine) | CPU time p99 {p99:.1f} ms, worst"
        f" {max(cpu, default=math.nan):.1f} ms ({len(cpu)} failures); wall clock p99"
        f" {_p99(wall):.1f} ms, worst {max(wall, default=math.nan):.1f} ms (load average"
        f" {engine.load_start:.1f} to {engine.load:.1f}); before it, `observe` of the"
        " failing results (each works out its check's new state) p99"
        f" {_p99([f.observe_ms for f in engine.failures]):.1f} ms |"
        f" {'yes' if ok else '**no**'} |",
        f"| Health cost of a result that changes nothing: O(1), no evaluation asked"
        f" (micro-benchmark) | {engine.unchanged_observe_us:.1f} µs per result,"
        f" {engine.unchanged_changed} of {engine.checks} asked for an evaluation;"
        f" `evaluate()` then {engine.unchanged_eval_us:.1f} µs |"
        f" {'yes' if engine.unchanged_changed == 0 else '**no**'} |",
    ]


def engine_section(engine: EngineResults) -> list[str]:
    """Return the engine part's Markdown: setup, figures, and the failures one by one."""
    times = [f.evaluate_ms for f in engine.failures]
    cpu = [f.evaluate_cpu_ms for f in engine.failures]
    in_eval = [f for f in engine.failures if f.full_gc]
    young_in_eval = sum(f.young_gc for f in engine.failures)
    lines = [
        "### Recompute after a site-wide failure (micro-benchmark of the engine)",
        "",
        f"`{ENGINE_COMMAND}`, on this {os.cpu_count()}-CPU host with a load average of"
        f" {engine.load_start:.1f} before the failures and {engine.load:.1f} after (other"
        " work on it). A generated group of"
        f" {len(DATACENTERS)} datacenters of 2 rooms"
        f" (`tests/health/hospital.py`, the property test's generator): {engine.components}"
        " components (A/B UPS pairs and PDUs, switches, SAN arrays, hypervisors, VMs,"
        " applications; one application in three has a VM in the next datacenter as a"
        f" redundancy group) and {engine.checks} checks"
        f" ({CHECKS_PER_COMPONENT} per component). The health engine is driven through its"
        " API (`HealthEngine.observe`, `HealthEngine.evaluate`) with a hand-moved clock: no"
        " scheduler, no probes, no web server. A"
        " site-wide failure: every check of every component of one datacenter fails at once"
        " (power lost), except applications with a redundancy group, whose service answers"
        " from the other datacenter; each datacenter in turn, after all recovered.",
        "",
        "| Figure | Value |",
        "| --- | ---: |",
        f"| Config load (`load_config`, YAML + validation) | {engine.load_s:.2f} s |",
        f"| `build_engine` (topology, indexes, rules on checks) | {engine.build_s * 1000:.0f} ms |",
        f"| `heap.settle()` once built, as `vigie run` (one collection, then `gc.freeze()`"
        f" of {engine.frozen:,} objects) | {engine.settle_ms:.0f} ms |",
        f"| First results of every check (`observe` x {engine.checks}) |"
        f" {engine.feed_all_ms:.1f} ms |",
        f"| First `evaluate()` (all OK) | {engine.first_eval_ms:.1f} ms |",
        f"| `evaluate()` with everything OK, median (min-max) | {_ms(engine.steady_eval_ms)} ms |",
        f"| `evaluate()` after the recovery, median (min-max) | {_ms(engine.recovery_eval_ms)}"
        " ms |",
        f"| `observe()` of a result that changes nothing, per result |"
        f" {engine.unchanged_observe_us:.1f} µs |",
        f"| `evaluate()` when no result changed anything, nothing failing |"
        f" {engine.unchanged_eval_us:.1f} µs |",
        f"| Full recompute of that same state (`evaluate(full=True)`, reload's path) |"
        f" {engine.unchanged_eval_full_ms:.1f} ms |",
        f"| Incremental `evaluate()` after a site-wide failure, CPU time, median / p99 / worst"
        f" | {_pct(cpu)} ms |",
        f"| The same, wall clock (adds waiting for a CPU), median / p99 / worst |"
        f" {_pct(times)} ms |",
        f"| Full recompute of the same failure (`evaluate(full=True)`), wall clock, median /"
        f" p99 / worst | {_pct(engine.full_eval_ms)} ms |",
        f"| Garbage collections during the {len(engine.failures)} failures' part (young /"
        f" middle / full), worst CPU ms each | {engine.gc_count[0]} / {engine.gc_count[1]} /"
        f" {engine.gc_count[2]}; {engine.gc_worst_ms[0]:.1f} / {engine.gc_worst_ms[1]:.1f} /"
        f" {engine.gc_worst_ms[2]:.1f} ms |",
        f"| ... of which inside an incremental `evaluate()` after a failure: young and middle"
        f" / full | {young_in_eval} / {len(in_eval)} |",
        "",
        "| Datacenter | Failing checks | `observe` of their results | `evaluate()` wall (CPU) |"
        " Collections during it (young / full, CPU ms) | Incidents | Site incident |"
        " IMPACTED components | Applications hit / spared |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for f in engine.failures[:SHOWN]:
        lines.append(
            f"| {f.site} | {f.failed_checks} | {f.observe_ms:.1f} ms |"
            f" **{f.evaluate_ms:.1f} ms** ({f.evaluate_cpu_ms:.1f} ms)"
            f" | {f.young_gc} / {f.full_gc} ({f.gc_ms:.1f} ms) | {f.incidents} |"
            f" {'yes' if f.site_incident else 'no'} | {f.impacted} |"
            f" {f.apps_hit} / {f.apps_spared} |"
        )
    if len(engine.failures) > SHOWN:
        lines.append(
            f"| ... {len(engine.failures) - SHOWN} more, in the p99 above | | | | | | | | |"
        )
    lines += [
        "",
        "`evaluate()` is incremental: it recomputes the components whose results or timers"
        " changed and what depends on them, then the incidents from indexes kept up to date"
        " (roots, what each impacts, what fails at each site); a result that changes no rule"
        " outcome or timer marks nothing; one that does works out its check's state there"
        " (`observe`, as results arrive), so the evaluation reads each check's state and"
        " combines them. Reasons are kept as facts and written as sentences"
        " only when a page or an alert reads them. `evaluate(full=True)` recomputes"
        " everything, as after a reload, and must give the same snapshot (the bench checks"
        " it after each failure, the tests after every step of random sequences). A"
        " collection of Python's garbage collector landing in an evaluation adds the time"
        " to scan the objects it covers (a full one: every object not frozen), hence the"
        " column. As in `vigie run`, `vigie.monitor.heap.settle()` runs once the engine is"
        " built: one collection, `gc.freeze()` (the long-lived config and topology are not"
        " scanned again), young collections every"
        f" {heap.YOUNG_THRESHOLD:,} net allocations instead of 700. CPU time is the"
        " process's; the wall clock includes waiting for a CPU on a loaded host.",
        "",
    ]
    return lines


def render(engine: EngineResults, e2e: E2eResults | None) -> str:
    """Return the Markdown section of the health benchmark."""
    lines = [
        "## Health model",
        "",
        "| Goal | Measured | Met |",
        "| --- | --- | --- |",
        *engine_goals(engine),
    ]
    if e2e is not None and e2e.fire_s:
        worst_e2e = max(e2e.fire_s)
        lines.append(
            f"| Fault to alert held by Alertmanager ≤ interval + `for` + 1 s ="
            f" {e2e.goal_s:g} s | worst {worst_e2e:.2f} s of {len(e2e.fire_s)} |"
            f" {'yes' if worst_e2e <= e2e.goal_s else '**no**'} |"
        )
    lines += ["", *engine_section(engine)]
    if e2e is not None:
        p = e2e.params
        lines += [
            "### From fault to Alertmanager",
            "",
            f"`vigie run` as a subprocess with one application fed by one http check"
            f" (interval {p.interval:g} s, timeout {p.timeout:g} s) against an aiohttp server"
            " in the bench, and alerting to a real Alertmanager"
            f" ({e2e.alertmanager}, Debian) on a free port. The rule is the built-in"
            " `probe_success == 0` (`for`: 0). The bench flips the server to 500 at varying"
            " phases of the check's grid and polls `GET /api/v2/alerts` every 20 ms until it"
            " holds an active `VigieIncident`; then flips back and waits for the alert to"
            " resolve (`health.resolve_hold: 0`).",
            "",
            "| Run | Fault → alert active at Alertmanager | Recovery → alert resolved |",
            "| ---: | ---: | ---: |",
        ]
        for i, (fire, resolve) in enumerate(zip(e2e.fire_s, e2e.resolve_s, strict=False), 1):
            lines.append(f"| {i} | {fire:.2f} s | {resolve:.2f} s |")
        if e2e.fire_s:
            lines.append(
                f"| median | {statistics.median(e2e.fire_s):.2f} s |"
                f" {statistics.median(e2e.resolve_s):.2f} s |"
            )
        lines += [
            "",
            f"Goal: at most interval + `for` + 1 s = {e2e.goal_s:g} s. The latency is at most"
            " one interval (the next run of the check) plus the probe's own failure time, the"
            " health runner's coalescing (0.2 s), the outbox write and the POST.",
            "",
        ]
    return "\n".join(lines) + "\n"


def run(quick: bool) -> str:
    """Run the health benchmark and return its Markdown section."""
    p = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="vigie-bench-health-") as tmp:
        workdir = Path(tmp)
        log(f"health: engine with {p.shape.per_dc * len(DATACENTERS)} components")
        engine = run_engine(p.shape, workdir, p.failures)
        _log_failures(engine)
        log("health: end to end, fault to Alertmanager")
        e2e = asyncio.run(run_e2e(p.e2e, workdir))
    return render(engine, e2e)


def _log_failures(engine: EngineResults) -> None:
    """Log each failure's evaluation, CPU time first."""
    log(
        "health: site-wide failure evaluate() CPU (wall) "
        + ", ".join(
            f"{f.site} {f.evaluate_cpu_ms:.1f} ({f.evaluate_ms:.1f}) ms" for f in engine.failures
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Run the engine part alone and print its Markdown (`python -m tests.bench.health`)."""
    import argparse

    from vigie.monitor.logs import configure_logging

    parser = argparse.ArgumentParser(prog=ENGINE_COMMAND, description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a group of 1,000 components")
    args = parser.parse_args(argv)
    configure_logging("warning", stream=sys.stderr)  # as tests.bench.run: state changes unlogged
    p = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="vigie-bench-health-") as tmp:
        log(f"health: engine with {p.shape.per_dc * len(DATACENTERS)} components")
        engine = run_engine(p.shape, Path(tmp), p.failures)
    _log_failures(engine)
    table = ["| Goal | Measured | Met |", "| --- | --- | --- |", *engine_goals(engine)]
    print("\n".join(["## Health engine", "", *table, "", *engine_section(engine)]))
    return 0


# --------------------------------------------------------------------------- property replay

PROPERTY_SEEDS_FULL = 200
PROPERTY_SEEDS_QUICK = 10


def _replay_seed(seed: int) -> Outcome:
    """Replay one seed on a generated hospital of its own (a worker process's task)."""
    from tests.health.sim import replay  # the test package's replay: one harness, two uses

    return replay(seed, hospital=seed)


def run_property(quick: bool) -> str:
    """Replay the property test's faults on many seeds (tests/health/sim.py); a Markdown section.

    Each seed plays every fault (power cuts of a datacenter and of a room, SAN, switch, two
    server crashes) in random order on a generated hospital (tests/health/hospital.py: the one
    generator); a seed fails when any page is not one per root cause, a resolve is missing, a
    page came from a stale result, or a fault paged later than interval + 2 timeouts.
    """
    seeds = PROPERTY_SEEDS_QUICK if quick else PROPERTY_SEEDS_FULL
    pages: dict[str, list[int]] = {}
    failed: list[tuple[int, str]] = []
    ondemand: list[int] = []
    latency: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    components = 0
    # Each seed is independent and timed on its fake clock: the seeds share the host's CPUs.
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        outcomes = list(pool.map(_replay_seed, range(seeds), chunksize=4))
    for seed, outcome in enumerate(outcomes):
        components = outcome.components
        ondemand.append(outcome.ondemand)
        for fault in outcome.faults:
            pages.setdefault(fault.kind, []).append(fault.pages)
        for kind, seconds in outcome.latencies:
            latency.setdefault(kind, []).append(seconds)
        if outcome.problems:
            failed.append((seed, outcome.problems[0]))
            log(f"health property: seed {seed} FAILED: {outcome.problems[0]}")
    took = time.perf_counter() - t0
    lines = [
        "## Health: one page per root cause, generated hospitals",
        "",
        f"{seeds} seeds, each its own generated hospital of {components} components replaying a"
        " datacenter's and a room's power cut, a SAN failure, a switch failure and two server"
        " crashes with their repairs, in random order and poll phases, at the engine level on"
        " a fake clock"
        f" (`tests/health/sim.py`); {took:.0f} s in all, seeds shared by"
        f" {os.cpu_count() or 1} processes. Checks every 5, 10 or 15 s, timeout"
        " 2 s; fault to page is to Vigie's decision (Alertmanager's group_wait comes on top).",
        "",
        "| Fault | Replays | Pages per fault (min / max) | Fault to page, p50 / max |",
        "|---|---|---|---|",
    ]
    for kind, counts in sorted(pages.items()):
        waits = sorted(latency.get(kind, [0.0]))
        lines.append(
            f"| {kind} | {len(counts)} | {min(counts)} / {max(counts)} |"
            f" {statistics.median(waits):.1f} s / {waits[-1]:.1f} s |"
        )
    lines += [
        "",
        f"On-demand runs per seed: median {statistics.median(ondemand):.0f}, max {max(ondemand)}.",
        "",
        f"**Seeds failing a property: {len(failed)} of {seeds}.**"
        + "".join(f"\n- seed {s}: {why}" for s, why in failed[:10]),
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
