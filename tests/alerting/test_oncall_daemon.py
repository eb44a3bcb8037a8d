"""The daemon end to end: an application goes down, escalation texts a local SMS gateway,
then the second level; the acknowledgement link stops it; the resolve tells everyone paged."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.alerting.conftest import Receiver, metric
from tests.alerting.oncall_fixtures import SMS_BODY, Gateway, gateway_server
from tests.conftest import free_port
from tests.waiting import wait_for
from tests.web.outage import Targets
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.probes.base import ProbeRegistry
from vigie.probes.http import HttpProbe, make_session

ALICE, BOB = "+33600000001", "+33600000002"
LINK = re.compile(r"ACK (http://\S+)")


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A local SMS gateway."""
    async with gateway_server() as gw:
        yield gw


@pytest.fixture
async def targets() -> AsyncIterator[Targets]:
    """The applications' health pages on a loopback port."""
    app = Targets()
    await app.start()
    yield app
    await app.stop()


def daemon_config(
    tmp_path: Path, base: str, gateway: Gateway, receiver: Receiver, level2: str
) -> Path:
    """One tier-1 application of team dsi; SMS to the on-call, then the next and a webhook."""
    key = tmp_path / "ack.key"
    key.write_text("k" * 48)
    key.chmod(0o600)
    port = free_port()
    config: dict[str, Any] = {
        "web": {"listen": f"127.0.0.1:{port}"},
        "state_dir": str(tmp_path / "state"),
        "sites": [{"id": "nord", "name": "Datacenter Nord"}],
        "components": [
            {
                "id": "dpi",
                "name": "DPI",
                "kind": "application",
                "site": "nord",
                "checks": ["chk-dpi"],
                "team": "dsi",
                "criticality": 1,
            }
        ],
        "checks": [
            {
                "id": "chk-dpi",
                "kind": "http",
                "target": f"{base}/dpi",
                "interval": "300ms",
                "timeout": "250ms",
            }
        ],
        "health": {"resolve_hold": 0},
        "alerting": {
            "external_url": f"http://127.0.0.1:{port}",
            "watchdog": False,
            "backoff_initial": "50ms",
            "backoff_max": "300ms",
            "webhooks": [{"url": f"{receiver.url}/hook", "name": "switchboard"}],
            "http_sinks": [{"name": "sms", "url": f"{gateway.url}/send", "body": SMS_BODY}],
            "oncall": {
                "tick": "100ms",
                "ack": {"secret_file": str(key)},
                "contacts": [
                    {"name": "alice", "phone": ALICE},
                    {"name": "bob", "phone": BOB},
                    {"name": "standard"},
                ],
                "policies": [
                    {
                        "team": "dsi",
                        "rotation": {"start": "2020-01-06T08:00:00", "contacts": ["alice"]},
                        "levels": [
                            {"notify": [{"sink": "http:sms", "to": "on-call"}]},
                            {
                                "after": level2,
                                "notify": [
                                    {"sink": "http:sms", "to": "bob"},
                                    {"sink": "webhook:switchboard", "to": "standard"},
                                ],
                            },
                        ],
                    }
                ],
            },
        },
    }
    path = tmp_path / "vigie.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[Daemon]:
    """A Daemon on config, stopped at the end."""
    registry = ProbeRegistry([HttpProbe()])
    async with make_session() as session:
        daemon = Daemon(load_config(config, registry, env={}), registry, session)
        await daemon.start()
        try:
            yield daemon
        finally:
            await daemon.stop()


def hook_pages(receiver: Receiver, status: str) -> int:
    """Count the escalation pages the switchboard's webhook got with a status."""
    return sum(1 for body in receiver.on("/hook") for a in body["alerts"] if a["status"] == status)


async def test_incident_escalates_then_resolves_to_everyone_paged(
    *, tmp_path: Path, targets: Targets, gateway: Gateway, receiver: Receiver
) -> None:
    """DOWN: SMS to the on-call, a second later the next level; UP: RESOLU to all three."""
    config = daemon_config(tmp_path, targets.base, gateway, receiver, "1s")
    async with running(config) as daemon:
        targets.down = {"dpi"}
        await wait_for(lambda: gateway.to(ALICE), "the level-1 SMS")
        text = gateway.to(ALICE)[0]
        assert "T1: DPI" in text and LINK.search(text)
        await wait_for(lambda: gateway.to(BOB) and hook_pages(receiver, "firing"), "level 2")
        targets.down = set()
        await wait_for(
            lambda: (
                len(gateway.to(ALICE)) == 2
                and len(gateway.to(BOB)) == 2
                and hook_pages(receiver, "resolved") == 1
            ),
            "the resolved messages",
        )
        assert gateway.to(ALICE)[1].startswith("Vigie RESOLU")
        assert hook_pages(receiver, "firing") == 1
        reg = daemon.own_registry
        assert metric(reg, "vigie_escalation_unacknowledged_total", team="dsi") == 1


async def test_ack_link_through_the_daemon_stops_the_next_level(
    *,
    tmp_path: Path,
    targets: Targets,
    gateway: Gateway,
    receiver: Receiver,
    session: aiohttp.ClientSession,
) -> None:
    """The link in the SMS, posted to the daemon's web server, acknowledges as alice."""
    config = daemon_config(tmp_path, targets.base, gateway, receiver, "3s")
    async with running(config) as daemon:
        targets.down = {"dpi"}
        await wait_for(lambda: gateway.to(ALICE), "the level-1 SMS")
        match = LINK.search(gateway.to(ALICE)[0])
        assert match is not None
        base = f"http://127.0.0.1:{daemon.listen_port}"
        async with session.get(f"{base}/") as response:  # the overview: paged, nobody yet
            assert 'class="unacked"' in await response.text()
        async with session.post(match.group(1)) as response:
            assert response.status == 200
            assert "Pris en compte par alice" in await response.text()
        async with session.get(f"{base}/") as response:
            overview = await response.text()
        assert 'class="unacked"' not in overview and "acknowledged by alice" in overview
        async with session.get(f"{base}/api/v1/escalations") as response:
            [esc] = await response.json()
        assert esc["acknowledged_by"] == "alice" and esc["level"] == 1
        hist = "vigie_incident_acknowledge_seconds_count"
        assert metric(daemon.own_registry, hist, team="dsi") == 1
        # Past level 2's delay: the escalation row says what is due; nothing is.
        await wait_for(lambda: daemon.escalations is not None, "escalations")
        assert daemon.escalations is not None
        esc_now = daemon.escalations.all()[0]
        assert esc_now.due is None and esc_now.acknowledged
        assert daemon.escalations.advance() == 0
        assert gateway.to(BOB) == [] and hook_pages(receiver, "firing") == 0
