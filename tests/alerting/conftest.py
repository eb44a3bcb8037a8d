"""Fixtures for alerting tests: real Alertmanagers and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.conftest import free_port, require_binary
from tests.waiting import wait_for
from vigie.monitor.alerting.model import Alert
from vigie.probes.http import make_session

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_alert(key: str = "incident:site-nord:power", **labels: str) -> Alert:
    """Return a firing incident alert with the labels and annotations the health model sets."""
    return Alert(
        key=key,
        labels={
            "alertname": "VigieIncident",
            "severity": "critical",
            "site": "site-nord",
            "component": "ups-nord-1",
            "root_cause": "power",
            **labels,
        },
        annotations={
            "summary": "Power lost at site-nord",
            "description": "UPS ups-nord-1 on battery; impacted: san-nord, dpi.",
            "runbook_url": "https://wiki.example.org/runbooks/power",
            "degraded_mode": "Use paper records; ICU has its own UPS.",
        },
        starts_at=T0,
        generator_url="http://vigie.example.org:9465/incidents",
    )


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Return a sample's value from a registry (0 when absent)."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@dataclass
class Post:
    """One request a receiver got."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """An aiohttp server recording JSON POSTs: for Alertmanager's webhook, or a webhook sink."""

    url: str = ""
    posts: list[Post] = field(default_factory=list)
    status: int = 200
    reply: str = ""

    def on(self, path: str) -> list[Any]:
        """Return the bodies posted to path."""
        return [p.body for p in self.posts if p.path == path]

    def notified(self, path: str, alertname: str, status: str) -> int:
        """Return how many notifications to path carried alertname with the given status."""
        return sum(
            1
            for body in self.on(path)
            for alert in body["alerts"]
            if alert["labels"].get("alertname") == alertname and alert["status"] == status
        )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a free loopback port."""
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        rec.posts.append(Post(request.path, dict(request.headers), await request.json()))
        return web.Response(status=rec.status, text=rec.reply)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The shared HTTP session, as the daemon makes it."""
    async with make_session() as s:
        yield s


AM_CONFIG = """
route:
  receiver: hook
  group_by: {group_by}
  group_wait: 50ms
  group_interval: 200ms
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


class Alertmanager:
    """A real prometheus-alertmanager process on loopback, with its own storage."""

    def __init__(self, binary: str, workdir: Path, hook_url: str, group_by: Sequence[str]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cluster_port: int | None = None
        self.peers: list[int] = []
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(AM_CONFIG.format(url=hook_url, group_by=json.dumps(group_by)))
        self.log = workdir / "alertmanager.log"
        self.proc: asyncio.subprocess.Process | None = None

    def args(self) -> list[str]:
        """Return the command line."""
        args = [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=debug",
        ]
        if self.cluster_port is None:
            args.append("--cluster.listen-address=")  # empty: clustering off
        else:
            args += [
                f"--cluster.listen-address=127.0.0.1:{self.cluster_port}",
                "--cluster.gossip-interval=50ms",
                "--cluster.pushpull-interval=1s",
                "--cluster.peer-timeout=1s",
                *(f"--cluster.peer=127.0.0.1:{p}" for p in self.peers),
            ]
        return args

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start the process (same port and storage as before, if restarted) and wait for ready."""
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args(), stdout=log, stderr=asyncio.subprocess.STDOUT
            )

        async def ready() -> bool:
            if self.proc is not None and self.proc.returncode is not None:
                pytest.fail(f"alertmanager exited: {self.log.read_text()[-2000:]}")
            try:
                async with session.get(f"{self.url}/-/ready") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, "alertmanager ready")

    async def stop(self) -> None:
        """Stop the process gracefully (SIGTERM), as systemd would."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def alerts(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """Return the active alerts it holds (GET /api/v2/alerts)."""
        async with session.get(f"{self.url}/api/v2/alerts") as response:
            assert response.status == 200, await response.text()
            body: list[dict[str, Any]] = await response.json()
            return body

    def _log_lines(self) -> list[str]:
        """Return its debug log (all runs of this instance)."""
        return self.log.read_text(errors="replace").splitlines()

    def received(self) -> int:
        """Return how many alerts it logged as received (one line per alert per push)."""
        return sum('msg="Received alert"' in line for line in self._log_lines())

    async def settled(self, session: aiohttp.ClientSession) -> bool:
        """True once every alert it holds had its group flushed twice since the last receipt.

        A group's flush runs its notification to the end before the next flush is scheduled,
        so after two flushes whatever Alertmanager would notify for what it holds was notified:
        the evidence a test needs before asserting that no (other) page came.
        """
        lines = self._log_lines()
        last = max(
            (i for i, line in enumerate(lines) if 'msg="Received alert"' in line), default=-1
        )
        flushes = [line for line in lines[last + 1 :] if "msg=flushing" in line]
        held = [a["fingerprint"][:7] for a in await self.alerts(session)]
        return all(sum(f"[{fp}]" in line for line in flushes) >= 2 for fp in held)

    async def alert(self, session: aiohttp.ClientSession, alertname: str) -> dict[str, Any] | None:
        """Return the active alert with this alertname, if it holds one."""
        found = [a for a in await self.alerts(session) if a["labels"]["alertname"] == alertname]
        assert len(found) <= 1, found
        return found[0] if found else None


AlertmanagerFactory = Callable[..., Alertmanager]


@pytest.fixture
async def alertmanagers(tmp_path: Path, receiver: Receiver) -> AsyncIterator[AlertmanagerFactory]:
    """Make Alertmanagers notifying the receiver at /am/<name>; all are stopped at the end."""
    binary = require_binary(ALERTMANAGER, "prometheus-alertmanager")
    made: list[Alertmanager] = []

    def make(name: str = "am", group_by: Sequence[str] = ("alertname",)) -> Alertmanager:
        am = Alertmanager(binary, tmp_path / name, f"{receiver.url}/am/{name}", group_by)
        made.append(am)
        return am

    yield make
    for am in made:
        await am.stop()


@pytest.fixture
async def alertmanager(
    alertmanagers: AlertmanagerFactory, session: aiohttp.ClientSession
) -> Alertmanager:
    """One running Alertmanager, clustering off, notifying the receiver at /am/am."""
    am = alertmanagers()
    await am.start(session)
    return am
