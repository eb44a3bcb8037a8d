"""Benchmark 1: CPU seconds per HTTP probe of Vigie, blackbox_exporter and check_http."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp

from tests.bench.common import (
    ROOT,
    TARGET_PATH,
    CpuTimes,
    children_cpu,
    free_port,
    log,
    proc_cpu,
    stop_process,
    target_server,
    wait_port,
)

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
CHECK_HTTP = "/usr/lib/nagios/plugins/check_http"
BLACKBOX_CONFIG = """modules:
  http_2xx:
    prober: http
    timeout: 10s
    http:
      preferred_ip_protocol: ip4
"""


@dataclass
class CpuRun:
    """One measured batch of probes by one tool."""

    tool: str
    probes: int
    ok: int
    user: float
    sys: float
    wall: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ms_per_probe(self) -> float:
        """Return CPU milliseconds (user + sys) per probe."""
        return (self.user + self.sys) * 1000 / self.probes if self.probes else float("nan")


@dataclass
class CpuParams:
    """Sizes of the CPU benchmark."""

    n: int
    n_check_http: int
    concurrency: int
    rounds: int
    warmup: int
    budget: float = 120.0


@dataclass
class CpuResults:
    """Every run of the CPU benchmark and the setup it ran on."""

    params: CpuParams
    target: str
    url: str
    runs: list[CpuRun] = field(default_factory=list)

    def median_ms(self, tool: str) -> float:
        """Return the median CPU ms per probe of a tool over its rounds."""
        values = [r.ms_per_probe for r in self.runs if r.tool == tool]
        return statistics.median(values) if values else float("nan")

    def to_json(self) -> dict[str, object]:
        """Return the results as plain data."""
        return {
            "params": asdict(self.params),
            "target": self.target,
            "url": self.url,
            "runs": [{**asdict(r), "ms_per_probe": r.ms_per_probe} for r in self.runs],
        }


def run_worker(url: str, p: CpuParams, mode: str = "vigie", extra: Sequence[str] = ()) -> CpuRun:
    """Run the Python worker in its own process; it measures its own probing phase.

    extra: more worker arguments, e.g. `--config FILE --check-id ID` (the SNMP benchmark).
    """
    cmd = [sys.executable, "-m", "tests.bench.vigie_cpu", "--url", url, "--n", str(p.n)]
    cmd += ["--mode", mode, *extra]
    cmd += ["--concurrency", str(p.concurrency), "--warmup", str(p.warmup)]
    cmd += ["--budget", str(p.budget)]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=2 * p.budget + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"vigie worker failed ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return CpuRun(
        mode,
        int(data["probes"]),
        int(data["ok"]),
        float(data["user"]),
        float(data["sys"]),
        float(data["wall"]),
        {str(k): int(v) for k, v in data["errors"].items()},
    )


@contextlib.contextmanager
def blackbox_exporter() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run blackbox_exporter with an http_2xx module on a free loopback port."""
    workdir = Path(tempfile.mkdtemp(prefix="vigie-bench-blackbox-"))
    conf = workdir / "blackbox.yml"
    conf.write_text(BLACKBOX_CONFIG)
    port = free_port()
    cmd = [BLACKBOX, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}"]
    cmd.append("--log.level=warn")
    with (workdir / "blackbox.log").open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port, 15)
        yield proc, port
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


async def _drive_blackbox(port: int, url: str, n: int, concurrency: int, budget: float) -> CpuRun:
    """GET /probe n times, concurrency at a time, over kept-alive connections."""
    probe_url = f"http://127.0.0.1:{port}/probe?module=http_2xx&target={quote(url, safe='')}"
    ok = done = 0
    errors: dict[str, int] = {}
    remaining = n
    deadline = time.monotonic() + budget
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal remaining, ok, done
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                async with session.get(probe_url) as resp:
                    body = await resp.text()
                done += 1
                if resp.status == 200 and "\nprobe_success 1\n" in body:
                    ok += 1
                else:
                    key = f"status {resp.status}"
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return CpuRun("blackbox", done, ok, 0.0, 0.0, 0.0, errors)


def run_blackbox(pid: int, port: int, url: str, p: CpuParams) -> CpuRun:
    """Warm up, then measure blackbox_exporter's CPU over n probes from /proc/<pid>/stat."""
    asyncio.run(_drive_blackbox(port, url, p.warmup, p.concurrency, p.budget))
    before = proc_cpu(pid)
    wall0 = time.perf_counter()
    run = asyncio.run(_drive_blackbox(port, url, p.n, p.concurrency, p.budget))
    run.wall = time.perf_counter() - wall0
    used = proc_cpu(pid) - before
    run.user, run.sys = used.user, used.sys
    return run


def run_check_http(port: int, p: CpuParams) -> CpuRun:
    """Run check_http n times, concurrency at a time; CPU from RUSAGE_CHILDREN."""
    cmd = [CHECK_HTTP, "-H", "127.0.0.1", "-p", str(port), "-u", TARGET_PATH, "-t", "10"]
    deadline = time.monotonic() + p.budget

    def one(_: int) -> str | None:
        if time.monotonic() > deadline:
            return "skipped: over budget"
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return None if done.returncode == 0 else done.stdout.strip()[:200]

    before: CpuTimes = children_cpu()
    wall0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=p.concurrency) as pool:
        outcomes = list(pool.map(one, range(p.n_check_http)))
    wall = time.perf_counter() - wall0
    used = children_cpu() - before
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if outcome is not None:
            errors[outcome] = errors.get(outcome, 0) + 1
    ran = sum(1 for o in outcomes if o is None or not o.startswith("skipped"))
    ok = sum(1 for o in outcomes if o is None)
    return CpuRun("check_http", ran, ok, used.user, used.sys, wall, errors)


def run_cpu(p: CpuParams) -> CpuResults:
    """Run every tool against one loopback nginx, in interleaved rounds."""
    port = free_port()
    with target_server([("127.0.0.1", port)], workers=1) as target:
        url = target.url()
        results = CpuResults(p, target.kind, url)
        with blackbox_exporter() as (bb, bb_port):
            steps: list[Callable[[], CpuRun]] = [
                lambda: run_worker(url, p, "vigie"),
                lambda: run_blackbox(bb.pid, bb_port, url, p),
                lambda: run_check_http(port, p),
                lambda: run_worker(url, p, "aiohttp"),
            ]
            for rnd in range(1, p.rounds + 1):
                for step in steps:
                    time.sleep(1.0)  # let the previous batch's sockets and processes settle
                    r = step()
                    results.runs.append(r)
                    log(
                        f"cpu round {rnd}/{p.rounds} {r.tool}: {r.probes} probes ({r.ok} ok), "
                        f"{r.ms_per_probe:.3f} ms CPU/probe, {r.wall:.1f}s wall"
                    )
    return results
