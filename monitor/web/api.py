"""JSON API under /api/v1: sites, components, incidents, checks, maintenance windows.

The maintenance routes: GET lists open windows, POST opens one (its author: the sender;
at most web.maintenance_max long), DELETE /api/v1/maintenance/{id} ends one early.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from vigie.core.results import bound_text
from vigie.monitor.health.budget import Budgets, budget_json
from vigie.monitor.health.maintenance import MaintenanceSpec, NotEndable, Window
from vigie.monitor.health.snapshot import ComponentStatus, Incident, Snapshot
from vigie.monitor.web import maintenance, operators
from vigie.monitor.web.keys import SOURCE_KEY
from vigie.monitor.web.maintenance import end_window
from vigie.monitor.web.readmodel import StatusSource
from vigie.monitor.web.views import CheckRow, SiteRow, iso

MAX_BODY = 16 * 1024


def component_json(c: ComponentStatus, budgets: Budgets | None = None) -> dict[str, Any]:
    """Serialise a component's status, with its detection budget when budgets are given."""
    out: dict[str, Any] = {
        "id": c.id,
        "kind": c.kind,
        "site": c.site,
        "state": c.state.name,
        "since": iso(c.since),
        "reasons": [bound_text(r) for r in c.reasons],
        "root_causes": list(c.roots),
        "maintenance": c.maintenance,
    }
    if budgets is not None:
        budget = budgets.components.get(c.id)
        out["budget"] = None if budget is None else budget_json(budget, budgets.target(budget))
    return out


def incident_json(i: Incident) -> dict[str, Any]:
    """Serialise an incident."""
    return {
        "id": i.id,
        "key": i.key,
        "root_cause": i.root_cause,
        "site": i.site,
        "severity": i.severity,
        "started_at": iso(i.started_at),
        "summary": i.summary,
        "description": bound_text(i.description, 8000),
        "site_wide": i.site_wide,
        "maintenance": i.maintenance,
        "confirmed": i.confirmed,  # False: shown, not paged yet (dependencies' checks pending)
        "impacted": list(i.impacted),
        "applications": [
            {
                "id": a.id,
                "name": a.name,
                "criticality": a.criticality,
                "state": a.state.name,
                "degraded_mode": a.degraded_mode,
                "runbook_url": a.runbook_url,
                "team": a.team,
            }
            for a in i.applications
        ],
    }


def _source(request: web.Request) -> StatusSource:
    return request.app[SOURCE_KEY]


def site_rows(source: StatusSource) -> list[SiteRow]:
    """Sites with their state: shared by /api/v1/sites and the status page."""
    snap = source.snapshot()
    topo = source.topology()
    return [
        SiteRow(
            id=s,
            name=topo.site_name(s),
            parent=topo.sites[s].parent,
            state=snap.sites[s].name if s in snap.sites else "UNKNOWN",
        )
        for s in topo.sites
    ]


def ordered_incidents(snap: Snapshot) -> list[Incident]:
    """Open incidents, critical first, then oldest first: shared by the API and the page."""
    return sorted(snap.incidents.values(), key=lambda i: (i.severity != "critical", i.started_at))


def check_rows(source: StatusSource) -> list[CheckRow]:
    """Checks with their last result: shared by /api/v1/checks and the /checks page."""
    out = []
    for cid, check in sorted(source.plan().items()):
        result = source.latest(cid)
        out.append(
            CheckRow(
                id=cid,
                kind=check.kind,
                target=check.target,
                labels=dict(check.labels),
                interval=check.interval,
                success=None if result is None else result.success,
                error=None if result is None or result.error is None else bound_text(result.error),
                at=None if result is None else iso(result.timestamp),
            )
        )
    return out


def window_json(w: Window) -> dict[str, Any]:
    """Serialise a maintenance window: who opened it, and who ended it early, when."""
    return {
        "id": w.id,
        "target": w.target,
        "start": iso(w.start),
        "end": iso(w.end),
        "reason": w.reason,
        "source": w.source,
        "author": w.author,
        "silence": w.silence,
        "ended_early": None
        if w.ended_at is None
        else {"at": iso(w.ended_at), "by": w.ended_by or ""},
    }


async def sites(request: web.Request) -> web.Response:
    """List sites with their state."""
    return web.json_response([asdict(r) for r in site_rows(_source(request))])


async def components(request: web.Request) -> web.Response:
    """List components with their state, reasons, root causes and detection budget."""
    source = _source(request)
    budgets = source.budgets()
    comps = source.snapshot().components.values()
    return web.json_response([component_json(c, budgets) for c in comps])


async def incidents(request: web.Request) -> web.Response:
    """List open incidents, most severe first."""
    snap = _source(request).snapshot()
    return web.json_response([incident_json(i) for i in ordered_incidents(snap)])


async def checks(request: web.Request) -> web.Response:
    """List checks with their last result."""
    return web.json_response([asdict(r) for r in check_rows(_source(request))])


async def maintenance_list(request: web.Request) -> web.Response:
    """List maintenance windows."""
    return web.json_response([window_json(w) for w in _source(request).maintenance_windows()])


async def maintenance_add(request: web.Request) -> web.Response:
    """Open a maintenance window: pages are held for its target, states still change."""
    source = _source(request)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return web.json_response({"error": "body too large"}, status=413)
    try:
        spec = MaintenanceSpec.model_validate(json.loads(raw or b"null"))
    except (ValueError, ValidationError) as exc:
        return web.json_response({"error": bound_text(str(exc))}, status=400)
    topo = source.topology()
    if spec.target not in topo.components and spec.target not in topo.sites:
        return web.json_response(
            {"error": f"unknown component or site {spec.target!r}"}, status=404
        )
    try:
        window = source.add_maintenance(spec, operators.principal(request).who)
    except ValueError as exc:  # longer than web.maintenance_max, or already over
        return web.json_response({"error": bound_text(str(exc))}, status=400)
    detail = f"{window.id} until {iso(window.end)}: {window.reason}"
    operators.record(request, "maintenance", window.target, detail)
    return web.json_response(window_json(window), status=201)


async def maintenance_end(request: web.Request) -> web.Response:
    """End an open window now (operator role): its pages resume at once, who is recorded."""
    try:
        window = end_window(request, request.match_info["id"])
    except NotEndable as exc:
        return web.json_response({"error": str(exc)}, status=409)
    if window is None:
        return web.json_response({"error": "no open maintenance window with this id"}, status=404)
    return web.json_response(window_json(window))


def add_routes(app: web.Application) -> None:
    """Register the API routes."""
    app.router.add_get("/api/v1/sites", sites)
    app.router.add_get("/api/v1/components", components)
    app.router.add_get("/api/v1/incidents", incidents)
    app.router.add_get("/api/v1/checks", checks)
    app.router.add_get("/api/v1/maintenance", maintenance_list)
    app.router.add_post("/api/v1/maintenance", maintenance_add)
    app.router.add_delete("/api/v1/maintenance/{id}", maintenance_end)
    maintenance.add_routes(app)  # the /maintenance page and its end buttons
    app.router.add_get("/api/v1/openapi.json", openapi_document)


async def openapi_document(_: web.Request) -> web.Response:
    """Serve the OpenAPI 3 description of /api/v1."""
    from vigie.monitor.web.openapi import document

    return web.json_response(document())
