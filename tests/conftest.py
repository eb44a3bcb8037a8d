"""Shared fixtures: free ports, required Debian peers, loopback servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from vigie.monitor.eventloop import loop_factory

PROBES_TESTS = Path(__file__).parent / "probes"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loop an async test runs on: the probes' tests on uvloop, the daemon's own (its
    sockets, TLS and subprocesses), the others on asyncio's; VIGIE_TEST_LOOP=asyncio or
    uvloop puts them all on one (`make test-asyncio`: the probes on `--loop asyncio`)."""
    choice = os.environ.get("VIGIE_TEST_LOOP") or (
        "uvloop" if item.path.is_relative_to(PROBES_TESTS) else "asyncio"
    )
    return {"loop": loop_factory(choice)}


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(path: str, package: str) -> str:
    """Return the path of a peer program; skip the test when it is missing (fail in CI)."""
    found = path if os.path.exists(path) else shutil.which(path)
    if found is None:
        message = f"{path} missing: apt-get install {package} (or run make test as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """Serve an aiohttp application on a free loopback port; yield the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()
