"""A test hospital served by a real loopback web app whose answers a test flips, and a Daemon on it.

Each component of tests/health/hospital.py has one http check on `{base}/{component}`; the app
answers 200 unless the component is in `down` (then 503), so a test (or the screenshot script)
simulates the Datacenter Nord power cut by failing its UPS, SAN, servers and applications.
Shared by the page tests, the browser test and `make screenshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from tests.health.hospital import hospital
from tests.waiting import wait_for
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.monitor.health.states import State
from vigie.probes.base import ProbeRegistry
from vigie.probes.http import HttpProbe, make_session

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
)


def nord_power_cut() -> set[str]:
    """Components that stop answering when Datacenter Nord loses power (A/B UPS both down)."""
    config = hospital()
    down = {"ups-nord-1", "ups-nord-2", "san-nord"}
    down |= {f"srv-{i:02d}" for i in range(10)}
    for comp in config["components"]:
        deps = comp.get("depends_on", [])
        if comp["kind"] == "application" and deps and isinstance(deps[0], str) and deps[0] in down:
            down.add(comp["id"])  # single-site apps; the any_of ones fail over to Bellevue
    return down


class Targets:
    """The hospital's services on one loopback port; `down` lists components failing now."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.base = ""
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None

    async def handle(self, request: web.Request) -> web.Response:
        """Answer like the component's health page: 200 when up, 503 when down."""
        comp = request.match_info["component"]
        if comp in self.down:
            return web.Response(status=503, text="power lost")
        return web.Response(text="status: OK")

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_get("/{component}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # A socket bound here tells its port without reaching into aiohttp's private _server.
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, self._sock).start()
        self.base = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._sock is not None:
            self._sock.close()


@asynccontextmanager
async def running_hospital(
    tmp: Path,
    registry: ProbeRegistry | None = None,
    extra: dict[str, Any] | None = None,
    config_hook: Callable[[dict[str, Any]], None] | None = None,
) -> AsyncIterator[tuple[Daemon, Targets]]:
    """Start the target app and a Daemon watching the test hospital; stop both after."""
    registry = registry or ProbeRegistry([HttpProbe()])
    targets = Targets()
    await targets.start()
    config = hospital(targets.base)
    config["web"] = {"listen": "127.0.0.1:0"}
    config["health"] = {"resolve_hold": 0}  # a test sees incidents close at once
    config.update(extra or {})
    if config_hook is not None:
        config_hook(config)
    path = tmp / "vigie.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    try:
        async with make_session() as session:
            daemon = Daemon(load_config(path, registry, env={}), registry, session)
            await daemon.start()
            try:
                yield daemon, targets
            finally:
                await daemon.stop()
    finally:
        await targets.stop()


def all_ok(daemon: Daemon) -> bool:
    """True once every component of the hospital is OK."""
    comps = daemon.health.engine.snapshot.components
    return bool(comps) and all(c.state is State.OK for c in comps.values())


def nord_incident(daemon: Daemon) -> bool:
    """True once the site incident of Datacenter Nord is open with its applications."""
    incident = daemon.health.engine.snapshot.incidents.get("site:nord")
    return incident is not None and len(incident.applications) >= 20


async def power_cut(daemon: Daemon, targets: Targets) -> None:
    """Wait for a healthy hospital, cut Nord's power and wait for the site incident."""
    await wait_for(lambda: all_ok(daemon), "every component OK")
    targets.down = nord_power_cut()
    await wait_for(lambda: nord_incident(daemon), "the Datacenter Nord incident")


async def fetch(daemon: Daemon, path: str, **kwargs: Any) -> tuple[int, str]:
    """GET a page of the daemon over plain HTTP."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{daemon.listen_port}{path}", **kwargs) as resp,
    ):
        return resp.status, await resp.text()


def chromium_binary() -> str | None:
    """Return Debian's chromium when installed."""
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


async def chromium(binary: str, *args: str, deadline: float = 60.0) -> str:
    """Run headless chromium with a fresh profile; return its stdout (e.g. --dump-dom)."""
    # chromium's helpers may still write in the profile as they exit: never fail on its removal
    with tempfile.TemporaryDirectory(
        prefix="vigie-chromium-", ignore_cleanup_errors=True
    ) as profile:
        proc = await asyncio.create_subprocess_exec(
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), deadline)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: chromium and its helpers
            await proc.wait()
            raise AssertionError(f"chromium did not finish within {deadline}s") from None
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode}: {err.decode()[-2000:]}")
    return out.decode()
