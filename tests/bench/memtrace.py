"""What a check costs in memory: `vigie run` in this process under tracemalloc, by line.

`python -m tests.bench.memtrace CHECKS INTERVAL SECONDS TOP` writes the whole-daemon config
(tests/bench/whole.py: the generated hospital, HTTP checks of a loopback nginx), runs the
daemon on it, takes a tracemalloc snapshot SECONDS after start (give it a few intervals so
histories fill), stops the daemon and prints the TOP source lines holding the most memory,
with bytes per check.
A development tool of the memory benchmark (tests/bench/memory.py), not part of `make bench`.
"""

from __future__ import annotations

import asyncio
import linecache
import os
import signal
import sys
import tracemalloc
from pathlib import Path

from tests.bench.common import OUT, free_port, target_server
from tests.bench.whole import TARGET_HOSTS, WholeParams, write_config
from vigie.monitor.app import run_daemon
from vigie.monitor.config import load_config
from vigie.monitor.logs import configure_logging
from vigie.probes import default_registry


def _report(snapshot: tracemalloc.Snapshot, checks: int, top: int) -> None:
    """Print the lines holding the most memory, and their share per check."""
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    print(f"traced {total / 2**20:.1f} MiB, {total / checks:.0f} B per check ({checks} checks)")
    by_file = snapshot.statistics("filename")
    for stat in by_file[:top]:
        name = stat.traceback[0].filename.split("site-packages/")[-1]
        print(f"{stat.size / checks:8.0f} B/check  {name}")
    print("---")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        code = linecache.getline(frame.filename, frame.lineno).strip()[:70]
        print(f"{stat.size / checks:8.0f} B/check {stat.count / checks:6.1f} obj  {where}  {code}")


async def _main(config: Path, seconds: float, top: int) -> int:
    """Run the daemon, snapshot after `seconds`, then stop it."""
    checks = len(load_config(config, default_registry()).plan)

    async def later() -> None:
        await asyncio.sleep(seconds)
        _report(tracemalloc.take_snapshot(), checks, top)
        os.kill(os.getpid(), signal.SIGTERM)

    task = asyncio.create_task(later())
    code = await run_daemon(config, default_registry())
    task.cancel()
    return code


def main() -> None:
    """Parse CHECKS INTERVAL SECONDS TOP, start the target and run."""
    checks, interval = int(sys.argv[1]), float(sys.argv[2])
    seconds, top = float(sys.argv[3]), int(sys.argv[4])
    listens = [(host, free_port(host)) for host in TARGET_HOSTS]
    config = OUT / "memtrace.yaml"
    with target_server(listens, workers=1):
        write_config(config, WholeParams("memtrace", checks, interval, 0.0), listens, free_port())
        configure_logging("warning", stream=sys.stderr)
        tracemalloc.start(1)
        code = asyncio.run(_main(config, seconds, top))
    sys.exit(code)


if __name__ == "__main__":
    main()
