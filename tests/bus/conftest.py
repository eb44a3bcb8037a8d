"""A real nats-server with JetStream on a free loopback port, a target app, worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import yaml
from aiohttp import web
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families

from tests.alerting.conftest import receiver  # noqa: F401  (the webhook receiver fixture)
from tests.conftest import free_port, require_binary
from tests.waiting import wait_for_sync
from vigie.monitor.bus.codec import DecodeError, decode


class NatsServer:
    """A nats-server with JetStream (its store in a directory) on a loopback port."""

    def __init__(self, binary: str, port: int, work: Path) -> None:
        self.port = port
        self.url = f"nats://127.0.0.1:{port}"
        self._cmd = [binary, "-js", "-sd", str(work / "jetstream"), "-a", "127.0.0.1"]
        self._cmd += ["-p", str(port)]
        self._log = work / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (again, on the same port and store) and wait until it listens."""
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(self._cmd, stdout=log, stderr=subprocess.STDOUT)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_for_sync(listening, f"nats-server listening on {self.port}")

    def stop(self) -> None:
        """Stop the server (a test may, to play a NATS outage)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The URL of the test's nats-server."""
    return nats_server.url


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream (its store in tmp_path) on a free loopback port."""
    server = NatsServer(
        require_binary("/usr/sbin/nats-server", "nats-server"), free_port(), tmp_path
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def targets() -> AsyncIterator[str]:
    """An HTTP app answering 200 on every /{name}: the checks' targets. Yields its base URL."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def write_config(
    tmp_path: Path,
    *,
    base: str,
    nats_url: str | None,
    hook: str,
    checks: int = 8,
    interval: str = "2s",
    ttl: str = "1s",
    stale_intervals: int = 3,
) -> Path:
    """A config of `checks` http checks, one component each, paging to a webhook."""
    ids = [f"svc.{i:02d}" for i in range(checks)]  # dots: escaped in the subject
    config: dict[str, Any] = {
        "web": {"listen": "127.0.0.1:0"},
        "state_dir": str(tmp_path / "state"),
        "sites": [{"id": "nord", "name": "Datacenter Nord"}],
        "components": [
            {"id": f"app-{i:02d}", "kind": "application", "site": "nord", "checks": [cid]}
            for i, cid in enumerate(ids)
        ],
        "checks": [
            {
                "id": cid,
                "kind": "http",
                "target": f"{base}/{cid}",
                "interval": interval,
                "timeout": "1s",
            }
            for cid in ids
        ],
        "health": {"resolve_hold": 0, "stale_intervals": stale_intervals},
        "alerting": {
            "webhooks": [{"url": hook}],
            "backoff_initial": "50ms",
            "backoff_max": "300ms",
            "watchdog": False,
            "vigie_instance": "vigie-test",
            "flush_timeout": "2s",
            "group_wait": 0,
        },
    }
    if nats_url is not None:
        config["bus"] = {"servers": [nats_url], "worker_ttl": ttl, "kv_bucket": "workers"}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / ("vigie-bus.yaml" if nats_url else "vigie.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Workers:
    """`vigie worker` processes started by a test, killed at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, config: Path, name: str) -> None:
        """Start a worker named name on config (its log in tmp_path/worker-<name>.log)."""
        log = (self.tmp_path / f"worker-{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vigie.monitor.cli",
                "worker",
                "-c",
                str(config),
                "--name",
                name,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def kill(self, name: str) -> None:
        """SIGKILL a worker: no goodbye, its key ages out."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def log(self, name: str) -> str:
        """A worker's log so far (for failure messages)."""
        return (self.tmp_path / f"worker-{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        """Stop every worker still running."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Start worker processes; they are stopped at the end of the test."""
    started = Workers(tmp_path)
    yield started
    started.stop_all()


@dataclass
class Seen:
    """Results seen on the bus by a plain subscriber of the test: (time, check id, worker)."""

    results: list[tuple[float, str, str]] = field(default_factory=list)

    def since(self, start: float) -> list[tuple[float, str, str]]:
        """The results seen at or after start (monotonic time)."""
        return [r for r in self.results if r[0] >= start]


@pytest.fixture
async def bus_watch(nats_url: str) -> AsyncIterator[tuple[Seen, Any]]:
    """The test's own NATS client, subscribed to every result; yields (seen, client)."""
    client = await nats.connect(nats_url)
    seen = Seen()
    loop = asyncio.get_running_loop()

    async def on_msg(msg: Msg) -> None:
        try:
            got = decode(msg.data, 1 << 20)
        except DecodeError:
            return
        seen.results.append((loop.time(), got.check_id, got.worker))

    await client.subscribe("vigie.results.>", cb=on_msg)
    yield seen, client
    await client.close()


async def scrape(session: aiohttp.ClientSession, port: int | None) -> dict[str, list[Any]]:
    """GET a daemon's /metrics: samples by family name."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(families: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    """The value of one sample of a scrape, None when absent."""
    for family in families.values():
        for sample in family:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None
