"""The plain aiohttp floor: only the HTTP GETs, at a fixed rate, on Vigie's session settings.

`python -m tests.bench.floor --rate R --url U [--url U ...] [--reuse]` runs until SIGTERM.
On SIGUSR1 it prints one JSON line with the probes done and succeeded so far, so the bench
can read a window's count; its CPU is read from /proc by the bench. It uses the probe
session of `vigie.probes.http.make_session` (fresh connection per request, no DNS cache,
threaded resolver), or with --reuse the kept-alive variant, so the difference between it and
the daemon is what Vigie adds: scheduling, judging, timing, the store, /metrics, health.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

import aiohttp

from vigie.probes.http import make_session


class Floor:
    """Counts of the GETs done so far."""

    def __init__(self) -> None:
        self.probes = 0
        self.ok = 0

    def report(self) -> None:
        """Print the counts as one JSON line."""
        print(json.dumps({"probes": self.probes, "ok": self.ok}), flush=True)


async def _get(session: aiohttp.ClientSession, url: str, floor: Floor) -> None:
    """GET url and read its body; count it."""
    try:
        async with session.get(url) as resp:
            await resp.read()
            floor.ok += resp.status == 200
    except (aiohttp.ClientError, OSError):
        pass
    floor.probes += 1


async def _run(rate: float, urls: list[str], reuse: bool) -> None:
    """Start one GET every 1/rate seconds, round-robin over urls, until SIGTERM."""
    floor = Floor()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, floor.report)
    tasks: set[asyncio.Task[None]] = set()
    async with make_session(reuse=True) if reuse else make_session() as session:
        t0 = time.monotonic()
        i = 0
        while not stop.is_set():
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await stop.wait()
                except TimeoutError:
                    pass
                continue
            task = asyncio.create_task(_get(session, urls[i % len(urls)], floor))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    """Parse the arguments and run until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, required=True, help="GETs started per second")
    parser.add_argument("--url", action="append", required=True, help="target URL (repeatable)")
    parser.add_argument("--reuse", action="store_true", help="keep connections alive")
    args = parser.parse_args()
    asyncio.run(_run(args.rate, args.url, args.reuse))
    sys.exit(0)


if __name__ == "__main__":
    main()
