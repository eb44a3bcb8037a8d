"""Two Vigie replicas as real `vigie run` processes, a two-member Alertmanager cluster, targets.

Everything is real and on loopback: the replicas are separate processes (so SIGKILL is a
replica's death), the Alertmanagers are Debian's prometheus-alertmanager gossiping on free
ports, and the receiver records both Alertmanager's notifications (/am/<member>) and Vigie's
own webhook sink (/direct). The targets are one aiohttp server whose paths answer 503 while
their site is "down". Time is compressed: checks every 0.5 s, the peer watch every 0.5 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.alerting.conftest import (
    Alertmanager,
    AlertmanagerFactory,
    Receiver,
    alertmanagers,
    receiver,
    session,
)
from tests.conftest import free_port
from tests.waiting import wait_for

__all__ = ["Pair", "alertmanagers", "pair", "receiver", "session"]

ROOT = Path(__file__).resolve().parents[2]
SITES = {"bellevue": "Datacenter Bellevue", "nord": "Datacenter Nord"}
NAMES = ("bellevue", "nord")
"""Replica names, in the order that decides the direct-sink sender (bellevue first)."""

AM_HA_CONFIG = """
route:
  receiver: hook
  group_by: [alertname, site, root_cause]
  group_wait: 1s
  group_interval: 3s
  repeat_interval: 1h
  routes:
    - matchers: ['alertname = "VigieWatchdog"']
      receiver: none
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
  - name: none
"""


class Targets:
    """One HTTP server standing for every site's devices: a site's paths fail while it is down."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Serve on a free loopback port."""

        async def handle(request: web.Request) -> web.Response:
            site = request.match_info["site"]
            return web.Response(status=503 if site in self.down else 200, text=site)

        app = web.Application()
        app.router.add_get("/{site}/{device}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        tcp = web.TCPSite(self._runner, "127.0.0.1", 0)
        await tcp.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()


def ha_config(targets: str, ports: dict[str, int], ams: list[str], hook: str) -> dict[str, Any]:
    """The one config both replicas run: two datacenters, three devices and an app in each."""
    checks: list[dict[str, Any]] = []
    components: list[dict[str, Any]] = []
    for site in SITES:
        for device in ("srv1", "srv2", "db"):
            cid = f"{site}-{device}"
            checks.append({"id": cid, "kind": "http", "target": f"{targets}/{site}/{device}"})
            components.append(
                {"id": cid, "kind": "server", "site": site, "checks": [cid], "name": cid}
            )
        checks.append({"id": f"{site}-app", "kind": "http", "target": f"{targets}/{site}/app"})
        components.append(
            {
                "id": f"{site}-app",
                "kind": "application",
                "site": site,
                "name": f"Dossier {site}",
                "criticality": 1,
                "checks": [f"{site}-app"],
                "depends_on": [f"{site}-srv1"],
            }
        )
    return {
        "defaults": {"interval": "500ms", "timeout": "400ms"},
        "web": {"listen": "127.0.0.1:${VIGIE_PORT}"},
        "state_dir": "${VIGIE_STATE}",
        "sites": [{"id": s, "name": n} for s, n in SITES.items()],
        "components": components,
        "checks": checks,
        # Longer than the two replicas' skew (a check interval): neither re-fires the other's
        # resolved incident with a late update.
        "health": {"resolve_hold": "2s", "confirm_max": "2s"},
        "replicas": {
            "instance": "${VIGIE_INSTANCE}",
            "members": [
                {"name": n, "url": f"http://127.0.0.1:{ports[n]}", "site": n} for n in NAMES
            ],
            "interval": "500ms",
            "timeout": "400ms",
            "max_heartbeat_age": "5s",
            "handoff": "4s",
            "startup_grace": "15s",
            "lost_hold": "3s",
        },
        "alerting": {
            "alertmanagers": ams,
            "webhooks": [{"url": f"{hook}/direct", "name": "direct"}],
            "resend_interval": "30s",
            "backoff_initial": "50ms",
            "backoff_max": "300ms",
            "group_wait": "1s",
            "flush_timeout": "1s",
        },
    }


@dataclass
class Replica:
    """One `vigie run` process of the pair."""

    name: str
    port: int
    config: Path
    state: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Its web server."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the process (same state_dir as before, if restarted)."""
        env = {
            **os.environ,
            "VIGIE_INSTANCE": self.name,
            "VIGIE_PORT": str(self.port),
            "VIGIE_STATE": str(self.state),
        }
        self.state.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(self.config)),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )

    def kill(self) -> None:
        """SIGKILL: the replica dies as with its datacenter's power, nothing flushed."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM and wait (killed after 10 s)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its JSON log events of that name."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    out.append(event)
        return out


@dataclass
class Pair:
    """Two replicas, the Alertmanager cluster they post to, the targets and the receiver."""

    replicas: dict[str, Replica]
    ams: list[Alertmanager]
    targets: Targets
    receiver: Receiver
    session: aiohttp.ClientSession
    tails: list[str] = field(default_factory=list)

    async def replica_status(self, name: str) -> dict[str, Any] | None:
        """A replica's /-/replica answer, None while it does not answer."""
        try:
            async with self.session.get(f"{self.replicas[name].url}/-/replica") as response:
                if response.status != 200:
                    return None
                body: dict[str, Any] = await response.json()
                return body
        except aiohttp.ClientError:
            return None

    async def page(self, name: str) -> str:
        """A replica's status page (the overview), as HTML."""
        async with self.session.get(f"{self.replicas[name].url}/") as response:
            assert response.status == 200
            return await response.text()

    async def sees_alive(self, name: str, peer: str, alive: bool = True) -> bool:
        """Whether replica `name` answers and sees `peer` alive (or dead)."""
        status = await self.replica_status(name)
        if status is None:
            return False
        return any(m["name"] == peer and m["alive"] is alive for m in status["members"])

    def am_notifications(self, alertname: str, status: str) -> list[dict[str, Any]]:
        """Alerts notified by the Alertmanager cluster (any member) with that name and status."""
        return [
            alert
            for body in self.receiver.on("/am/am0") + self.receiver.on("/am/am1")
            for alert in body["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["status"] == status
        ]

    def direct(self, alertname: str, status: str) -> list[dict[str, Any]]:
        """Alerts Vigie's own webhook sink delivered with that name and status."""
        return [
            alert
            for body in self.receiver.on("/direct")
            for alert in body["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["status"] == status
        ]

    async def held(self, alertname: str) -> list[dict[str, Any]]:
        """The alerts of that name each Alertmanager member holds (concatenated)."""
        found = []
        for am in self.ams:
            found += [
                a for a in await am.alerts(self.session) if a["labels"]["alertname"] == alertname
            ]
        return found

    async def settled(self) -> bool:
        """Every member flushed every group twice since its last receipt (nothing more due)."""
        return all([await am.settled(self.session) for am in self.ams])


async def _clustered(am: Alertmanager, session: aiohttp.ClientSession) -> bool:
    async with session.get(f"{am.url}/api/v2/status") as response:
        status = await response.json()
    return len(status["cluster"].get("peers") or []) == 2


@pytest.fixture
async def pair(
    tmp_path: Path,
    alertmanagers: AlertmanagerFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
) -> AsyncIterator[Pair]:
    """Both replicas running and seeing each other alive, all sites healthy."""
    ams = [alertmanagers(f"am{i}") for i in range(2)]
    ports = [free_port(), free_port()]
    for i, am in enumerate(ams):
        am.config.write_text(AM_HA_CONFIG.format(url=f"{receiver.url}/am/am{i}"))
        am.cluster_port = ports[i]
        am.peers = [ports[1 - i]]
    await asyncio.gather(*(am.start(session) for am in ams))
    await wait_for(lambda: _clustered(ams[0], session), "the Alertmanagers to form a cluster")
    targets = Targets()
    await targets.start()
    web_ports = {n: free_port() for n in NAMES}
    config = tmp_path / "vigie.yaml"
    config.write_text(
        yaml.safe_dump(
            ha_config(targets.url, web_ports, [am.url for am in ams], receiver.url),
            sort_keys=False,
        )
    )
    replicas = {
        n: Replica(n, web_ports[n], config, tmp_path / f"state-{n}", tmp_path / f"{n}.log")
        for n in NAMES
    }
    p = Pair(replicas, ams, targets, receiver, session)
    try:
        for replica in replicas.values():
            await replica.start()
        for a, b in (NAMES, NAMES[::-1]):
            await wait_for(partial(p.sees_alive, a, b), f"{a} to see {b} alive", 30)
        yield p
    finally:
        for replica in replicas.values():
            await replica.stop()
        await targets.stop()
