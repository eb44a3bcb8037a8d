"""The Alertmanager sink against a real prometheus-alertmanager (API v2)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from tests.alerting.conftest import Alertmanager, make_alert
from tests.conftest import free_port
from tests.waiting import wait_for
from vigie.monitor.alerting.alertmanager import AlertmanagerSink
from vigie.monitor.alerting.model import Alert, fingerprint
from vigie.monitor.alerting.sink import DeliveryError


def parse(stamp: str) -> datetime:
    """Parse Alertmanager's RFC 3339 time."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_firing_alert_is_held_with_labels_and_annotations(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    """A sent alert is active at Alertmanager with its labels, annotations and fingerprint."""
    sink = AlertmanagerSink(alertmanager.url, resend_interval=60.0)
    alert = make_alert()
    before = time.time()
    await sink.send([alert], session)
    held = await alertmanager.alert(session, "VigieIncident")
    assert held is not None
    assert held["labels"] == alert.labels
    assert held["annotations"] == alert.annotations
    assert held["fingerprint"] == fingerprint(alert.labels)
    assert held["generatorURL"] == alert.generator_url
    assert parse(held["startsAt"]) == alert.starts_at
    ends = parse(held["endsAt"]).timestamp()
    # endsAt = now + 4 x resend_interval, computed at send time.
    assert before + 240 - 1 <= ends <= time.time() + 240 + 1
    assert held["status"]["state"] == "active"


async def test_resolved_alert_is_gone(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    """An alert sent with its endsAt in the past is no longer active."""
    sink = AlertmanagerSink(alertmanager.url, resend_interval=60.0)
    alert = make_alert()
    await sink.send([alert], session)
    assert await alertmanager.alert(session, "VigieIncident") is not None
    await sink.send([alert.resolved(datetime.now(UTC) - timedelta(seconds=1))], session)
    assert await alertmanager.alert(session, "VigieIncident") is None


async def test_url_with_path_prefix(session: aiohttp.ClientSession) -> None:
    """An Alertmanager behind a path prefix gets POST <prefix>/api/v2/alerts."""
    paths: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        sink = AlertmanagerSink(f"http://127.0.0.1:{port}/alertmanager/", resend_interval=60.0)
        await sink.send([make_alert()], session)
        assert paths == ["/alertmanager/api/v2/alerts"]
        assert sink.name == f"alertmanager:http://127.0.0.1:{port}/alertmanager"
    finally:
        await runner.cleanup()


async def test_refused_alert_names_url_and_status(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    """A refusal raises DeliveryError with the URL, the status and Alertmanager's reason."""
    sink = AlertmanagerSink(alertmanager.url, resend_interval=60.0)
    alert = make_alert()
    # Forge what Alert itself refuses, to see Alertmanager's own refusal.
    object.__setattr__(alert, "labels", {"alertname": "X", "bad-name": "y"})
    with pytest.raises(DeliveryError) as info:
        await sink.send([alert], session)
    reason = info.value.reason
    assert reason.startswith(f"{alertmanager.url}/api/v2/alerts: HTTP 400")
    assert "invalid name" in reason


async def test_unreachable_alertmanager(session: aiohttp.ClientSession) -> None:
    """No listener: DeliveryError naming the URL and the connection error."""
    url = f"http://127.0.0.1:{free_port()}"
    sink = AlertmanagerSink(url, resend_interval=60.0, timeout=2.0)
    with pytest.raises(DeliveryError) as info:
        await sink.send([make_alert()], session)
    assert info.value.reason.startswith(f"{url}/api/v2/alerts: ClientConnectorError")


async def test_timeout(session: aiohttp.ClientSession) -> None:
    """A server that never answers: DeliveryError saying timeout after the configured time."""
    release = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/api/v2/alerts", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        sink = AlertmanagerSink(url, resend_interval=60.0, timeout=0.2)
        with pytest.raises(DeliveryError, match=r"timeout after 0\.2s"):
            await sink.send([make_alert()], session)
    finally:
        release.set()
        await runner.cleanup()


async def test_several_alerts_in_one_post(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    """A batch delivers each of its alerts."""
    sink = AlertmanagerSink(alertmanager.url, resend_interval=60.0)
    alerts = [make_alert(key=f"k{i}", alertname=f"A{i}") for i in range(3)]
    await sink.send(alerts, session)

    async def all_held() -> bool:
        names = {a["labels"]["alertname"] for a in await alertmanager.alerts(session)}
        return names == {"A0", "A1", "A2"}

    await wait_for(all_held, "three alerts at Alertmanager")


async def test_alert_starting_in_the_future_is_still_accepted(
    alertmanager: Alertmanager, session: aiohttp.ClientSession
) -> None:
    """A start time past now + 4 x resend (a skewed caller) cannot make the alert invalid."""
    sink = AlertmanagerSink(alertmanager.url, resend_interval=1.0)
    future = datetime.now(UTC) + timedelta(hours=1)
    await sink.send([Alert("k", {"alertname": "Skewed"}, starts_at=future)], session)
    held = await alertmanager.alert(session, "Skewed")
    assert held is not None
    assert parse(held["endsAt"]) > parse(held["startsAt"])
