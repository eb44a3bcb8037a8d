"""The post-incident report: its figures from a scripted record (times to detect, page,
acknowledge, recover; each application's outage), its Markdown in French, and its forms (page
with its pictures, Markdown, PDF) served for an open and for an archived incident by a live
daemon."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import quote

import aiohttp

from tests.health.test_archive import T0, escalation, incident, topology
from tests.waiting import wait_for
from tests.web.outage import all_ok, fetch, running_hospital
from tests.web.test_french import SPEED
from vigie.monitor.audit import Action
from vigie.monitor.demo import running_demo
from vigie.monitor.health.archive import archived_incident
from vigie.monitor.health.history import Transition
from vigie.monitor.health.states import State
from vigie.monitor.i18n import Speech
from vigie.monitor.web.report import build, markdown

# srv-1 fails 40 s before the incident opens (its dependencies' checks held it), the app
# follows; the app is back at +50 min, the server at +58 min, the incident closes at +1 h.
HISTORY = {
    "srv-1": [
        Transition(T0 - 3600, State.OK),
        Transition(T0 - 40, State.DOWN),
        Transition(T0 + 3480, State.OK),
    ],
    "app-dpi": [
        Transition(T0 - 3600, State.OK),
        Transition(T0 - 20, State.IMPACTED),
        Transition(T0 + 3000, State.OK),
    ],
}


def test_the_figures_follow_the_script() -> None:
    """Detect 40 s, page 60 s, acknowledge 300 s, recover 1 h; the app down 50 min 20 s."""
    record = archived_incident(
        incident(T0),
        T0 + 3600,
        topology(),
        lambda c: HISTORY.get(c, []),
        escalations=[escalation()],
    )
    update = Action(T0 + 900, "cellule", "operator", "basic_auth", "", "update", record.id, "ok")
    before = Action(T0 - 7200, "x", "operator", "basic_auth", "", "reload", "config", "")
    report = build(record, True, [before, update], {"app-dpi": 0.99952})
    assert report.first_failure == T0 - 40
    assert (report.to_detect, report.to_page, report.to_acknowledge, report.to_recover) == (
        40,
        60,
        300,
        3600,
    )
    (app,) = report.apps
    assert (app.down_at, app.back_at, app.seconds) == (T0 - 20, T0 + 3000, 3020)
    assert app.degraded_mode == "Dossiers papier"
    assert report.actions == (update,)  # the reload two hours before is not the incident's
    text = markdown(report, Speech("fr"))
    assert "# Rapport post-incident : Serveur 1" in text
    assert "| 1 | Dossier patient |" in text
    assert "| 50 min 20 s | 99,952 % | Dossiers papier |" in text  # 30 days' availability
    assert "Délai de prise en compte: 5 min 00 s" in text
    assert "Pris en compte par Dr Martin" in text


async def test_reports_of_an_open_and_an_archived_incident_are_served(tmp_path: Path) -> None:
    """The open incident's report says still open; once closed, the archived one has its end."""
    extra = {"state_dir": str(tmp_path / "state")}
    async with running_hospital(tmp_path, extra=extra) as (daemon, targets):
        await wait_for(lambda: all_ok(daemon), "every component OK")
        targets.down = {"srv-12", "app-dpi-12"}
        await wait_for(
            lambda: "component:srv-12" in daemon.health.engine.snapshot.incidents,
            "the srv-12 incident",
        )
        iid = quote(daemon.health.engine.snapshot.incidents["component:srv-12"].id)
        status, page = await fetch(daemon, f"/incident/{iid}/report")
        assert status == 200 and "Post-incident report" in page and "still open" in page
        assert 'class="picture restoration"' in page and 'class="picture outage-bars"' in page
        assert f'href="/incident/{iid}/report.pdf"' in page
        targets.down = set()

        async def archived() -> bool:
            _, body = await fetch(daemon, f"/api/v1/archive?id={iid}")
            return bool(json.loads(body)["incidents"])

        await wait_for(archived, "the srv-12 incident archived")
        status, page = await fetch(daemon, f"/incident/{iid}/report")
        assert status == 200 and "still open" not in page
        status, text = await fetch(daemon, f"/incident/{iid}/report.md")
        assert status == 200 and text.startswith("# Post-incident report: srv-12")
        assert "Time to recover:" in text and "Time to recover: -" not in text
        assert "Availability (30 days)" in text and " 100.000 % |" not in text  # it was down
        status, _ = await fetch(daemon, "/incident/nothing@20200101T000000Z/report.md")
        assert status == 404
        status, _ = await fetch(daemon, "/incident/nothing@20200101T000000Z/report.pdf")
        assert status == 404
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{daemon.listen_port}/incident/{iid}/report.pdf") as resp,
        ):
            assert resp.status == 200 and resp.content_type == "application/pdf"
            assert (await resp.read()).startswith(b"%PDF-")


async def test_the_lab_power_cut_report_follows_the_scenario() -> None:
    """The demo's power cut (speed 40): the report's times sit where the script puts them."""
    async with running_demo("127.0.0.1:0") as demo:
        await asyncio.wait_for(demo.daemon.scheduler.first_round_done.wait(), 60)
        run = demo.controller.start("power-cut", SPEED)

        def nord_apps_down() -> bool:
            incident = demo.daemon.health.engine.snapshot.incidents.get("site:nord")
            return incident is not None and len(incident.applications) >= 3

        await wait_for(nord_apps_down, "Nord's applications in the site incident", within=120)
        assert run.fault_at is not None
        exhausted = next(at for at, what in run.applied if what.startswith("batteries exhausted"))
        daemon = demo.daemon
        incident = daemon.health.engine.snapshot.incidents["site:nord"]
        record = archived_incident(
            incident,
            daemon.health.engine.snapshot.at,
            daemon.health.engine.topology,
            daemon.history.transitions,
        )
        report = build(record, False, [])
        # nothing failed before the mains were lost; the incident opened at once (mains lost)
        assert report.first_failure >= run.fault_at - 1
        mains = [c.at for c in record.timeline if c.event == "mains_lost"]
        assert len(mains) == 1 and run.fault_at - 1 <= mains[0] <= exhausted
        # each application fell once its servers lost power, not before
        fallen = [a for a in report.apps if a.down_at is not None]
        assert fallen and all(a.down_at >= exhausted - 1 for a in fallen)  # type: ignore[operator]
        assert [a.criticality for a in report.apps] == sorted(a.criticality for a in report.apps)
        async with aiohttp.ClientSession() as s:
            url = f"{demo.url}/incident/{quote(incident.id, safe='')}/report.md"
            async with s.get(url) as resp:
                assert resp.status == 200
                text = await resp.text()
        assert "secteur perdu" in text and "toujours en cours" in text  # the demo speaks French
        assert all(f"| {a.name} |" in text for a in report.apps)
