"""Benchmark 2: the real daemon with thousands of checks; lag, CPU, RSS and /metrics time."""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from tests.bench.common import (
    OUT,
    ROOT,
    TARGET_PATH,
    TargetServer,
    free_port,
    log,
    proc_cpu,
    proc_memory,
    stop_process,
    target_server,
)
from vigie.core.results import ProbeResult
from vigie.monitor.config import load_config
from vigie.monitor.exposition import Exposition, check_labels
from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
from vigie.monitor.store import ResultStore
from vigie.probes import default_registry
from vigie.probes.http import make_session

TARGET_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
_BUCKET = re.compile(r'^vigie_scheduler_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$')
_DURATION_COUNT = re.compile(r'^vigie_probe_duration_seconds_count\{kind="([^"]+)"\} (\S+)$')
_KIND = re.compile(r'kind="([^"]+)"')


@dataclass
class ScaleParams:
    """Size and timing of the scale benchmark."""

    n_http: int
    n_tcp: int
    interval: float
    window: float
    scrape_every: float
    timeout: float = 5.0
    per_host_concurrency: int = 1000
    max_concurrency: int = 1024
    n_snmp: int = 0

    @property
    def checks(self) -> int:
        """Return the number of checks of every kind."""
        return self.n_http + self.n_tcp + self.n_snmp


@dataclass
class Scrape:
    """One timed GET /metrics."""

    at: float
    ttfb: float
    total: float
    size: int


@dataclass
class ScaleResults:
    """What the scale benchmark measured."""

    params: ScaleParams
    target: str
    startup_s: float = 0.0
    ready_s: float = 0.0
    window_s: float = 0.0
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    rss_kib: int = 0
    hwm_kib: int = 0
    max_fds: int = 0
    lag_buckets: list[tuple[float, float]] = field(default_factory=list)
    lag_count: float = 0.0
    probes_by_kind: dict[str, float] = field(default_factory=dict)
    scrapes: list[Scrape] = field(default_factory=list)
    page_bytes: int = 0
    series: int = 0
    success: dict[str, tuple[int, int]] = field(default_factory=dict)
    render_ms: list[float] = field(default_factory=list)
    daemon_exit: int | None = None

    @property
    def cpu_percent(self) -> float:
        """Return the daemon's CPU use over the window, as % of one core."""
        return 100 * (self.cpu_user + self.cpu_sys) / self.window_s if self.window_s else math.nan

    @property
    def probes(self) -> float:
        """Return the probes run during the window, all kinds."""
        return sum(self.probes_by_kind.values())

    @property
    def expected_probes(self) -> float:
        """Return the probes the plan should run during the window."""
        return self.params.checks * self.window_s / self.params.interval

    def lag_quantile(self, q: float) -> float:
        """Return a lag quantile interpolated in the window's buckets, as histogram_quantile."""
        return histogram_quantile(q, self.lag_buckets)

    def lag_share_within(self, bound: float) -> float:
        """Return the fraction of the window's lag observations at most bound (a bucket edge)."""
        for le, count in self.lag_buckets:
            if le == bound:
                return count / self.lag_count if self.lag_count else math.nan
        return math.nan

    def to_json(self) -> dict[str, object]:
        """Return the results as plain data."""
        data = asdict(self)
        data.update(
            cpu_percent=self.cpu_percent,
            probes=self.probes,
            expected_probes=self.expected_probes,
            lag_p50=self.lag_quantile(0.5),
            lag_p99=self.lag_quantile(0.99),
        )
        return data


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Return the q-quantile of cumulative (le, count) buckets, interpolating linearly.

    Same rule as Prometheus: within the bucket holding the rank, lower edge 0 for the first.
    """
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def parse_page(text: str) -> dict[str, object]:
    """Return the lag buckets, probe counts, success counts and series count of a page."""
    buckets: list[tuple[float, float]] = []
    durations: dict[str, float] = {}
    success: dict[str, list[int]] = {}
    series = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series += 1
        if line.startswith("probe_success{"):
            kind_match = _KIND.search(line)
            kind = kind_match.group(1) if kind_match else "?"
            counts = success.setdefault(kind, [0, 0])
            counts[0] += line.endswith(" 1")
            counts[1] += 1
        elif m := _BUCKET.match(line):
            buckets.append((float(m.group(1)), float(m.group(2))))
        elif m := _DURATION_COUNT.match(line):
            durations[m.group(1)] = float(m.group(2))
    return {
        "buckets": sorted(buckets),
        "durations": durations,
        "success": {k: (v[0], v[1]) for k, v in success.items()},
        "series": series,
    }


def write_config(path: Path, p: ScaleParams, target: TargetServer, web_port: int) -> None:
    """Write the daemon config: n_http + n_tcp checks spread over the target addresses."""
    n_hosts = len(target.listens)
    lines = [
        "# Generated by tests/bench/scale.py",
        "defaults:",
        f"  interval: {p.interval:g}s",
        f"  timeout: {p.timeout:g}s",
        "  labels: {site: bench-nord}",
        f"web: {{listen: '127.0.0.1:{web_port}'}}",
        "scheduler:",
        f"  max_concurrency: {p.max_concurrency}",
        f"  per_host_concurrency: {p.per_host_concurrency}",
        "checks:",
    ]
    for i in range(p.n_http):
        host, port = target.listens[i % n_hosts]
        lines.append(
            f"  - {{id: http-{i:05d}, kind: http, target: 'http://{host}:{port}{TARGET_PATH}',"
            f" labels: {{component: app-{i % 100:02d}}}}}"
        )
    for i in range(p.n_tcp):
        host, port = target.listens[i % n_hosts]
        lines.append(
            f"  - {{id: tcp-{i:05d}, kind: tcp, target: '{host}:{port}',"
            f" labels: {{component: svc-{i % 100:02d}}}}}"
        )
    path.write_text("\n".join(lines) + "\n")


async def render_in_process(config: Path, repeats: int) -> list[float]:
    """Fill an Exposition as the daemon would for this config and time render() itself."""
    registry = default_registry()
    loaded = load_config(config, registry)
    own = CollectorRegistry()
    store = ResultStore()
    exposition = Exposition(own)
    exposition.set_labels({cid: check_labels(c) for cid, c in loaded.plan.items()})
    store.subscribe(exposition.update)
    samples: dict[str, ProbeResult] = {}
    async with make_session() as session:
        scheduler = Scheduler(registry, store, session, SchedulerMetrics(own))
        for check in loaded.plan.values():
            if check.kind not in samples:
                samples[check.kind] = await scheduler.run(check)
    for cid, check in loaded.plan.items():
        store.update(cid, samples[check.kind])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        exposition.render()
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def _scrape(session: aiohttp.ClientSession, url: str, t0: float) -> tuple[Scrape, str]:
    """GET /metrics once; time the response headers and the whole body."""
    start = time.perf_counter()
    async with session.get(url) as resp:
        ttfb = time.perf_counter() - start
        body = await resp.read()
        total = time.perf_counter() - start
        resp.raise_for_status()
        gzipped = resp.headers.get("Content-Encoding") == "gzip"  # asked for, as Prometheus does
    text = (gzip.decompress(body) if gzipped else body).decode()
    return Scrape(time.monotonic() - t0, ttfb * 1000, total * 1000, len(body)), text


async def _wait_status(
    session: aiohttp.ClientSession, url: str, limit: float, proc: subprocess.Popen[bytes]
) -> float:
    """Poll url until it answers 200; return the seconds waited; raise after limit or on exit."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}: see its log")
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{url} not 200 within {limit:g}s")


def _sample_process(pid: int, res: ScaleResults) -> None:
    """Record memory and open descriptors of the daemon now."""
    mem = proc_memory(pid)
    res.rss_kib = mem.get("VmRSS", 0)
    res.hwm_kib = mem.get("VmHWM", 0)
    res.max_fds = max(res.max_fds, len(os.listdir(f"/proc/{pid}/fd")))


async def _observe(proc: subprocess.Popen[bytes], web_port: int, res: ScaleResults) -> None:
    """Wait for the daemon to be ready, then measure it over the window."""
    p = res.params
    base = f"http://127.0.0.1:{web_port}"
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        res.startup_s = await _wait_status(session, f"{base}/-/healthy", 180, proc)
        log(f"scale: daemon serving after {res.startup_s:.1f}s; waiting for the first round")
        res.ready_s = await _wait_status(session, f"{base}/-/ready", 2 * p.interval + 60, proc)
        log(f"scale: first round done after {res.ready_s:.1f}s more; measuring {p.window:g}s")
        await asyncio.sleep(2.0)
        t0 = time.monotonic()
        cpu0 = proc_cpu(proc.pid)
        scrape, text = await _scrape(session, f"{base}/metrics", t0)
        res.scrapes.append(scrape)
        first = parse_page(text)
        _sample_process(proc.pid, res)
        end = t0 + p.window
        n_scrapes = math.ceil(p.window / p.scrape_every) + 1
        for _ in range(n_scrapes):
            now = time.monotonic()
            if now >= end:
                break
            await asyncio.sleep(min(p.scrape_every, end - now))
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode} during the window")
            scrape, text = await _scrape(session, f"{base}/metrics", t0)
            res.scrapes.append(scrape)
            _sample_process(proc.pid, res)
        cpu1 = proc_cpu(proc.pid)
        res.window_s = time.monotonic() - t0
    last = parse_page(text)
    used = cpu1 - cpu0
    res.cpu_user, res.cpu_sys = used.user, used.sys
    b0 = dict(_as_buckets(first["buckets"]))
    res.lag_buckets = [(le, c - b0.get(le, 0.0)) for le, c in _as_buckets(last["buckets"])]
    res.lag_count = res.lag_buckets[-1][1] if res.lag_buckets else 0.0
    d0 = _as_counts(first["durations"])
    res.probes_by_kind = {k: v - d0.get(k, 0.0) for k, v in _as_counts(last["durations"]).items()}
    res.page_bytes = res.scrapes[-1].size
    res.series = int(str(last["series"]))
    success = last["success"]
    assert isinstance(success, dict)
    res.success = {str(k): (int(v[0]), int(v[1])) for k, v in success.items()}


def _as_buckets(value: object) -> list[tuple[float, float]]:
    """Return parsed buckets with their type back."""
    assert isinstance(value, list)
    return [(float(le), float(c)) for le, c in value]


def _as_counts(value: object) -> dict[str, float]:
    """Return parsed per-kind counts with their type back."""
    assert isinstance(value, dict)
    return {str(k): float(v) for k, v in value.items()}


def run_scale(p: ScaleParams, render_repeats: int) -> ScaleResults:
    """Start targets and the daemon, measure, stop everything."""
    OUT.mkdir(parents=True, exist_ok=True)
    listens = [(host, free_port(host)) for host in TARGET_HOSTS]
    with target_server(listens, workers=2) as target:
        res = ScaleResults(p, f"{target.kind} on {len(listens)} addresses")
        web_port = free_port()
        config = OUT / "scale.yaml"
        write_config(config, p, target, web_port)
        log(f"scale: timing render() in-process for {p.n_http + p.n_tcp} checks")
        res.render_ms = asyncio.run(render_in_process(config, render_repeats))
        log(f"scale: starting the daemon with {p.n_http} http + {p.n_tcp} tcp checks")
        run_daemon(config, web_port, res, "scale-daemon.log")
    return res


def _pin_to_last_cpu() -> None:
    """Confine the daemon to the last CPU (run in the child before exec)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[-1]})


def run_daemon(
    config: Path, web_port: int, res: ScaleResults, log_name: str, *, pin_last_cpu: bool = False
) -> None:
    """Run `vigie run --config config` as a subprocess, measure it into res, stop it.

    With pin_last_cpu the daemon may use one core only (the last), so "on one core" is literal.
    """
    cmd = [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)]
    with (OUT / log_name).open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_pin_to_last_cpu if pin_last_cpu else None,  # noqa: PLW1509
        )
    try:
        asyncio.run(_observe(proc, web_port, res))
    finally:
        stop_process(proc, grace=30)
        res.daemon_exit = proc.returncode


def summary(res: ScaleResults) -> str:
    """Return a one-line summary for the progress log."""
    totals = [s.total for s in res.scrapes]
    return (
        f"lag p50 {res.lag_quantile(0.5) * 1000:.1f} ms, p99 {res.lag_quantile(0.99) * 1000:.1f}"
        f" ms; CPU {res.cpu_percent:.1f}% of a core; RSS {res.rss_kib / 1024:.0f} MiB;"
        f" /metrics median {statistics.median(totals):.0f} ms max {max(totals):.0f} ms;"
        f" probes {res.probes:.0f}/{res.expected_probes:.0f}; success {res.success}"
    )
