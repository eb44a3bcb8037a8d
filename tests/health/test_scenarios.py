"""Outage scenarios on the test hospital, from check results to a real Alertmanager's pages.

Check results are fed to the health engine directly (the probes have their own tests against
real peers); everything after that is the daemon's real path: engine, incident notifier, alert
dispatcher with its SQLite outbox, and Debian's prometheus-alertmanager notifying a webhook
receiver. A page is a distinct alert (fingerprint) notified firing by Alertmanager.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.alerting.conftest import Alertmanager, Receiver
from tests.health.conftest import pages
from tests.health.hospital import hospital
from tests.waiting import wait_for
from vigie.core.results import ProbeResult, Sample
from vigie.monitor.alerting import AlertDispatcher, AlertingSettings, Outbox, build_sinks
from vigie.monitor.config import load_config
from vigie.monitor.health.alerts import IncidentNotifier
from vigie.monitor.health.engine import HealthEngine, build_engine
from vigie.monitor.health.persist import HealthStateStore
from vigie.probes import default_registry

UP = ProbeResult(True, 0.01)
DOWN = ProbeResult(False, 0.5, error="timeout after 0.5s")
NORD_UPS = ("ups-nord-1", "ups-nord-2")


def ups(on_battery: bool, runtime: float) -> ProbeResult:
    """A UPS poll result."""
    return ProbeResult(
        True,
        0.01,
        (
            Sample("ups_on_battery", float(on_battery)),
            Sample("ups_battery_runtime_seconds", runtime),
        ),
    )


class FeedClock:
    """Wall time, frozen during one feed: a feed is one instant, as one evaluation batch is.

    `ahead` moves it forward by hand, so a scenario can take 5 s without sleeping them.
    """

    def __init__(self) -> None:
        self.ahead = 0.0
        self.now = time.time()

    def freeze(self) -> None:
        """Take the wall time (plus what the test moved) as the instant of the next feed."""
        self.now = time.time() + self.ahead

    def __call__(self) -> float:
        return self.now


class Vigie:
    """The health and alerting half of the daemon, on a state directory that outlives it."""

    def __init__(
        self,
        state_dir: Path,
        am: Alertmanager,
        session: aiohttp.ClientSession,
        hold: float = 0.0,
        *,
        clock: FeedClock | None = None,
        prime: bool = True,
    ) -> None:
        config = hospital()
        config["health"] = {"resolve_hold": hold or 0, "flapping": {"changes": 4, "window": "1m"}}
        path = state_dir / "vigie.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
        loaded = load_config(path, default_registry(), env={})
        self.clock = clock or FeedClock()
        self.clock.freeze()
        self.engine: HealthEngine = build_engine(loaded.config, loaded.plan, clock=self.clock)
        self.persist = HealthStateStore(state_dir / "health.sqlite")
        self.engine.restore(*self.persist.load())
        settings = AlertingSettings(
            alertmanagers=[am.url],
            resend_interval=1.0,
            backoff_initial=0.05,
            backoff_max=0.3,
            watchdog=False,
            vigie_instance="vigie-test",
            flush_timeout=2.0,
        )
        self.dispatcher = AlertDispatcher(
            settings,
            Outbox(state_dir / "outbox.sqlite"),
            build_sinks(settings),
            session,
            CollectorRegistry(),
        )
        self.notifier = IncidentNotifier(self.dispatcher)
        self.task = asyncio.create_task(self.dispatcher.run())
        if prime:  # the first round of checks: everything fine
            for check_id in self.engine.checks:
                self.engine.observe(check_id, UP)

    def feed(self, failing: Iterable[str] = (), **special: ProbeResult) -> None:
        """Give every check a result (failing components fail), then evaluate and publish."""
        failing = set(failing)
        self.clock.freeze()
        for check_id in self.engine.checks:
            comp = check_id.removeprefix("chk-")
            result = special.get(comp.replace("-", "_"))
            self.engine.observe(check_id, result or (DOWN if comp in failing else UP))
        snapshot = self.engine.evaluate()
        self.persist.save(*self.engine.durable_state())
        self.notifier.update(snapshot)

    def arrive(self, **results: ProbeResult) -> None:
        """Only these components' checks report (spread over their interval), then evaluate."""
        self.clock.freeze()
        for comp, result in results.items():
            self.engine.observe(f"chk-{comp.replace('_', '-')}", result)
        self.notifier.update(self.engine.evaluate())
        self.persist.save(*self.engine.durable_state())

    async def stop(self) -> None:
        """Stop as the daemon does on SIGTERM."""
        await self.dispatcher.stop()
        await self.task
        self.persist.close()


async def decided(v: Vigie, am: Alertmanager, session: aiohttp.ClientSession) -> None:
    """Wait for the evidence that what was fed has been acted on all the way, so a test can
    assert that no (other) page came: Vigie delivered every notification it decided (its
    outbox is empty) and Alertmanager flushed every alert it holds since it last received one.
    """
    await wait_for(lambda: sum(v.dispatcher.queued().values()) == 0, "Vigie's outbox drained")
    await wait_for(lambda: am.settled(session), "Alertmanager to act on the alerts it holds")


@pytest.fixture
async def vigie(
    tmp_path: Path, am: Alertmanager, session: aiohttp.ClientSession
) -> AsyncIterator[Vigie]:
    """The health side of Vigie on the test hospital."""
    v = Vigie(tmp_path, am, session)
    yield v
    await v.stop()


def nord_failures() -> set[str]:
    """Everything in Nord that stops when its UPSes run dry (not the dual-site apps)."""
    from tests.health.hospital import APPS

    apps = {f"app-{APPS[i % len(APPS)][0]}-{i:02d}" for i in range(30) if i % 20 < 10}
    return {"ups-nord-1", "ups-nord-2", "san-nord", *(f"srv-{i:02d}" for i in range(10)), *apps}


async def test_a_site_power_cut_pages_once_and_resolves_once(
    vigie: Vigie, receiver: Receiver
) -> None:
    """Nord loses mains: one page naming the site and the impacted applications; the ordered
    recovery ends with exactly one resolve."""
    vigie.feed(ups_nord_1=ups(True, 660), ups_nord_2=ups(True, 700))
    await wait_for(lambda: len(pages(receiver)) == 1, "the site page")
    vigie.feed(nord_failures())
    vigie.feed(nord_failures() - {"ups-nord-1", "ups-nord-2"})  # power back, recovery starts
    still = {"san-nord", "srv-00", "srv-01"}
    apps = {a for a in nord_failures() if a.startswith("app-")}
    vigie.feed(still | apps)
    vigie.feed(apps)
    vigie.feed({a for a in apps if "dpi" in a})
    vigie.feed()
    await wait_for(lambda: len(pages(receiver, "resolved")) == 1, "the one resolve")
    fired = list(pages(receiver).values())
    assert len(fired) == 1, fired
    page = fired[0]
    assert page["labels"]["alertname"] == "VigieSiteIncident"
    assert page["labels"]["site"] == "nord" and page["labels"]["severity"] == "critical"
    assert page["annotations"]["vigie_instance"] == "vigie-test"  # replicas share labels
    assert page["annotations"]["summary"].startswith("Datacenter Nord: mains lost at ")
    assert "about 11 minutes of runtime left" in page["annotations"]["summary"]
    assert list(pages(receiver, "resolved")) == list(pages(receiver))


async def test_b_san_degraded_pages_its_applications_only(
    vigie: Vigie, receiver: Receiver, am: Alertmanager, session: aiohttp.ClientSession
) -> None:
    """SAN Nord fails: one page listing the applications on it; dual-site apps stay OK."""
    failing = {"san-nord", *(f"srv-{i:02d}" for i in range(10))}
    failing |= {a for a in nord_failures() if a.startswith("app-")}
    vigie.feed(failing)
    await wait_for(lambda: len(pages(receiver)) == 1, "the SAN page")
    page = next(iter(pages(receiver).values()))
    assert page["labels"]["root_cause"] == "san-nord"
    assert page["labels"]["component"] == "san-nord"
    degraded = page["annotations"]["degraded_mode"]
    assert degraded.startswith("[tier 1] Dossier patient 00: Procédure dégradée DP-12")
    assert "Dossier patient 30" not in page["annotations"]["description"]
    assert vigie.engine.snapshot.components["app-dpi-30"].state.name == "OK"
    held = await am.alerts(session)
    assert [a["labels"]["root_cause"] for a in held] == ["san-nord"]


async def test_c_server_crash_at_night_names_the_patient_record(
    vigie: Vigie, receiver: Receiver
) -> None:
    """The server behind the patient record crashes: one page naming the patient record."""
    vigie.feed({"srv-00", "app-dpi-00", "app-pacs-20"})
    await wait_for(lambda: len(pages(receiver)) == 1, "the server page")
    page = next(iter(pages(receiver).values()))
    assert page["labels"]["component"] == "srv-00"
    assert "Dossier patient 00" in page["annotations"]["summary"]
    assert page["annotations"]["runbook_url"] == "https://wiki.chu.local/runbooks/dpi"


async def test_d_flapping_link_no_page_storm(
    tmp_path: Path, am: Alertmanager, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """A server flapping every few seconds pages once, not once per flap."""
    clock = FeedClock()
    v = Vigie(tmp_path, am, session, hold=5.0, clock=clock)
    try:
        for i in range(10):
            v.feed({"srv-12"} if i % 2 == 0 else set())
            clock.ahead += 0.3  # the flapping itself: a change every 0.3 s of the engine's time
        await wait_for(lambda: len(pages(receiver)) >= 1, "the first page")
        await decided(v, am, session)
        assert len(pages(receiver)) == 1
        assert v.engine.snapshot.components["srv-12"].state.name == "FLAPPING"
    finally:
        await v.stop()


async def test_e_restart_mid_incident_no_duplicate_page_resolve_arrives(
    tmp_path: Path, am: Alertmanager, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Vigie restarted mid-incident: no second page for the same incident; the resolve arrives."""
    first = Vigie(tmp_path, am, session)
    first.feed({"srv-05", "app-intranet-05"})
    await wait_for(lambda: len(pages(receiver)) == 1, "the page")
    await first.stop()
    before = am.received()
    second = Vigie(tmp_path, am, session)
    try:
        second.feed({"srv-05", "app-intranet-05"})
        # The restarted Vigie re-sends the firing alert; Alertmanager must not notify it again.
        await wait_for(lambda: am.received() > before, "the alert re-sent after the restart")
        await decided(second, am, session)
        assert len(pages(receiver)) == 1
        notifications = [b for b in receiver.on("/am/am") if b["status"] == "firing"]
        assert len(notifications) == 1, "Alertmanager did not notify the same alert again"
        second.feed()
        await wait_for(lambda: len(pages(receiver, "resolved")) == 1, "the resolve")
    finally:
        await second.stop()


async def test_f_alertmanager_down_during_incident_nothing_lost(
    vigie: Vigie, am: Alertmanager, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Alertmanager down while an incident opens and another resolves: once it is back, every
    notification is delivered (the issue's 5 minutes compressed to seconds by the backoff)."""
    vigie.feed({"srv-07"})
    await wait_for(lambda: len(pages(receiver)) == 1, "first page")
    await am.stop()
    vigie.feed({"srv-17"})  # srv-07 back, srv-17 down, while Alertmanager is away
    await wait_for(lambda: sum(vigie.dispatcher.queued().values()) > 0, "queued notifications")
    await am.start(session)
    await wait_for(
        lambda: (
            {p["labels"]["component"] for p in pages(receiver).values()} == {"srv-07", "srv-17"}
        ),
        "the page sent while Alertmanager was down",
        20,
    )
    await wait_for(
        lambda: (
            {p["labels"]["component"] for p in pages(receiver, "resolved").values()} == {"srv-07"}
        ),
        "the resolve sent while Alertmanager was down",
        20,
    )
    assert sum(vigie.dispatcher.queued().values()) == 0


async def test_g_app_fails_first_server_5s_later_pages_the_server_once(
    tmp_path: Path, am: Alertmanager, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """The application's check fails 5 s before its server's: one page, the server's, naming
    the application as impacted; the application is never paged."""
    clock = FeedClock()
    v = Vigie(tmp_path, am, session, hold=30.0, clock=clock)
    try:
        v.arrive(app_dpi_00=DOWN)
        assert not v.engine.snapshot.incidents["component:app-dpi-00"].confirmed
        assert v.dispatcher.active() == {}
        clock.ahead += 5
        v.arrive(srv_00=DOWN)
        assert "component:app-dpi-00" not in v.engine.snapshot.incidents
        clock.ahead += 1  # the next round: the server's UPS and SAN are fine
        v.feed({"srv-00", "app-dpi-00"})
        await wait_for(lambda: len(pages(receiver)) == 1, "the server page")
        await decided(v, am, session)
        fired = list(pages(receiver).values())
        assert [p["labels"]["component"] for p in fired] == ["srv-00"]
        assert "Dossier patient 00" in fired[0]["annotations"]["summary"]
        assert not [b for b in receiver.on("/am/am") if b["status"] == "resolved"]
    finally:
        await v.stop()


async def test_h_app_fails_alone_paged_once_confirmed(
    tmp_path: Path, am: Alertmanager, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """An application failing alone is paged once its server's check reports OK after it."""
    clock = FeedClock()
    v = Vigie(tmp_path, am, session, clock=clock)
    try:
        v.arrive(app_labo_01=DOWN)
        assert v.dispatcher.active() == {}
        clock.ahead += 0.4
        v.arrive(srv_01=UP)
        await wait_for(lambda: len(pages(receiver)) == 1, "the application page")
        page = next(iter(pages(receiver).values()))
        assert page["labels"]["component"] == "app-labo-01"
        v.arrive(app_labo_01=DOWN)
        await decided(v, am, session)
        assert len(pages(receiver)) == 1
    finally:
        await v.stop()


async def test_i_app_fails_alone_paged_within_the_bound(
    tmp_path: Path, am: Alertmanager, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """With no news from its server, an application is paged once the bound (1 s + 0.5 s) ran."""
    clock = FeedClock()
    v = Vigie(tmp_path, am, session, clock=clock)
    try:
        v.arrive(app_labo_01=DOWN)
        clock.ahead += 1.4
        v.arrive()
        assert v.dispatcher.active() == {}
        clock.ahead += 0.1
        v.arrive()
        await wait_for(lambda: len(pages(receiver)) == 1, "the application page")
    finally:
        await v.stop()


async def test_j_ups_root_pages_once_its_site_power_is_known(
    vigie: Vigie, receiver: Receiver
) -> None:
    """A failing UPS is a sign of power loss: held until the other power devices of its site
    report (here on mains: no power cut), then paged as the root."""
    vigie.arrive(ups_bellevue_1=DOWN)
    assert not vigie.engine.snapshot.incidents["component:ups-bellevue-1"].confirmed
    assert vigie.dispatcher.active() == {}
    vigie.arrive(ups_bellevue_2=UP)
    assert vigie.engine.snapshot.incidents["component:ups-bellevue-1"].confirmed
    await wait_for(lambda: len(pages(receiver)) == 1, "the UPS page")
    page = next(iter(pages(receiver).values()))
    assert page["labels"]["component"] == "ups-bellevue-1"


async def test_k_restart_mid_hold_holds_again_then_one_page(
    tmp_path: Path, am: Alertmanager, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Vigie restarted while an incident is held: not paged as if restored; its server, seen
    failing after the restart, gets the one page."""
    clock = FeedClock()
    first = Vigie(tmp_path, am, session, clock=clock)
    first.arrive(app_dpi_00=DOWN)
    await first.stop()
    clock.ahead += 2
    second = Vigie(tmp_path, am, session, clock=clock, prime=False)
    try:
        second.arrive(app_dpi_00=DOWN)
        assert not second.engine.snapshot.incidents["component:app-dpi-00"].confirmed
        assert second.dispatcher.active() == {}
        clock.ahead += 3
        second.feed({"srv-00", "app-dpi-00"})
        await wait_for(lambda: len(pages(receiver)) == 1, "the server page")
        await decided(second, am, session)
        assert [p["labels"]["component"] for p in pages(receiver).values()] == ["srv-00"]
    finally:
        await second.stop()
