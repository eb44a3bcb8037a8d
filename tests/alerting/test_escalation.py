"""Escalation end to end: a local SMS gateway, a webhook receiver, a real Alertmanager.

Escalation delays are minutes: the engine's clock is a test clock moved forward; delivery,
HTTP and Alertmanager run in real time over loopback.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.alerting.conftest import Alertmanager, Receiver, make_alert, metric
from tests.alerting.oncall_fixtures import SMS_BODY, Clock, Gateway, Stack, gateway_server, stack
from tests.conftest import free_port
from tests.waiting import wait_for
from vigie.monitor.alerting.escalation import PagedIncident
from vigie.monitor.alerting.httpsink import gsm_septets
from vigie.monitor.alerting.settings import AlertingSettings

ALICE, BOB = "+33600000001", "+33600000002"
T0 = 1_767_000_000.0  # a Monday of late December 2025, about 10:00 in Paris
LINK = re.compile(r"ACK (http://\S+)")


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A local SMS gateway."""
    async with gateway_server() as gw:
        yield gw


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """The acknowledgement links' signing key."""
    path = tmp_path / "ack.key"
    path.write_text("k" * 48 + "\n")
    return path


def settings_factory(
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    alertmanagers: list[str] | None = None,
) -> Callable[[str], AlertingSettings]:
    """Return settings for a web URL: SMS to the on-call, then the next one and a webhook."""

    def make(web_url: str) -> AlertingSettings:
        return AlertingSettings.model_validate(
            {
                "alertmanagers": alertmanagers or [],
                "external_url": web_url,
                "watchdog": False,
                "backoff_initial": 0.05,
                "backoff_max": 0.2,
                "webhooks": [{"url": f"{receiver.url}/hook", "name": "switchboard"}],
                "http_sinks": [{"name": "sms", "url": f"{gateway.url}/send", "body": SMS_BODY}],
                "oncall": {
                    "tick": 0.05,
                    "contacts": [
                        {"name": "alice", "phone": ALICE},
                        {"name": "bob", "phone": BOB},
                        {"name": "chef", "mail": "chef@example.org"},
                    ],
                    "ack": {"secret_file": str(key_file), "ttl": "1d"},
                    "policies": [
                        {
                            "team": "dsi",
                            "rotation": {
                                "start": "2025-12-01T08:00:00",
                                "timezone": "Europe/Paris",
                                "contacts": ["alice", "bob"],
                            },
                            "levels": [
                                {"after": 0, "notify": [{"sink": "http:sms", "to": "on-call"}]},
                                {
                                    "after": "10m",
                                    "notify": [
                                        {"sink": "http:sms", "to": "on-call+1"},
                                        {"sink": "webhook:switchboard", "to": "chef"},
                                    ],
                                },
                            ],
                            "tier_after": {1: [0, "5m"]},
                        }
                    ],
                },
            }
        )

    return make


def incident(s: Stack, tier: int = 2) -> PagedIncident:
    """Fire the incident alert at the dispatcher and return it as paged."""
    alert = make_alert()
    s.dispatcher.sync([alert])
    return PagedIncident(s.dispatcher.active()[alert.key], ("dsi",), tier, ("DPI", "Pharmacie"))


def pages(receiver: Receiver, status: str) -> list[dict[str, Any]]:
    """Return the escalation pages the webhook got with a status."""
    return [a for body in receiver.on("/hook") for a in body["alerts"] if a["status"] == status]


async def test_two_levels_one_sms_per_level(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """Level 1 texts the on-call; 10 minutes later the next on-call and the switchboard."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    async with stack(make, tmp_path / "outbox.sqlite", session, clock, free_port()) as s:
        paged = incident(s)
        s.escalations.sync([paged])
        await wait_for(lambda: len(gateway.sms()) == 1, "the level-1 SMS")
        text = gateway.to(ALICE)[0]  # alice is on call the week of T0
        assert text.startswith("Vigie: Power lost at site-nord")
        assert "T1: DPI, Pharmacie" in text
        assert (gsm_septets(text) or 999) <= 160
        assert LINK.search(text) is not None
        assert gateway.sms()[0]["level"] == 1
        # The same incident seen again, and 9 minutes later: still one SMS.
        s.escalations.sync([paged])
        clock.advance(9 * 60)
        assert s.escalations.advance() == 0
        assert receiver.on("/hook") == []
        clock.advance(61)
        await wait_for(lambda: len(gateway.sms()) == 2 and receiver.on("/hook"), "level 2")
        assert len(gateway.to(BOB)) == 1
        [page] = pages(receiver, "firing")
        assert page["annotations"]["vigie_contact"] == "chef"
        assert page["annotations"]["vigie_level"] == "2"
        assert page["labels"]["root_cause"] == "power"
        clock.advance(3600)
        assert s.escalations.advance() == 0  # the last level was paged: nothing more is due
        await wait_for(lambda: sum(s.dispatcher.queued().values()) == 0, "queue drained")
        assert len(gateway.sms()) == 2
        assert metric(s.registry, "vigie_escalation_pages_total", team="dsi", level="1") == 1
        assert metric(s.registry, "vigie_escalation_pages_total", team="dsi", level="2") == 2


async def test_tier_one_escalates_faster(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """A tier-1 incident reaches level 2 after tier_after's 5 minutes, not 10."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    async with stack(make, tmp_path / "outbox.sqlite", session, clock, free_port()) as s:
        s.escalations.sync([incident(s, tier=1)])
        await wait_for(lambda: len(gateway.sms()) == 1, "the level-1 SMS")
        clock.advance(5 * 60 + 1)
        await wait_for(lambda: len(gateway.to(BOB)) == 1, "level 2 after 5 minutes")


async def test_ack_link_stops_the_next_level(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """GET shows a button and acknowledges nothing; POST acknowledges as the receiver."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    async with stack(make, tmp_path / "outbox.sqlite", session, clock, free_port()) as s:
        s.escalations.sync([incident(s)])
        await wait_for(lambda: len(gateway.sms()) == 1, "the level-1 SMS")
        match = LINK.search(gateway.to(ALICE)[0])
        assert match is not None
        link = match.group(1)
        async with session.get(link) as response:  # a link preview, a mail scanner
            assert response.status == 200
            assert "<form" in await response.text()
        clock.advance(5 * 60)
        async with session.post(link) as response:
            assert response.status == 200
            assert "Pris en compte par alice" in await response.text()
        clock.advance(20 * 60)
        assert s.escalations.advance() == 0
        async with session.get(f"{s.web_url}/api/v1/escalations") as response:
            [esc] = await response.json()
        assert esc["acknowledged_by"] == "alice"
        assert esc["acknowledged_via"] == "link"
        assert esc["time_to_acknowledge"] == 300
        assert [e["event"] for e in esc["timeline"]] == ["opened", "level 1", "acknowledged"]
        hist = "vigie_incident_acknowledge_seconds"
        assert metric(s.registry, f"{hist}_count", team="dsi") == 1
        assert metric(s.registry, f"{hist}_sum", team="dsi") == 300
        # A forged or altered link is refused.
        async with session.post(link[:-2] + ("AA" if not link.endswith("AA") else "BB")) as r:
            assert r.status == 403
        await wait_for(lambda: sum(s.dispatcher.queued().values()) == 0, "queue drained")
        assert len(gateway.sms()) == 1 and receiver.on("/hook") == []


async def test_restart_mid_escalation_neither_repeats_nor_skips(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """After a restart at level 1, level 1 is not sent again and level 2 comes once, on time."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    path = tmp_path / "outbox.sqlite"
    async with stack(make, path, session, clock, free_port()) as s:
        paged = incident(s)
        s.escalations.sync([paged])
        await wait_for(lambda: len(gateway.sms()) == 1, "the level-1 SMS")
        # Delivered and acknowledged by the outbox (a send cut by the stop would be re-sent).
        await wait_for(lambda: sum(s.dispatcher.queued().values()) == 0, "queue drained")
    clock.advance(5 * 60)
    async with stack(make, path, session, clock, free_port()) as s:
        s.escalations.sync([paged])  # the incident is still there after the restart
        assert s.escalations.advance() == 0
        clock.advance(5 * 60 + 1)
        await wait_for(lambda: len(gateway.to(BOB)) == 1, "level 2 after the restart")
        await wait_for(lambda: sum(s.dispatcher.queued().values()) == 0, "queue drained")
    assert len(gateway.to(ALICE)) == 1
    assert len(pages(receiver, "firing")) == 1


async def test_pages_queued_before_a_restart_are_delivered_once(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """A page the gateway refused before a restart is delivered after it, once."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    path = tmp_path / "outbox.sqlite"
    gateway.status = 503
    async with stack(make, path, session, clock, free_port()) as s:
        paged = incident(s)
        s.escalations.sync([paged])
        await wait_for(lambda: len(gateway.requests) >= 1, "a refused attempt")
        # The level failed: level 2 goes at once, its SMS refused too, the webhook delivered.
        await wait_for(lambda: pages(receiver, "firing"), "level 2 at once")
        await wait_for(
            lambda: s.dispatcher.queued().get("webhook:switchboard", 0) == 0, "webhook acked"
        )
    gateway.status = 200
    gateway.requests.clear()  # count what is delivered from now on
    async with stack(make, path, session, clock, free_port()) as s:
        await wait_for(lambda: gateway.to(ALICE) and gateway.to(BOB), "both SMS delivered")
        await wait_for(lambda: sum(s.dispatcher.queued().values()) == 0, "queue drained")
        assert s.escalations.advance() == 0
    assert len(gateway.to(ALICE)) == 1 and len(gateway.to(BOB)) == 1
    assert len(pages(receiver, "firing")) == 1


async def test_resolve_before_ack_tells_everyone_paged(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """A resolve closes the escalation with one resolved message to each receiver paged."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    async with stack(make, tmp_path / "outbox.sqlite", session, clock, free_port()) as s:
        s.escalations.sync([incident(s)])
        await wait_for(lambda: len(gateway.sms()) == 1, "the level-1 SMS")
        clock.advance(10 * 60)
        await wait_for(lambda: len(gateway.sms()) == 2, "level 2")
        s.dispatcher.sync([])
        s.escalations.sync([])
        await wait_for(lambda: len(gateway.sms()) == 4, "the resolved SMS")
        await wait_for(lambda: pages(receiver, "resolved"), "the resolved webhook")
        assert gateway.to(ALICE)[1].startswith("Vigie RESOLU: Power lost")
        assert gateway.to(BOB)[1].startswith("Vigie RESOLU: Power lost")
        assert "ACK" not in gateway.to(BOB)[1]
        clock.advance(3600)
        assert s.escalations.advance() == 0
        unacked = "vigie_escalation_unacknowledged_total"
        assert metric(s.registry, unacked, team="dsi") == 1
        await wait_for(lambda: sum(s.dispatcher.queued().values()) == 0, "queue drained")
    assert len(gateway.sms()) == 4 and len(pages(receiver, "resolved")) == 1


async def test_ack_is_a_silence_expired_before_the_resolve(
    tmp_path: Path,
    *,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
    alertmanager: Alertmanager,
) -> None:
    """An operator's ack silences the alert in Alertmanager; the resolve still notifies."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file, [alertmanager.url])
    async with stack(make, tmp_path / "outbox.sqlite", session, clock, free_port()) as s:
        paged = incident(s)
        s.escalations.sync([paged])
        await wait_for(
            lambda: receiver.notified("/am/am", "VigieIncident", "firing") == 1, "AM's page"
        )
        async with session.post(
            f"{s.web_url}/api/v1/acknowledgements",
            json={"incident": paged.alert.key, "by": "dupont"},
        ) as response:
            assert response.status == 200, await response.text()
            [esc] = await response.json()
        assert esc["acknowledged_by"] == "dupont"

        async def silenced() -> bool:
            held = await alertmanager.alert(session, "VigieIncident")
            return held is not None and held["status"]["state"] == "suppressed"

        await wait_for(silenced, "the alert silenced at Alertmanager")
        [silence_id] = s.escalations.silences_of(paged.alert.key)
        async with session.get(f"{alertmanager.url}/api/v2/silence/{silence_id}") as response:
            silence = await response.json()
        assert silence["createdBy"] == "dupont"
        assert {m["name"]: m["value"] for m in silence["matchers"]} == paged.alert.labels
        s.dispatcher.sync([])
        s.escalations.sync([])
        await wait_for(
            lambda: receiver.notified("/am/am", "VigieIncident", "resolved") == 1,
            "the resolved notification through Alertmanager",
        )
        async with session.get(f"{alertmanager.url}/api/v2/silence/{silence_id}") as response:
            assert (await response.json())["status"]["state"] == "expired"
        assert s.escalations.silences_of(paged.alert.key) == []


async def test_operator_ack_of_unknown_incident(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """The API answers 404 for an incident with no open escalation, 400 for a bad body."""
    make = settings_factory(gateway, receiver, key_file)
    async with stack(make, tmp_path / "o.sqlite", session, Clock(T0), free_port()) as s:
        url = f"{s.web_url}/api/v1/acknowledgements"
        async with session.post(url, json={"incident": "nope"}) as response:
            assert response.status == 404
        async with session.post(url, json=["x"]) as response:
            assert response.status == 400


async def test_the_same_incident_coming_back_escalates_again(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """An incident that resolves and comes back (same key) opens a new escalation."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    async with stack(make, tmp_path / "outbox.sqlite", session, clock, free_port()) as s:
        paged = incident(s)
        s.escalations.sync([paged])
        await wait_for(lambda: len(gateway.to(ALICE)) == 1, "the first page")
        s.escalations.sync([])
        await wait_for(lambda: len(gateway.to(ALICE)) == 2, "the resolved SMS")
        clock.advance(60)
        s.escalations.sync([paged])
        await wait_for(lambda: len(gateway.to(ALICE)) == 3, "the page of the second time")
        assert gateway.to(ALICE)[2].startswith("Vigie: Power lost")
        kept = s.escalations.all()
        assert [e.open for e in kept] == [False, True]
        assert len({e.id for e in kept}) == 2


async def test_resolve_after_a_sink_left_the_config(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """A sink paged before a restart and gone from the config since: the others are told."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    path = tmp_path / "outbox.sqlite"
    async with stack(make, path, session, clock, free_port()) as s:
        paged = incident(s)
        s.escalations.sync([paged])
        clock.advance(10 * 60)
        await wait_for(lambda: gateway.to(BOB) and pages(receiver, "firing"), "level 2")
        await wait_for(lambda: sum(s.dispatcher.queued().values()) == 0, "queue drained")

    def without_webhook(web_url: str) -> AlertingSettings:
        data = make(web_url).model_dump(mode="json", by_alias=True)
        data["webhooks"] = []
        data["oncall"]["ack"]["secret_file"] = str(key_file)
        for policy in data["oncall"]["policies"]:
            for level in policy["levels"]:
                level["notify"] = [n for n in level["notify"] if n["sink"] == "http:sms"]
        return AlertingSettings.model_validate(data)

    async with stack(without_webhook, path, session, clock, free_port()) as s:
        s.escalations.sync([])
        await wait_for(
            lambda: len(gateway.to(ALICE)) == 2 and len(gateway.to(BOB)) == 2, "resolved SMS"
        )
        assert not s.escalations.all(open_only=True)
    assert pages(receiver, "resolved") == []


async def test_escalations_page_and_team_figures(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """An unacknowledged escalation is red on /escalations; per-team figures after the ack."""
    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    async with stack(make, tmp_path / "outbox.sqlite", session, clock, free_port()) as s:
        paged = incident(s)
        s.escalations.sync([paged])
        await wait_for(lambda: gateway.to(ALICE), "the level-1 SMS")
        async with session.get(f"{s.web_url}/escalations") as response:
            page = await response.text()
        assert '<tr class="bad">' in page and "NON PRIS EN COMPTE" in page
        assert "Power lost at site-nord" in page
        clock.advance(120)
        s.escalations.acknowledge_incident(paged.alert.key, "dupont", "api")
        async with session.get(f"{s.web_url}/escalations") as response:
            page = await response.text()
        assert '<tr class="bad">' not in page and "pris en compte par dupont" in page
        async with session.get(f"{s.web_url}/api/v1/escalations/summary") as response:
            summary = await response.json()
        assert summary == {
            "dsi": {
                "escalations": 1,
                "acknowledged": 1,
                "unacknowledged": 0,
                "open": 1,
                "median_time_to_acknowledge": 120,
            }
        }


async def test_an_ack_made_on_a_peer_is_read_back_from_alertmanager(
    tmp_path: Path,
    *,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
    alertmanager: Alertmanager,
) -> None:
    """Another replica's acknowledgement (its silence) stops the levels here too."""
    from datetime import UTC, datetime, timedelta

    from vigie.monitor.alerting.ack import ACK_COMMENT, Silences

    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file, [alertmanager.url])
    async with stack(make, tmp_path / "outbox.sqlite", session, clock, free_port()) as s:
        paged = incident(s)
        s.escalations.sync([paged])
        await wait_for(lambda: gateway.to(ALICE), "the level-1 SMS")
        # Not an acknowledgement: a silence without Vigie's comment (a maintenance, say).
        peer = Silences([alertmanager.url], session)
        until = datetime.now(UTC) + timedelta(hours=1)
        await peer.create(paged.alert.labels, author="x", comment="maintenance", until=until)
        silence = await peer.create(
            paged.alert.labels,
            author="martin",
            comment=f"{ACK_COMMENT} (link): Power lost",
            until=until,
        )
        await wait_for(lambda: s.escalations.all()[0].acknowledged, "the peer's ack taken")
        [esc] = s.escalations.all()
        assert (esc.acked_by, esc.ack_via, esc.silence) == ("martin", "alertmanager", silence)
        clock.advance(20 * 60)
        assert s.escalations.advance() == 0
        s.dispatcher.sync([])
        s.escalations.sync([])
        # The resolve is posted once the acknowledgement's silence expired (the maintenance
        # silence is not Vigie's: it stays).
        await wait_for(lambda: sum(s.dispatcher.queued().values()) == 0, "the resolve posted")
        async with session.get(f"{alertmanager.url}/api/v2/silence/{silence}") as response:
            assert (await response.json())["status"]["state"] == "expired"
    assert gateway.to(BOB) == []


async def test_escalation_goes_on_in_memory_while_the_file_refuses_writes(
    tmp_path: Path,
    gateway: Gateway,
    receiver: Receiver,
    key_file: Path,
    session: aiohttp.ClientSession,
) -> None:
    """A locked outbox file: pages and escalation state carry on in memory, then are written."""
    import sqlite3

    clock = Clock(T0)
    make = settings_factory(gateway, receiver, key_file)
    path = tmp_path / "outbox.sqlite"
    async with stack(make, path, session, clock, free_port()) as s:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file: ours are refused
        try:
            s.escalations.sync([incident(s)])
            await wait_for(lambda: gateway.to(ALICE), "the level-1 SMS from memory")
            assert s.outbox.in_memory
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert s.outbox.flush()
        on_disk = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            [(data,)] = on_disk.execute("SELECT data FROM escalation").fetchall()
        finally:
            on_disk.close()
        assert '"level": 0' in data and '"team": "dsi"' in data
