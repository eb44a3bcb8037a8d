"""The post-incident report: Markdown (/incident/<id>/report.md), a printable page
(/incident/<id>/report) and a PDF (/incident/<id>/report.pdf, monitor.web.pdf), for an open
incident or an archived one.

What the crisis cell's review needs, from what Vigie knew: root cause, the timeline, each
impacted application with its tier, its outage (first failure seen to back, from the state
changes), its availability over the 30 days up to the end and its degraded mode, the times to
detect (first failure seen to incident), to page, to acknowledge and to recover, who was
paged, and the operator actions (the audit log) during the incident. The page and the PDF
also draw the restoration curve (and the page the outage bars: monitor.web.svg).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from vigie.monitor.audit import Action
from vigie.monitor.health.archive import ArchivedIncident, archived_incident
from vigie.monitor.health.availability import figures
from vigie.monitor.health.states import State
from vigie.monitor.i18n import Speech
from vigie.monitor.web.archive import render
from vigie.monitor.web.keys import SOURCE_KEY
from vigie.monitor.web.operators import OPS_KEY
from vigie.monitor.web.pages import reader_speech
from vigie.monitor.web.svg import Track, track

MAX_ACTIONS = 200


@dataclass(frozen=True, slots=True)
class AppOutage:
    """An impacted application: tier, when it fell and came back, how long, its degraded mode."""

    id: str
    name: str
    criticality: int
    down_at: float | None
    back_at: float | None
    seconds: float | None
    degraded_mode: str
    availability: float | None = None
    """Over the 30 days up to the incident's end (None without kept history)."""


@dataclass(frozen=True, slots=True)
class Report:
    """A post-incident report's facts (times are epoch seconds, durations seconds)."""

    now: float
    record: ArchivedIncident
    closed: bool
    first_failure: float
    to_detect: float
    to_page: float | None
    to_acknowledge: float | None
    to_recover: float | None
    apps: tuple[AppOutage, ...]
    actions: tuple[Action, ...]
    tracks: tuple[Track, ...] = ()
    """Each impacted application's state changes, for the pictures (monitor.web.svg)."""
    since: float = 0.0
    """Where the pictures start: a little before the first failure seen."""


AVAILABILITY_DAYS = 30


def outages(
    record: ArchivedIncident, availability: Mapping[str, float | None] | None = None
) -> list[AppOutage]:
    """Each application's outage from the timeline: its first failure to its last return."""
    out = []
    for app in sorted(record.applications, key=lambda a: (a.criticality, a.name.lower())):
        down_at: float | None = None
        back_at: float | None = None
        for change in record.timeline:
            if change.id != app.id:
                continue
            if State[change.state].failing:
                down_at = change.at if down_at is None else down_at
                back_at = None
            elif down_at is not None:
                back_at = change.at
        seconds = None if down_at is None or back_at is None else back_at - down_at
        share = (availability or {}).get(app.id)
        out.append(
            AppOutage(
                app.id,
                app.name,
                app.criticality,
                down_at,
                back_at,
                seconds,
                app.degraded_mode,
                share,
            )
        )
    return out


def build(
    record: ArchivedIncident,
    closed: bool,
    actions: list[Action],
    availability: Mapping[str, float | None] | None = None,
) -> Report:
    """Compute the report's figures from an incident's record, the audit log's actions and
    each application's availability (monitor.health.availability) when history is kept."""
    failures = [c.at for c in record.timeline if c.state != "OK" and State[c.state].failing]
    first = min([*failures, record.started_at])
    paged = [p.opened for p in record.paging]
    since = first - max(60.0, (record.closed_at - first) * 0.03)
    acked = [p.acked_at for p in record.paging if p.acked_at is not None]
    return Report(
        now=time.time(),
        record=record,
        closed=closed,
        first_failure=first,
        to_detect=record.started_at - first,
        to_page=min(paged) - record.started_at if paged else None,
        to_acknowledge=min(acked) - record.started_at if acked else None,
        to_recover=record.duration if closed else None,
        apps=tuple(outages(record, availability)),
        actions=tuple(
            a for a in actions if record.started_at - 300 <= a.at <= record.closed_at + 300
        )[:MAX_ACTIONS],
        tracks=tuple(tracks(record, since)),
        since=since,
    )


def tracks(record: ArchivedIncident, since: float) -> list[Track]:
    """Each impacted application's state changes on the timeline, as the pictures draw them."""
    out = []
    for app in sorted(record.applications, key=lambda a: (a.criticality, a.name.lower())):
        changes = [
            (c.at, State[c.state]) for c in record.timeline if c.id == app.id and not c.event
        ]
        out.append(track(app.id, app.name, app.criticality, changes, since))
    return out


def markdown(report: Report, sp: Speech) -> str:
    """The report as Markdown, in the reader's language."""
    r, t = report.record, sp.t
    lines = [
        f"# {t('r.title', name=r.root_name)}",
        "",
        f"**{sp.say(r.summary)}**",
        "",
        f"- {t('w.root_cause')} {r.root_name}" + (f" ({r.site_name})" if r.site_name else ""),
        f"- {t('r.start')}: {sp.clock(r.started_at)}",
        f"- {t('r.end')}: {sp.clock(r.closed_at) if report.closed else t('r.still_open')}",
        f"- {t('r.first_failure')}: {sp.clock(report.first_failure)}",
        f"- {t('r.to_detect')}: {sp.duration(report.to_detect)}",
        f"- {t('r.to_page')}: {sp.duration(report.to_page)}",
        f"- {t('r.to_acknowledge')}: {sp.duration(report.to_acknowledge)}",
        f"- {t('r.to_recover')}: {sp.duration(report.to_recover)}",
        f"- {t('w.incident_id', id=r.id)}",
        "",
        f"## {t('h.impacted_apps', n=len(report.apps))}",
        "",
        f"| {t('col.tier')} | {t('col.application')} | {t('col.down_since')} | "
        f"{t('col.back_at')} | {t('col.duration')} | {t('r.availability')} | "
        f"{t('col.meanwhile')} |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in report.apps:
        lines.append(
            f"| {a.criticality} | {_cell(a.name)} | {sp.clock(a.down_at)} | {sp.clock(a.back_at)}"
            f" | {sp.duration(a.seconds)} | {percent(a.availability, sp)}"
            f" | {_cell(a.degraded_mode) or '-'} |"
        )
    lines += ["", f"## {t('a.paging')}", ""]
    for p in r.paging:
        who = ", ".join(f"{c} ({s})" for s, c in p.paged) or "-"
        ack = (
            t("a.acked", by=p.acked_by or "?", at=sp.clock(p.acked_at), via=p.ack_via or "?")
            if p.acked_at
            else t("a.not_acked")
        )
        lines.append(f"- {p.team}: {t('a.paged_to')} {who}. {ack}")
    if not r.paging:
        lines.append(t("a.no_paging"))
    lines += ["", f"## {t('r.actions')}", ""]
    for action in report.actions:
        lines.append(
            f"- {sp.clock(action.at)} {_cell(sp.who(action.who))} ({t('role.' + action.role)}):"
            f" {t('action.' + action.action)}"
            f" {_cell(action.target)} {_cell(action.detail)}".rstrip()
        )
    if not report.actions:
        lines.append(t("r.no_actions"))
    lines += ["", f"## {t('h.timeline')}", ""]
    for c in r.timeline:
        if c.event == "mains_lost":
            lines.append(f"- {sp.clock(c.at)} {c.name}: {t('w.mains_lost')}")
        else:
            was = sp.state(c.was) if c.was else t("w.first_seen")
            lines.append(f"- {sp.clock(c.at)} {c.name}: {was} → {sp.state(c.state)}")
    return "\n".join(lines) + "\n"


def percent(share: float | None, sp: Speech) -> str:
    """A share as a percentage with 3 decimals (`99.952 %`; a comma in French), '-' if None."""
    if share is None:
        return "-"
    text = f"{share * 100:.3f} %"
    return text.replace(".", ",") if sp.language == "fr" else text


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell or list line (no pipe, no newline)."""
    return " ".join(str(text).replace("|", "/").split())[:300]


def _find(request: web.Request) -> tuple[ArchivedIncident, bool] | None:
    """The incident asked for: open (its record as of now) or archived; None if neither."""
    source = request.app[SOURCE_KEY]
    wanted = request.match_info["id"]
    for incident in source.snapshot().incidents.values():
        if incident.id == wanted:
            now = source.snapshot().at or time.time()
            return archived_incident(incident, now, source.topology(), source.transitions), False
    archive = source.archive()
    record = None if archive is None else archive.get(wanted)
    return None if record is None else (record, True)


def _availability(request: web.Request, record: ArchivedIncident) -> dict[str, float | None]:
    """Each impacted application's availability over the 30 days up to the incident's end."""
    archive = request.app[SOURCE_KEY].archive()
    if archive is None:
        return {}
    until = record.closed_at
    since = until - AVAILABILITY_DAYS * 86400.0
    return {
        a.id: figures(archive.changes(a.id, since, until), since, until).availability
        for a in record.applications
    }


def _actions(request: web.Request) -> list[Action]:
    ops = request.app.get(OPS_KEY)
    return [] if ops is None else list(reversed(ops.audit.recent(5000)))


async def report_page(request: web.Request) -> web.Response:
    """Serve the printable report of an incident (404 when neither open nor archived)."""
    found = _find(request)
    if found is None:
        raise web.HTTPNotFound(text="no such incident, open or archived\n")
    record, closed = found
    report = build(record, closed, _actions(request), _availability(request, record))
    return render(request, "report.html", report)


async def report_markdown(request: web.Request) -> web.Response:
    """Serve the report as Markdown (text/markdown), in the reader's language."""
    found = _find(request)
    if found is None:
        raise web.HTTPNotFound(text="no such incident, open or archived\n")
    sp = reader_speech(request, request.app[SOURCE_KEY].speech())
    record, closed = found
    text = markdown(build(record, closed, _actions(request), _availability(request, record)), sp)
    return web.Response(text=text, content_type="text/markdown", charset="utf-8")


PDF_AT_ONCE = 2
"""PDFs drawn at the same time at most (each in a thread: fpdf2 takes the CPU for a while)."""
PDF_SLOTS_KEY: web.AppKey[asyncio.Semaphore] = web.AppKey("pdf_slots", asyncio.Semaphore)


def pdf_name(incident_id: str) -> str:
    """The PDF's file name: `vigie-report-` and the incident id in safe characters."""
    return "vigie-report-" + re.sub(r"[^A-Za-z0-9._-]+", "-", incident_id)[:120] + ".pdf"


async def report_pdf(request: web.Request) -> web.Response:
    """Serve the report as a PDF (application/pdf), in the reader's language."""
    from vigie.monitor.web.pdf import render_pdf  # fpdf2 loads only when a PDF is asked for

    found = _find(request)
    if found is None:
        raise web.HTTPNotFound(text="no such incident, open or archived\n")
    sp = reader_speech(request, request.app[SOURCE_KEY].speech())
    record, closed = found
    report = build(record, closed, _actions(request), _availability(request, record))
    async with request.app[PDF_SLOTS_KEY]:
        body = await asyncio.to_thread(render_pdf, report, sp)
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{pdf_name(record.id)}"'},
    )


def add_routes(app: web.Application) -> None:
    """Register the report's routes."""
    app[PDF_SLOTS_KEY] = asyncio.Semaphore(PDF_AT_ONCE)
    app.router.add_get("/incident/{id}/report", report_page)
    app.router.add_get("/incident/{id}/report.md", report_markdown)
    app.router.add_get("/incident/{id}/report.pdf", report_pdf)
