"""A few property-test seeds end to end: what the engine decided, through the real dispatcher
and its outbox, to Debian's prometheus-alertmanager notifying a webhook receiver.

The replay runs on a fake clock (minutes of outage in seconds); each change of the firing set
is then handed to the dispatcher in order, and the next one only once Vigie delivered it and
Alertmanager acted on it, so Alertmanager sees the same sequence at a pace it can notify.
A page is a distinct alert (fingerprint) Alertmanager notified firing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from tests.alerting.conftest import Alertmanager, Receiver
from tests.health.conftest import pages
from tests.health.sim import replay
from tests.waiting import wait_for
from vigie.monitor.alerting import AlertDispatcher, AlertingSettings, Outbox, build_sinks


@pytest.mark.parametrize("case", [(0, "power"), (1, "san"), (3, "crash")], ids=str)
async def test_seed_pages_once_per_root_at_alertmanager(
    tmp_path: Path,
    am: Alertmanager,
    session: aiohttp.ClientSession,
    receiver: Receiver,
    case: tuple[int, str],
) -> None:
    """Alertmanager notifies one page per root cause of the replayed fault and its resolve."""
    seed, kind = case
    outcome = replay(seed, [kind], first_only=True)
    assert not outcome.problems, f"seed {seed}: " + "\n".join(outcome.problems)
    expected = {root for fault in outcome.faults for root in fault.expect}
    settings = AlertingSettings(
        alertmanagers=[am.url],
        resend_interval=60.0,
        backoff_initial=0.05,
        backoff_max=0.3,
        watchdog=False,
        vigie_instance="vigie-test",
        flush_timeout=2.0,
    )
    dispatcher = AlertDispatcher(
        settings,
        Outbox(tmp_path / "outbox.sqlite"),
        build_sinks(settings),
        session,
        CollectorRegistry(),
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        for firing in outcome.changes:
            dispatcher.sync(firing)
            await wait_for(lambda: sum(dispatcher.queued().values()) == 0, "the outbox drained")
            await wait_for(lambda: am.settled(session), "Alertmanager to act on its alerts")
        fired = pages(receiver, "firing")
        keys = sorted(
            f"site:{a['labels']['site']}"
            if a["labels"]["alertname"] == "VigieSiteIncident"
            else f"component:{a['labels']['component']}"
            for a in fired.values()
        )
        assert keys == sorted(expected), f"seed {seed}: pages at Alertmanager {keys}"
        await wait_for(
            lambda: pages(receiver, "resolved").keys() == fired.keys(), "every page resolved"
        )
        assert pages(receiver, "firing").keys() == fired.keys(), "no page after the resolves"
    finally:
        await dispatcher.stop()
        await task
