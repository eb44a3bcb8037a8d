"""Workers on NATS: how many checks one `vigie worker` core carries, `python -m tests.bench.bus`.

One `vigie worker` process, pinned with `taskset` to the last CPU, runs every check (HTTP GETs
of a static file on a loopback nginx; nginx and nats-server on the other CPU) and publishes
each result on a real nats-server; this process subscribes to every result like `vigie run`
and decodes it. Each size runs one interval to settle, then a window: the results delivered
against those due, the worker's CPU per probe (from /proc) and its RSS. Checks per core at a
60 s interval is 60 s over the CPU per probe, and holds only while delivery keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nats
import yaml
from nats.aio.msg import Msg

from tests.bench.common import (
    OUT,
    ROOT,
    free_port,
    log,
    proc_cpu,
    proc_memory,
    stop_process,
    target_server,
    wait_port,
)
from vigie.monitor.bus.codec import DecodeError, decode

NATS_SERVER = "/usr/sbin/nats-server"


@dataclass(frozen=True)
class Size:
    """One run: checks at an interval, measured over a window after one settling interval."""

    checks: int
    interval: float
    window: float


@dataclass
class Row:
    """What one size measured."""

    checks: int
    interval: float
    due_per_s: float
    delivered_per_s: float
    decode_errors: int
    cpu_ms_per_probe: float
    cpu_share: float
    rss_mib: float
    pinned: bool
    failed_share: float
    load: float

    @property
    def checks_per_core_60s(self) -> float:
        """Checks at a 60 s interval one core would carry at this CPU per probe."""
        return 60_000.0 / self.cpu_ms_per_probe if self.cpu_ms_per_probe > 0 else 0.0


FULL = [Size(50000, 60.0, 60.0)]  # the aim; smaller sizes by --quick
QUICK = [Size(500, 10.0, 10.0), Size(1500, 10.0, 10.0)]


def _config(work: Path, nats_url: str, url: str, size: Size) -> Path:
    """A config of size.checks http checks of the static file, with a bus section."""
    config = {
        "defaults": {"interval": size.interval, "timeout": 5.0},
        "scheduler": {"max_concurrency": 1024, "per_host_concurrency": 1024},
        "bus": {"servers": [nats_url], "worker_ttl": 5.0, "kv_bucket": "bench"},
        "checks": [
            {"id": f"web.{i:05d}", "kind": "http", "target": url} for i in range(size.checks)
        ],
    }
    path = work / f"bus-{size.checks}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _spawn(cmd: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start a child process writing its output to log_file (started in one go, not awaited)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


async def _measure(size: Size, nats_url: str, url: str, work: Path) -> Row:
    """Run one worker on size's checks; count what reaches the bus in the window."""
    config = _config(work, nats_url, url, size)
    cpus = os.cpu_count() or 1
    cmd = [sys.executable, "-m", "vigie.monitor.cli", "worker", "-c", str(config), "--name", "b1"]
    pinned = cpus > 1 and shutil.which("taskset") is not None
    if pinned:
        cmd = ["taskset", "-c", str(cpus - 1), *cmd]
    client = await nats.connect(nats_url)
    counts = {"ok": 0, "bad": 0, "failed": 0}
    ran: set[str] = set()
    round_done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        try:
            got = decode(msg.data, 1 << 20)
        except DecodeError:
            counts["bad"] += 1
        else:
            counts["ok"] += 1
            counts["failed"] += not got.result.success
            ran.add(got.check_id)
            if len(ran) >= size.checks:
                round_done.set()

    await client.subscribe("vigie.results.>", cb=on_msg)
    worker = _spawn(cmd, work / f"worker-{size.checks}.log")
    try:
        with contextlib.suppress(TimeoutError):  # start, register, one whole round
            await asyncio.wait_for(round_done.wait(), 3 * size.interval + 120.0)
        before, got, failed = proc_cpu(worker.pid), counts["ok"], counts["failed"]
        started = time.monotonic()
        await asyncio.sleep(size.window)
        took = time.monotonic() - started
        cpu = (proc_cpu(worker.pid) - before).total
        delivered = counts["ok"] - got
        rss = proc_memory(worker.pid).get("VmRSS", 0) / 1024
        failed = counts["failed"] - failed
        load = os.getloadavg()[0]
    finally:
        stop_process(worker)
        await client.close()
    return Row(
        checks=size.checks,
        interval=size.interval,
        due_per_s=size.checks / size.interval,
        delivered_per_s=delivered / took,
        decode_errors=counts["bad"],
        cpu_ms_per_probe=1000.0 * cpu / delivered if delivered else 0.0,
        cpu_share=cpu / took,
        rss_mib=rss,
        pinned=pinned,
        failed_share=failed / delivered if delivered else 0.0,
        load=load,
    )


async def _run(sizes: list[Size]) -> list[Row]:
    """Start nats-server and the target, then measure each size in turn."""
    work = Path(tempfile.mkdtemp(prefix="vigie-bench-bus-"))
    port = free_port()
    server = _spawn(
        [NATS_SERVER, "-js", "-sd", str(work / "js"), "-a", "127.0.0.1", "-p", str(port)],
        work / "nats-server.log",
    )
    rows = []
    try:
        wait_port("127.0.0.1", port, 15)
        with target_server([("127.0.0.1", free_port())]) as target:
            for size in sizes:
                log(f"bus: {size.checks} checks every {size.interval:g}s on one worker")
                rows.append(await _measure(size, f"nats://127.0.0.1:{port}", target.url(), work))
    finally:
        stop_process(server)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def render(rows: list[Row]) -> str:
    """Return the Markdown section: one row per size."""
    lines = [
        "## Workers on NATS: checks per worker core",
        "",
        "One `vigie worker` (pinned to one CPU when there are two) runs every check and publishes"
        " each result on a local nats-server; the bench subscribes to all results as `vigie run`"
        " does. Command: `python -m tests.bench.bus` (`--quick` for a short run).",
        "",
        "| checks | interval | due /s | delivered /s | failed | worker CPU ms/probe | worker CPU"
        " | RSS MiB | load avg | checks per core at 60 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.checks} | {r.interval:g}s | {r.due_per_s:.0f} | {r.delivered_per_s:.0f}"
            f" | {100 * r.failed_share:.1f}% | {r.cpu_ms_per_probe:.2f} | {100 * r.cpu_share:.0f}%"
            f" | {r.rss_mib:.0f} | {r.load:.1f} | {r.checks_per_core_60s:,.0f} |"
        )
    lines += [
        "",
        "Checks per core is 60 s over the CPU per probe: it holds while delivered keeps up with"
        " due and nothing fails. Delivered below due with the worker well under its core means"
        " the machine was starved (load average against its CPUs), not the worker's ceiling.",
        "",
    ]
    return "\n".join(lines)


def run(quick: bool) -> str:
    """Run the sizes; write bus.json; return the Markdown section."""
    rows = asyncio.run(_run(QUICK if quick else FULL))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bus.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return render(rows)


if __name__ == "__main__":
    print(run("--quick" in sys.argv[1:]))
