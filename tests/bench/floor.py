"""The HTTP floors: only the GETs, at a fixed rate, nothing of Vigie around them.

`python -m tests.bench.floor --rate R --url U [--url U ...] [--reuse] [--mode M] [--loop L]`
runs until SIGTERM. On SIGUSR1 it prints one JSON line with the probes done and succeeded so
far, so the bench can read a window's count; its CPU is read from /proc by the bench.

Modes (what the GETs go through):

- `aiohttp` (default): the probe session of `vigie.probes.http.make_session` (fresh
  connection per request, no DNS cache, threaded resolver), or with --reuse the kept-alive
  variant, so the difference between it and the daemon is what Vigie adds: scheduling,
  judging, timing, the store, /metrics, health.
- `lean`: the measurement-only client of tests/bench/lean_http.py (asyncio Protocol, the
  request in one send, the answer parsed incrementally; fresh connection per GET).
- `raw`: the same parser on a bare non-blocking socket (add_writer/add_reader, no Transport),
  plain HTTP to IP literals only: the least asyncio can do per GET.
- `none`: no GET at all, only the pacing: the harness's own cost, to subtract.

The pacing is one `loop.call_at` per GET, or per slot with `--slot S` (the GETs due in one
slot of S seconds start together, as the daemon's scheduler starts its checks: see
`vigie.monitor.scheduler.SLOT`); no timeout and no exception per tick, so the floors measure
the GETs, not the harness. The event loop is the daemon's (`--loop`, as `vigie run --loop`):
uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from yarl import URL

from tests.bench import lean_http
from tests.bench.lean_http import LeanError, lean_request
from vigie.monitor.eventloop import CHOICES, loop_factory
from vigie.probes.http import make_session

Get = Callable[[int], Coroutine[Any, Any, None]]
"""Start the GET of the i-th tick."""


class Floor:
    """Counts of the GETs done so far."""

    def __init__(self) -> None:
        self.probes = 0
        self.ok = 0

    def report(self) -> None:
        """Print the counts as one JSON line."""
        print(json.dumps({"probes": self.probes, "ok": self.ok}), flush=True)


class _NoTiming:
    """A timing that notes nothing (the floor only counts)."""

    def on_connect_start(self) -> None:
        """Ignore."""

    def on_dns(self, start: float, end: float) -> None:
        """Ignore."""

    def on_connection_end(self) -> None:
        """Ignore."""

    def on_head(self, at: float) -> None:
        """Ignore."""


_NO_TIMING = _NoTiming()
_LIMIT = 1024 * 1024
"""The probe's default max_body_bytes."""


async def _paced(rate: float, floor: Floor, get: Get, slot: float) -> None:
    """Start get(i) at t0 + i/rate (overdue ones at once) until SIGTERM; wait for the last.

    With slot > 0, the due times are rounded up to multiples of slot seconds: the GETs due in
    one slot start together, in one wake-up of the loop, as the daemon's scheduler does.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, floor.report)
    tasks: set[asyncio.Task[None]] = set()
    t0 = loop.time()
    i = 0
    handle: asyncio.TimerHandle | None = None

    def tick() -> None:
        """Start the GETs due now and plan the next slot."""
        nonlocal i, handle
        now = loop.time()
        while True:
            task = loop.create_task(get(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            due = t0 + i / rate
            if slot > 0:
                due = t0 + math.ceil((due - t0) / slot) * slot
            if due > now:
                break
        handle = loop.call_at(due, tick)

    handle = loop.call_at(t0, tick)
    await stop.wait()
    handle.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run_aiohttp(rate: float, urls: list[str], reuse: bool, slot: float) -> None:
    """GET round-robin over urls on the probe session (or its kept-alive variant)."""
    floor = Floor()
    async with make_session(reuse=True) if reuse else make_session() as session:

        async def get(i: int) -> None:
            """GET one url and read its body; count it."""
            try:
                async with session.get(urls[i % len(urls)]) as resp:
                    await resp.read()
                    floor.ok += resp.status == 200
            except (aiohttp.ClientError, OSError):
                pass
            floor.probes += 1

        await _paced(rate, floor, get, slot)


async def _run_lean(rate: float, urls: list[str], slot: float) -> None:
    """GET round-robin over urls on the lean client (fresh connection per GET)."""
    floor = Floor()
    parsed = [URL(u) for u in urls]

    async def get(i: int) -> None:
        """GET one url and read its body (up to the probe's default limit); count it."""
        try:
            resp = await lean_request(
                "GET",
                parsed[i % len(parsed)],
                headers={},
                body=None,
                limit=_LIMIT,
                follow_redirects=True,
                sslctx=None,
                server_name=None,
                timing=_NO_TIMING,
            )
            floor.ok += resp.status == 200
        except LeanError:
            pass
        floor.probes += 1

    await _paced(rate, floor, get, slot)


async def _run_none(rate: float, slot: float) -> None:
    """Only tick: the pacing's own cost."""
    floor = Floor()

    async def get(_: int) -> None:
        """Count a tick."""
        floor.probes += 1

    await _paced(rate, floor, get, slot)


def main() -> None:
    """Parse the arguments and run until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, required=True, help="GETs started per second")
    parser.add_argument("--url", action="append", required=True, help="target URL (repeatable)")
    parser.add_argument("--reuse", action="store_true", help="keep connections alive")
    parser.add_argument(
        "--slot",
        type=float,
        default=0.0,
        help="start the GETs due in one slot of this many seconds together (0: each on time)",
    )
    parser.add_argument(
        "--mode",
        choices=("aiohttp", "lean", "raw", "none"),
        default="aiohttp",
        help="what the GETs go through (see the module's docstring)",
    )
    parser.add_argument(
        "--loop",
        choices=CHOICES,
        default="auto",
        help="event loop, as `vigie run --loop` (default: auto, the daemon's own default)",
    )
    args = parser.parse_args()
    if args.reuse and args.mode != "aiohttp":
        parser.error("--reuse is for --mode aiohttp: the others open a fresh connection per GET")
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        if args.mode == "aiohttp":
            runner.run(_run_aiohttp(args.rate, args.url, args.reuse, args.slot))
        elif args.mode == "none":
            runner.run(_run_none(args.rate, args.slot))
        else:
            lean_http.RAW = args.mode == "raw"
            runner.run(_run_lean(args.rate, args.url, args.slot))
    sys.exit(0)


if __name__ == "__main__":
    main()
