"""Hung host benchmark: 30% of one web server's paths hang; how late do its healthy checks run?

`python -m tests.bench.run --only hung` runs it; `python -m tests.bench.hung serve --port P
--hung N` is its target server (a child process, so the daemon's loop measures only itself).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

import vigie.monitor.scheduler as scheduler_module
from tests.bench.common import free_port, log, stop_process, wait_port
from vigie.monitor.logs import configure_logging
from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
from vigie.monitor.store import ResultStore
from vigie.probes import default_registry
from vigie.probes.base import Check
from vigie.probes.http import HttpProbe, make_session

PER_HOST = 8  # the default per-host limit (config.scheduler.per_host_concurrency)


def serve(port: int, hung: int) -> None:
    """Serve /p/<i> on 127.0.0.1: i < hung never answers, the others answer 200 at once.

    GET /-/hits returns the monotonic arrival times of the answered paths (CLOCK_MONOTONIC is
    system-wide on Linux, so the benchmark compares them with its own clock).
    """
    hits: dict[str, list[float]] = defaultdict(list)

    async def handle(request: web.Request) -> web.Response:
        index = int(request.match_info["i"])
        if index < hung:
            await asyncio.sleep(3600)  # cancelled when the prober gives up (handler_cancellation)
        hits[request.match_info["i"]].append(time.monotonic())
        return web.Response(text="status: OK\n")

    async def dump(_: web.Request) -> web.Response:
        return web.json_response(hits)

    app = web.Application()
    app.router.add_get("/p/{i}", handle)
    app.router.add_get("/-/hits", dump)
    web.run_app(
        app, host="127.0.0.1", port=port, handler_cancellation=True, print=None, access_log=None
    )


@contextmanager
def _server(port: int, hung: int) -> Iterator[None]:
    """Run the target server in a child process until the block ends."""
    cmd = [sys.executable, "-m", "tests.bench.hung", "serve", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--hung", str(hung)], stdout=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, 20)
        yield
    finally:
        stop_process(proc)


@dataclass
class HungResult:
    """One run: the healthy checks' lag per due tick over the measured window."""

    lanes: str
    paths: int
    hung: int
    interval: float
    timeout: float
    warmup: float  # seconds until every hung path had timed out once (or the bound)
    ticks: int
    lags: list[float]
    slow_lane: int

    def quantile(self, q: float) -> float:
        """Return the q quantile of the lags (nearest rank)."""
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def tick_lags(hits: list[float], ticks: list[float]) -> list[float]:
    """Return, for each due tick, the delay until the first hit at or after it."""
    lags = []
    for due in ticks:
        later = [t for t in hits if t >= due]
        lags.append((min(later) if later else float("inf")) - due)
    return lags


@dataclass(frozen=True)
class Workload:
    """One host's checks: `paths` paths, 30% of them hung, checked every interval."""

    paths: int
    interval: float
    probe_timeout: float
    window: float
    hung_percent: int = 30

    @property
    def hung(self) -> int:
        """Return how many paths hang: the first hung_percent of them."""
        return self.paths * self.hung_percent // 100


async def _measure(port: int, w: Workload, lanes: bool) -> HungResult:
    """Run the checks of one host under the scheduler; return the healthy checks' lags."""
    paths, hung, interval, timeout, window = w.paths, w.hung, w.interval, w.probe_timeout, w.window
    checks = {
        f"p{i}": Check(
            f"p{i}",
            "http",
            f"http://127.0.0.1:{port}/p/{i}",
            interval,
            timeout,
            HttpProbe.Settings(),
            host="127.0.0.1",
        )
        for i in range(paths)
    }
    async with make_session() as session:
        sched = Scheduler(
            default_registry(),
            ResultStore(),
            session,
            SchedulerMetrics(CollectorRegistry()),
            per_host_concurrency=PER_HOST,
        )
        sched.apply(checks)
        started = time.monotonic()
        bound = started + hung * timeout / PER_HOST * 1.5 + interval
        while len(sched.slow_lane()) < hung and time.monotonic() < bound:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # a benchmark's progress poll, bounded
        warmup = time.monotonic() - started
        # One more interval lets the first round's backlog drain (every check's first run
        # queued behind the hung paths' first timeouts): the window measures the steady state.
        await asyncio.sleep(interval)
        since = time.monotonic()
        await asyncio.sleep(window + interval + timeout)  # the window, then its last ticks' runs
        slow = len(sched.slow_lane())
        async with (
            aiohttp.ClientSession() as plain,
            plain.get(f"http://127.0.0.1:{port}/-/hits") as resp,
        ):
            hits: dict[str, list[float]] = await resp.json()
        await sched.stop(0.1)
    lags: list[float] = []
    ticks = 0
    for i in range(hung, paths):
        first = sched.next_due(checks[f"p{i}"], since)
        due = [first + k * interval for k in range(int(window / interval))]
        ticks += len(due)
        lags += tick_lags(hits.get(str(i), []), due)
    return HungResult(
        ("two (slow lane)" if lanes else "one (before)") if hung else "control (none hung)",
        paths,
        hung,
        interval,
        timeout,
        warmup,
        ticks,
        lags,
        slow,
    )


def bench(w: Workload, lanes: bool) -> HungResult:
    """Start the target with 30% of its paths hung and measure one scheduler run against it."""
    port = free_port()
    original = scheduler_module.slow_lane_slots
    if not lanes:  # one FIFO per host, as before the slow lane: hung checks queue with the rest
        scheduler_module.slow_lane_slots = lambda per_host: 1 << 30
    try:
        with _server(port, w.hung):
            return asyncio.run(_measure(port, w, lanes))
    finally:
        scheduler_module.slow_lane_slots = original


def _secs(value: float) -> str:
    """Format a lag in seconds; a tick never followed by a run is 'not run'."""
    return "not run" if math.isinf(value) else f"{value:.3f}"


def run(quick: bool) -> str:
    """Run the workload with the slow lane and without; return the Markdown section."""
    w = Workload(200, 5.0, 1.0, 15.0) if quick else Workload(1000, 20.0, 1.0, 40.0)
    paths, interval, timeout, window = w.paths, w.interval, w.probe_timeout, w.window
    results = []
    for lanes, load in ((True, w), (False, w), (True, replace(w, hung_percent=0))):
        log(f"hung: {paths} paths of one host, {load.hung} hung, lanes={lanes}")
        results.append(bench(load, lanes))
    lines = [
        "## Hung host",
        "",
        f"One web server (an aiohttp server in a child process) with {paths} checked paths, "
        f"30% of which never answer; interval {interval:g} s, timeout {timeout:g} s, the "
        f"default per-host limit ({PER_HOST}). Lag: for every due tick of every healthy path "
        f"in a {window:g} s window, the time until the server saw that path's next request "
        "(a skipped tick counts until the next run; 'not run' if none came). The window "
        "starts one interval after every hung path has timed out once (its first timeout "
        "takes a normal slot: warm-up, bounded; the interval lets that backlog drain); "
        "'one (before)' is the same scheduler with one FIFO per host, as before the slow lane; "
        "the last row is the control: the same host with no hung path (what the machine's "
        "load alone costs).",
        "",
        "| lanes | hung paths | warm-up s | healthy ticks | worst lag s | p99 lag s | "
        "p50 lag s | ticks late > timeout | in slow lane |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        late = sum(1 for lag in r.lags if lag > r.timeout)
        worst = max(r.lags) if r.lags else 0.0
        lines.append(
            f"| {r.lanes} | {r.hung} | {r.warmup:.1f} | {r.ticks} | {_secs(worst)} | "
            f"{_secs(r.quantile(0.99))} | {_secs(r.quantile(0.5))} | {late} | {r.slow_lane} |"
        )
    lines += [
        "",
        f"Goal: with the slow lane, the healthy checks' worst lag stays under one timeout "
        f"({timeout:g} s).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `serve` runs the target server; `run [--quick]` prints the section."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.hung")
    parser.add_argument("command", choices=["serve", "run"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hung", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.hung)
    else:
        configure_logging("warning", stream=sys.stderr)  # as tests.bench.run does
        print(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
