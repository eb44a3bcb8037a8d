"""Scheduler: cadence, offsets, limits, timeouts, error capture, reload diffs and draining."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from tests import waiting
from tests.waiting import wait_for
from vigie.core.results import ProbeResult
from vigie.monitor.scheduler import SLOT, Scheduler, SchedulerMetrics, start_offset
from vigie.monitor.store import ResultStore
from vigie.probes import default_registry
from vigie.probes.base import Check, ProbeContext, ProbeRegistry
from vigie.probes.http import HttpProbe, make_session
from vigie.probes.tcp import TcpProbe

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The daemon's shared HTTP session."""
    async with make_session() as s:
        yield s


async def serve(handler: Handler, host: str = "127.0.0.1") -> tuple[asyncio.Server, int]:
    """Start a TCP server on a free port."""
    server = await asyncio.start_server(handler, host, 0)
    return server, server.sockets[0].getsockname()[1]


async def close_quickly(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and close."""
    writer.close()


def tcp_check(
    cid: str, port: int, interval: float, timeout: float, host: str = "127.0.0.1", **settings: Any
) -> Check:
    """Return a tcp Check against host:port."""
    return Check(
        cid,
        "tcp",
        f"{host}:{port}",
        interval,
        timeout,
        TcpProbe.Settings.model_validate(settings),
        host=host,
    )


def make_scheduler(
    session: aiohttp.ClientSession,
    registry: ProbeRegistry | None = None,
    max_concurrency: int = 1024,
    per_host_concurrency: int = 8,
) -> tuple[Scheduler, ResultStore, CollectorRegistry]:
    """Return a scheduler with its store and metrics registry."""
    store = ResultStore()
    own = CollectorRegistry()
    sched = Scheduler(
        registry or default_registry(),
        store,
        session,
        SchedulerMetrics(own),
        max_concurrency=max_concurrency,
        per_host_concurrency=per_host_concurrency,
    )
    return sched, store, own


def arrivals(store: ResultStore) -> dict[str, list[float]]:
    """Record the monotonic arrival time of each result by check id."""
    times: dict[str, list[float]] = defaultdict(list)

    def listener(cid: str, result: ProbeResult | None) -> None:
        if result is not None:
            times[cid].append(time.monotonic())

    store.subscribe(listener)
    return times


def test_start_offset_is_stable_and_spread() -> None:
    """Offsets depend only on the id, stay within the interval and spread evenly."""
    assert start_offset("dpi-web", 30.0) == start_offset("dpi-web", 30.0)
    offsets = [start_offset(f"check-{i}", 10.0) for i in range(2000)]
    assert all(0 <= o < 10.0 for o in offsets)
    buckets = [0] * 10
    for o in offsets:
        buckets[int(o)] += 1
    assert min(buckets) > 140 and max(buckets) < 260, buckets


async def test_hung_target_does_not_delay_other_checks(session: aiohttp.ClientSession) -> None:
    """A blackholed HTTP target times out at 2 s while 100 TCP checks keep a 1 s cadence.

    Each result comes on every tick of its grid, sooner after its due time than the hung
    target's 2 s timeout: a run queued behind the hung one would come that late. (Gaps between
    arrivals, or a tighter bound, measure the CPU's jitter under load, not the hung target.)
    """
    hung: list[asyncio.StreamWriter] = []

    async def blackhole(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)  # accept, read nothing, answer nothing

    good, good_port = await serve(close_quickly)
    bad, bad_port = await serve(blackhole)
    sched, store, _ = make_scheduler(session, per_host_concurrency=200)
    times = arrivals(store)
    plan = {f"c{i}": tcp_check(f"c{i}", good_port, 1.0, 0.5) for i in range(100)}
    plan["hung"] = Check(
        "hung",
        "http",
        f"http://127.0.0.1:{bad_port}/",
        3.0,
        2.0,
        HttpProbe.Settings(),
        host="127.0.0.1",
    )
    sched.apply(plan)
    try:
        await wait_for(
            lambda: all(len(times[f"c{i}"]) >= 4 for i in range(100)) and len(times["hung"]) >= 1,
            "4 rounds of 100 checks",
        )
    finally:
        await sched.stop(0.1)
        good.close()
        bad.close()
        for w in hung:
            w.close()
    result = store.latest("hung")
    assert result is not None and not result.success
    assert result.error == "timeout after 2s"
    assert 1.9 < result.duration < 2.5
    for i in range(100):
        check = plan[f"c{i}"]
        # The grid point each result belongs to: the last due time at or before its arrival.
        grid = [sched.next_due(check, t) for t in times[f"c{i}"]]
        arrived = times[f"c{i}"]
        grid = [g if g <= t else g - check.interval for g, t in zip(grid, arrived, strict=True)]
        late = [
            (k, round(t - g, 3))
            for k, (g, t) in enumerate(zip(grid, arrived, strict=True))
            if t - g >= plan["hung"].timeout
        ]
        assert not late, (i, late)
        ticks = [round(grid[k + 1] - grid[k], 3) for k in range(len(grid) - 1)]
        assert all(abs(t - check.interval) < 1e-6 for t in ticks), (i, ticks)


async def test_ticks_do_not_drift(session: aiohttp.ClientSession) -> None:
    """Runs stay on the grid base + offset + k*interval, with no accumulated delay."""
    server, port = await serve(close_quickly)
    sched, store, _ = make_scheduler(session)
    check = tcp_check("drift", port, 0.1, 0.05)
    times = arrivals(store)
    sched.apply({"drift": check})
    try:
        await wait_for(lambda: len(times["drift"]) >= 15, "15 runs")
    finally:
        await sched.stop(0.1)
        server.close()
    first = times["drift"][0]
    for k, t in enumerate(times["drift"][:15]):
        assert abs((t - first) - k * 0.1) < 0.05, (k, t - first)


class ExplodingProbe:
    """A deliberately broken probe kind (a test double of a buggy probe, not of a peer)."""

    kind: ClassVar[str] = "explode"
    Settings: ClassVar[type[BaseModel]] = TcpProbe.Settings

    def parse_target(self, target: str) -> str:
        """Accept any target."""
        return target

    def host_of(self, target: str) -> str:
        """Use the target as host."""
        return target

    async def __call__(self, check: Check, ctx: ProbeContext) -> ProbeResult:
        """Raise instead of returning a result."""
        raise RuntimeError("probe bug: list index out of range")


class StampProbe:
    """A probe kind that notes when each run starts (a test double of a probe, not of a peer)."""

    kind: ClassVar[str] = "stamp"
    Settings: ClassVar[type[BaseModel]] = TcpProbe.Settings

    def __init__(self) -> None:
        self.starts: dict[str, list[float]] = defaultdict(list)

    def parse_target(self, target: str) -> str:
        """Accept any target."""
        return target

    def host_of(self, target: str) -> str:
        """Use the target as host."""
        return target

    async def __call__(self, check: Check, ctx: ProbeContext) -> ProbeResult:
        """Note the start and succeed."""
        self.starts[check.id].append(time.monotonic())
        return ProbeResult(True)


async def test_checks_due_in_one_slot_start_together(session: aiohttp.ClientSession) -> None:
    """300 checks every 3 s start on at most 3 / SLOT grid points, a slot apart, so the loop
    wakes once a slot rather than once a check; the grid stays spread over the interval and
    the checks of one slot start within a few milliseconds of each other."""
    stamp = StampProbe()
    sched, _, _ = make_scheduler(session, ProbeRegistry([stamp]), per_host_concurrency=1000)
    plan = {
        f"s{i}": Check(f"s{i}", "stamp", f"h{i}", 3.0, 1.0, TcpProbe.Settings(), host=f"h{i}")
        for i in range(300)
    }
    t0 = time.monotonic()
    sched.apply(plan)
    try:
        await wait_for(lambda: len(stamp.starts) == 300, "a first run of every check", 15.0)
    finally:
        await sched.stop(0.1)
    dues = {cid: sched.next_due(check, t0) for cid, check in plan.items()}
    grid = sorted(set(dues.values()))
    assert 3.0 / SLOT * 0.6 <= len(grid) <= 3.0 / SLOT, len(grid)
    for point in grid:
        slots = (point - grid[0]) / SLOT
        assert abs(slots - round(slots)) < 1e-6, slots
    by_point: dict[float, list[float]] = defaultdict(list)
    for cid, due in dues.items():
        by_point[due].append(stamp.starts[cid][0])
    spreads = sorted(max(ts) - min(ts) for ts in by_point.values())
    assert spreads[len(spreads) // 2] < 0.005, spreads  # the median slot: one wake-up
    assert all(min(ts) >= due - 0.001 for due, ts in by_point.items())  # never early


async def test_probe_exception_becomes_failed_result(session: aiohttp.ClientSession) -> None:
    """A probe that raises gives a failed result with the reason; its loop keeps running."""
    registry = ProbeRegistry([ExplodingProbe(), TcpProbe()])
    sched, store, _ = make_scheduler(session, registry)
    times = arrivals(store)
    check = Check("boom", "explode", "x", 0.1, 0.05, TcpProbe.Settings(), host="x")
    sched.apply({"boom": check})
    try:
        await wait_for(lambda: len(times["boom"]) >= 3, "3 runs of the broken probe")
    finally:
        await sched.stop(0.1)
    result = store.latest("boom")
    assert result is not None and not result.success
    assert result.error == "RuntimeError: probe bug: list index out of range"


async def test_per_host_and_global_limits(session: aiohttp.ClientSession) -> None:
    """No more than per_host probes hit one host, nor max_concurrency in all."""
    active: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)

    def handler_for(host: str) -> Handler:
        async def slow_banner(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            active[host] += 1
            active["all"] += 1
            peak[host] = max(peak[host], active[host])
            peak["all"] = max(peak["all"], active["all"])
            await asyncio.sleep(0.2)
            active[host] -= 1
            active["all"] -= 1
            writer.write(b"220 ready\r\n")
            await writer.drain()
            writer.close()

        return slow_banner

    s1, p1 = await serve(handler_for("127.0.0.1"), "127.0.0.1")
    s2, p2 = await serve(handler_for("127.0.0.2"), "127.0.0.2")
    sched, store, _ = make_scheduler(session, max_concurrency=3, per_host_concurrency=2)
    steps = {"query_response": [{"expect": "^220"}]}
    plan = {f"a{i}": tcp_check(f"a{i}", p1, 5.0, 4.0, "127.0.0.1", **steps) for i in range(10)}
    plan |= {f"b{i}": tcp_check(f"b{i}", p2, 5.0, 4.0, "127.0.0.2", **steps) for i in range(10)}
    sched.apply(plan)
    try:
        await wait_for(lambda: len(list(store.check_ids())) == 20, "20 results")
    finally:
        await sched.stop(0.1)
        s1.close()
        s2.close()
    assert all(store.latest(cid).success for cid in plan)  # type: ignore[union-attr]
    assert peak["127.0.0.1"] <= 2 and peak["127.0.0.2"] <= 2
    assert peak["all"] == 3


async def test_reload_keeps_unchanged_drops_removed_starts_new(
    session: aiohttp.ClientSession,
) -> None:
    """Unchanged checks keep their history; removed ones vanish; new and changed ones start."""
    server, port = await serve(close_quickly)
    sched, store, own = make_scheduler(session)
    times = arrivals(store)
    a, b, c = (tcp_check(n, port, 0.2, 0.1) for n in "abc")
    sched.apply({"a": a, "b": b, "c": c})
    try:
        await wait_for(lambda: all(len(times[n]) >= 2 for n in "abc"), "two rounds")
        c2 = tcp_check("c", port, 0.3, 0.1)
        d = tcp_check("d", port, 0.2, 0.1)
        added, removed, changed = sched.apply({"a": a, "c": c2, "d": d})
        assert (added, removed, changed) == (["d"], ["b"], ["c"])
        assert store.latest("b") is None
        kept = len(store.history("a"))
        await wait_for(lambda: len(times["d"]) >= 1, "new check d to run")
        assert len(store.history("a")) >= kept >= 2
        assert own.get_sample_value("vigie_checks", {"kind": "tcp"}) == 3
    finally:
        await sched.stop(0.1)
        server.close()


async def test_first_round_and_own_metrics(session: aiohttp.ClientSession) -> None:
    """first_round_done is set once every check ran; lag and duration are observed."""
    server, port = await serve(close_quickly)
    sched, _, own = make_scheduler(session)
    sched.apply({f"m{i}": tcp_check(f"m{i}", port, 0.5, 0.2) for i in range(5)})
    try:
        assert not sched.first_round_done.is_set()
        await wait_for(sched.first_round_done.is_set, "the first round")
    finally:
        await sched.stop(0.1)
        server.close()
    assert (own.get_sample_value("vigie_scheduler_lag_seconds_count") or 0) >= 5
    assert (own.get_sample_value("vigie_probe_duration_seconds_count", {"kind": "tcp"}) or 0) >= 5
    assert own.get_sample_value("vigie_probes_in_flight") == 0


async def test_stop_drains_in_flight_probe(session: aiohttp.ClientSession) -> None:
    """stop() lets a probe in flight finish and record its result within the drain bound."""
    started = asyncio.Event()

    async def slow(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started.set()
        await asyncio.sleep(0.3)
        writer.write(b"220 ok\r\n")
        await writer.drain()
        writer.close()

    server, port = await serve(slow)
    sched, store, _ = make_scheduler(session)
    check = tcp_check("slow", port, 5.0, 2.0, query_response=[{"expect": "^220"}])
    sched.apply({"slow": check})
    assert sched.trigger("slow")
    try:
        await wait_for(started.is_set, "the slow probe to start")
        t0 = time.monotonic()
        await sched.stop(2.0)
        assert time.monotonic() - t0 < 1.0
        result = store.latest("slow")
        assert result is not None and result.success
    finally:
        server.close()


class HangingWebServer:
    """A real aiohttp server on 127.0.0.1: /hung/* never answers, other paths answer 200 at once.

    It records when each path is hit (monotonic) and the peak of requests open at once.
    """

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = defaultdict(list)
        self.open = 0
        self.peak = 0
        self.healed: set[str] = set()  # /hung/* paths that answer again
        self.release = asyncio.Event()  # set at teardown so parked handlers end
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        """Hang on /hung/* (unless healed), answer 200 elsewhere; count open requests."""
        self.hits[request.path].append(time.monotonic())
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            if request.path.startswith("/hung/") and request.path not in self.healed:
                await self.release.wait()
            return web.Response(text="ok")
        finally:
            self.open -= 1

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Release parked handlers and stop listening."""
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


def http_check(cid: str, port: int, path: str, interval: float, timeout: float) -> Check:
    """Return an http Check of http://127.0.0.1:port/path."""
    url = f"http://127.0.0.1:{port}{path}"
    return Check(cid, "http", url, interval, timeout, HttpProbe.Settings(), host="127.0.0.1")


def lags_after(sched: Scheduler, check: Check, hits: list[float], since: float) -> list[float]:
    """Return, for each hit after `since`, its delay after the check's last grid tick."""
    phase = sched.next_due(check, since)  # a grid tick: the grid is phase + k * interval
    return [(t - phase) % check.interval for t in hits if t >= phase]


async def test_hung_paths_do_not_starve_healthy_checks_of_their_host(
    session: aiohttp.ClientSession,
) -> None:
    """300 hung paths on one web server (default per-host limit 8): once each has timed out, they
    share the slow lane's 2 slots, the 20 healthy paths run within one timeout of every due
    tick, and the server never sees more than 8 requests at once."""
    server = HangingWebServer()
    await server.start()
    interval, timeout = 1.0, 0.4
    plan = {
        f"hung{i}": http_check(f"hung{i}", server.port, f"/hung/{i}", interval, timeout)
        for i in range(300)
    }
    healthy = {
        f"ok{i}": http_check(f"ok{i}", server.port, f"/ok/{i}", interval, timeout)
        for i in range(20)
    }

    def rounds_since(t0: float) -> int:
        """Return the fewest hits any healthy path got since t0."""
        return min(len([t for t in server.hits[f"/ok/{i}"] if t >= t0]) for i in range(20))

    sched, store, own = make_scheduler(session, per_host_concurrency=8)
    sched.apply(plan | healthy)
    try:
        # The first timeout of each hung path costs a normal slot: 300 x 0.4 s / 8 slots = 15 s.
        await waiting.wait_for(
            lambda: len(sched.slow_lane()) == 300, "all 300 hung checks in the slow lane", 90.0
        )
        all_slow = time.monotonic()
        # Every healthy check ran once since: the first round's backlog has drained.
        await waiting.wait_for(lambda: rounds_since(all_slow) >= 1, "a healthy round")
        since = time.monotonic()
        await waiting.wait_for(
            lambda: rounds_since(since + interval) >= 4,
            "4 more rounds of every healthy check",
        )
    finally:
        await sched.stop(0.1)
        await server.stop()
    assert sched.slow_lane() == frozenset(plan)
    assert own.get_sample_value("vigie_checks_slow_lane") == 300
    assert server.peak <= 8, server.peak
    for cid, check in healthy.items():
        hits = server.hits[f"/ok/{cid[2:]}"]
        lags = lags_after(sched, check, hits, since)
        assert len(lags) >= 4, (cid, lags)
        assert max(lags) < timeout, (cid, lags)
        gaps = [b - a for a, b in itertools.pairwise(hits) if a >= since]
        assert max(gaps) < interval + timeout, (cid, gaps)  # no due tick skipped
        latest = store.latest(cid)
        assert latest is not None and latest.success


async def test_check_leaves_slow_lane_after_a_success(session: aiohttp.ClientSession) -> None:
    """A timed-out check enters the slow lane and goes back to the normal lane once it answers."""
    server = HangingWebServer()
    await server.start()
    check = http_check("flaky", server.port, "/hung/flaky", 0.2, 0.1)
    sched, store, own = make_scheduler(session, per_host_concurrency=4)
    sched.apply({"flaky": check})
    try:
        await waiting.wait_for(lambda: "flaky" in sched.slow_lane(), "flaky in the slow lane")
        assert own.get_sample_value("vigie_checks_slow_lane") == 1
        latest = store.latest("flaky")
        assert latest is not None and latest.error == "timeout after 0.1s"
        server.healed.add("/hung/flaky")
        await waiting.wait_for(lambda: not sched.slow_lane(), "flaky back in the normal lane")
    finally:
        await sched.stop(0.1)
        await server.stop()
    latest = store.latest("flaky")
    assert latest is not None and latest.success
    assert own.get_sample_value("vigie_checks_slow_lane") == 0
