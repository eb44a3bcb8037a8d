"""The incident archive on the web: /archive (by date and application), /archive/<id>, the API.

Closed incidents are read from the read model's archive (state_dir/archive.sqlite), rendered
with the status page's templates and reader's language; a closed incident's /incident/<id>
shows its archived record instead of a 404. Dates given as `from`/`to` (YYYY-MM-DD, both
included) are days in the config's time zone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

import jinja2
from aiohttp import web

from vigie.core.results import bound_text
from vigie.monitor.health.archive import ArchivedIncident, IncidentArchive
from vigie.monitor.i18n import Speech, Text
from vigie.monitor.web.keys import SOURCE_KEY
from vigie.monitor.web.pages import (
    PAGES_KEY,
    REFRESH_SECONDS,
    application_ids,
    name_of,
    reader_speech,
    safe_url,
)
from vigie.monitor.web.views import NotFound, iso

MAX_ROWS = 500
"""Incidents listed at most on a page or an API answer (the newest first)."""


@dataclass(frozen=True, slots=True)
class Choice:
    """An application offered in the archive's filter."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    """A closed incident in the archive's list."""

    id: str
    severity: str
    summary: str
    root_name: str
    started: float
    closed: float
    duration: float
    apps: tuple[str, ...]
    maintenance: bool


@dataclass(frozen=True, slots=True)
class ArchiveList:
    """The archive page: the filter, the incidents it finds, what the archive holds on disk."""

    now: float
    since: str
    until: str
    application: str
    choices: tuple[Choice, ...]
    rows: tuple[ArchiveRow, ...]
    more: bool
    kept: int
    size: str
    retention_days: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class ArchivedView:
    """One archived incident: what it was, its applications, timeline and who was paged."""

    now: float
    record: ArchivedIncident
    runbooks: dict[str, str]


class BadQuery(ValueError):
    """A filter the archive cannot read (a date that is not YYYY-MM-DD)."""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise BadQuery(f"not a date (YYYY-MM-DD): {bound_text(text, 40)!r}") from exc


def _start(day: date, zone: tzinfo) -> float:
    """The start of a day in the zone, as epoch seconds."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


def bounds(query: dict[str, str], zone: tzinfo) -> tuple[float | None, float | None]:
    """Return [since, until) from `from` and `to` (days in the zone, both included)."""
    since = _start(_date(query["from"]), zone) if query.get("from") else None
    until = None
    if query.get("to"):
        until = _start(_date(query["to"]) + timedelta(days=1), zone)
    return since, until


def size_text(n: int) -> str:
    """A size on disk as kB, MB or GB (decimal units, as `du --si`)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _search(
    archive: IncidentArchive, query: dict[str, str], zone: tzinfo
) -> tuple[list[ArchivedIncident], bool]:
    since, until = bounds(query, zone)
    found = archive.search(since, until, query.get("application") or None, MAX_ROWS + 1)
    return found[:MAX_ROWS], len(found) > MAX_ROWS


def query_of(request: web.Request) -> dict[str, str]:
    return {k: bound_text(request.query.get(k, ""), 120) for k in ("from", "to", "application")}


def archive_list(
    archive: IncidentArchive | None, query: dict[str, str], zone: tzinfo, choices: list[Choice]
) -> ArchiveList:
    """Build the archive page for a filter (an unreadable date reads as no bound)."""
    rows: list[ArchivedIncident] = []
    more = False
    if archive is not None:
        try:
            rows, more = _search(archive, query, zone)
        except BadQuery:
            rows, more = _search(archive, {**query, "from": "", "to": ""}, zone)
    return ArchiveList(
        now=time.time(),
        since=query.get("from", ""),
        until=query.get("to", ""),
        application=query.get("application", ""),
        choices=tuple(choices),
        rows=tuple(
            ArchiveRow(
                id=r.id,
                severity=r.severity,
                summary=r.summary,
                root_name=r.root_name,
                started=r.started_at,
                closed=r.closed_at,
                duration=r.duration,
                apps=tuple(a.name for a in r.applications),
                maintenance=r.maintenance,
            )
            for r in rows
        ),
        more=more,
        kept=0 if archive is None else archive.count(),
        size=size_text(0 if archive is None else archive.size_bytes()),
        retention_days=0 if archive is None else round(archive.retention / 86400),
        enabled=archive is not None,
    )


def record_json(r: ArchivedIncident) -> dict[str, Any]:
    """An archived incident as the API gives it (ISO 8601 times, English texts)."""
    return {
        "id": r.id,
        "key": r.key,
        "severity": r.severity,
        "summary": str(r.summary),
        "root_cause": r.root_cause,
        "root_name": r.root_name,
        "site": r.site,
        "site_name": r.site_name,
        "site_wide": r.site_wide,
        "maintenance": r.maintenance,
        "started_at": iso(r.started_at),
        "closed_at": iso(r.closed_at),
        "duration_seconds": round(r.duration, 1),
        "applications": [
            {
                "id": a.id,
                "name": a.name,
                "criticality": a.criticality,
                "degraded_mode": a.degraded_mode,
                "team": a.team,
            }
            for a in r.applications
        ],
        "impacted": list(r.impacted),
        "timeline": [
            {
                "at": iso(c.at),
                "component": c.id,
                "name": c.name,
                "was": c.was or None,
                "state": c.state,
                **({"event": c.event} if c.event else {}),
            }
            for c in r.timeline
        ],
        "paging": [
            {
                "team": p.team,
                "opened": iso(p.opened),
                "paged": [{"sink": s, "to": c} for s, c in p.paged],
                "acknowledged_by": p.acked_by,
                "acknowledged_at": None if p.acked_at is None else iso(p.acked_at),
                "acknowledged_via": p.ack_via,
                "resolved_at": None if p.resolved_at is None else iso(p.resolved_at),
                "events": [{"at": iso(a), "what": w, "detail": d} for a, w, d in p.events],
            }
            for p in r.paging
        ],
        "updates": [
            {
                "at": iso(at),
                "by": by,
                "text": text,
                "expected_recovery": None if eta is None else iso(eta),
            }
            for at, by, text, eta in r.updates
        ],
    }


def render(request: web.Request, template: str, page: Any, status: int = 200) -> web.Response:
    """Render like every status page: reader's language, Vigie's own notice, replica line."""
    source = request.app[SOURCE_KEY]
    sp = reader_speech(request, source.speech())
    data = {name: getattr(page, name) for name in page.__dataclass_fields__}
    text = (
        request.app[PAGES_KEY]
        .env.get_template(template)
        .render(
            refresh=REFRESH_SECONDS,
            sp=sp,
            t=sp.t,
            vigie_notice=source.state_dir_problem(),
            replica=source.replica(),
            **data,
        )
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _view(request: web.Request, record: ArchivedIncident) -> ArchivedView:
    topo = request.app[SOURCE_KEY].topology()
    runbooks = {}
    for a in record.applications:
        spec = topo.components.get(a.id)
        if spec is not None and safe_url(spec.runbook_url):
            runbooks[a.id] = spec.runbook_url
    return ArchivedView(now=time.time(), record=record, runbooks=runbooks)


def archived_response(request: web.Request, incident_id: str) -> web.Response | None:
    """The archived record's page for a closed incident's id, None when it was not kept."""
    archive = request.app[SOURCE_KEY].archive()
    record = None if archive is None else archive.get(incident_id)
    return None if record is None else render(request, "archived.html", _view(request, record))


async def archive_page(request: web.Request) -> web.Response:
    """Serve the archive: closed incidents by date and application, newest first."""
    source = request.app[SOURCE_KEY]
    topo = source.topology()
    choices = [Choice(c, name_of(topo, c)) for c in application_ids(topo)]
    page = archive_list(source.archive(), query_of(request), source.speech().zone, choices)
    return render(request, "archive.html", page)


async def archived_page(request: web.Request) -> web.Response:
    """Serve one archived incident (404 when the archive does not hold it)."""
    found = archived_response(request, request.match_info["id"])
    if found is not None:
        return found
    missing = NotFound(
        now=time.time(),
        what=Text("w.incident_missing", id=bound_text(request.match_info["id"], 120)),
        hint=Text("w.hint_archive"),
    )
    return render(request, "notfound.html", missing, status=404)


async def archive_api(request: web.Request) -> web.Response:
    """List closed incidents (JSON): by `from`, `to` (days), `application`, or one `id`."""
    source = request.app[SOURCE_KEY]
    archive = source.archive()
    found: list[ArchivedIncident] = []
    more = False
    if archive is not None:
        wanted = request.query.get("id")
        if wanted:
            record = archive.get(wanted)
            found = [] if record is None else [record]
        else:
            try:
                found, more = _search(archive, query_of(request), source.speech().zone)
            except BadQuery as exc:
                return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(
        {
            "enabled": archive is not None,
            "incidents": [record_json(r) for r in found],
            "truncated": more,
            "kept": 0 if archive is None else archive.count(),
            "size_bytes": 0 if archive is None else archive.size_bytes(),
            "retention_days": 0 if archive is None else round(archive.retention / 86400, 3),
        }
    )


@jinja2.pass_context
def _date_time(ctx: jinja2.runtime.Context, ts: float | None) -> str:
    """A time with its year, in the reader's zone: `02/12/2026 02:47 CET` (archives span years)."""
    speech: Speech = ctx["sp"]
    if ts is None or ts <= 0:
        return "-"
    return datetime.fromtimestamp(ts, speech.zone).strftime("%d/%m/%Y %H:%M %Z")


def add_routes(app: web.Application) -> None:
    """Register the archive's page and API routes (after the status pages' templates)."""
    app[PAGES_KEY].env.filters["date_time"] = _date_time
    app.router.add_get("/archive", archive_page)
    app.router.add_get("/archive/{id}", archived_page)
    app.router.add_get("/api/v1/archive", archive_api)
