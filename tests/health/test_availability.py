"""Availability from a scripted day (a clock we control: each snapshot's time): a server stops at
01:30, an hour of maintenance at noon, back at 22:00. The figures, the tier sums, the counter
vigie_component_down_seconds_total, the archive's copy after a restart, the page and the API."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.web.test_readmodel import Hospital
from vigie.monitor.health.archive import IncidentArchive
from vigie.monitor.health.availability import DownTime, Figures, figures, tiers
from vigie.monitor.health.snapshot import ComponentStatus, Snapshot
from vigie.monitor.health.states import State
from vigie.monitor.web import build_app

HOUR = 3600.0
DAY = 24 * HOUR
# Two days ago, 00:00 UTC: a whole past day (the page's ranges end now).
D = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
T0 = D.timestamp()

# (hour, server's state, app's state, app in maintenance)
SCRIPT = [
    (0.0, State.OK, State.OK, False),
    (1.5, State.DOWN, State.IMPACTED, False),  # the server stops
    (7.0, State.DOWN, State.IMPACTED, False),  # noticed: nothing changes for Vigie
    (12.0, State.DOWN, State.IMPACTED, True),  # a window opens on the application
    (13.0, State.DOWN, State.IMPACTED, False),
    (22.0, State.OK, State.OK, False),  # restored
    (24.0, State.OK, State.OK, False),
]
APP_DOWN = (22.0 - 1.5 - 1.0) * HOUR  # the maintenance hour left out
SRV_DOWN = (22.0 - 1.5) * HOUR


def _status(cid: str, kind: str, state: State, since: float, maint: bool) -> ComponentStatus:
    return ComponentStatus(cid, kind, "nord", state, state, since, (), (), maint)


def play(archive: IncidentArchive, downtime: DownTime) -> None:
    """Feed the script's snapshots (the engine's `since`: when the state began)."""
    since = {"srv-1": T0, "app-dpi": T0}
    last: dict[str, State] = {}
    for hour, srv, app, maint in SCRIPT:
        at = T0 + hour * HOUR
        for cid, state in (("srv-1", srv), ("app-dpi", app)):
            if last.get(cid) is not state:
                since[cid], last[cid] = at, state
        comps = {
            "srv-1": _status("srv-1", "server", srv, since["srv-1"], False),
            "app-dpi": _status("app-dpi", "application", app, since["app-dpi"], maint),
            "app-mail": _status("app-mail", "application", State.OK, T0, False),
        }
        archive.record_changes(downtime.observe(Snapshot(at, comps, {}, {})))


def test_a_scripted_day_gives_the_figures_the_counter_and_the_tiers(tmp_path: Path) -> None:
    """Availability = 1 - down / (observed outside maintenance), the same after a restart."""
    archive = IncidentArchive(tmp_path / "archive.sqlite", clock=lambda: T0 + DAY)
    downtime = DownTime()
    registry = CollectorRegistry()
    registry.register(downtime)
    play(archive, downtime)
    app = figures(archive.changes("app-dpi", T0, T0 + DAY), T0, T0 + DAY)
    assert app == Figures(observed=DAY - HOUR, down=APP_DOWN, maintenance=HOUR)
    assert app.availability == pytest.approx(1 - APP_DOWN / (DAY - HOUR))
    srv = figures(archive.changes("srv-1", T0, T0 + DAY), T0, T0 + DAY)
    assert srv.down == SRV_DOWN and srv.observed == DAY
    # before the first record Vigie knew nothing: a week counts only the day it saw
    week = figures(archive.changes("app-dpi", T0 - 6 * DAY, T0 + DAY), T0 - 6 * DAY, T0 + DAY)
    assert week == app
    # a range inside the outage: all down
    inside = figures(
        archive.changes("app-dpi", T0 + 2 * HOUR, T0 + 3 * HOUR), T0 + 2 * HOUR, T0 + 3 * HOUR
    )
    assert inside == Figures(observed=HOUR, down=HOUR)
    mail = figures(archive.changes("app-mail", T0, T0 + DAY), T0, T0 + DAY)
    assert tiers([(1, app), (1, mail)]) == {1: Figures(2 * DAY - HOUR, APP_DOWN, HOUR)}
    labels = {"component": "app-dpi", "site": "nord", "kind": "application"}
    assert registry.get_sample_value("vigie_component_down_seconds_total", labels) == APP_DOWN
    srv_labels = {**labels, "component": "srv-1", "kind": "server"}
    assert registry.get_sample_value("vigie_component_down_seconds_total", srv_labels) == SRV_DOWN
    archive.close()
    again = IncidentArchive(tmp_path / "archive.sqlite", clock=lambda: T0 + DAY)
    assert figures(again.changes("app-dpi", T0, T0 + DAY), T0, T0 + DAY) == app
    again.close()


class Kept(Hospital):
    """The hand-made read model with a real archive holding the scripted day."""

    def __init__(self, archive: IncidentArchive) -> None:
        super().__init__()
        self._archive = archive

    def archive(self) -> IncidentArchive:  # type: ignore[override]
        """The scripted day's archive."""
        return self._archive


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[str]:
    """The web application over the scripted day, on a free loopback port."""
    archive = IncidentArchive(tmp_path / "archive.sqlite", clock=lambda: T0 + DAY)
    play(archive, DownTime())
    runner = web.AppRunner(build_app(Kept(archive)), access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()
        archive.close()


async def _get(url: str, **kwargs: object) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text()


async def test_the_api_and_the_page_show_the_scripted_day(served: str) -> None:
    """/api/v1/availability over that day; the page in French with the same figure."""
    day = D.date().isoformat()
    status, body = await _get(f"{served}/api/v1/availability?from={day}&to={day}")
    assert status == 200, body
    data = json.loads(body)
    apps = {a["id"]: a for a in data["applications"]}
    assert apps["app-dpi"]["down_seconds"] == APP_DOWN
    assert apps["app-dpi"]["maintenance_seconds"] == HOUR
    assert apps["app-dpi"]["availability"] == round(1 - APP_DOWN / (DAY - HOUR), 6)
    assert apps["app-mail"]["availability"] == 1.0  # OK all day, watched from 00:00
    assert [t["tier"] for t in data["tiers"]] == [1, 3]
    status, body = await _get(f"{served}/api/v1/availability?from=someday")
    assert status == 400
    status, page = await _get(
        f"{served}/availability?from={day}&to={day}", headers={"Accept-Language": "fr"}
    )
    share = f"{(1 - APP_DOWN / (DAY - HOUR)) * 100:.3f} %".replace(".", ",")
    assert status == 200 and share in page and "Disponibilité" in page
    status, page = await _get(f"{served}/availability")
    assert status == 200 and "Last 30 days" in page and "Dossier patient" in page


def test_the_engine_s_same_statuses_count_time_and_change_nothing() -> None:
    """A snapshot re-dated with the same statuses (most ticks) adds down time, no change."""
    downtime = DownTime()
    comps = {
        "srv-1": _status("srv-1", "server", State.DOWN, T0, False),
        "app-dpi": _status("app-dpi", "application", State.IMPACTED, T0, True),
        "app-mail": _status("app-mail", "application", State.OK, T0, False),
    }
    assert len(downtime.observe(Snapshot(T0, comps, {}, {}))) == 3
    for hour in (1.0, 2.0, 3.0):
        assert downtime.observe(Snapshot(T0 + hour * HOUR, comps, {}, {})) == []
    assert downtime.down_seconds() == {"srv-1": 3 * HOUR, "app-dpi": 0.0, "app-mail": 0.0}
    back = {**comps, "srv-1": _status("srv-1", "server", State.OK, T0 + 4 * HOUR, False)}
    changes = downtime.observe(Snapshot(T0 + 4 * HOUR, back, {}, {}))
    assert [c[0] for c in changes] == ["srv-1"]
    downtime.observe(Snapshot(T0 + 5 * HOUR, back, {}, {}))
    assert downtime.down_seconds()["srv-1"] == 4 * HOUR
