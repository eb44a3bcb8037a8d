"""Worker process: run N probes through a real Scheduler and print the CPU they took.

By default it builds one http check of --url; with --config it runs --check-id of that file
(the SNMP benchmark writes one).

With --mode aiohttp it runs plain aiohttp GETs on fresh connections instead: the floor that
the library and asyncio set, to tell Vigie's own cost from theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from vigie.monitor.config import load_config
from vigie.monitor.exposition import Exposition, check_labels
from vigie.monitor.logs import configure_logging
from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
from vigie.monitor.store import ResultStore
from vigie.probes import default_registry
from vigie.probes.base import Check
from vigie.probes.http import make_session

CHECK_ID = "bench-http"


@dataclass(frozen=True)
class Load:
    """What to run: n probes of url, concurrency at a time, each batch within budget seconds."""

    url: str
    n: int
    concurrency: int
    warmup: int
    budget: float


@dataclass
class Tally:
    """Outcome counts of a batch of probes."""

    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, success: bool, error: str | None) -> None:
        """Count one probe outcome."""
        if success:
            self.ok += 1
        else:
            self.failed += 1
            key = error or "?"
            self.errors[key] = self.errors.get(key, 0) + 1


async def _batch(probe_once: Callable[[Tally], Awaitable[None]], n: int, load: Load) -> Tally:
    """Call probe_once n times, load.concurrency at a time; stop at load.budget seconds."""
    tally = Tally()
    remaining = n
    deadline = time.monotonic() + load.budget

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            await probe_once(tally)

    await asyncio.gather(*(worker() for _ in range(load.concurrency)))
    return tally


async def _measured(
    probe_once: Callable[[Tally], Awaitable[None]], load: Load, profile: Path | None = None
) -> dict[str, object]:
    """Warm up, then time load.n probes with getrusage(RUSAGE_SELF); return the figures."""
    await _batch(probe_once, load.warmup, load)
    profiler = cProfile.Profile() if profile is not None else None
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    tally = await _batch(probe_once, load.n, load)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_SELF)
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        print(text.getvalue(), file=sys.stderr)
    return {
        "probes": tally.ok + tally.failed,
        "ok": tally.ok,
        "failed": tally.failed,
        "errors": tally.errors,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "wall": wall,
        "max_rss_kib": after.ru_maxrss,
    }


def _check(url: str, timeout: float) -> Check:
    """Load a one-check config through the real config path and return its Check."""
    text = (
        f"checks:\n  - id: {CHECK_ID}\n    kind: http\n    target: {url}\n"
        f"    timeout: {timeout:g}s\n    interval: {max(timeout, 1.0):g}s\n"
    )
    with tempfile.TemporaryDirectory(prefix="vigie-bench-") as tmp:
        path = Path(tmp) / "vigie.yaml"
        path.write_text(text)
        return load_config(path, default_registry()).plan[CHECK_ID]


def _config_check(config: Path, check_id: str) -> Check:
    """Load a config file written by a benchmark and return one of its checks."""
    return load_config(config, default_registry()).plan[check_id]


async def measure_vigie(
    load: Load, profile: Path | None, check: Check | None = None
) -> dict[str, object]:
    """Probe through Scheduler.run with the real probe and session, as the daemon does."""
    registry = default_registry()
    check = check or _check(load.url, timeout=10.0)
    own = CollectorRegistry()
    store = ResultStore()
    exposition = Exposition(own)
    exposition.set_labels({check.id: check_labels(check)})
    store.subscribe(exposition.update)  # as Daemon wires it: each result is rendered on arrival
    async with make_session() as session:
        scheduler = Scheduler(
            registry,
            store,
            session,
            SchedulerMetrics(own),
            max_concurrency=1024,
            per_host_concurrency=max(8, load.concurrency),
        )

        async def probe_once(tally: Tally) -> None:
            result = await scheduler.run(check)
            store.update(check.id, result)
            tally.add(result.success, result.error)

        figures = await _measured(probe_once, load, profile)
    return {**figures, "page_bytes": len(exposition.render())}


async def measure_aiohttp(load: Load) -> dict[str, object]:
    """Plain aiohttp GETs on a fresh connection each, body read: the library's floor."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def probe_once(tally: Tally) -> None:
            async with session.get(load.url) as resp:
                await resp.read()
            tally.add(resp.status == 200, f"status {resp.status}")

        return await _measured(probe_once, load)


def main() -> None:
    """Parse arguments, measure, print one JSON object on stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="", help="http target (without --config)")
    parser.add_argument("--config", type=Path, help="run CHECK_ID of this config instead")
    parser.add_argument("--check-id", default=CHECK_ID)
    parser.add_argument("--mode", choices=["vigie", "aiohttp"], default="vigie")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per batch at most")
    parser.add_argument("--profile", type=Path, help="write cProfile stats here (slows it down)")
    args = parser.parse_args()
    configure_logging("info", stream=sys.stderr)
    load = Load(args.url, args.n, args.concurrency, args.warmup, args.budget)
    if args.mode == "aiohttp":
        figures = asyncio.run(measure_aiohttp(load))
    elif args.config is not None:
        check = _config_check(args.config, args.check_id)
        figures = asyncio.run(measure_vigie(load, args.profile, check))
    else:
        figures = asyncio.run(measure_vigie(load, args.profile))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
