"""The whole daemon, measured whole: `vigie run` with a generated hospital, beside blackbox.

`vigie run` runs as a process with a generated hospital topology (tests/health/hospital.py,
about one component per four checks), every check an HTTP GET of a static file on a loopback
nginx, /metrics scraped every 15 s as Prometheus does. In the same run and window,
blackbox_exporter is driven at the same probe rate against the same target, and so are the
floors (tests/bench/floor.py: only the GETs, started in the scheduler's slots): the plain
aiohttp floor on the probe session's settings and, on fresh connections, the lean floor.
Every figure comes from outside the daemon (/proc) or from its own /metrics
(`process_cpu_seconds_total`, `vigie_probes_total`, `vigie_scheduler_lag_seconds`), never
from inside its code. Goals are judged on the worst or the p99, never on a median.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

from tests.bench.common import (
    OUT,
    ROOT,
    TARGET_PATH,
    CpuTimes,
    free_port,
    log,
    proc_cpu,
    proc_memory,
    stop_process,
    target_server,
)
from tests.bench.cpu import blackbox_exporter
from tests.bench.scale import histogram_quantile
from tests.health.hospital import generated_hospital
from vigie.monitor.eventloop import loop_factory
from vigie.monitor.scheduler import SLOT

TARGET_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
DATACENTERS = ("nord", "sud", "bellevue", "est")
CHECKS_PER_COMPONENT = 4
CPU_GOAL = 0.5
LAG_GOAL = 0.250
BODY_GOAL_MS = 100.0
WARMUP_S = 5.0

_LAG = re.compile(r'^vigie_scheduler_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$')
_PROBES = re.compile(r'^vigie_probes_total\{kind="([^"]+)",outcome="([^"]+)"\} (\S+)$')
_SIMPLE = re.compile(r"^(process_cpu_seconds_total|process_resident_memory_bytes) (\S+)$")


@dataclass
class WholeParams:
    """One size of the whole-daemon run."""

    label: str
    checks: int
    interval: float
    window: float
    pin: bool = False  # the daemon on the last core only, everything else on the others
    reuse: bool = False  # checks keep connections alive (reuse_connections: true)
    scrape_every: float = 15.0
    timeout: float = 5.0
    profile: Path | None = None  # py-spy's collapsed stacks of the daemon over the window
    sides: bool = True  # blackbox_exporter and the floor driven beside the daemon
    loop: str = "auto"  # the daemon's and the floors' event loop (`vigie run --loop`)

    @property
    def rate(self) -> float:
        """Return the probes a second the plan asks for."""
        return self.checks / self.interval


@dataclass
class Scrape:
    """One timed GET /metrics (with Accept-Encoding: gzip, as Prometheus sends it)."""

    at: float
    headers_ms: float
    body_ms: float
    wire_bytes: int
    text_bytes: int
    encoding: str


@dataclass
class PageFigures:
    """What one /metrics page says about the daemon."""

    cpu_s: float = math.nan
    rss_bytes: float = math.nan
    lag: list[tuple[float, float]] = field(default_factory=list)
    probes: dict[str, float] = field(default_factory=dict)  # "kind/outcome" -> count


@dataclass
class Side:
    """A process measured beside the daemon over the same window: CPU and probes run."""

    name: str
    cpu: float = 0.0
    probes: float = 0.0
    ok: float = 0.0
    rss_kib: int = 0

    @property
    def ms_per_probe(self) -> float:
        """Return CPU milliseconds per probe."""
        return self.cpu * 1000 / self.probes if self.probes else math.nan


@dataclass
class WholeResults:
    """What one whole-daemon run measured."""

    params: WholeParams
    components: int = 0
    target: str = ""
    load_avg_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_avg_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    startup_s: float = 0.0
    ready_s: float = 0.0
    window_s: float = 0.0
    cpu_proc: float = 0.0  # daemon utime + stime over the window, from /proc
    cpu_self: float = 0.0  # process_cpu_seconds_total delta over the window
    probes: dict[str, float] = field(default_factory=dict)
    lag: list[tuple[float, float]] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    hwm_kib: int = 0
    scrapes: list[Scrape] = field(default_factory=list)
    blackbox: Side = field(default_factory=lambda: Side("blackbox"))
    floor: Side = field(default_factory=lambda: Side("aiohttp floor"))
    lean: Side = field(default_factory=lambda: Side("lean floor"))
    daemon_exit: int | None = None
    error: str | None = None  # why the run did not complete

    @property
    def probes_run(self) -> float:
        """Return the daemon's probes in the window, every outcome."""
        return sum(self.probes.values())

    @property
    def probes_ok(self) -> float:
        """Return the daemon's successful probes in the window."""
        return sum(v for k, v in self.probes.items() if k.endswith("/success"))

    @property
    def ms_per_probe(self) -> float:
        """Return the daemon's CPU milliseconds per probe (from /proc)."""
        return self.cpu_proc * 1000 / self.probes_run if self.probes_run else math.nan

    @property
    def cpu_percent(self) -> float:
        """Return the daemon's CPU over the window, as % of one core."""
        return 100 * self.cpu_proc / self.window_s if self.window_s else math.nan

    @property
    def ratio_blackbox(self) -> float:
        """Return the daemon's CPU per probe divided by blackbox_exporter's."""
        theirs = self.blackbox.ms_per_probe
        return self.ms_per_probe / theirs if theirs else math.nan

    @property
    def ratio_floor(self) -> float:
        """Return the daemon's CPU per probe divided by the plain aiohttp floor's."""
        theirs = self.floor.ms_per_probe
        return self.ms_per_probe / theirs if theirs else math.nan

    @property
    def ratio_lean(self) -> float:
        """Return the daemon's CPU per probe divided by the lean client floor's."""
        theirs = self.lean.ms_per_probe
        return self.ms_per_probe / theirs if theirs else math.nan

    def lag_quantile(self, q: float) -> float:
        """Return a lag quantile of the window, interpolated as PromQL's histogram_quantile."""
        return histogram_quantile(q, self.lag)

    def body_ms(self, q: float) -> float:
        """Return a quantile (nearest rank) of the whole-body /metrics times."""
        return _rank([s.body_ms for s in self.scrapes], q)

    def to_json(self) -> dict[str, object]:
        """Return the results as plain data."""
        data = asdict(self)
        data.update(
            ms_per_probe=self.ms_per_probe,
            blackbox_ms_per_probe=self.blackbox.ms_per_probe,
            floor_ms_per_probe=self.floor.ms_per_probe,
            ratio_blackbox=self.ratio_blackbox,
            ratio_floor=self.ratio_floor,
            lean_ms_per_probe=self.lean.ms_per_probe,
            ratio_lean=self.ratio_lean,
            lag_p99=self.lag_quantile(0.99),
            cpu_percent=self.cpu_percent,
        )
        return data


def _rank(values: list[float], q: float) -> float:
    """Return the nearest-rank q-quantile of values (the worst for q = 1), NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def hospital_shape(components: int) -> dict[str, int]:
    """Return generated_hospital sizes giving about `components` components over 4 datacenters.

    About 60% infrastructure (UPS, PDU, switches, hypervisors, VMs, SAN) and the rest
    applications; per datacenter 2 rooms of (2 UPS + 2 PDU + 1 switch + H hypervisors), a SAN
    array and 3 VMs per hypervisor: 11 + 8H components.
    """
    per_dc = max(19, round(0.6 * components / len(DATACENTERS)))
    hypervisors = max(1, round((per_dc - 11) / 8))
    infra = len(DATACENTERS) * (11 + 8 * hypervisors)
    return {"hypervisors": hypervisors, "apps": max(len(DATACENTERS), components - infra)}


def write_config(path: Path, p: WholeParams, listens: list[tuple[str, int]], web_port: int) -> int:
    """Write the daemon config: the generated hospital, every check GETs the target; return
    the number of components."""
    shape = hospital_shape(math.ceil(p.checks / CHECKS_PER_COMPONENT))
    config: dict[str, Any] = generated_hospital(
        0,
        datacenters=DATACENTERS,
        hypervisors=shape["hypervisors"],
        vms_per_host=3,
        apps=shape["apps"],
        checks_per_component=CHECKS_PER_COMPONENT,
        intervals=(p.interval,),
    )
    checks: list[dict[str, Any]] = config["checks"][: p.checks]
    kept = {c["id"] for c in checks}
    for comp in config["components"]:
        comp["checks"] = [c for c in comp["checks"] if c in kept]
    config["rules"] = [
        {**rule, "checks": [c for c in rule["checks"] if c in kept]} for rule in config["rules"]
    ]
    for i, check in enumerate(checks):
        host, port = listens[i % len(listens)]
        check["target"] = f"http://{host}:{port}{TARGET_PATH}"
        check["timeout"] = f"{p.timeout:g}s"
        if p.reuse:
            check["http"] = {"reuse_connections": True}
    config["checks"] = checks
    config["web"] = {"listen": f"127.0.0.1:{web_port}"}
    config["scheduler"] = {"max_concurrency": 1024, "per_host_concurrency": 1000}
    path.write_text(
        "# Generated by tests/bench/whole.py\n"
        + yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    )
    return len(config["components"])


def parse_page(text: str) -> PageFigures:
    """Return the daemon's own figures from a /metrics page (only the lines needed)."""
    fig = PageFigures()
    for line in text.splitlines():
        if not line.startswith(("process_", "vigie_probes_total", "vigie_scheduler_lag")):
            continue
        if m := _LAG.match(line):
            fig.lag.append((float(m.group(1)), float(m.group(2))))
        elif m := _PROBES.match(line):
            fig.probes[f"{m.group(1)}/{m.group(2)}"] = float(m.group(3))
        elif m := _SIMPLE.match(line):
            if m.group(1) == "process_cpu_seconds_total":
                fig.cpu_s = float(m.group(2))
            else:
                fig.rss_bytes = float(m.group(2))
    fig.lag.sort()
    return fig


def _ahead() -> None:
    """Run the scraper ahead of the bench's load generators (nice -5; as is if not allowed)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -5)


async def _scrape(session: aiohttp.ClientSession, url: str, t0: float) -> tuple[Scrape, str]:
    """GET /metrics as Prometheus does (gzip asked); time the headers and the whole body.

    Timed by curl, a process of its own as Prometheus is: this harness's loop also drives
    blackbox_exporter at the probe rate, and its own pauses (a collection of its heap, a
    driver's burst) read a page more slowly than a scraper would, which is not the daemon's
    time. curl runs ahead of the load generators sharing its CPU (nice -5 when allowed): a
    Prometheus does not wait behind blackbox_exporter's driver. Without curl, the harness's
    aiohttp client times it.
    """
    curl = shutil.which("curl")
    if curl is None:
        return await _scrape_aiohttp(session, url, t0)
    fmt = "%{time_starttransfer} %{time_total} %{http_code} %header{content-encoding}"
    with tempfile.NamedTemporaryFile(prefix="vigie-scrape-") as out:
        proc = await asyncio.create_subprocess_exec(
            curl, "-s", "-S", "-o", out.name, "-H", "Accept-Encoding: gzip", "-w", fmt, url,
            stdout=subprocess.PIPE, preexec_fn=_ahead,
        )  # fmt: skip
        said, _ = await proc.communicate()
        first, total, code, *encoding = said.decode().split()
        if proc.returncode != 0 or code != "200":
            raise RuntimeError(f"GET {url}: curl exit {proc.returncode}, HTTP {code}")
        body = await asyncio.to_thread(Path(out.name).read_bytes)
    gzipped = encoding == ["gzip"]
    text = gzip.decompress(body) if gzipped else body
    at = time.monotonic() - t0
    wire = len(body)
    encoded = "gzip" if gzipped else "identity"
    scrape = Scrape(at, float(first) * 1000, float(total) * 1000, wire, len(text), encoded)
    return scrape, text.decode()


async def _scrape_aiohttp(
    session: aiohttp.ClientSession, url: str, t0: float
) -> tuple[Scrape, str]:
    """GET /metrics with the harness's aiohttp client; time the headers and the whole body."""
    start = time.perf_counter()
    async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
        headers = time.perf_counter() - start
        body = await resp.read()
        total = time.perf_counter() - start
        resp.raise_for_status()
        encoding = resp.headers.get("Content-Encoding", "identity")
    text = gzip.decompress(body) if encoding == "gzip" else body
    scrape = Scrape(
        time.monotonic() - t0, headers * 1000, total * 1000, len(body), len(text), encoding
    )
    return scrape, text.decode()


async def _wait_status(
    session: aiohttp.ClientSession, url: str, limit: float, proc: subprocess.Popen[bytes]
) -> float:
    """Poll url until it answers 200; return the seconds waited; raise after limit or on exit."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}: see its log")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{url} not 200 within {limit:g}s")


class BlackboxDriver:
    """Requests blackbox_exporter's /probe at a fixed rate, as many Prometheus jobs would."""

    def __init__(self, port: int, urls: list[str], rate: float) -> None:
        self.urls = [
            f"http://127.0.0.1:{port}/probe?module=http_2xx&target={quote(u, safe='')}"
            for u in urls
        ]
        self.rate = rate
        self.done = 0
        self.ok = 0
        self.stop = asyncio.Event()

    async def _one(self, session: aiohttp.ClientSession, url: str) -> None:
        """Request one probe; count it."""
        try:
            async with session.get(url) as resp:
                body = await resp.text()
            self.ok += resp.status == 200 and "\nprobe_success 1\n" in body
        except (aiohttp.ClientError, OSError):
            pass
        self.done += 1

    async def run(self) -> None:
        """Start one /probe every 1/rate seconds until stopped."""
        connector = aiohttp.TCPConnector(limit=256)
        tasks: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            t0 = time.monotonic()
            i = 0
            while not self.stop.is_set():
                delay = t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                task = asyncio.create_task(self._one(session, self.urls[i % len(self.urls)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks, return_exceptions=True)


async def _floor_counts(proc: subprocess.Popen[str]) -> tuple[float, float]:
    """Ask the floor process for its counts (SIGUSR1) and read its JSON line."""
    assert proc.stdout is not None
    proc.send_signal(signal.SIGUSR1)
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
    data = json.loads(line)
    return float(data["probes"]), float(data["ok"])


SideReading = tuple[CpuTimes, float, float]
"""A side process's CPU times, probes done and probes ok, at one instant."""


class Sides:
    """blackbox_exporter and the floors (aiohttp, and lean on fresh connections), driven
    beside the daemon at its probe rate."""

    def __init__(
        self,
        bb_pid: int,
        driver: BlackboxDriver,
        floor: subprocess.Popen[str],
        lean: subprocess.Popen[str] | None,
    ) -> None:
        self.bb_pid = bb_pid
        self.driver = driver
        self.floor = floor
        self.lean = lean
        self.driving: asyncio.Task[None] | None = None

    async def read(self) -> list[SideReading]:
        """Return blackbox's CPU and counts, then the floors', now."""
        out: list[SideReading] = [
            (proc_cpu(self.bb_pid), float(self.driver.done), float(self.driver.ok))
        ]
        for proc in (self.floor, self.lean):
            if proc is not None:
                cpu = proc_cpu(proc.pid)
                done, ok = await _floor_counts(proc)
                out.append((cpu, done, ok))
        return out

    def fill(self, res: WholeResults, first: list[SideReading], last: list[SideReading]) -> None:
        """Put the window's deltas and the processes' memory in res."""
        pids = [self.bb_pid, self.floor.pid] + ([self.lean.pid] if self.lean else [])
        for side, pid, a, b in zip(
            (res.blackbox, res.floor, res.lean), pids, first, last, strict=False
        ):
            side.cpu = (b[0] - a[0]).total
            side.probes, side.ok = b[1] - a[1], b[2] - a[2]
            side.rss_kib = proc_memory(pid).get("VmRSS", 0)


async def _measure(
    res: WholeResults, daemon: subprocess.Popen[bytes], web_port: int, sides: Sides | None
) -> None:
    """Wait for the daemon to be ready, then measure everyone over the same window."""
    p = res.params
    base = f"http://127.0.0.1:{web_port}"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        res.startup_s = await _wait_status(session, f"{base}/-/healthy", 600, daemon)
        log(f"whole {p.label}: daemon serving after {res.startup_s:.1f}s; first round next")
        res.ready_s = await _wait_status(session, f"{base}/-/ready", 2 * p.interval + 120, daemon)
        log(f"whole {p.label}: first round done after {res.ready_s:.1f}s; measuring {p.window:g}s")
        if sides is not None:
            sides.driving = asyncio.create_task(sides.driver.run())
        await asyncio.sleep(WARMUP_S)
        spy = _start_profile(p, daemon.pid)
        t0 = time.monotonic()
        cpu0 = proc_cpu(daemon.pid)
        side0 = await sides.read() if sides is not None else None
        scrape, text = await _scrape(session, f"{base}/metrics", t0)
        res.scrapes.append(scrape)
        first = parse_page(text)
        last = first
        end = t0 + p.window
        while (now := time.monotonic()) < end:
            await asyncio.sleep(min(p.scrape_every, end - now))
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {daemon.returncode} during the window")
            res.rss_kib.append(proc_memory(daemon.pid).get("VmRSS", 0))
            scrape, text = await _scrape(session, f"{base}/metrics", t0)
            res.scrapes.append(scrape)
            last = parse_page(text)
        cpu1: CpuTimes = proc_cpu(daemon.pid)
        if sides is not None and side0 is not None and sides.driving is not None:
            sides.fill(res, side0, await sides.read())
            sides.driver.stop.set()
            await sides.driving
        res.window_s = time.monotonic() - t0
        if spy is not None:
            await asyncio.to_thread(spy.wait, 60)
    res.hwm_kib = proc_memory(daemon.pid).get("VmHWM", 0)
    res.cpu_proc = (cpu1 - cpu0).total
    res.cpu_self = last.cpu_s - first.cpu_s
    res.probes = {k: v - first.probes.get(k, 0.0) for k, v in last.probes.items()}
    before = dict(first.lag)
    res.lag = [(le, c - before.get(le, 0.0)) for le, c in last.lag]


def _start_profile(p: WholeParams, pid: int) -> subprocess.Popen[bytes] | None:
    """Start py-spy on the daemon for the window when asked (development only)."""
    if p.profile is None:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "-p", str(pid), "-d", f"{p.window:.0f}", "-r", "200"]
    cmd += ["--format", "raw", "-o", str(p.profile), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def _affinity(cpus: set[int] | None) -> Iterator[None]:
    """Confine this process (and the children it starts) to cpus for a with block."""
    if cpus is None:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def run_whole(p: WholeParams) -> WholeResults:
    """Start the target, blackbox_exporter and the floor (unless p.sides is off) and the
    daemon; measure; stop them."""
    OUT.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    daemon_cpu = cpus[-1] if p.pin and len(cpus) > 1 else None
    others = set(cpus[:-1]) if daemon_cpu is not None else None
    res = WholeResults(p, load_avg_before=os.getloadavg())
    with _affinity(others), contextlib.ExitStack() as stack:
        listens = [(host, free_port(host)) for host in TARGET_HOSTS]
        target = stack.enter_context(target_server(listens, workers=1))
        res.target = f"{target.kind} on {len(listens)} loopback addresses"
        urls = [target.url(i) for i in range(len(listens))]
        web_port = free_port()
        config = OUT / f"whole-{p.label}.yaml"
        res.components = write_config(config, p, listens, web_port)
        cmd = [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)]
        cmd += ["--loop", p.loop]
        if daemon_cpu is not None:
            cmd = ["taskset", "-c", str(daemon_cpu), *cmd]
        log(
            f"whole {p.label}: {p.checks} checks, {res.components} components, every"
            f" {p.interval:g}s ({p.rate:.0f} probes/s)"
            + (f", daemon pinned to CPU {daemon_cpu}" if daemon_cpu is not None else "")
        )
        sides = _start_sides(stack, p, urls) if p.sides else None
        with (OUT / f"whole-{p.label}-daemon.log").open("wb") as out:
            daemon = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            asyncio.run(_measure(res, daemon, web_port, sides))
        except (RuntimeError, TimeoutError, OSError, aiohttp.ClientError) as exc:
            res.error = f"{type(exc).__name__}: {exc}"  # reported, the other sizes still run
            log(f"whole {p.label}: failed: {res.error}")
        finally:
            stop_process(daemon, grace=30)
            res.daemon_exit = daemon.returncode
    res.load_avg_after = os.getloadavg()
    log(f"whole {p.label}: {summary(res)}")
    return res


def _start_sides(stack: contextlib.ExitStack, p: WholeParams, urls: list[str]) -> Sides:
    """Start blackbox_exporter and the floor process, stopped when the stack closes."""
    bb, bb_port = stack.enter_context(blackbox_exporter())
    floor_cmd = [sys.executable, "-m", "tests.bench.floor", "--rate", f"{p.rate:g}"]
    floor_cmd += ["--slot", f"{SLOT:g}", "--loop", p.loop]  # in slots, as the daemon's checks
    floor_cmd += [a for u in urls for a in ("--url", u)]
    if p.reuse:
        floor_cmd.append("--reuse")
    floor = subprocess.Popen(floor_cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    stack.callback(stop_process, floor)
    lean = None
    if not p.reuse:  # the lean client opens a fresh connection per GET
        lean_cmd = [*floor_cmd, "--mode", "lean"]
        lean = subprocess.Popen(lean_cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        stack.callback(stop_process, lean)
    return Sides(bb.pid, BlackboxDriver(bb_port, urls, p.rate), floor, lean)


def summary(res: WholeResults) -> str:
    """Return a one-line summary for the progress log."""
    return (
        f"{res.ms_per_probe:.3f} ms/probe ({res.cpu_percent:.0f}% of a core) vs blackbox"
        f" {res.blackbox.ms_per_probe:.3f} ({res.ratio_blackbox:.2f}x), floor"
        f" {res.floor.ms_per_probe:.3f} ({res.ratio_floor:.2f}x), lean floor"
        f" {res.lean.ms_per_probe:.3f} ({res.ratio_lean:.2f}x); lag p99"
        f" {res.lag_quantile(0.99) * 1000:.1f} ms; /metrics worst {res.body_ms(1.0):.0f} ms;"
        f" RSS {max(res.rss_kib, default=0) / 1024:.0f} MiB; probes"
        f" {res.probes_ok:.0f}/{res.probes_run:.0f} ok (plan {res.params.rate * res.window_s:.0f})"
    )


FULL = [
    WholeParams("3k", 3000, 30.0, 120.0),
    WholeParams("20k-1core", 20000, 60.0, 120.0, pin=True),
]
# Development sizes, run by name: `python -m tests.bench.whole 10k`.
EXTRA = [
    WholeParams("10k", 10000, 30.0, 90.0),
    WholeParams("3k-reuse", 3000, 30.0, 180.0, reuse=True),
    WholeParams("3k-short", 3000, 30.0, 60.0),
    # The same on asyncio's own loop (`--loop asyncio`): what uvloop changes (docs/scaling.md).
    WholeParams("3k-asyncio", 3000, 30.0, 120.0, loop="asyncio"),
    WholeParams("20k-1core-asyncio", 20000, 60.0, 120.0, pin=True, loop="asyncio"),
]
QUICK = [
    WholeParams("3k-quick", 600, 6.0, 30.0, scrape_every=5.0),
    WholeParams("20k-1core-quick", 2000, 10.0, 30.0, pin=True, scrape_every=5.0),
]


def run(quick: bool) -> str:
    """Run every size; return the Markdown section (with its goal rows)."""
    results = [run_whole(p) for p in (QUICK if quick else FULL)]
    (OUT / "whole.json").write_text(
        json.dumps([r.to_json() for r in results], indent=2, default=str) + "\n"
    )
    return render(results)


def _loop_used(choice: str = "auto") -> str:
    """Return the event loop `--loop choice` gives the daemon and the floors on this host."""
    return "uvloop" if loop_factory(choice) is not asyncio.new_event_loop else "asyncio"


def _met(ok: bool) -> str:
    """Return the goal cell."""
    return "yes" if ok else "**no**"


def render(results: list[WholeResults]) -> str:
    """Return the section: goals, one column per size, how it was measured."""
    lines = [
        "## Whole daemon: `vigie run` with a hospital topology, beside blackbox_exporter",
        "",
        "The headline figures. `vigie run` as a process with a generated hospital"
        " (`tests/health/hospital.py`: 4 datacenters of 2 rooms, UPS, PDU, switches, SAN,"
        f" hypervisors, VMs, applications; {CHECKS_PER_COMPONENT} checks per component), every"
        " check an HTTP GET of a static file on a loopback nginx, each check on a fresh"
        " connection (the default, as blackbox_exporter does) unless the column says"
        " `reuse_connections`. /metrics is scraped every 15 s with `Accept-Encoding: gzip`, as"
        " Prometheus does, by curl (a process of its own, at nice -5 so that it does not wait"
        " behind the load generators sharing its CPU). In the same window blackbox_exporter"
        " (`/probe?module=http_2xx`) is"
        " driven at the same probe rate against the same target, and so are two floors"
        " (`tests/bench/floor.py`: only the GETs, started in the scheduler's 100 ms slots as"
        " the daemon starts its checks): the plain aiohttp floor, on the probe session's"
        " settings, and the lean floor, a measurement-only HTTP/1.1 client on asyncio's"
        " Protocol API (`tests/bench/lean_http.py`, fresh connections only). The daemon and"
        f" the floors run on {_loop_used()} (`--loop auto`, the default) unless the table"
        " says otherwise.",
        "",
        "| Goal | Measured | Met |",
        "| --- | --- | --- |",
    ]
    for r in results:
        p = r.params
        lines.append(
            f"| Whole daemon CPU per HTTP probe ≤ {CPU_GOAL}x blackbox_exporter's ({p.checks}"
            f" checks, {r.components} components, {p.rate:.0f} probes/s"
            + (", `reuse_connections`, blackbox on fresh connections" if p.reuse else "")
            + f") | {r.ms_per_probe:.3f} ms vs {r.blackbox.ms_per_probe:.3f} ms:"
            f" {r.ratio_blackbox:.2f}x | {_met(r.ratio_blackbox <= CPU_GOAL)} |"
        )
        if p.pin:
            p99 = r.lag_quantile(0.99)
            lines.append(
                f"| Lag p99 < 250 ms at {p.checks} checks + {r.components} components, one core"
                f" | {p99 * 1000:.1f} ms | {_met(p99 < LAG_GOAL)} |"
            )
            worst = r.body_ms(1.0)
            lines.append(
                f"| Whole /metrics body < 100 ms at {p.checks} checks, one core (worst of"
                f" {len(r.scrapes)}) | {worst:.1f} ms | {_met(worst < BODY_GOAL_MS)} |"
            )
    lines += ["", "| Figure | " + " | ".join(r.params.label for r in results) + " |"]
    lines.append("| --- |" + " ---: |" * len(results))

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("Checks / components", [f"{r.params.checks} / {r.components}" for r in results])
    row(
        "Interval, probe rate",
        [f"{r.params.interval:g} s, {r.params.rate:.0f}/s" for r in results],
    )
    row(
        "Connections",
        ["kept alive" if r.params.reuse else "fresh per probe" for r in results],
    )
    row("Daemon CPU set", ["one core (taskset)" if r.params.pin else "any" for r in results])
    row("Event loop (daemon and floors)", [_loop_used(r.params.loop) for r in results])
    row(
        "Start-up to serving / first round",
        [f"{r.startup_s:.1f} s / {r.ready_s:.1f} s" for r in results],
    )
    row("Window", [f"{r.window_s:.0f} s" for r in results])
    row(
        "Probes run (ok) / plan",
        [
            f"{r.probes_run:.0f} ({r.probes_ok:.0f}) / {r.params.rate * r.window_s:.0f}"
            for r in results
        ],
    )
    row("Daemon CPU, % of one core", [f"{r.cpu_percent:.1f}%" for r in results])
    row(
        "Daemon CPU ms/probe: /proc (process_cpu_seconds_total)",
        [
            f"**{r.ms_per_probe:.3f}** ({r.cpu_self * 1000 / r.probes_run:.3f})"
            if r.probes_run
            else "n/a"
            for r in results
        ],
    )
    row(
        "blackbox_exporter CPU ms/probe (probes ok)",
        [
            f"{r.blackbox.ms_per_probe:.3f} ({r.blackbox.ok:.0f}/{r.blackbox.probes:.0f})"
            for r in results
        ],
    )
    row("Daemon ÷ blackbox", [f"**{r.ratio_blackbox:.2f}x**" for r in results])
    row(
        "aiohttp floor CPU ms/probe (probes ok)",
        [f"{r.floor.ms_per_probe:.3f} ({r.floor.ok:.0f}/{r.floor.probes:.0f})" for r in results],
    )
    row("Daemon ÷ aiohttp floor", [f"{r.ratio_floor:.2f}x" for r in results])
    row(
        "lean client floor CPU ms/probe (probes ok)",
        [
            f"{r.lean.ms_per_probe:.3f} ({r.lean.ok:.0f}/{r.lean.probes:.0f})"
            if r.lean.probes
            else "n/a"
            for r in results
        ],
    )
    row(
        "Daemon ÷ lean floor",
        [f"{r.ratio_lean:.2f}x" if r.lean.probes else "n/a" for r in results],
    )
    row(
        "Lag p99 (p50)",
        [
            f"{r.lag_quantile(0.99) * 1000:.1f} ms ({r.lag_quantile(0.5) * 1000:.1f} ms)"
            for r in results
        ],
    )
    row("Lag max bucket reached", [_max_bucket(r) for r in results])
    row(
        "/metrics whole body worst / p99",
        [f"{r.body_ms(1.0):.1f} / {r.body_ms(0.99):.1f} ms" for r in results],
    )
    row(
        "/metrics size on the wire (text)",
        [_sizes(r) for r in results],
    )
    row(
        "Daemon RSS max in window (VmHWM)",
        [
            f"{max(r.rss_kib, default=0) / 1024:.0f} MiB ({r.hwm_kib / 1024:.0f} MiB)"
            for r in results
        ],
    )
    row(
        "blackbox / floor RSS",
        [f"{r.blackbox.rss_kib / 1024:.0f} / {r.floor.rss_kib / 1024:.0f} MiB" for r in results],
    )
    row(
        "Load average before → after (1, 5 min)",
        [
            f"{r.load_avg_before[0]:.2f}, {r.load_avg_before[1]:.2f} → {r.load_avg_after[0]:.2f},"
            f" {r.load_avg_after[1]:.2f}"
            for r in results
        ],
    )
    lines += [""] + [
        f"Run {r.params.label} did not complete: {r.error} (see"
        f" tests/bench/out/whole-{r.params.label}-daemon.log)."
        for r in results
        if r.error
    ]
    lines += [
        "",
        "How it is measured: CPU is utime + stime from `/proc/<pid>/stat` over the window"
        " (after the first round and a 5 s warm-up of the drivers), checked against the"
        " daemon's own `process_cpu_seconds_total` (in brackets); probes are the"
        " `vigie_probes_total` delta (every outcome), blackbox's and the floor's their"
        " drivers' counts over the same window; lag is the `vigie_scheduler_lag_seconds`"
        " delta read like PromQL's `histogram_quantile`. CPU is charged per wake-up of a"
        " process as much as per instruction on this VM (a loop waking 100 times a second to"
        " do nothing costs 0.17 ms of CPU per wake-up), so the floors start their GETs in the"
        " same slots as the daemon's scheduler. The daemon's figure includes"
        " everything it does: the per-check timers, probing, the store, the health engine,"
        " the /metrics renders and the status page's data; blackbox's includes serving"
        " `/probe`. With one core, the daemon is started under `taskset -c` on the last CPU"
        " and the target, blackbox_exporter, the floor and the harness are confined to the"
        " others. Other processes (other sessions' tests) shared the machine: the load"
        " average is in the table.",
        "",
    ]
    return "\n".join(lines) + "\n"


def _max_bucket(r: WholeResults) -> str:
    """Return the highest lag bucket edge any run of the window needed."""
    below = 0.0
    top = math.nan
    for le, count in r.lag:
        if count > below:
            top = le
        below = count
    if math.isnan(top):
        return "n/a"
    return "+Inf" if math.isinf(top) else f"≤ {top * 1000:g} ms"


def _sizes(r: WholeResults) -> str:
    """Return the last scrape's wire and text sizes."""
    if not r.scrapes:
        return "n/a"
    s = r.scrapes[-1]
    return f"{s.wire_bytes / 1e6:.1f} MB {s.encoding} ({s.text_bytes / 1e6:.1f} MB)"


def main() -> None:
    """Run one size from the command line: `python -m tests.bench.whole [--quick]`."""
    quick = "--quick" in sys.argv[1:]
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    params = [p for p in (QUICK if quick else FULL + EXTRA) if not only or p.label in only]
    profile = os.environ.get("VIGIE_BENCH_PYSPY")
    for p in params:
        p.profile = Path(profile) if profile else None
    results = [run_whole(p) for p in params]
    name = "-".join(p.label for p in params)
    (OUT / f"whole-{name}.json").write_text(
        json.dumps([r.to_json() for r in results], indent=2, default=str) + "\n"
    )
    print(render(results))


if __name__ == "__main__":
    main()
