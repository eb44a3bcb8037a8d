"""Maintenance windows through a real `vigie run`: they survive a restart and still hold pages,
an operator ends one early and the page comes at once, a window longer than the maximum is
refused, a viewer may look but not act.

The daemon is a separate process (so a restart is a real one, state_dir kept), with web.yml's
basic auth (alice is an operator, bob a viewer), one server checked over HTTP on a loopback
target that fails on demand, and its webhook sink posting to the suite's receiver.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp import web

from tests.alerting.conftest import Receiver, receiver
from tests.conftest import free_port
from tests.waiting import wait_for
from tests.web.test_french import english_only, untranslated, visible
from tests.web.test_webconfig import basic

__all__ = ["receiver"]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Maintenance-2026"
ALICE = basic("alice", PASSWORD)
BOB = basic("bob", PASSWORD)
INCIDENT = "VigieIncident"


@dataclass
class Vigie:
    """One `vigie run` process, restartable on the same config and state_dir."""

    config: Path
    port: int
    log: Path
    target_down: set[str]
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Its web server."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the process and wait until it answers."""
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(self.config)),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(os.environ),
                cwd=ROOT,
            )

        async def ready() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"{self.url}/-/ready", headers=BOB) as r,
                ):
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, "vigie run to be ready", 30)

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

    def fired(self) -> int:
        """How many times it logged firing the server's incident."""
        count = 0
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                count += event.get("event") == "alert_fired" and event["alertname"] == INCIDENT
        return count


@pytest.fixture
async def vigie(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Vigie]:
    """`vigie run` watching srv-1 (healthy at first), its webhook posting to the receiver."""
    down: set[str] = set()

    async def target(request: web.Request) -> web.Response:
        return web.Response(status=503 if request.match_info["name"] in down else 200)

    app = web.Application()
    app.router.add_get("/{name}", target)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    targets = f"http://127.0.0.1:{runner.addresses[0][1]}"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n  bob: '{hashed}'\n")
    port = free_port()
    config = {
        "defaults": {"interval": "500ms", "timeout": "400ms"},
        "web": {
            "listen": f"127.0.0.1:{port}",
            "config_file": str(web_yml),
            "roles": {"alice": "operator", "bob": "viewer"},
            "maintenance_max": "2h",
        },
        "timezone": "Europe/Paris",
        "state_dir": str(tmp_path / "state"),
        "sites": [{"id": "nord", "name": "Datacenter Nord"}],
        "checks": [{"id": "srv-1", "kind": "http", "target": f"{targets}/srv-1"}],
        "components": [
            {"id": "srv-1", "kind": "server", "site": "nord", "checks": ["srv-1"], "name": "DPI"}
        ],
        "health": {"confirm_max": "1s"},
        "alerting": {
            "webhooks": [{"url": f"{receiver.url}/hook", "name": "hook"}],
            "watchdog": False,
            "group_wait": "200ms",
            "backoff_initial": "50ms",
            "backoff_max": "300ms",
        },
    }
    path = tmp_path / "vigie.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    process = Vigie(path, port, tmp_path / "vigie.log", down)
    try:
        await process.start()
        yield process
    finally:
        await process.stop()
        await runner.cleanup()


async def call(method: str, url: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
    """One request; the JSON answer (or the text when it is not JSON)."""
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, json=body, headers=headers) as r,
    ):
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def incident(vigie: Vigie) -> dict[str, Any] | None:
    """srv-1's open incident as the API shows it."""
    _, found = await call("GET", f"{vigie.url}/api/v1/incidents", BOB)
    return next((i for i in found if i["root_cause"] == "srv-1"), None)


def pages(receiver: Receiver) -> int:
    """Firing notifications of the server's incident the webhook delivered."""
    return receiver.notified("/hook", INCIDENT, "firing")


async def test_a_window_survives_a_restart_holds_pages_and_ends_early(
    vigie: Vigie, receiver: Receiver
) -> None:
    """Viewer: 403. Operator: a window over web.maintenance_max is refused (400 naming it);
    one within it survives `vigie run`'s restart (same id, author) and holds srv-1's page;
    ended early, the page comes at once, the audit log and the page say who ended it."""
    api = f"{vigie.url}/api/v1/maintenance"
    now = datetime.now(UTC)
    window = {"target": "srv-1", "end": (now + timedelta(hours=1)).isoformat(), "reason": "RAID"}
    status, answer = await call("POST", api, BOB, window)
    assert status == 403 and answer["role_needed"] == "operator"
    long = {**window, "end": (now + timedelta(hours=3)).isoformat()}
    status, answer = await call("POST", api, ALICE, long)
    assert status == 400 and "maximum of 2h" in answer["error"], answer
    status, opened = await call("POST", api, ALICE, window)
    assert status == 201 and opened["author"] == "alice" and opened["ended_early"] is None

    await vigie.stop()
    await vigie.start()
    status, windows = await call("GET", api, BOB)
    assert [(w["id"], w["author"], w["reason"]) for w in windows] == [
        (opened["id"], "alice", "RAID")
    ]
    vigie.target_down.add("srv-1")

    async def held() -> bool:
        found = await incident(vigie)
        return found is not None and found["maintenance"] and found["confirmed"]

    await wait_for(held, "srv-1's incident, held by the window")
    status, page = await call("GET", f"{vigie.url}/maintenance", BOB)
    assert status == 200 and "RAID" in page and "alice" in page
    assert "/end" not in page  # no button for a viewer
    status, page = await call("GET", f"{vigie.url}/maintenance", ALICE)
    assert f"/maintenance/{opened['id']}/end" in page
    # A page would have been delivered by now (group_wait 200 ms, confirmation 1 s at most).
    await asyncio.sleep(2)
    assert pages(receiver) == 0 and vigie.fired() == 0

    status, _ = await call("DELETE", f"{api}/{opened['id']}", BOB)
    assert status == 403
    status, ended = await call("DELETE", f"{api}/{opened['id']}", ALICE)
    assert status == 200 and ended["ended_early"]["by"] == "alice"
    await wait_for(lambda: pages(receiver) == 1, "the page once the window ended")
    status, answer = await call("DELETE", f"{api}/{opened['id']}", ALICE)
    assert status == 404
    assert (await call("GET", api, BOB))[1] == []
    status, actions = await call("GET", f"{vigie.url}/api/v1/audit", BOB)
    assert [(a["action"], a["who"]) for a in actions] == [
        ("maintenance_end", "alice"),
        ("maintenance", "alice"),
    ]
    status, page = await call("GET", f"{vigie.url}/maintenance", BOB)
    assert "ended early by alice" in page


async def test_the_page_ends_a_window_with_its_button(vigie: Vigie) -> None:
    """The /maintenance form (a POST, browsers send no DELETE) ends the window and comes back
    to the page, in French for a French browser (no English catalogue text on it)."""
    api = f"{vigie.url}/api/v1/maintenance"
    end = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    status, opened = await call("POST", api, ALICE, {"target": "nord", "end": end})
    assert status == 201
    french = {**ALICE, "Accept-Language": "fr"}
    status, page = await call("GET", f"{vigie.url}/maintenance", french)
    assert "Terminer maintenant" in page and "Datacenter Nord" in page
    assert untranslated(visible(page), english_only()) == []
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{vigie.url}/maintenance/{opened['id']}/end", headers=ALICE, allow_redirects=False
        ) as r,
    ):
        assert r.status == 303 and r.headers["Location"] == "/maintenance"
    status, page = await call("GET", f"{vigie.url}/maintenance", french)
    assert "Aucune fenêtre de maintenance ouverte" in html.unescape(page)
    assert "terminée avant l'heure par alice" in html.unescape(page)
    assert untranslated(visible(page), english_only()) == []
