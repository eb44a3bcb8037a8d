"""Availability on the web: /availability (last day, week, month, or a range of days) and
/api/v1/availability, per application and per tier, maintenance windows left out; the page
draws a month strip per application (a cell per day: monitor.web.svg).

Figures come from the archive's kept changes (monitor.health.availability); without a
state_dir nothing is kept and the page says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import jinja2
from aiohttp import web

from vigie.monitor.health.archive import IncidentArchive
from vigie.monitor.health.availability import Figures, figures, tiers
from vigie.monitor.i18n import Speech
from vigie.monitor.web.archive import BadQuery, bounds, query_of, render
from vigie.monitor.web.keys import SOURCE_KEY
from vigie.monitor.web.pages import PAGES_KEY, application_ids, name_of, tier_of
from vigie.monitor.web.readmodel import TopologyView
from vigie.monitor.web.svg import day_starts
from vigie.monitor.web.views import iso

RANGES = {"day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}
"""The ranges ending now that the page shows side by side (a month: 30 days)."""


@dataclass(frozen=True, slots=True)
class Period:
    """A range the figures cover: `name` is day, week, month or range (from/to days)."""

    name: str
    since: float
    until: float


@dataclass(frozen=True, slots=True)
class Line:
    """An application's (or a tier's) figures, one per period."""

    id: str
    name: str
    criticality: int
    cells: tuple[Figures, ...]
    days: tuple[Figures, ...] = ()
    """An application's figures day by day (the page's month strip), oldest first."""


@dataclass(frozen=True, slots=True)
class AvailabilityPage:
    """Applications and tiers, each with its availability over every period."""

    now: float
    periods: tuple[Period, ...]
    apps: tuple[Line, ...]
    tiers: tuple[Line, ...]
    since: str
    until: str
    enabled: bool
    day_starts: tuple[float, ...] = ()
    """Where each day of the month strips begins (midnight in the config's zone)."""


def periods_of(query: dict[str, str], speech: Speech, now: float) -> list[Period]:
    """From/to days when given (BadQuery if unreadable), else the last day, week and month."""
    if query.get("from") or query.get("to"):
        since, until = bounds(query, speech.zone)
        start = since if since is not None else now - RANGES["month"]
        return [Period("range", start, min(now, until) if until is not None else now)]
    wanted = query.get("range", "")
    if wanted in RANGES:
        return [Period(wanted, now - RANGES[wanted], now)]
    return [Period(name, now - seconds, now) for name, seconds in RANGES.items()]


def compute(
    archive: IncidentArchive, topo: TopologyView, periods: list[Period]
) -> tuple[list[Line], list[Line]]:
    """Each application's figures over each period, and each tier's (applications summed)."""
    apps: list[Line] = []
    for cid in application_ids(topo):
        cells = []
        for p in periods:
            cells.append(figures(archive.changes(cid, p.since, p.until), p.since, p.until))
        apps.append(Line(cid, name_of(topo, cid), tier_of(topo, cid), tuple(cells)))
    by_tier = [tiers((a.criticality, a.cells[i]) for a in apps) for i in range(len(periods))]
    tier_ids = sorted({t for per in by_tier for t in per})
    tier_lines = [
        Line(str(t), str(t), t, tuple(per.get(t, Figures()) for per in by_tier)) for t in tier_ids
    ]
    return apps, tier_lines


STRIP_DAYS = 30


def daily(
    archive: IncidentArchive, cid: str, starts: list[float], now: float
) -> tuple[Figures, ...]:
    """A component's figures for each day beginning at `starts` (today's up to now)."""
    if not starts:
        return ()
    ends = [*starts[1:], starts[-1] + 86400.0]
    spells = archive.changes(cid, starts[0], min(ends[-1], now))
    return tuple(figures(spells, a, min(b, now)) for a, b in zip(starts, ends, strict=True))


def _figures_json(f: Figures) -> dict[str, Any]:
    return {
        "availability": None if f.availability is None else round(f.availability, 6),
        "down_seconds": round(f.down, 1),
        "maintenance_seconds": round(f.maintenance, 1),
        "observed_seconds": round(f.observed, 1),
    }


async def availability_page(request: web.Request) -> web.Response:
    """Serve the availability page: applications and tiers over a day, a week, a month."""
    source = request.app[SOURCE_KEY]
    query = {**query_of(request), "range": request.query.get("range", "")}
    now = time.time()
    try:
        periods = periods_of(query, source.speech(), now)
    except BadQuery:
        periods = periods_of({}, source.speech(), now)
    archive = source.archive()
    topo = source.topology()
    apps, tier_lines = ([], []) if archive is None else compute(archive, topo, periods)
    starts = day_starts(min(now, periods[-1].until), source.speech().zone, STRIP_DAYS)
    if archive is not None:
        apps = [replace(a, days=daily(archive, a.id, starts, now)) for a in apps]
    page = AvailabilityPage(
        now=now,
        periods=tuple(periods),
        apps=tuple(apps),
        tiers=tuple(tier_lines),
        since=query.get("from", ""),
        until=query.get("to", ""),
        enabled=archive is not None,
        day_starts=tuple(starts),
    )
    return render(request, "availability.html", page)


async def availability_api(request: web.Request) -> web.Response:
    """Availability per application and tier (JSON) over `range` (day, week, month) or from/to."""
    source = request.app[SOURCE_KEY]
    query = {**query_of(request), "range": request.query.get("range", "week")}
    try:
        (period,) = periods_of(query, source.speech(), time.time())[:1]
    except BadQuery as exc:
        return web.json_response({"error": str(exc)}, status=400)
    archive = source.archive()
    topo = source.topology()
    apps, tier_lines = ([], []) if archive is None else compute(archive, topo, [period])
    return web.json_response(
        {
            "enabled": archive is not None,
            "since": iso(period.since),
            "until": iso(period.until),
            "applications": [
                {"id": a.id, "name": a.name, "criticality": a.criticality}
                | _figures_json(a.cells[0])
                for a in apps
            ],
            "tiers": [{"tier": t.criticality} | _figures_json(t.cells[0]) for t in tier_lines],
        }
    )


@jinja2.pass_context
def _percent(ctx: jinja2.runtime.Context, share: float | None) -> str:
    """A share as a percentage with 3 decimals (`99.952 %`; a comma in French), '-' if None."""
    speech: Speech = ctx["sp"]
    if share is None:
        return "-"
    text = f"{share * 100:.3f} %"
    return text.replace(".", ",") if speech.language == "fr" else text


def add_routes(app: web.Application) -> None:
    """Register the availability page and API (after the status pages' templates)."""
    app[PAGES_KEY].env.filters["percent"] = _percent
    app.router.add_get("/availability", availability_page)
    app.router.add_get("/api/v1/availability", availability_api)
