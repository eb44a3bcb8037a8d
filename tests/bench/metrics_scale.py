"""/metrics and config load at 20k checks + 5k components (issue 13, point 4).

The generated hospital group of the health bench (4 datacenters, 5,000 components, 4 HTTP
checks each) is loaded with `load_config` (CPU and wall, in process) and with `vigie check`
(a fresh process: interpreter start and imports included). A daemon is then built from it
(not started: no probe runs), every check gets an HTTP-shaped result (phases, status code,
content length, version, TLS, redirects, IP protocol: what the http probe reports) and the
health model is evaluated, so the page holds what a hospital's does. Its /metrics is served
by the daemon's own web app, the bench process pinned to one CPU, and scraped by a client
process pinned to the other: body time (worst, p99), bytes plain and gzipped, and the
longest the event loop was held (the longest callback run while a scrape was in flight).

`python -m tests.bench.run --only metrics_scale [--quick]` runs it;
`python -m tests.bench.metrics_scale scrape URL ENCODING N` is its client.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import gc
import http.client
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiohttp import web

from tests.bench.common import free_port, log
from tests.bench.health import FULL_SHAPE, hospital_group
from vigie.core.results import ProbeResult, Sample
from vigie.monitor.app import Daemon
from vigie.monitor.config import LoadedConfig, load_config
from vigie.monitor.exposition import BATCH_BYTES, GZIP_LEVEL, check_labels
from vigie.monitor.web import build_app
from vigie.monitor.web.readmodel import DaemonReadModel
from vigie.probes import default_registry
from vigie.probes.http import make_session

ROOT = Path(__file__).resolve().parents[2]
LOAD_GOAL_S = 3.0
BODY_GOAL_MS = 100.0
BLOCK_GOAL_MS = 10.0
PHASES = ("dns", "connect", "tls", "processing", "transfer")


@dataclass
class Scrape:
    """One GET /metrics as the client saw it (wall clock, to match the server's records)."""

    start: float
    ttfb: float
    total: float
    size: int


@dataclass
class Mode:
    """The scrapes of one kind (plain, gzip, a shard) and the loop's longest hold meanwhile."""

    name: str
    scrapes: list[Scrape]
    block_ms: float
    block_cpu_ms: float

    def body_ms(self, q: float | None = None) -> float:
        """Return the worst (q None) or the q-quantile body time, in ms."""
        totals = sorted(s.total * 1000 for s in self.scrapes)
        if q is None:
            return totals[-1]
        return totals[min(len(totals) - 1, math.ceil(q * len(totals)) - 1)]


@dataclass
class Results:
    """What the section measured."""

    checks: int = 0
    components: int = 0
    load_wall: list[float] = field(default_factory=list)
    load_cpu: list[float] = field(default_factory=list)
    check_cli_s: float = 0.0
    at_once_ms: list[float] = field(default_factory=list)
    modes: list[Mode] = field(default_factory=list)
    compress: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    load_avg: tuple[float, float] = (0.0, 0.0)


def http_samples() -> tuple[Sample, ...]:
    """Return the samples an HTTP check reports besides probe_success and its duration."""
    phases = [
        Sample("probe_http_duration_seconds", 0.000123 * (i + 1), (("phase", p),), "gauge", "s")
        for i, p in enumerate((*PHASES, "total"))
    ]
    return (
        *phases,
        Sample("probe_http_status_code", 200.0, (), "gauge", "Status code."),
        Sample("probe_http_content_length", 1234.0, (), "gauge", "Content length."),
        Sample("probe_http_version", 1.1, (), "gauge", "HTTP version."),
        Sample("probe_http_ssl", 0.0, (), "gauge", "TLS used."),
        Sample("probe_http_redirects", 0.0, (), "gauge", "Redirects."),
        Sample("probe_ip_protocol", 4.0, (), "gauge", "IP protocol."),
    )


# --- the client (its own process) ----------------------------------------------------------


def scrape(url: str, encoding: str, count: int) -> list[Scrape]:
    """GET url count times with the given Accept-Encoding, the body read as sent.

    With curl (its own process, C all the way) when there is one, so the figure is the
    server's and not a Python client's; with http.client otherwise.
    """
    out = []
    curl = shutil.which("curl")
    for _ in range(count):
        start = time.time()
        if curl is not None:
            fmt = "%{time_starttransfer} %{time_total} %{size_download}"
            cmd = [curl, "-s", "-o", "/dev/null", "-H", f"Accept-Encoding: {encoding}", "-w", fmt]
            done = subprocess.run([*cmd, url], capture_output=True, text=True, check=True)
            first, total, size = done.stdout.split()
            out.append(Scrape(start, float(first), float(total), int(float(size))))
        else:
            out.append(_scrape_http_client(url, encoding, start))
        time.sleep(0.2)  # the server idles between scrapes, as between Prometheus's
    return out


def _scrape_http_client(url: str, encoding: str, start: float) -> Scrape:
    """GET url once with http.client."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    began = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": encoding})
    resp = conn.getresponse()
    first = time.perf_counter() - began
    body = resp.read()
    conn.close()
    return Scrape(start, first, time.perf_counter() - began, len(body))


# --- the server side -------------------------------------------------------------------------


class LoopWatch:
    """Records how long each event-loop callback runs, with when it ended (wall clock).

    Both its wall time (what a waiting task sees: preemption by other processes and the GIL
    held by a worker thread included) and the loop thread's CPU time (the code's own cost).
    """

    def __init__(self) -> None:
        self.held: list[tuple[float, float, float]] = []  # (ended at, wall s, CPU s)

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Time every Handle._run while inside (the bench's instrument, not the daemon's)."""
        original = asyncio.events.Handle._run
        held = self.held

        def timed(handle: asyncio.events.Handle) -> None:
            began, cpu = time.perf_counter(), time.thread_time()
            original(handle)
            took = time.perf_counter() - began
            if took > 0.001:
                held.append((time.time(), took, time.thread_time() - cpu))

        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            asyncio.events.Handle._run = original  # type: ignore[method-assign]

    def longest(self, scrapes: list[Scrape]) -> tuple[float, float]:
        """Return the longest callback that ended during a scrape: wall ms, CPU ms."""
        spans = [(s.start, s.start + s.total) for s in scrapes]
        inside = [(w, c) for at, w, c in self.held if any(a <= at <= b for a, b in spans)]
        return 1000 * max((w for w, _ in inside), default=0.0), 1000 * max(
            (c for _, c in inside), default=0.0
        )


@contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Run this process (all its threads) on one CPU, as the goal is judged, then unpin."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


async def client(url: str, encoding: str, count: int) -> list[Scrape]:
    """Scrape from a child process pinned to the last CPU; return its scrapes."""
    cmd = [sys.executable, "-m", "tests.bench.metrics_scale", "scrape", url, encoding, str(count)]
    cpus = os.cpu_count() or 1
    if cpus > 1:
        cmd = ["taskset", "-c", str(cpus - 1), *cmd]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    out, _ = await proc.communicate()
    return [Scrape(**row) for row in json.loads(out)]


async def compress_costs(page: bytes) -> dict[str, tuple[float, float, float]]:
    """Compress the page in BATCH_BYTES chunks on the caller's thread and in a worker thread.

    Returns, for each way, (CPU ms of the process, wall ms, longest the caller was held ms).
    """
    chunks = [page[i : i + BATCH_BYTES] for i in range(0, len(page), BATCH_BYTES)]
    out: dict[str, tuple[float, float, float]] = {}

    def inline() -> float:
        z, held = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31), 0.0
        for chunk in chunks:
            began = time.perf_counter()
            z.compress(chunk)
            held = max(held, time.perf_counter() - began)
        z.flush()
        return held

    async def threaded() -> float:
        z, held = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31), 0.0
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            for chunk in chunks:
                began = time.perf_counter()
                fut = loop.run_in_executor(pool, z.compress, chunk)
                held = max(held, time.perf_counter() - began)  # the caller only hands it over
                await fut
        z.flush()
        return held

    for name in ("on the loop", "in a thread"):
        cpu, wall = time.process_time(), time.perf_counter()
        held = inline() if name == "on the loop" else await threaded()
        out[name] = (
            1000 * (time.process_time() - cpu),
            1000 * (time.perf_counter() - wall),
            1000 * held,
        )
    return out


async def serve_and_scrape(loaded: LoadedConfig, res: Results, count: int) -> None:
    """Build the daemon's page from loaded, serve its web app and scrape it in every mode."""
    registry = default_registry()
    async with make_session() as session:
        daemon = Daemon(loaded, registry, session)
        daemon.exposition.set_labels({cid: check_labels(c) for cid, c in loaded.plan.items()})
        samples = http_samples()
        for i, cid in enumerate(loaded.plan):
            daemon.store.update(cid, ProbeResult(i % 50 != 0, 0.0123 + i * 1e-7, samples))
        daemon.health.evaluate()
        for _ in range(3):
            began = time.perf_counter()
            page = daemon.exposition.render()
            res.at_once_ms.append(1000 * (time.perf_counter() - began))
        res.compress = await compress_costs(page)
        del page
        app = build_app(DaemonReadModel(daemon))
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}/metrics"
        watch = LoopWatch()
        modes = [("plain", "", "identity"), ("gzip", "", "gzip")]
        modes += [(f"gzip, shard {i} of 4", f"?shard={i}&of=4", "gzip") for i in range(4)]
        try:
            with watch.watching():
                for name, query, encoding in modes:
                    scrapes = await client(url + query, encoding, count)
                    res.modes.append(Mode(name, scrapes, *watch.longest(scrapes)))
                    log(f"metrics_scale: {name}: worst body {res.modes[-1].body_ms():.0f} ms")
        finally:
            await runner.cleanup()


def measure(quick: bool) -> Results:
    """Generate the config, time its loads, then serve and scrape its page."""
    res = Results(load_avg=(os.getloadavg()[0], 0.0))
    config = hospital_group(FULL_SHAPE)
    res.checks, res.components = len(config["checks"]), len(config["components"])
    registry = default_registry()
    with tempfile.TemporaryDirectory(prefix="vigie-metrics-bench-") as tmp:
        path = Path(tmp) / "vigie.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        loaded = None
        for _ in range(2 if quick else 5):
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            loaded = load_config(path, registry, env={})
            res.load_wall.append(time.perf_counter() - wall)
            res.load_cpu.append(time.process_time() - cpu)
        began = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).with_name("vigie")), "check", str(path)],
            check=False,
            capture_output=True,
        )
        res.check_cli_s = time.perf_counter() - began
    assert loaded is not None
    log(f"metrics_scale: load {min(res.load_wall):.2f}-{max(res.load_wall):.2f} s")
    with pinned(0):
        asyncio.run(serve_and_scrape(loaded, res, 5 if quick else 20))
    res.load_avg = (res.load_avg[0], os.getloadavg()[0])
    return res


def render(res: Results, quick: bool) -> str:
    """Return the Markdown section."""
    count = len(res.modes[0].scrapes) if res.modes else 0
    lines = [
        "## /metrics and config load at scale",
        "",
        f"The health bench's generated hospital group: {res.checks:,} HTTP checks, "
        f"{res.components:,} components. Config load: `load_config` in process "
        f"({len(res.load_wall)} runs) and `vigie check` as a fresh process (interpreter "
        "start and imports included). /metrics: the daemon built from that config (not "
        "started: no probe runs), every check given an HTTP-shaped result, health evaluated; "
        "served by the daemon's web app with the bench process pinned to CPU 0, scraped "
        f"{count} times per row by curl from a process pinned to the other CPU. 'loop held' is "
        "the longest event-loop callback that ended while a scrape was in flight (the daemon "
        "has nothing else to do here: it is the page's own cost), in wall time (what a task "
        "waiting on the loop sees: other processes on the CPU and the GIL held by the worker "
        "thread included) and in the loop thread's CPU time (the code's own hold). Host load "
        "average "
        f"{res.load_avg[0]:.1f} before, {res.load_avg[1]:.1f} after"
        + (" (quick run: fewer repetitions)." if quick else "."),
        "",
        "| config load | worst s | best s | CPU s (worst) | goal |",
        "|---|---:|---:|---:|---|",
        f"| `load_config` | {max(res.load_wall):.2f} | {min(res.load_wall):.2f} | "
        f"{max(res.load_cpu):.2f} | < {LOAD_GOAL_S:g} s |",
        f"| `vigie check` (process) | {res.check_cli_s:.2f} | | | |",
        "",
        "| /metrics | body worst ms | body p99 ms | time to headers worst ms | bytes sent | "
        "loop held worst ms (wall) | (loop CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in res.modes:
        ttfb = max(s.ttfb for s in mode.scrapes) * 1000
        size = statistics.median(s.size for s in mode.scrapes)
        lines.append(
            f"| {mode.name} | {mode.body_ms():.0f} | {mode.body_ms(0.99):.0f} | {ttfb:.0f} | "
            f"{size:,.0f} | {mode.block_ms:.1f} | {mode.block_cpu_ms:.1f} |"
        )
    plain = next((m for m in res.modes if m.name == "plain"), None)
    packed = next((m for m in res.modes if m.name == "gzip"), None)
    lines += [
        "",
        f"The same page built in one go (`Exposition.render()`, as /metrics did before): "
        f"{min(res.at_once_ms):.0f}-{max(res.at_once_ms):.0f} ms, all of it holding the loop.",
        "",
        f"gzip level {GZIP_LEVEL}, {BATCH_BYTES >> 20} MiB chunks of the plain page: where "
        "to compress.",
        "",
        "| compress | CPU ms | wall ms | caller held, longest ms |",
        "|---|---:|---:|---:|",
    ]
    for name, (cpu, wall, held) in res.compress.items():
        lines.append(f"| {name} | {cpu:.0f} | {wall:.0f} | {held:.1f} |")
    if plain and packed:
        ratio = statistics.median(s.size for s in plain.scrapes) / max(
            1.0, statistics.median(s.size for s in packed.scrapes)
        )
        lines += ["", f"gzip makes the page {ratio:.0f} times smaller."]
    worst_block = max((m.block_ms for m in res.modes), default=0.0)
    worst_cpu = max((m.block_cpu_ms for m in res.modes), default=0.0)
    lines += [
        "",
        f"Goals: config load < {LOAD_GOAL_S:g} s; whole body < {BODY_GOAL_MS:g} ms (worst); "
        f"the loop never held more than {BLOCK_GOAL_MS:g} ms at a time (worst here "
        f"{worst_block:.1f} ms of wall time, {worst_cpu:.1f} ms of the loop's CPU).",
        "",
    ]
    return "\n".join(lines)


def run(quick: bool) -> str:
    """Run the section; return its Markdown."""
    return render(measure(quick), quick)


def main(argv: list[str] | None = None) -> int:
    """`scrape URL ENCODING N` prints the client's scrapes as JSON; `run [--quick]` the section."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["scrape"]:
        url, encoding, count = args[1], args[2], int(args[3])
        print(json.dumps([s.__dict__ for s in scrape(url, encoding, count)]))
        return 0
    print(run("--quick" in args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
