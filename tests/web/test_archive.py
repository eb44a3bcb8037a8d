"""The archive on a live daemon: a server fails and comes back; its closed incident answers with
its archived record (no 404), is listed by date and application, in the API, in French, and is
still there after the daemon restarts on the same state_dir."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp

from tests.waiting import wait_for
from tests.web.outage import all_ok, fetch, running_hospital
from vigie.monitor.app import Daemon


async def _archived_ids(daemon: Daemon) -> list[str]:
    status, body = await fetch(daemon, "/api/v1/archive")
    assert status == 200, body
    return [r["id"] for r in json.loads(body)["incidents"]]


async def test_a_closed_incident_is_archived_and_survives_a_restart(tmp_path: Path) -> None:
    """srv-12 down then back: the incident's page, the archive's list, its API, after restart."""
    extra = {"state_dir": str(tmp_path / "state"), "timezone": "Europe/Paris"}
    async with running_hospital(tmp_path, extra=extra) as (daemon, targets):
        await wait_for(lambda: all_ok(daemon), "every component OK")
        targets.down = {"srv-12", "app-dpi-12"}
        await wait_for(
            lambda: any(
                a.id == "app-dpi-12"
                for i in daemon.health.engine.snapshot.incidents.values()
                for a in i.applications
            ),
            "the srv-12 incident impacting app-dpi-12",
        )
        incident = daemon.health.engine.snapshot.incidents["component:srv-12"]
        status, _ = await fetch(daemon, f"/incident/{quote(incident.id)}")
        assert status == 200
        url = f"http://127.0.0.1:{daemon.listen_port}/api/v1/incidents/{quote(incident.id)}/updates"
        async with aiohttp.ClientSession() as s, s.post(url, json={"text": "IT restarts it"}) as r:
            assert r.status == 201  # no roles configured: anyone may post
        targets.down = set()
        ids: list[str] = []

        async def archived() -> bool:
            ids[:] = await _archived_ids(daemon)
            return incident.id in ids

        await wait_for(archived, "the srv-12 incident archived")
        # the closed incident answers with its record, not 404
        status, page = await fetch(daemon, f"/incident/{quote(incident.id)}")
        assert status == 200, page
        assert "Closed incident" in page and "srv-12" in page and "app-dpi-12" in page
        status, api = await fetch(daemon, f"/api/v1/archive?id={quote(incident.id)}")
        (record,) = json.loads(api)["incidents"]
        assert record["root_cause"] == "srv-12"
        assert [a["id"] for a in record["applications"]] == ["app-dpi-12"]
        states = [(e["component"], e["state"]) for e in record["timeline"]]
        assert ("srv-12", "DOWN") in states and ("srv-12", "OK") in states
        assert record["duration_seconds"] > 0
        assert [u["text"] for u in record["updates"]] == ["IT restarts it"]

    async with running_hospital(tmp_path, extra=extra) as (daemon, _):
        assert await _archived_ids(daemon) == ids  # kept across the restart
        status, page = await fetch(daemon, f"/incident/{quote(incident.id)}")
        assert status == 200 and "Closed incident" in page
        day = datetime.fromtimestamp(incident.started_at, ZoneInfo("Europe/Paris")).date()
        # by application: the dpi app of srv-12 finds it, another application does not
        status, page = await fetch(daemon, f"/archive?from={day}&to={day}&application=app-dpi-12")
        assert status == 200 and quote(incident.id) in page
        status, page = await fetch(daemon, "/archive?application=app-labo-13")
        assert quote(incident.id) not in page and "No closed incident" in page
        # the archive's size on disk and retention show; French when the browser asks
        status, page = await fetch(daemon, "/archive", headers={"Accept-Language": "fr"})
        assert "Incidents clos (1)" in page and "conservés 400 jours" in page
        status, body = await fetch(daemon, "/api/v1/archive?from=2020-01-01&to=2020-01-02")
        assert json.loads(body)["incidents"] == []
        status, body = await fetch(daemon, "/api/v1/archive?from=yesterday")
        assert status == 400
        status, _ = await fetch(daemon, "/archive/nothing@20200101T000000Z")
        assert status == 404
