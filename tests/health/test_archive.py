"""The incident archive's file: records with their timeline and paging, search by date and
application, retention, state changes for availability, French summaries, a refused disk."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.alerting.test_state_dir import Mounts, fill, mounts  # noqa: F401 (a fixture)
from vigie.monitor.alerting.escalation import Escalation
from vigie.monitor.health.archive import (
    ArchivedIncident,
    Closings,
    IncidentArchive,
    Spell,
    archived_incident,
)
from vigie.monitor.health.history import Transition
from vigie.monitor.health.model import Topology
from vigie.monitor.health.snapshot import ImpactedApp, Incident
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import ComponentSpec, SiteSpec
from vigie.monitor.health.wording import component_summary
from vigie.monitor.i18n import Speech

T0 = 1_764_000_000.0
DAY = 86400.0


def topology() -> Topology:
    """One server and the application on it."""
    return Topology(
        [SiteSpec(id="nord", name="Datacenter Nord")],
        [
            ComponentSpec(id="srv-1", kind="server", site="nord", name="Serveur 1"),
            ComponentSpec(
                id="app-dpi",
                kind="application",
                site="nord",
                name="Dossier patient",
                depends_on=["srv-1"],
                criticality=1,
                degraded_mode="Dossiers papier",
                team="dpi",
            ),
        ],
    )


def incident(started: float, app: str = "app-dpi") -> Incident:
    """srv-1 down, impacting one application."""
    apps = (ImpactedApp(app, "Dossier patient", 1, State.IMPACTED, "Dossiers papier", "", "dpi"),)
    return Incident(
        key="component:srv-1",
        root_cause="srv-1",
        site="nord",
        severity="critical",
        started_at=started,
        summary=component_summary("Serveur 1", State.DOWN, list(apps), False),
        description="",
        impacted=(app,),
        applications=apps,
        component="srv-1",
    )


HISTORY = {
    "srv-1": [
        Transition(T0 - DAY, State.OK),
        Transition(T0, State.DOWN),
        Transition(T0 + 3600, State.OK),
    ],
    "app-dpi": [
        Transition(T0 - DAY, State.OK),
        Transition(T0 + 20, State.IMPACTED),
        Transition(T0 + 3610, State.OK),
    ],
}


def escalation() -> Escalation:
    """The dpi team paged by SMS, acknowledged through the paged link."""
    return Escalation(
        id=1,
        key="component:srv-1",
        alert_key="component:srv-1/critical",
        team="dpi",
        tier=1,
        opened=T0 + 60,
        labels={},
        summary="",
        tier1=["Dossier patient"],
        level=0,
        paged=[["sms", "+33600000001"]],
        acked_by="Dr Martin",
        acked_at=T0 + 300,
        ack_via="link",
        resolved_at=T0 + 3600,
        events=[[T0 + 60, "paged", "sms +33600000001"], [T0 + 300, "acknowledged", "link"]],
    )


def record(started: float = T0, app: str = "app-dpi") -> ArchivedIncident:
    """The archived record of the incident above, closed an hour after it started."""
    return archived_incident(
        incident(started, app),
        started + 3600,
        topology(),
        lambda cid: HISTORY.get(cid, []),
        escalations=[escalation()],
        updates=[(T0 + 600, "cellule", "La DSI redémarre le serveur", T0 + 3000)],
    )


def test_a_closed_incident_keeps_its_timeline_and_who_was_paged(tmp_path: Path) -> None:
    """The record survives closing the file: timeline, applications, pages and acknowledgement."""
    archive = IncidentArchive(tmp_path / "archive.sqlite", clock=lambda: T0 + 3600)
    rec = record()
    archive.add(rec)
    archive.close()
    again = IncidentArchive(tmp_path / "archive.sqlite", clock=lambda: T0 + 3600)
    got = again.get(rec.id)
    assert got == rec
    assert got is not None
    assert got.duration == 3600
    assert [(c.id, c.was, c.state) for c in got.timeline] == [
        ("srv-1", "OK", "DOWN"),
        ("app-dpi", "OK", "IMPACTED"),
        ("srv-1", "DOWN", "OK"),
    ]  # the app's recovery came after the close: not in it
    assert got.applications[0].degraded_mode == "Dossiers papier"
    assert got.paging[0].paged == (("sms", "+33600000001"),)
    assert (got.paging[0].acked_by, got.paging[0].ack_via) == ("Dr Martin", "link")
    assert got.updates == ((T0 + 600, "cellule", "La DSI redémarre le serveur", T0 + 3000),)
    # the summary renders in French from the archive as it did live
    assert Speech("fr").say(got.summary) == Speech("fr").say(rec.summary)
    assert Speech("fr").say(got.summary) != str(got.summary)
    assert again.get("nothing@20250101T000000Z") is None


def test_search_by_dates_and_application(tmp_path: Path) -> None:
    """Newest first, [since, until) on the start, an application as a whole id."""
    archive = IncidentArchive(tmp_path / "archive.sqlite", clock=lambda: T0 + 10 * DAY)
    for day, app in ((0, "app-dpi"), (1, "app-labo"), (2, "app-dpi-2")):
        archive.add(record(T0 + day * DAY, app))
    assert [r.started_at for r in archive.search()] == [T0 + 2 * DAY, T0 + DAY, T0]
    assert [r.started_at for r in archive.search(T0 + DAY, T0 + 2 * DAY)] == [T0 + DAY]
    assert [r.started_at for r in archive.search(application="app-dpi")] == [T0]
    assert archive.count() == 3
    assert archive.size_bytes() > 0


def test_retention_drops_old_incidents_and_keeps_each_state_at_the_cutoff(tmp_path: Path) -> None:
    """Past the retention records go; each component keeps its last change before the cutoff."""
    now = [T0]
    archive = IncidentArchive(tmp_path / "a.sqlite", retention=30 * DAY, clock=lambda: now[0])
    archive.add(record(T0))
    archive.record_changes(
        [("srv-1", T0, State.DOWN, False), ("srv-1", T0 + 3600, State.OK, False)]
    )
    now[0] = T0 + 40 * DAY
    archive.record_changes([("srv-1", now[0], State.DOWN, True)])  # a write prunes (hourly)
    assert archive.search() == []
    assert archive.changes("srv-1", T0 + 35 * DAY, now[0] + 1) == [
        Spell(T0 + 3600, State.OK),
        Spell(now[0], State.DOWN, maintenance=True),
    ]
    assert [t.at for t in archive.changes("srv-1", 0, now[0] + 1)] == [
        T0 + 3600,
        now[0],
    ]  # the DOWN at T0 was pruned, the OK after it kept as the state at the cutoff


def test_a_full_disk_keeps_records_in_memory_until_it_takes_them(
    tmp_path: Path,
    mounts: Mounts,  # noqa: F811 (the fixture imported above)
) -> None:
    """A full tmpfs: the record is still served, and written once space returns."""
    fs = mounts.tmpfs(tmp_path / "fs")
    archive = IncidentArchive(fs / "archive.sqlite", clock=lambda: T0)
    filler = fill(fs)
    rec = record()
    archive.add(rec)
    assert archive.failing
    assert archive.get(rec.id) == rec
    assert [r.id for r in archive.search()] == [rec.id]
    filler.unlink()
    assert archive.flush()
    assert not archive.failing
    archive.close()
    again = IncidentArchive(fs / "archive.sqlite")
    assert again.get(rec.id) == rec
    again.close()


def test_an_application_back_before_the_close_stays_in_the_record() -> None:
    """Closings keeps every application an incident hit during its life, not only the last."""
    closings = Closings()
    live = incident(T0)
    assert closings.observe({live.key: live}) == []
    back = replace(live, applications=(), impacted=())  # the app came back first
    assert closings.observe({live.key: back}) == []
    (closed,) = closings.observe({})
    assert [a.id for a in closed.applications] == ["app-dpi"]
    assert closed.impacted == ("app-dpi",)
    assert closings.observe({}) == []
