"""Fallback target server when nginx is missing: serves the static body on each --listen."""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from tests.bench.common import TARGET_BODY, TARGET_PATH


async def _serve(listens: list[str]) -> None:
    """Serve TARGET_PATH on every host:port until SIGTERM or SIGINT."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=TARGET_BODY, content_type="text/plain")

    app = web.Application()
    app.router.add_get(TARGET_PATH, ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for listen in listens:
        host, _, port = listen.rpartition(":")
        await web.TCPSite(runner, host, int(port), backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    """Parse --listen host:port (repeatable) and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", action="append", required=True, help="host:port")
    asyncio.run(_serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
