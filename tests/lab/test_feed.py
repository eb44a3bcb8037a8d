"""The lab-results HL7 feed: the engine's counter and MLLP port in the lab, and the
`lab-feed-silent` scenario end to end (every port up, one page naming the paper procedure).

The end-to-end test runs like tests/lab/test_e2e.py: the lab, the daemon on config/demo.yaml
with 1 s checks, a real Alertmanager; the rule's 30-minute window is compressed the way the
demo's --speed compresses it, through VIGIE_LAB_FEED_WINDOW (here 4 s).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from tests.lab.test_e2e import INTERVAL, SLACK, Hospital, _rows, _settle, fast_config
from tests.probes.conftest import make_check
from tests.waiting import wait_for
from vigie.lab.feed import CHANNEL_ID, Feed, ack
from vigie.lab.hospital import Lab
from vigie.lab.scenarios import ScenarioController
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.monitor.demo import demo_env
from vigie.probes import default_registry
from vigie.probes.base import ProbeContext, ProbeLog
from vigie.probes.hl7 import Hl7Probe

WINDOW = 4.0
SILENT_TEXT = ("no result message from the lab in 30 minutes", "aucun message de résultat")


def test_the_counter_grows_while_the_lab_sends_and_freezes_when_it_stops() -> None:
    """received() counts messages at the rate; stopping keeps the count; starting resumes it."""
    feed = Feed(rate=2.0)
    feed.set_sending(True, 100.0)
    assert feed.received(103.0) == 6
    feed.set_sending(False, 103.0)
    assert feed.received(500.0) == 6
    feed.set_sending(True, 500.0)
    assert feed.received(501.0) == 8
    assert feed.statistics(501.0)["received"] == 8


def test_the_engine_acks_with_the_control_id() -> None:
    """MSH swapped back, MSA|AA| and the message's control id; no MSH is an AR."""
    msg = b"MSH|^~\\&|LIS|LABO|MIRTH|CHU|20260101||ORU^R01|CTRL42|P|2.5\rPID|1"
    assert ack(msg) == b"MSH|^~\\&|MIRTH|CHU|LIS|LABO|||ACK|CTRL42|P|2.5\rMSA|AA|CTRL42"
    assert b"MSA|AR|" in ack(b"garbage")


async def test_the_lab_serves_the_counter_and_its_mllp_port_answers(lab: Lab) -> None:
    """The statistics grow; the hl7 probe gets AA from the engine's port, sending or not."""
    url = f"{lab.url}/mirth/api/channels/{CHANNEL_ID}/statistics"
    async with aiohttp.ClientSession() as session:

        async def received() -> int:
            async with session.get(url) as response:
                count: int = (await response.json())["channelStatistics"]["received"]
                return count

        first = await received()
        await wait_for(lambda: _grew(received, first), "the counter to grow", within=5)
        lab.set_feed(False)
        frozen = await received()
        probe = Hl7Probe()
        ctx = ProbeContext(session=session, log=ProbeLog(structlog.get_logger()))
        result = await probe(make_check(probe, f"127.0.0.1:{lab.hl7_port}"), ctx)
        assert result.success, result.error
        assert await received() == frozen
        assert lab.state()["feed"]["sending"] is False


async def _grew(read: object, than: int) -> bool:
    """True when the counter is above `than`."""
    assert callable(read)
    return bool(await read() > than)


@pytest.fixture
async def hospital(
    tmp_path: Path, lab: Lab, alertmanagers: object, session: aiohttp.ClientSession
) -> AsyncIterator[Hospital]:
    """The e2e hospital (tests/lab/test_e2e.py) with the feed's window at WINDOW seconds."""
    assert callable(alertmanagers)
    am = alertmanagers("am", group_by=("...",))
    await am.start(session)
    env = {
        **demo_env(lab, tmp_path / "state", "127.0.0.1:0"),
        "VIGIE_LAB_FEED_WINDOW": f"{WINDOW:g}s",
    }
    registry = default_registry()
    loaded = load_config(fast_config(tmp_path, am.url), registry, env=env)
    daemon = Daemon(loaded, registry, session, env=env, logger=structlog.get_logger("e2e"))
    await daemon.start()
    controller = ScenarioController(lab)
    h = Hospital(lab, controller, daemon, am, session, f"http://127.0.0.1:{daemon.listen_port}")

    async def all_ok() -> bool:
        comps = await h.api("components")
        return all(c["state"] == "OK" for c in _rows(comps, "components"))

    await wait_for(all_ok, "every component OK before the silence", within=30)
    # A whole window of a flowing feed seen: the rule has judged it and found it flowing.
    since = time.time()

    def judged() -> bool:
        latest = daemon.store.latest("labo-feed")
        return latest is not None and latest.timestamp > since + WINDOW + INTERVAL

    await wait_for(judged, "the feed judged over a whole window", within=30)
    assert await all_ok() and await h.pages() == []
    yield h
    await controller.stop()
    await daemon.stop()


async def test_lab_feed_silent_pages_once_naming_the_degraded_mode(hospital: Hospital) -> None:
    """The feed stops, every port up: one page, for labo, in its words, with procedure LB-04."""
    started = time.time()
    run, latency = await hospital.play("lab-feed-silent", speed=100)
    # the window must pass with no message, then a poll, the evaluation and delivery
    assert WINDOW <= latency <= WINDOW + 2 * INTERVAL + SLACK, latency
    await _settle(hospital, run, extra=2 * INTERVAL + 1)
    pages = await hospital.pages()
    assert [p["labels"]["root_cause"] for p in pages] == ["labo"], pages
    annotations = pages[0]["annotations"]
    said = " ".join(annotations.values())
    assert any(text in said for text in SILENT_TEXT), annotations
    assert "Procédure LB-04" in annotations["degraded_mode"], annotations
    # every port stayed up: the health page, the MLLP port, the engine's API
    for check in ("labo-api", "labo-hl7", "labo-feed", "srv-labo-health"):
        result = hospital.daemon.store.latest(check)
        assert result is not None and result.success, (check, result)
    assert time.time() - started < 60
