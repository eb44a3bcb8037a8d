"""The dispatcher: synchronous outbox writes, delivery to every sink with retries, re-sends,
the watchdog, restarts, and Alertmanager outages, against real Alertmanagers."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.alerting.conftest import (
    T0,
    Alertmanager,
    AlertmanagerFactory,
    Receiver,
    make_alert,
    metric,
)
from tests.conftest import free_port
from tests.waiting import wait_for
from vigie.monitor.alerting import build_sinks
from vigie.monitor.alerting.alertmanager import AlertmanagerSink
from vigie.monitor.alerting.dispatcher import WATCHDOG_KEY, AlertDispatcher
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.outbox import Outbox
from vigie.monitor.alerting.settings import AlertingSettings
from vigie.monitor.alerting.sink import Delivery, DeliveryError, Sink
from vigie.monitor.alerting.webhook import WebhookSink

FAST = {"backoff_initial": 0.05, "backoff_max": 0.3, "vigie_instance": "vigie-test"}


class RecordingSink:
    """A sink that records what it is given, and can be made to fail or to hang."""

    def __init__(
        self, name: str = "rec", delivery: Delivery = Delivery.LATEST, refresh: bool = False
    ) -> None:
        self.name = name
        self.delivery = delivery
        self.refresh = refresh
        self.batch_size = 64
        self.batches: list[list[Alert]] = []
        self.attempts: list[float] = []
        self.failing = False
        self.hang = False

    async def send(self, alerts: Sequence[Alert], session: aiohttp.ClientSession) -> None:
        """Record the attempt; fail or hang when told to."""
        self.attempts.append(time.monotonic())
        if self.hang:
            await asyncio.Event().wait()
        if self.failing:
            raise DeliveryError(f"{self.name}: HTTP 503")
        self.batches.append(list(alerts))

    def sent(self) -> list[tuple[str, str]]:
        """Return (key, state) of every alert delivered, in order."""
        return [(a.key, a.state) for batch in self.batches for a in batch]


class Dispatch:
    """A running dispatcher with its outbox and registry."""

    def __init__(self, dispatcher: AlertDispatcher, outbox: Outbox, registry: CollectorRegistry):
        self.d = dispatcher
        self.outbox = outbox
        self.registry = registry

    def depth(self, sink: str) -> float:
        """Return vigie_alert_outbox_depth{sink}."""
        return metric(self.registry, "vigie_alert_outbox_depth", sink=sink)


@asynccontextmanager
async def running(
    path: Path,
    sinks: Sequence[Sink],
    session: aiohttp.ClientSession,
    rng: random.Random | None = None,
    **settings: Any,
) -> AsyncIterator[Dispatch]:
    """Run a dispatcher on the outbox at path; stop it and close the outbox at the end."""
    outbox = Outbox(path)
    registry = CollectorRegistry()
    dispatcher = AlertDispatcher(
        AlertingSettings.model_validate({**FAST, **settings}),
        outbox,
        sinks,
        session,
        registry,
        logger=structlog.get_logger(),
        rng=rng,
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        yield Dispatch(dispatcher, outbox, registry)
    finally:
        await dispatcher.stop()
        await task
        outbox.close()


def am_sinks(*ams: Alertmanager, resend: float = 60.0) -> list[Sink]:
    """Alertmanager sinks for the given processes."""
    return [AlertmanagerSink(am.url, resend_interval=resend, timeout=2.0) for am in ams]


# --- against real Alertmanagers --------------------------------------------------------------


async def test_fire_and_resolve_at_alertmanager(
    alertmanager: Alertmanager,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """fire: Alertmanager holds the alert with its labels (unchanged: the same on every replica)
    and its annotations (vigie_instance added) and notifies; resolve: the alert is gone and the
    receiver is told it is resolved."""
    alert = make_alert()
    sinks = am_sinks(alertmanager)
    async with running(tmp_path / "o.sqlite", sinks, session, watchdog=False) as d:
        d.d.fire(alert)
        await wait_for(lambda: alertmanager.alert(session, "VigieIncident"), "the alert")
        held = await alertmanager.alert(session, "VigieIncident")
        assert held is not None
        assert held["labels"] == alert.labels
        assert held["annotations"] == {**alert.annotations, "vigie_instance": "vigie-test"}
        assert held["status"]["state"] == "active"
        await wait_for(
            lambda: receiver.notified("/am/am", "VigieIncident", "firing") == 1, "the page"
        )
        d.d.resolve(alert.key)
        await wait_for(
            lambda: receiver.notified("/am/am", "VigieIncident", "resolved") == 1, "the resolve"
        )
        assert await alertmanager.alert(session, "VigieIncident") is None
        assert d.d.active() == {}
        assert metric(d.registry, "vigie_alerts_sent_total", sink=sinks[0].name) == 2


async def test_resend_keeps_alert_alive_past_its_first_ends_at(
    alertmanager: Alertmanager, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A firing alert is re-sent every resend_interval, so it outlives its first endsAt."""
    resend = 0.3  # endsAt = now + 1.2 s
    async with running(
        tmp_path / "o.sqlite",
        am_sinks(alertmanager, resend=resend),
        session,
        watchdog=False,
        resend_interval=resend,
    ) as d:
        d.d.fire(make_alert())
        await wait_for(lambda: alertmanager.alert(session, "VigieIncident"), "the alert")
        first = await alertmanager.alert(session, "VigieIncident")
        assert first is not None
        first_end = datetime.fromisoformat(first["endsAt"].replace("Z", "+00:00")).timestamp()
        await wait_for(lambda: time.time() > first_end + 4 * resend, "the first endsAt to pass")
        later = await alertmanager.alert(session, "VigieIncident")
        assert later is not None, "the alert expired: it was not re-sent"
        assert later["startsAt"] == first["startsAt"]
        assert later["endsAt"] > first["endsAt"]


async def test_watchdog_always_firing_and_expiring_when_vigie_stops(
    alertmanager: Alertmanager,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """VigieWatchdog (severity none) stays firing at Alertmanager while Vigie runs, and expires
    after about four resend intervals once Vigie stops: a dead man's switch."""
    resend = 0.3
    async with running(
        tmp_path / "o.sqlite",
        am_sinks(alertmanager, resend=resend),
        session,
        resend_interval=resend,
    ) as d:
        await wait_for(lambda: alertmanager.alert(session, "VigieWatchdog"), "the watchdog")
        window_end = time.monotonic() + 10 * resend

        async def held_through_the_window() -> bool:
            held = await alertmanager.alert(session, "VigieWatchdog")
            assert held is not None, "the watchdog stopped firing"
            assert held["labels"]["severity"] == "none"
            assert held["labels"]["vigie_instance"] == "vigie-test"
            return time.monotonic() > window_end

        # Looked at several times per TTL (4 x resend), for 2.5 TTLs.
        await wait_for(held_through_the_window, "the window to pass", every=resend / 3)
        assert d.d.active() == {}
        assert metric(d.registry, "vigie_alerts_active") == 0
    assert receiver.notified("/am/am", "VigieWatchdog", "firing") == 1
    stopped = time.monotonic()

    async def gone() -> bool:
        return await alertmanager.alert(session, "VigieWatchdog") is None

    await wait_for(gone, "the watchdog to expire", within=4 * resend + 5)
    assert time.monotonic() - stopped > 2 * resend, "expired too early: was it resolved?"


async def test_alertmanager_down_during_an_incident(
    alertmanager: Alertmanager,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Alertmanager stopped while alerts fire and resolve, started again on the same port:
    every queued notification is delivered, none lost. (The issue's 5-minute outage is
    compressed: backoff 50 ms..300 ms instead of 1 s..5 min, so the outage spans many retries.)"""
    a = make_alert(key="a", alertname="PowerA")
    b = make_alert(key="b", alertname="SanB")
    c = make_alert(key="c", alertname="NetC")
    sink = am_sinks(alertmanager)
    async with running(tmp_path / "o.sqlite", sink, session, watchdog=False) as d:
        d.d.fire(a)
        await wait_for(lambda: receiver.notified("/am/am", "PowerA", "firing") == 1, "A's page")
        await alertmanager.stop()

        d.d.resolve("a")
        d.d.fire(b)
        d.d.fire(c)
        d.d.resolve("c")
        d.d.fire(Alert("b", b.labels, {**b.annotations, "summary": "SAN degraded"}, T0))
        await wait_for(
            lambda: (
                metric(d.registry, "vigie_alert_delivery_failures_total", sink=sink[0].name) >= 5
            ),
            "five failed attempts while Alertmanager is down",
        )
        assert d.depth(sink[0].name) == 3  # a resolved, b updated, c resolved

        await alertmanager.start(session)
        await wait_for(lambda: d.depth(sink[0].name) == 0, "the queue to drain")
        held = {x["labels"]["alertname"]: x for x in await alertmanager.alerts(session)}
        assert set(held) == {"SanB"}
        assert held["SanB"]["annotations"]["summary"] == "SAN degraded"
        await wait_for(
            lambda: receiver.notified("/am/am", "PowerA", "resolved") == 1,
            "A's resolve, notified after the restart",
        )
        await wait_for(lambda: receiver.notified("/am/am", "SanB", "firing") == 1, "B's page")
        assert receiver.notified("/am/am", "PowerA", "firing") == 1


async def test_restart_does_not_page_again_and_still_resolves(
    alertmanager: Alertmanager,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A dispatcher stopped mid-incident and recreated on the same SQLite file sends no second
    page (Alertmanager's and the webhook's counts stay 1) and still delivers the resolve."""
    path = tmp_path / "outbox.sqlite"
    alert = make_alert()

    def sinks() -> list[Sink]:
        hook = WebhookSink(
            f"{receiver.url}/direct", name="webhook:direct", vigie_instance="vigie-test"
        )
        return [*am_sinks(alertmanager), hook]

    async with running(path, sinks(), session) as first:
        first.d.fire(alert)
        await wait_for(
            lambda: receiver.notified("/am/am", "VigieIncident", "firing") == 1,
            "the page through Alertmanager",
        )
        await wait_for(
            lambda: receiver.notified("/direct", "VigieIncident", "firing") == 1,
            "the page through the webhook",
        )

    async with running(path, sinks(), session) as second:
        assert set(second.d.active()) == {alert.key}
        second.d.fire(alert)  # the health model, restarted too, fires the same incident
        am_name = sinks()[0].name
        await wait_for(
            lambda: metric(second.registry, "vigie_alerts_sent_total", sink=am_name) >= 1,
            "the re-send after the restart",
        )
        second.d.resolve(alert.key)
        await wait_for(
            lambda: receiver.notified("/am/am", "VigieIncident", "resolved") == 1,
            "the resolve through Alertmanager",
        )
        await wait_for(
            lambda: receiver.notified("/direct", "VigieIncident", "resolved") == 1,
            "the resolve through the webhook",
        )
    assert receiver.notified("/am/am", "VigieIncident", "firing") == 1
    assert receiver.notified("/direct", "VigieIncident", "firing") == 1


async def test_ha_cluster_each_member_gets_every_alert(
    alertmanagers: AlertmanagerFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """With a 2-node Alertmanager cluster both members hold the alert, since Vigie sends to
    each; with one member down the other still gets new alerts."""
    am1, am2 = alertmanagers("am1"), alertmanagers("am2")
    am1.cluster_port, am2.cluster_port = free_port(), free_port()
    am1.peers, am2.peers = [am2.cluster_port], [am1.cluster_port]
    await asyncio.gather(am1.start(session), am2.start(session))

    async def clustered() -> bool:
        async with session.get(f"{am1.url}/api/v2/status") as response:
            status = await response.json()
        return len(status["cluster"].get("peers") or []) == 2

    await wait_for(clustered, "the two members to form a cluster")
    sinks = am_sinks(am1, am2)
    async with running(tmp_path / "o.sqlite", sinks, session, watchdog=False) as d:
        d.d.fire(make_alert())
        for am in (am1, am2):
            await wait_for(partial(am.alert, session, "VigieIncident"), f"{am.url} to hold it")
        await wait_for(
            lambda: (
                receiver.notified("/am/am1", "VigieIncident", "firing")
                + receiver.notified("/am/am2", "VigieIncident", "firing")
                >= 1
            ),
            "a notification from the cluster",
        )

        await am1.stop()
        d.d.fire(make_alert(key="other", alertname="Other"))
        await wait_for(lambda: am2.alert(session, "Other"), "the surviving member to hold it")
        assert d.depth(sinks[0].name) == 1  # queued for am1 until it is back
        assert d.depth(sinks[1].name) == 0


# --- the dispatcher's own rules (a recording sink) -----------------------------------------


FIRE_THEN_DIE = """
import asyncio, os, signal, sys
from pathlib import Path
import aiohttp
from prometheus_client import CollectorRegistry
from vigie.monitor.alerting import AlertDispatcher, AlertingSettings, Outbox, build_sinks
from tests.alerting.conftest import make_alert

async def main() -> None:
    settings = AlertingSettings(alertmanagers=[sys.argv[2]], webhooks=[{"url": sys.argv[2]}])
    async with aiohttp.ClientSession() as session:
        dispatcher = AlertDispatcher(settings, Outbox(Path(sys.argv[1])),
                                     build_sinks(settings), session, CollectorRegistry())
        dispatcher.fire(make_alert())
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_fire_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    """A process SIGKILLed right after fire() returns leaves the notification in the outbox."""
    path = tmp_path / "outbox.sqlite"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-c", FIRE_THEN_DIE, str(path), url],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    outbox = Outbox(path)
    try:
        assert outbox.depth() == {f"alertmanager:{url}": 1, f"webhook:127.0.0.1:{port}": 1}
        assert set(outbox.active()) == {make_alert().key}
    finally:
        outbox.close()


async def test_changes_updates_and_relabels(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """An unchanged fire is a no-op; an update reaches only re-sent sinks (Alertmanager); a
    label change resolves the old label set and fires the new one everywhere."""
    am, hook = RecordingSink("am", refresh=True), RecordingSink("hook")
    async with running(tmp_path / "o.sqlite", [am, hook], session, watchdog=False) as d:
        alert = make_alert()
        d.d.fire(alert)
        d.d.fire(alert)
        await wait_for(lambda: hook.sent() and am.sent(), "the first delivery")
        d.d.fire(Alert(alert.key, alert.labels, {"summary": "worse"}, T0))
        await wait_for(
            lambda: any(b[0].annotations.get("summary") == "worse" for b in am.batches),
            "the update at Alertmanager",
        )
        assert hook.sent() == [(alert.key, "firing")]
        escalated = make_alert(severity="warning")
        d.d.fire(escalated)
        await wait_for(lambda: len(hook.sent()) == 3, "the relabel at the webhook")
        await wait_for(
            lambda: am.batches[-1][0].labels["severity"] == "warning", "the relabel at Alertmanager"
        )
    assert hook.sent() == [(alert.key, "firing"), (alert.key, "resolved"), (alert.key, "firing")]
    assert [b[0].labels["severity"] for b in hook.batches] == ["critical", "critical", "warning"]
    resolved = [b[0] for b in am.batches if b[0].state == "resolved"]
    assert [a.labels["severity"] for a in resolved] == ["critical"]


async def test_sync_resolves_what_is_no_longer_given(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """sync() fires what it is given and resolves the other active alerts, not the watchdog."""
    sink = RecordingSink("am", refresh=True)
    async with running(tmp_path / "o.sqlite", [sink], session) as d:
        await wait_for(lambda: WATCHDOG_KEY in d.outbox.active(), "the watchdog")
        a, b = make_alert(key="a"), make_alert(key="b")
        d.d.sync([a, b])
        d.d.sync([b])
        assert set(d.d.active()) == {"b"}
        assert WATCHDOG_KEY in d.outbox.active()
        assert metric(d.registry, "vigie_alerts_active") == 1
        await wait_for(lambda: ("a", "resolved") in sink.sent(), "a's resolve")
        assert (WATCHDOG_KEY, "resolved") not in sink.sent()


async def test_failing_sink_backs_off_and_does_not_hold_back_others(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A failing sink is retried with exponential backoff (delays bounded by initial x 2^n up to
    max), its failures counted; the other sinks deliver meanwhile; it recovers."""

    class UpperBound(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b  # the largest delay full jitter can draw

    bad, good = RecordingSink("bad"), RecordingSink("good")
    bad.failing = True
    with capture_logs() as logs:
        async with running(
            tmp_path / "o.sqlite",
            [bad, good],
            session,
            rng=UpperBound(),
            watchdog=False,
            backoff_initial=0.05,
            backoff_max=0.2,
        ) as d:
            d.d.fire(make_alert())
            await wait_for(good.sent, "the good sink")
            await wait_for(lambda: len(bad.attempts) >= 5, "five attempts")
            gaps = [b - a for a, b in zip(bad.attempts, bad.attempts[1:], strict=False)]
            for gap, cap in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=False):
                assert cap - 0.01 <= gap < cap + 0.15, (gaps, cap)
            assert metric(d.registry, "vigie_alert_delivery_failures_total", sink="bad") >= 4
            assert d.depth("bad") == 1 and d.depth("good") == 0
            bad.failing = False
            await wait_for(bad.sent, "the recovery")
            assert d.depth("bad") == 0
    failed = [e for e in logs if e["event"] == "alert_delivery_failed"]
    assert failed[0]["reason"] == "bad: HTTP 503" and failed[0]["sink"] == "bad"
    assert any(e["event"] == "alert_sink_recovered" for e in logs)


async def test_full_jitter_draws_below_the_cap(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Retry delays are drawn in [0, cap]: with a draw of 0 the retries come at once."""

    class LowerBound(random.Random):
        def uniform(self, a: float, b: float) -> float:
            assert a == 0.0 and b > 0
            return a

    bad = RecordingSink("bad")
    bad.failing = True
    async with running(
        tmp_path / "o.sqlite",
        [bad],
        session,
        rng=LowerBound(),
        watchdog=False,
        backoff_initial=5,
        backoff_max=60,
    ) as d:
        d.d.fire(make_alert())
        await wait_for(lambda: len(bad.attempts) >= 3, "three quick attempts", within=2)


async def test_stop_flushes_within_its_bound(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """stop() delivers what it can and gives up on a hanging sink after flush_timeout,
    leaving its rows queued."""
    path = tmp_path / "o.sqlite"
    hanging, ok = RecordingSink("hanging"), RecordingSink("ok")
    outbox = Outbox(path)
    dispatcher = AlertDispatcher(
        AlertingSettings(**FAST, watchdog=False, flush_timeout=0.3),
        outbox,
        [hanging, ok],
        session,
        CollectorRegistry(),
    )
    hanging.hang = True
    dispatcher.fire(make_alert())  # not running: only stop()'s flush can deliver it
    started = time.monotonic()
    await dispatcher.stop()
    assert time.monotonic() - started < 1.0
    assert ok.sent() == [(make_alert().key, "firing")]
    assert outbox.depth() == {"hanging": 1}
    outbox.close()


async def test_rows_of_removed_sinks_are_dropped(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Rows queued for a sink no longer configured are dropped at start, with a warning."""
    path = tmp_path / "o.sqlite"
    old = RecordingSink("old")
    old.failing = True
    async with running(path, [old], session, watchdog=False) as d:
        d.d.fire(make_alert())
    with capture_logs() as logs:
        async with running(path, [RecordingSink("new")], session, watchdog=False) as d:
            assert d.outbox.depth() == {}
    assert {
        "event": "alert_sink_removed",
        "sink": "old",
        "dropped": 1,
        "log_level": "warning",
    } in logs


async def test_watchdog_turned_off_is_resolved(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The watchdog goes only to re-sent sinks, keeps its start across restarts, and is
    resolved when turned off in the config."""
    path = tmp_path / "o.sqlite"
    am, hook = RecordingSink("am", refresh=True), RecordingSink("hook")
    async with running(path, [am, hook], session) as d:
        await wait_for(am.sent, "the watchdog")
        start = d.outbox.active()[WATCHDOG_KEY].starts_at
    async with running(path, [am, hook], session) as d:
        assert d.outbox.active()[WATCHDOG_KEY].starts_at == start
    async with running(path, [am, hook], session, watchdog=False):
        await wait_for(lambda: (WATCHDOG_KEY, "resolved") in am.sent(), "its resolve")
    assert hook.sent() == []


async def test_misuse_is_refused(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """The watchdog key is reserved; fire() takes firing alerts only; sink names are unique."""
    outbox = Outbox(tmp_path / "o.sqlite")
    d = AlertDispatcher(AlertingSettings(), outbox, [], session, CollectorRegistry())
    with pytest.raises(ValueError, match="reserved"):
        d.fire(make_alert(key=WATCHDOG_KEY))
    with pytest.raises(ValueError, match="use resolve"):
        d.fire(make_alert().resolved(T0 + timedelta(1)))
    with pytest.raises(ValueError, match="watchdog"):
        d.resolve(WATCHDOG_KEY)
    with pytest.raises(ValueError, match="unique"):
        AlertDispatcher(
            AlertingSettings(),
            outbox,
            [RecordingSink("x"), RecordingSink("x")],
            session,
            CollectorRegistry(),
        )
    outbox.close()


async def test_failed_write_changes_nothing(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """If the outbox cannot be written, fire() raises and the alert is not taken as active,
    so calling again retries."""
    outbox = Outbox(tmp_path / "o.sqlite")
    d = AlertDispatcher(
        AlertingSettings(**FAST), outbox, [RecordingSink()], session, CollectorRegistry()
    )
    outbox.close()
    with pytest.raises(Exception, match="closed"):
        d.fire(make_alert())
    assert d.active() == {}


def test_build_sinks_order_and_names() -> None:
    """build_sinks gives one sink per Alertmanager, per webhook, then the mail relay."""
    settings = AlertingSettings(
        alertmanagers=["http://a:9093", "http://b:9093/"],
        webhooks=[{"url": "https://hooks.example.org/x/tok"}],
    )
    sinks = build_sinks(settings)
    assert [s.name for s in sinks] == [
        "alertmanager:http://a:9093",
        "alertmanager:http://b:9093",
        "webhook:hooks.example.org:443",
    ]
    assert [s.refresh for s in sinks] == [True, True, False]
