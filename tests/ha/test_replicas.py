"""The parts of the pair on their own: the `replicas:` block, the vigie probe, who sends.

The probe runs against a peer served over 127.0.0.1 by an aiohttp app answering /-/healthy and
/-/replica as a replica does (each case sets what it answers); the dispatcher runs with real
outboxes and recording sinks; the replica set reads results as the result store hands them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.alerting.conftest import Alertmanager, alertmanager, alertmanagers, make_alert, receiver
from tests.alerting.test_dispatcher import FAST, RecordingSink
from tests.waiting import wait_for
from vigie.core.results import ProbeResult, Sample
from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.alerting import Alert, AlertDispatcher, AlertingSettings, Outbox
from vigie.monitor.alerting.ack import Silences
from vigie.monitor.audit import UPDATE, AuditLog
from vigie.monitor.config import load_config
from vigie.monitor.health.maintenance import MaintenanceBook, MaintenanceSpec
from vigie.monitor.replicas import (
    UPDATES_PATH,
    MaintenanceMirror,
    ReplicaSet,
    ReplicaSettings,
    UpdateFeed,
    updates_answer,
)
from vigie.probes import default_registry
from vigie.probes.base import Check, ProbeContext
from vigie.probes.http import make_session
from vigie.probes.vigie_peer import VigiePeerProbe, VigiePeerSettings

__all__ = ["alertmanager", "alertmanagers", "receiver"]  # fixtures

MEMBERS = [
    {"name": "nord", "url": "http://127.0.0.1:9401", "site": "nord"},
    {"name": "bellevue", "url": "http://127.0.0.1:9402/", "site": "bellevue"},
]


def write_config(tmp_path: Path, replicas: dict[str, Any]) -> Path:
    """A config with two datacenters and a replicas block."""
    path = tmp_path / "vigie.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sites": [
                    {"id": "nord", "name": "Datacenter Nord"},
                    {"id": "bellevue", "name": "Datacenter Bellevue"},
                ],
                "replicas": replicas,
            }
        )
    )
    return path


# --- the replicas: block -------------------------------------------------------------------


def test_each_member_gets_a_vigie_check_and_a_monitor_component(tmp_path: Path) -> None:
    """On every replica the plan probes every member (itself too) and the topology has a
    `monitor` component per member, in its site: the two replicas' configs are identical."""
    path = write_config(tmp_path, {"instance": "${VIGIE_INSTANCE}", "members": MEMBERS})
    plans = []
    for instance in ("nord", "bellevue"):
        loaded = load_config(path, default_registry(), env={"VIGIE_INSTANCE": instance})
        checks = {
            c.id: (c.target, c.settings)
            for c in loaded.plan.values()
            if isinstance(c.settings, VigiePeerSettings)
        }
        assert {c: (target, s.instance) for c, (target, s) in checks.items()} == {
            "vigie-nord": ("http://127.0.0.1:9401", "nord"),
            "vigie-bellevue": ("http://127.0.0.1:9402", "bellevue"),
        }
        monitors = {c.id: (c.site, c.name) for c in loaded.config.components if c.kind == "monitor"}
        assert monitors == {
            "vigie-nord": ("nord", "Vigie Nord"),
            "vigie-bellevue": ("bellevue", "Vigie Bellevue"),
        }
        plans.append(sorted(loaded.plan))
    assert plans[0] == plans[1]


@pytest.mark.parametrize(
    ("replicas", "message"),
    [
        ({"instance": "sud", "members": MEMBERS}, "instance 'sud' is not one of the members"),
        ({"instance": "nord", "members": MEMBERS[:1]}, "at least 2 items"),
        ({"instance": "nord", "members": [MEMBERS[0], MEMBERS[0]]}, "must be unique"),
        (
            {"instance": "nord", "members": MEMBERS, "handoff": "10s"},
            "handoff must be longer than interval x 2 + timeout",
        ),
        (
            {"instance": "nord", "members": [{**MEMBERS[0], "url": "ftp://x"}, MEMBERS[1]]},
            "must be an http or https URL",
        ),
    ],
)
def test_a_wrong_replicas_block_is_refused_at_its_line(
    tmp_path: Path, replicas: dict[str, Any], message: str
) -> None:
    """A mistake in the block is reported (with its place), and adds no check of its own."""
    path = write_config(tmp_path, replicas)
    with pytest.raises(ConfigErrors) as info:
        load_config(path, default_registry(), env={})
    errors = [str(e) for e in info.value.errors]
    assert any(message in e and "replicas" in e for e in errors), errors
    assert not any("vigie-" in e for e in errors), errors


def test_a_member_in_an_unknown_site_is_refused(tmp_path: Path) -> None:
    """A replica runs in a site of the topology: its monitor component must belong there."""
    members = [MEMBERS[0], {**MEMBERS[1], "site": "sud"}]
    path = write_config(tmp_path, {"instance": "nord", "members": members})
    with pytest.raises(ConfigErrors) as info:
        load_config(path, default_registry(), env={})
    assert any("sud" in str(e) for e in info.value.errors), info.value.errors


# --- who sends to direct sinks -------------------------------------------------------------


@dataclass
class Results:
    """What the result store would hand out: the last result of each check."""

    latest: dict[str, ProbeResult] = field(default_factory=dict)

    def get(self, check_id: str) -> ProbeResult | None:
        """The last result of a check, None before its first run."""
        return self.latest.get(check_id)


def replica_set(instance: str, results: Results, now: list[float]) -> ReplicaSet:
    """A replica set over those results, on a clock the test moves."""
    settings = ReplicaSettings.model_validate({"instance": instance, "members": MEMBERS})
    return ReplicaSet(settings, results.get, CollectorRegistry(), clock=lambda: now[0])


def test_the_first_alive_by_name_sends() -> None:
    """Bellevue sends while alive; Nord sends when it sees Bellevue dead, not probed yet,
    probed too long ago, or only forgiven at start (a success with an error)."""
    results, now = Results(), [1000.0]
    bellevue, nord = replica_set("bellevue", results, now), replica_set("nord", results, now)
    assert bellevue.is_sender()
    assert nord.is_sender()  # Bellevue not probed yet: both send rather than none
    results.latest["vigie-bellevue"] = ProbeResult(success=True, timestamp=999.0)
    assert not nord.is_sender()
    assert nord.alive("bellevue")
    results.latest["vigie-bellevue"] = ProbeResult(success=False, error="refused", timestamp=999)
    assert nord.is_sender()
    status = nord.status()
    assert [(m.name, m.alive, m.reason) for m in status.members] == [
        ("nord", True, None),
        ("bellevue", False, "refused"),
    ]
    results.latest["vigie-bellevue"] = ProbeResult(success=True, timestamp=999.0)
    now[0] = 999.0 + 2 * 10 + 5 + 1  # stale: more than interval x 2 + timeout ago
    assert nord.is_sender()
    results.latest["vigie-bellevue"] = ProbeResult(
        success=True, error="not judged yet (startup grace): refused", timestamp=now[0]
    )
    assert nord.is_sender()
    assert bellevue.is_sender()  # whatever it sees of Nord


def test_status_answers_as_the_probe_reads_it() -> None:
    """/-/replica's body carries the instance, the heartbeat and the peer's clock."""
    results, now = Results(), [1000.0]
    nord = replica_set("nord", results, now)
    now[0] = 1003.0
    body = nord.status().to_json()
    assert (body["instance"], body["heartbeat"], body["now"]) == ("nord", 1000.0, 1003.0)
    assert body["title"] == "Vigie Nord" and body["site"] == "nord"
    json.dumps(body)


# --- the vigie probe -------------------------------------------------------------------------


@dataclass
class Peer:
    """What the fake replica answers."""

    healthy: int = 200
    replica: Any = field(
        default_factory=lambda: {"instance": "nord", "heartbeat": 100.0, "now": 101.0}
    )
    url: str = ""


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    """A replica's two endpoints on a free loopback port."""
    state = Peer()

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(status=state.healthy, text="Healthy.\n")

    async def replica(_: web.Request) -> web.Response:
        body = state.replica if isinstance(state.replica, bytes) else json.dumps(state.replica)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/replica", replica)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


async def run(probe: VigiePeerProbe, url: str, **settings: Any) -> ProbeResult:
    """Run one vigie check of the peer at url."""
    check: Check[VigiePeerSettings] = Check(
        id="vigie-nord",
        kind="vigie",
        target=probe.parse_target(url),
        interval=1.0,
        timeout=1.0,
        settings=VigiePeerSettings.model_validate({"startup_grace": 0, **settings}),
    )
    async with make_session() as session:
        return await probe(check, ProbeContext(session))


def values(result: ProbeResult) -> dict[str, float]:
    """The result's samples by name."""
    return {s.name: s.value for s in result.samples}


async def test_a_live_peer_succeeds_with_its_heartbeat_age(peer: Peer) -> None:
    """Healthy, the expected instance, a heartbeat 1 s old on its own clock: success."""
    result = await run(VigiePeerProbe(), peer.url, instance="nord")
    assert result.success and result.error is None, result.error
    assert values(result) == {
        "vigie_peer_healthy": 1,
        "vigie_peer_heartbeat_age_seconds": 1.0,
        "vigie_peer_sender": 0,
    }


@pytest.mark.parametrize(
    ("healthy", "replica", "instance", "reason"),
    [
        (503, None, "nord", "/-/healthy answered HTTP 503"),
        (200, {"instance": "sud", "heartbeat": 1, "now": 2}, "nord", "replica 'sud' answered"),
        (200, {"instance": "nord", "heartbeat": 1, "now": 100}, "nord", "99s ago (health loop"),
        (200, b"<html>", "nord", "not a replica's answer"),
        (200, {"instance": "nord"}, "nord", "not a replica's answer (KeyError)"),
        (200, b"x" * (64 * 1024 + 1), "nord", "larger than 65536 bytes"),
    ],
)
async def test_a_wrong_answer_fails_naming_why(
    peer: Peer, healthy: int, replica: Any, instance: str, reason: str
) -> None:
    """Not healthy, another replica, a stuck health loop, not a Vigie: each fails, said so."""
    peer.healthy = healthy
    if replica is not None:
        peer.replica = replica
    result = await run(VigiePeerProbe(), peer.url, instance=instance, max_heartbeat_age=30)
    assert not result.success
    assert result.error is not None and reason in result.error, result.error


async def test_a_peer_never_seen_is_forgiven_during_the_startup_grace(peer: Peer) -> None:
    """Before it first answered, a failing peer is not judged during the grace (success with an
    error saying so); once it answered, a failure counts at once."""
    probe = VigiePeerProbe()
    peer.healthy = 503
    early = await run(probe, peer.url, startup_grace=60)
    assert early.success
    assert early.error is not None and early.error.startswith("not judged yet (startup grace)")
    peer.healthy = 200
    assert (await run(probe, peer.url, startup_grace=60)).error is None
    peer.healthy = 503
    assert not (await run(probe, peer.url, startup_grace=60)).success


async def test_a_closed_port_fails() -> None:
    """Nothing listening: a connection error, not an exception for the scheduler."""
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        result = await run(VigiePeerProbe(), f"http://127.0.0.1:{sock.getsockname()[1]}")
    assert not result.success and result.error is not None
    assert "ClientConnectorError" in result.error, result.error


# --- the dispatcher's handoff ------------------------------------------------------------------


async def test_a_replica_not_sending_leaves_direct_sinks_to_its_peer(tmp_path: Path) -> None:
    """While another replica sends, direct sinks' rows wait `handoff`, then are dropped; the
    Alertmanager sink gets everything. Once this replica sends, its queued rows go out."""
    am, hook = RecordingSink("am", refresh=True), RecordingSink("hook")
    sending = [False]
    outbox = Outbox(tmp_path / "o.sqlite")
    session = make_session()
    dispatcher = AlertDispatcher(
        AlertingSettings.model_validate({**FAST, "watchdog": False}),
        outbox,
        [am, hook],
        session,
        CollectorRegistry(),
        logger=structlog.get_logger(),
        sender=lambda: sending[0],
        handoff=0.5,
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        dispatcher.fire(make_alert(key="a"))
        await wait_for(lambda: ("a", "firing") in am.sent(), "Alertmanager's copy")
        await wait_for(lambda: outbox.depth().get("hook", 0) == 0, "the row left to the peer")
        assert hook.sent() == []
        started = time.monotonic()
        dispatcher.fire(make_alert(key="b"))
        await asyncio.sleep(0.1)
        sending[0] = True  # the peer died within the handoff: this replica sends what it holds
        await wait_for(lambda: hook.sent() == [("b", "firing")], "the page the peer could not")
        assert time.monotonic() - started < 0.5 + 1.0
        assert ("b", "firing") in am.sent()  # Alertmanager got it all along
    finally:
        await dispatcher.stop()
        await task
        outbox.close()
        await session.close()


async def test_the_replica_that_paged_sends_the_resolve_after_it_stops_sending(
    tmp_path: Path,
) -> None:
    """A replica that delivered a page to a direct sink delivers its resolve too, though another
    replica became sender meanwhile (the page of that replica's own loss: the one back never
    had it); a resolve of a page it never delivered is left to the sender."""
    am, hook = RecordingSink("am", refresh=True), RecordingSink("hook")
    sending = [True]
    outbox = Outbox(tmp_path / "o.sqlite")
    session = make_session()
    dispatcher = AlertDispatcher(
        AlertingSettings.model_validate({**FAST, "watchdog": False}),
        outbox,
        [am, hook],
        session,
        CollectorRegistry(),
        logger=structlog.get_logger(),
        sender=lambda: sending[0],
        handoff=0.5,
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        dispatcher.fire(make_alert(key="lost"))
        await wait_for(lambda: ("lost", "firing") in hook.sent(), "the page, as sender")
        sending[0] = False  # the lost replica is back, and first by name
        dispatcher.fire(make_alert(key="other"))
        await wait_for(lambda: outbox.depth().get("hook", 0) == 0, "the peer's page left to it")
        dispatcher.resolve("other")
        dispatcher.resolve("lost")
        await wait_for(lambda: ("lost", "resolved") in hook.sent(), "the resolve of its own page")
        await wait_for(lambda: outbox.depth().get("hook", 0) == 0, "the other resolve left")
        assert hook.sent() == [("lost", "firing"), ("lost", "resolved")]
        assert ("other", "resolved") in am.sent()
    finally:
        await dispatcher.stop()
        await task
        outbox.close()
        await session.close()


# --- maintenance windows through Alertmanager's silences -------------------------------------


async def test_windows_travel_as_silences_and_other_silences_are_left_alone(
    alertmanager: Alertmanager,
) -> None:
    """A window published by one replica comes back into another's book from a real
    Alertmanager, once; an operator's own silence (or an acknowledgement) is no window."""
    async with make_session() as session:
        silences = Silences([alertmanager.url], session)
        sites = {"nord", "bellevue"}
        nord_book, bellevue_book = MaintenanceBook(), MaintenanceBook()
        woken: list[str] = []
        nord = MaintenanceMirror(silences, lambda: nord_book, lambda: sites, "nord")
        bellevue = MaintenanceMirror(
            silences,
            lambda: bellevue_book,
            lambda: sites,
            "bellevue",
            on_change=lambda: woken.append("x"),
        )
        end = datetime.now(UTC) + timedelta(hours=1)
        win = nord_book.add(MaintenanceSpec(target="nord", end=end, reason="UPS: swap"))
        await nord.publish(win)
        await silences.create(
            {"alertname": "VigieIncident", "site": "nord"},
            author="alice",
            comment="looking into it",
            until=end,
        )
        assert await bellevue.pull() == 1
        assert await bellevue.pull() == 0  # known now
        assert await nord.pull() == 0  # its own window
        [got] = bellevue_book.windows
        assert (got.target, got.reason, got.source) == ("nord", "UPS: swap", "alertmanager")
        assert abs(got.end - end.timestamp()) < 1
        assert bellevue_book.active(time.time()) == {"nord": "UPS: swap"}
        assert woken == ["x"]
        component = nord_book.add(MaintenanceSpec(target="srv-1", end=end))
        await nord.publish(component)
        held = [s for s in await silences.active() if s["createdBy"] == "vigie nord"]
        assert sorted(m["name"] for s in held for m in s["matchers"]) == ["component", "site"]


async def test_only_vigies_own_alerts_name_the_instance_in_their_labels(tmp_path: Path) -> None:
    """An incident's labels are the same on every replica; Vigie's own trouble (a `vigie:*`
    key, e.g. its state_dir) is one replica's, so its labels name it. Both get the annotation."""
    am = RecordingSink("am", refresh=True)
    outbox = Outbox(tmp_path / "o.sqlite")
    session = make_session()
    dispatcher = AlertDispatcher(
        AlertingSettings.model_validate({**FAST, "watchdog": False, "vigie_instance": "nord"}),
        outbox,
        [am],
        session,
        CollectorRegistry(),
        logger=structlog.get_logger(),
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        dispatcher.fire(make_alert(key="incident"))
        dispatcher.fire(make_alert(key="vigie:state_dir", alertname="VigieStateDir"))
        await wait_for(lambda: len({a.key for b in am.batches for a in b}) == 2, "both alerts")
        sent = {a.key: a for b in am.batches for a in b}
        assert "vigie_instance" not in sent["incident"].labels
        assert sent["vigie:state_dir"].labels["vigie_instance"] == "nord"
        assert {a.annotations["vigie_instance"] for a in sent.values()} == {"nord"}
    finally:
        await dispatcher.stop()
        await task
        outbox.close()
        await session.close()


def test_vigie_check_warns_where_pages_could_double_or_be_lost(tmp_path: Path) -> None:
    """Both replicas in one site, no Alertmanager, a vigie_instance shared by both: warned."""
    path = tmp_path / "vigie.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sites": [{"id": "nord"}],
                "state_dir": str(tmp_path),
                "replicas": {
                    "instance": "nord",
                    "members": [MEMBERS[0], {**MEMBERS[1], "site": "nord"}],
                },
                "alerting": {
                    "webhooks": [{"url": "http://127.0.0.1:9/hook"}],
                    "vigie_instance": "vigie",
                },
            }
        )
    )
    loaded = load_config(path, default_registry(), env={})
    warned = [w.message for w in loaded.warnings]
    assert "every replica runs in site 'nord': losing it loses them all" in warned
    assert any(w.startswith("replicas without an Alertmanager") for w in warned), warned
    assert any(w.startswith("with replicas, vigie_instance") for w in warned), warned
    healthy = load_config(
        write_config(tmp_path, {"instance": "nord", "members": MEMBERS}), default_registry(), env={}
    )
    assert healthy.warnings == []


# --- a peer's resolve holds this replica's keep-alives -----------------------------------------


async def test_a_peers_recent_resolves_become_samples(peer: Peer) -> None:
    """The resolves a peer lists on /-/replica come back as samples, one per alert key."""
    peer.replica = {
        "instance": "nord",
        "heartbeat": 100.0,
        "now": 101.0,
        "resolved": {"site:nord/critical": 99.5, "component:ups/warning": 98.0},
    }
    result = await run(VigiePeerProbe(), peer.url)
    assert result.success, result.error
    resolved = {
        dict(s.labels)["alert"]: s.value
        for s in result.samples
        if s.name == "vigie_peer_resolved_timestamp_seconds"
    }
    assert resolved == {"site:nord/critical": 99.5, "component:ups/warning": 98.0}
    peer.replica = {**peer.replica, "resolved": ["not", "a", "mapping"]}
    assert not (await run(VigiePeerProbe(), peer.url)).success


def test_peer_resolves_are_read_from_live_peers_only() -> None:
    """The replica set gathers the resolves of the peers it sees alive, not of dead ones."""
    results, now = Results(), [1000.0]
    nord = replica_set("nord", results, now)
    resolved = Sample(
        "vigie_peer_resolved_timestamp_seconds", 995.0, (("alert", "site:nord/critical"),)
    )
    results.latest["vigie-bellevue"] = ProbeResult(
        success=True, samples=(resolved,), timestamp=999.0
    )
    assert nord.peer_resolved() == {"site:nord/critical": 995.0}
    results.latest["vigie-bellevue"] = ProbeResult(
        success=False, samples=(resolved,), error="refused", timestamp=999.0
    )
    assert nord.peer_resolved() == {}


async def test_a_peers_resolve_holds_keep_alives_and_updates_for_handoff(tmp_path: Path) -> None:
    """While a peer's resolve of a firing alert is younger than handoff, this replica sends
    Alertmanager neither keep-alives nor updates of it (they would re-fire it); its own
    resolve still goes out, and a later firing one after handoff is sent again."""
    am = RecordingSink("am", refresh=True)
    outbox = Outbox(tmp_path / "o.sqlite")
    session = make_session()
    clock = [time.time()]
    peer: dict[str, float] = {}
    dispatcher = AlertDispatcher(
        AlertingSettings.model_validate({**FAST, "watchdog": False, "resend_interval": 0.1}),
        outbox,
        [am],
        session,
        CollectorRegistry(),
        logger=structlog.get_logger(),
        clock=lambda: clock[0],
        handoff=30.0,
        peer_resolved=lambda: peer,
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        alert = make_alert(key="a")
        alert = Alert(alert.key, alert.labels, alert.annotations, starts_at=datetime.now(UTC))
        dispatcher.fire(alert)
        await wait_for(lambda: len(am.sent()) >= 2, "the fire and a keep-alive")
        clock[0] = time.time()
        peer["a"] = clock[0]  # the peer resolved it, after it started
        await asyncio.sleep(0.3)  # keep-alives due every 0.1 s
        sent = len(am.sent())
        dispatcher.fire(Alert(alert.key, alert.labels, {"summary": "worse"}, alert.starts_at))
        await asyncio.sleep(0.5)
        assert len(am.sent()) == sent, am.sent()[sent:]  # no keep-alive, no update
        clock[0] += 31  # handoff passed: the peer may be wrong, page again
        await wait_for(lambda: len(am.sent()) > sent, "keep-alives again after handoff")
        clock[0] -= 31
        dispatcher.resolve("a")
        await wait_for(lambda: ("a", "resolved") in am.sent(), "its own resolve")
        assert dispatcher.recently_resolved().keys() == {"a"}
    finally:
        await dispatcher.stop()
        await task
        outbox.close()
        await session.close()


# --- operator state between replicas: early ends, incident updates ---------------------------


async def test_a_window_ended_on_one_replica_ends_on_the_other_through_the_cluster(
    alertmanager: Alertmanager,
) -> None:
    """Nord opens a window (its silence id kept), Bellevue reads it; Bellevue ends it early:
    the silence is expired, and Nord's next pull ends its own window. A failed read ends
    nothing; a window whose silence is still being created is not judged; an ended window's
    silence is never read back as a new window."""
    async with make_session() as session:
        silences = Silences([alertmanager.url], session)
        sites = {"nord", "bellevue"}
        nord_book, bellevue_book = MaintenanceBook(), MaintenanceBook()
        woken: list[str] = []
        nord = MaintenanceMirror(
            silences, lambda: nord_book, lambda: sites, "nord", on_change=lambda: woken.append("n")
        )
        bellevue = MaintenanceMirror(silences, lambda: bellevue_book, lambda: sites, "bellevue")
        end = datetime.now(UTC) + timedelta(hours=1)
        win = nord_book.add(MaintenanceSpec(target="nord", end=end, reason="UPS"), author="alice")
        await nord.publish(win)
        [held] = nord_book.windows
        assert held.silence is not None
        assert await bellevue.pull() == 1
        [pulled] = bellevue_book.windows
        assert pulled.silence == held.silence and pulled.author == "vigie nord"

        broken = MaintenanceMirror(
            Silences(["http://127.0.0.1:9"], session, timeout=1.0),
            lambda: nord_book,
            lambda: sites,
            "nord",
        )
        ended = bellevue_book.end(pulled.id, "bob")
        assert ended is not None
        bellevue.ended(ended)
        await bellevue.close()  # the expiry is done
        assert not [s for s in await silences.active(pending=True) if s["id"] == held.silence]
        assert await broken.pull() == 0 and nord_book.windows == [held]  # a failed read
        later = nord_book.add(MaintenanceSpec(target="srv-1", end=end), author="alice")
        nord.opened(later)  # its silence is being created while the pull runs
        assert await nord.pull() == 1
        await nord.close()
        assert [w.id for w in nord_book.windows] == [later.id]
        [gone] = [w for w in nord_book.finished if w.id == held.id]
        assert gone.ended_early and "peer replica" in (gone.ended_by or "")
        assert woken == ["n"]
        assert await bellevue.pull() == 1  # Nord's srv-1 window
        assert [w.target for w in bellevue_book.windows] == ["srv-1"]
        assert await bellevue.pull() == 0  # the ended window's silence is not read back


async def test_a_future_window_is_shared_before_it_starts(alertmanager: Alertmanager) -> None:
    """A window opened for later is a pending silence: the peer reads it at once, and no pull
    takes it for ended."""
    async with make_session() as session:
        silences = Silences([alertmanager.url], session)
        nord_book, bellevue_book = MaintenanceBook(), MaintenanceBook()
        nord = MaintenanceMirror(silences, lambda: nord_book, lambda: {"nord"}, "nord")
        bellevue = MaintenanceMirror(silences, lambda: bellevue_book, lambda: {"nord"}, "bellevue")
        start = datetime.now(UTC) + timedelta(hours=1)
        spec = MaintenanceSpec(target="nord", start=start, end=start + timedelta(hours=1))
        await nord.publish(nord_book.add(spec, author="alice"))
        assert await bellevue.pull() == 1 and await nord.pull() == 0
        assert [w.start for w in bellevue_book.windows] == [pytest.approx(start.timestamp(), abs=1)]
        assert len(nord_book.windows) == 1


@dataclass
class Feed:
    """A peer replica serving its updates, as `/-/replica/updates` does."""

    audit: AuditLog
    keys: dict[str, str] = field(default_factory=dict)
    extra: list[Any] = field(default_factory=list)
    up: bool = True
    asked: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
async def feed() -> AsyncIterator[Feed]:
    """Vigie Nord's updates endpoint on a free loopback port (its answer, plus `extra` items)."""
    state = Feed(AuditLog(None))

    async def updates(request: web.Request) -> web.Response:
        state.asked.append(request.query["since"])
        if not state.up:
            return web.Response(status=503)
        body = updates_answer(state.audit, float(request.query["since"]), state.keys)
        body["updates"] += state.extra
        return web.json_response(body)

    app = web.Application()
    app.router.add_get(UPDATES_PATH, updates)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


def post(log: AuditLog, incident: str, text: str, who: str = "alice") -> None:
    """An operator's update on a replica."""
    log.record(
        who=who,
        role="operator",
        via="basic_auth",
        remote="::1",
        action=UPDATE,
        target=incident,
        detail=text,
    )


async def test_updates_posted_on_a_peer_are_pulled_once_and_annotate_alike(feed: Feed) -> None:
    """Bellevue pulls Nord's updates into its own log, as posted there (time, author), under
    its own incident of the same key; twice pulled, kept once; the peer down, nothing changes
    and it catches up after; the newest by time annotates both replicas' alerts alike; peer
    data is bounded and junk is dropped."""
    settings = ReplicaSettings.model_validate(
        {
            "instance": "bellevue",
            "members": [
                {"name": "nord", "url": feed.url, "site": "nord"},
                {"name": "bellevue", "url": "http://127.0.0.1:9", "site": "bellevue"},
            ],
        }
    )
    mine = AuditLog(None)
    woken: list[str] = []
    feed.keys = {"nord@20261202T100003Z": "site:nord"}
    async with make_session() as session:
        bellevue = UpdateFeed(
            settings,
            mine,
            session,
            lambda name: None,
            lambda: {"site:nord": "nord@20261202T100004Z"},  # seen starting a second later
            on_change=lambda: woken.append("x"),
        )
        post(feed.audit, "nord@20261202T100003Z", "La DSI rétablit le courant")
        assert await bellevue.pull() == 1
        post(mine, "nord@20261202T100004Z", "Groupe électrogène démarré", who="bob")
        assert await bellevue.pull() == 0  # known already
        feed.up = False
        post(feed.audit, "nord@20261202T100003Z", "x" * 2000)
        assert await bellevue.pull() == 0
        feed.up = True
        feed.extra = [
            "junk",
            {"incident": "a", "at": "soon", "text": "t"},
            {"incident": "a", "at": float("inf"), "text": "t"},
            {"incident": "", "at": 5.0, "text": "t"},
        ]
        assert await bellevue.pull() == 1
        assert woken == ["x", "x"]
    assert float(feed.asked[0]) == 0.0
    assert float(feed.asked[-1]) > 0  # asked from the last update it got
    texts = [(a.who, a.via, a.detail[:20]) for a in mine.updates("nord@20261202T100004Z")]
    assert texts == [
        ("alice", "replica nord", "x" * 20),
        ("bob", "basic_auth", "Groupe électrogène d"),
        ("alice", "replica nord", "La DSI rétablit le c"),
    ]
    assert all(len(a.detail) <= 500 for a in mine.updates("nord@20261202T100004Z"))
    newest_there = feed.audit.updates("nord@20261202T100003Z")[0]
    newest_here = mine.latest_updates(["nord@20261202T100004Z"])["nord@20261202T100004Z"]
    assert (newest_here.at, newest_here.who, newest_here.detail) == (
        newest_there.at,
        newest_there.who,
        newest_there.detail[:500],
    )
    assert mine.local_updates(0, 10)[0].who == "bob"  # what it serves: its own only
