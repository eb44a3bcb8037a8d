"""The webhook sink: Alertmanager's webhook JSON v4, bearer token, errors without secrets."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from tests.alerting.conftest import (
    T0,
    AlertmanagerFactory,
    Receiver,
    make_alert,
)
from tests.conftest import free_port
from tests.waiting import wait_for
from vigie.monitor.alerting.alertmanager import AlertmanagerSink
from vigie.monitor.alerting.model import GO_ZERO_TIME, Alert
from vigie.monitor.alerting.sink import DeliveryError
from vigie.monitor.alerting.webhook import WebhookSink, webhook_payload

TOKEN = "s3cr3t-t0ken"


def sink(url: str, token: str | None = None) -> WebhookSink:
    """A webhook sink named pager."""
    return WebhookSink(
        url,
        name="webhook:pager",
        vigie_instance="vigie-nord-1",
        bearer_token=SecretStr(token) if token else None,
        external_url="https://vigie.example.org",
        timeout=2.0,
    )


def shape(value: Any) -> Any:
    """Return the structure of a JSON value: keys and value types, recursively."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


async def test_payload_matches_alertmanager_webhook(
    alertmanagers: AlertmanagerFactory, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """Ours and Alertmanager's own notification (route without group_by) agree, field by field."""
    am = alertmanagers(group_by=[])
    await am.start(session)
    alert = make_alert()
    await AlertmanagerSink(am.url, resend_interval=60.0).send([alert], session)
    await wait_for(lambda: receiver.on("/am/am"), "Alertmanager's notification")
    theirs = receiver.on("/am/am")[0]
    ours = webhook_payload([alert], receiver="hook", vigie_instance="vigie-nord-1")
    assert shape(ours) == shape(theirs)
    for field in (
        "version",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "truncatedAlerts",
    ):
        assert ours[field] == theirs[field], field
    assert ours["alerts"] == theirs["alerts"]
    assert theirs["alerts"][0]["endsAt"] == GO_ZERO_TIME
    # Same format as theirs ({}:{}), with a child route naming our instance.
    assert theirs["groupKey"] == "{}:{}"
    assert ours["groupKey"] == '{}/{vigie_instance="vigie-nord-1"}:{}'


async def test_resolved_payload_matches_alertmanager_webhook(
    alertmanagers: AlertmanagerFactory, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """A resolve notification agrees with Alertmanager's too (status, endsAt)."""
    am = alertmanagers(group_by=[])
    await am.start(session)
    alert = make_alert()
    to_am = AlertmanagerSink(am.url, resend_interval=60.0)
    await to_am.send([alert], session)
    await wait_for(lambda: receiver.on("/am/am"), "Alertmanager's firing notification")
    done = alert.resolved(T0 + timedelta(minutes=3))
    await to_am.send([done], session)
    await wait_for(lambda: len(receiver.on("/am/am")) == 2, "Alertmanager's resolve")
    theirs = receiver.on("/am/am")[1]
    ours = webhook_payload([done], receiver="hook", vigie_instance="vigie-nord-1")
    assert theirs["status"] == ours["status"] == "resolved"
    assert ours["alerts"] == theirs["alerts"]


def test_common_labels_and_status_of_a_batch() -> None:
    """A batch is firing if any alert is; common labels and annotations are the shared pairs."""
    a = make_alert(key="a", component="ups-1")
    b = make_alert(key="b", component="ups-2").resolved(T0 + timedelta(minutes=1))
    payload = webhook_payload([a, b], receiver="pager", vigie_instance="v")
    assert payload["status"] == "firing"
    assert "component" not in payload["commonLabels"]
    assert payload["commonLabels"]["site"] == "site-nord"
    assert payload["commonAnnotations"] == a.annotations
    assert [x["status"] for x in payload["alerts"]] == ["firing", "resolved"]


async def test_post_with_bearer_token(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    """The notification is POSTed as JSON with the bearer token."""
    alert = make_alert()
    await sink(f"{receiver.url}/hook/abc", TOKEN).send([alert], session)
    (post,) = receiver.posts
    assert post.path == "/hook/abc"
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.body["receiver"] == "pager"
    assert post.body["externalURL"] == "https://vigie.example.org"
    assert post.body["alerts"][0]["labels"] == alert.labels


async def test_refusal_names_host_and_status_not_path_or_token(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """A non-2xx raises DeliveryError with host:port and status; the path's token is not shown."""
    receiver.status = 404
    receiver.reply = f"no hook at /hooks/{TOKEN}?key={TOKEN}"
    url = f"{receiver.url}/hooks/{TOKEN}?key={TOKEN}"
    with pytest.raises(DeliveryError) as info:
        await sink(url, TOKEN).send([make_alert()], session)
    assert info.value.reason == f"webhook {receiver.url}: HTTP 404: no hook at <redacted>"
    assert TOKEN not in str(info.value)


async def test_redirect_is_a_failure(session: aiohttp.ClientSession, receiver: Receiver) -> None:
    """A 3xx is not followed (it would turn the POST into a GET): it is a failed delivery."""

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"{receiver.url}/elsewhere")

    app = web.Application()
    app.router.add_post("/", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        with pytest.raises(DeliveryError, match="HTTP 302"):
            await sink(url).send([make_alert()], session)
        assert receiver.posts == []
    finally:
        await runner.cleanup()


async def test_unreachable_receiver_hides_path(session: aiohttp.ClientSession) -> None:
    """A connection error names scheme://host:port only."""
    port = free_port()
    with pytest.raises(DeliveryError) as info:
        await sink(f"http://127.0.0.1:{port}/hooks/{TOKEN}").send([make_alert()], session)
    assert re.match(rf"webhook http://127\.0\.0\.1:{port}: ClientConnectorError", info.value.reason)
    assert TOKEN not in info.value.reason


def test_fingerprint_in_payload() -> None:
    """Each alert carries Alertmanager's fingerprint of its labels."""
    alert = Alert("k", {"alertname": "X", "site": "nord"}, starts_at=T0)
    payload = webhook_payload([alert], receiver="r", vigie_instance="v")
    assert payload["alerts"][0]["fingerprint"] == "32b706d67ef1135c"
