"""The status page for the crisis cell: overview, incident, component, recovery board, checks.

Server-rendered with Jinja2 (autoescape on), inline CSS, no JavaScript and no external asset
so it works with the internet down, refreshing itself with a meta refresh. The data comes from
the same functions as the JSON API (monitor.web.api), so page and API never disagree.
Everything a device or target sent (error texts, sample labels) is untrusted: bounded with
bound_text here and escaped by Jinja2.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from vigie.core.results import bound_text
from vigie.monitor.health.budget import budget_json
from vigie.monitor.health.engine import APPLICATION_KINDS, ComponentStatus, Incident, Snapshot
from vigie.monitor.health.history import StateHistory
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import dependency_members
from vigie.monitor.web import api
from vigie.monitor.web.keys import DAEMON_KEY

if TYPE_CHECKING:
    from vigie.monitor.app import Daemon

REFRESH_SECONDS = 10
MAX_SAMPLES = 60
"""Samples shown per check on a component page: a switch can have thousands."""
MAX_LABEL_CHARS = 200


@dataclass(frozen=True, slots=True)
class Pages:
    """The template environment of one web application (no module-level singleton)."""

    env: jinja2.Environment

    @classmethod
    def create(cls) -> Pages:
        """Load the templates shipped in monitor/web/templates with autoescape on."""
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("vigie.monitor.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["clock"] = clock
        env.filters["ago"] = duration
        env.filters["state_class"] = state_class
        env.filters["safe_url"] = safe_url
        env.filters["path"] = lambda value: quote(str(value), safe="")
        return cls(env)

    def render(self, name: str, /, **context: Any) -> str:
        """Render one template with the common context."""
        return self.env.get_template(name).render(refresh=REFRESH_SECONDS, **context)


PAGES_KEY: web.AppKey[Pages] = web.AppKey("pages", Pages)


# --- formatting ------------------------------------------------------------------------------


def clock(ts: float | None) -> str:
    """Return an epoch time as local date and time, as staff read it on the wall."""
    if ts is None or ts <= 0:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%d/%m %H:%M:%S")


def duration(seconds: float | None) -> str:
    """Return a duration as '3d 4h', '2h 05m', '7m 12s' or '40s'."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def state_class(state: str) -> str:
    """Return the CSS class of a state name."""
    return f"s-{state.lower()}"


def safe_url(url: str) -> str:
    """Return url when it is http(s), else '' (a javascript: runbook link must not be clickable)."""
    return url if urlsplit(url).scheme in ("http", "https") else ""


# --- data shared by pages and the JSON API ---------------------------------------------------

ORDER = {
    State.DOWN: 0,
    State.IMPACTED: 1,
    State.FLAPPING: 2,
    State.DEGRADED: 3,
    State.UNKNOWN: 4,
    State.WARNING: 5,
    State.OK: 6,
}


def name_of(daemon: Daemon, cid: str) -> str:
    """Return a component's human name, or its id."""
    spec = daemon.health.engine.topology.components.get(cid)
    return spec.name if spec is not None and spec.name else cid


def tier_of(daemon: Daemon, cid: str) -> int:
    """Return a component's criticality (5 when unset, so it sorts after tier 4)."""
    spec = daemon.health.engine.topology.components.get(cid)
    return spec.criticality if spec is not None and spec.criticality is not None else 5


site_rows = api.site_rows
check_rows = api.check_rows
ordered_incidents = api.ordered_incidents


def application_ids(daemon: Daemon) -> list[str]:
    """Applications by criticality, then name."""
    topo = daemon.health.engine.topology
    apps = [c for c, spec in topo.components.items() if spec.kind in APPLICATION_KINDS]
    return sorted(apps, key=lambda c: (tier_of(daemon, c), name_of(daemon, c).lower()))


def recovery_rows(daemon: Daemon, now: float | None = None) -> list[dict[str, Any]]:
    """Each application that failed: state, down since, back at, stable for (API and page)."""
    now = time.time() if now is None else now
    snap = daemon.health.engine.snapshot
    rows: list[dict[str, Any]] = []
    for rec in daemon.history.recoveries(application_ids(daemon), now):
        status = snap.components.get(rec.component)
        state = status.state if status is not None else rec.state
        rows.append(
            {
                "id": rec.component,
                "name": name_of(daemon, rec.component),
                "criticality": tier_of(daemon, rec.component),
                "state": state.name,
                "back": not state.failing,
                "down_since": None if rec.down_since is None else api.iso(rec.down_since),
                "back_at": None if rec.back_at is None else api.iso(rec.back_at),
                "stable_for_seconds": None if rec.stable_for is None else round(rec.stable_for, 1),
                "_down_since": rec.down_since,
                "_back_at": rec.back_at,
            }
        )
    # still down first (most critical on top), then the most recently back
    rows.sort(key=lambda r: (r["back"], r["criticality"] if not r["back"] else -r["_back_at"]))
    return rows


def public(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the page-only keys (epoch times) before a row goes to the JSON API."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


# --- page data -------------------------------------------------------------------------------


def _app_row(daemon: Daemon, c: ComponentStatus, snap: Snapshot) -> dict[str, Any]:
    spec = daemon.health.engine.topology.components[c.id]
    return {
        "id": c.id,
        "name": spec.name or c.id,
        "criticality": spec.criticality,
        "state": c.state.name,
        "failing": c.state.failing or c.state is State.UNKNOWN,
        "since": c.since,
        "degraded_mode": spec.degraded_mode,
        "runbook_url": safe_url(spec.runbook_url),
        "roots": [{"id": r, "name": name_of(daemon, r)} for r in c.roots if r != c.id],
        "incident": _incident_of(c, snap),
        "maintenance": c.maintenance,
    }


def _incident_of(c: ComponentStatus, snap: Snapshot) -> str | None:
    """Return the id of the open incident explaining a component, if any."""
    for incident in snap.incidents.values():
        if c.id == incident.root_cause or c.id in incident.impacted:
            return incident.id
        if any(r == incident.root_cause for r in c.roots):
            return incident.id
    return None


def overview(daemon: Daemon) -> dict[str, Any]:
    """What the crisis cell sees first: sites, open incidents, applications, failing checks."""
    snap = daemon.health.engine.snapshot
    topo = daemon.health.engine.topology
    sites = site_rows(daemon)
    sites.sort(key=lambda s: (topo.datacenter(s["id"]), s["parent"] is not None, s["id"]))
    incidents = []
    for i in ordered_incidents(snap):
        data = api.incident_json(i)
        data["started"] = i.started_at
        data["root_name"] = topo.site_name(i.site) if i.site_wide else name_of(daemon, i.root_cause)
        data["site_name"] = topo.site_name(i.site) if i.site else ""
        data["causes"] = [
            {"id": c, "name": name_of(daemon, c), "state": snap.components[c].state.name}
            for c in root_components(snap, i)
        ]
        data["down_apps"] = sum(1 for a in i.applications if a.state.failing)
        incidents.append(data)
    apps = [
        _app_row(daemon, snap.components[c], snap)
        for c in application_ids(daemon)
        if c in snap.components
    ]
    apps.sort(key=lambda a: (a["criticality"] or 5, not a["failing"], a["name"].lower()))
    failing_checks = [r for r in check_rows(daemon) if r["success"] is False]
    recovered = [r for r in recovery_rows(daemon, snap.at or None) if r["back"]]
    return {
        "now": time.time(),
        "evaluated": snap.at,
        "sites": sites,
        "incidents": incidents,
        "apps": apps,
        "apps_down": sum(1 for a in apps if a["failing"]),
        "warnings": [
            {"id": w.id, "name": name_of(daemon, w.id), "reasons": _reasons(w), "since": w.since}
            for w in snap.warnings.values()
        ],
        "failing_checks": failing_checks,
        "recovered": len(recovered),
    }


def _reasons(c: ComponentStatus) -> list[str]:
    return [bound_text(r) for r in c.reasons]


def root_components(snap: Snapshot, incident: Incident) -> list[str]:
    """The failing components at the root of an incident (a site's: those failing on their own)."""
    if not incident.site_wide:
        return [incident.root_cause]
    comps = snap.components
    return [c for c in incident.impacted if c in comps and comps[c].roots == (c,)]


def _timeline(daemon: Daemon, components: Iterable[str], since: float) -> list[dict[str, Any]]:
    """State changes of these components from `since` on, oldest first."""
    history: StateHistory = daemon.history
    events: list[dict[str, Any]] = []
    for cid in dict.fromkeys(components):
        previous = ""
        for t in history.transitions(cid):
            # the first state seen is no change unless Vigie started during the outage
            if t.at >= since and (previous or t.state is not State.OK):
                events.append(
                    {
                        "at": t.at,
                        "id": cid,
                        "name": name_of(daemon, cid),
                        "from": previous or "first seen",
                        "state": t.state.name,
                    }
                )
            previous = t.state.name
    events.sort(key=lambda e: (e["at"], ORDER.get(State[e["state"]], 9)))
    return events


def _blast_radius(daemon: Daemon, incident: Incident) -> list[str]:
    """Everything the incident's root can reach: impacted now, or impacted and recovered."""
    topo = daemon.health.engine.topology
    if incident.site_wide:
        start = list(topo.members.get(incident.site, ()))
    else:
        start = [incident.root_cause]
    seen = set(start)
    queue = collections.deque(start)
    while queue:
        for nxt in topo.dependents.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return sorted(seen)


def incident_page(daemon: Daemon, incident: Incident) -> dict[str, Any]:
    """Root cause, timeline, impacted applications with degraded modes, what recovered."""
    snap = daemon.health.engine.snapshot
    topo = daemon.health.engine.topology
    data = api.incident_json(incident)
    comps = snap.components
    roots = root_components(snap, incident)
    root_name = (
        topo.site_name(incident.site)
        if incident.site_wide
        else name_of(daemon, incident.root_cause)
    )
    causes = [
        {
            "id": r,
            "name": name_of(daemon, r),
            "state": comps[r].state.name,
            "since": comps[r].since,
            "reasons": _reasons(comps[r]),
        }
        for r in roots
        if r in comps
    ]
    apps = sorted(incident.applications, key=lambda a: (a.criticality, a.name.lower()))
    reach = _blast_radius(daemon, incident)
    margin = 300.0  # show what led to the incident too
    now = snap.at or time.time()
    recovered: list[dict[str, Any]] = []
    for cid in reach:
        rec = daemon.history.recovery(cid, now)
        status = comps.get(cid)
        if (
            rec is None
            or rec.back_at is None
            or status is None
            or status.state.failing
            or rec.down_since is None
            or rec.down_since < incident.started_at - margin
        ):
            continue
        recovered.append(
            {
                "id": cid,
                "name": name_of(daemon, cid),
                "kind": topo.components[cid].kind,
                "down_since": rec.down_since,
                "back_at": rec.back_at,
                "stable_for": rec.stable_for,
            }
        )
    recovered.sort(
        key=lambda r: (
            topo.components[r["id"]].kind not in APPLICATION_KINDS,
            tier_of(daemon, r["id"]),
            r["back_at"],
        )
    )
    recovered_ids = [r["id"] for r in recovered]
    timeline = _timeline(
        daemon, [*roots, *incident.impacted, *recovered_ids], incident.started_at - margin
    )
    return {
        "now": time.time(),
        "incident": data,
        "started": incident.started_at,
        "root_name": root_name,
        "site_name": topo.site_name(incident.site) if incident.site else "",
        "causes": causes,
        "apps": [
            {
                "id": a.id,
                "name": a.name,
                "criticality": a.criticality,
                "state": a.state.name,
                "since": comps[a.id].since if a.id in comps else None,
                "degraded_mode": a.degraded_mode,
                "runbook_url": safe_url(a.runbook_url),
                "team": a.team,
            }
            for a in apps
        ],
        "runbook_url": safe_url(incident.runbook_url),
        "impacted_other": [
            {
                "id": c,
                "name": name_of(daemon, c),
                "kind": topo.components[c].kind,
                "state": comps[c].state.name,
            }
            for c in incident.impacted
            if c in comps and topo.components[c].kind not in APPLICATION_KINDS
        ],
        "timeline": timeline,
        "recovered": recovered,
    }


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={bound_text(v, MAX_LABEL_CHARS)}" for k, v in labels)


def component_page(daemon: Daemon, cid: str) -> dict[str, Any]:
    """A component's checks with their last results and history, dependencies, dependents."""
    engine = daemon.health.engine
    topo = engine.topology
    snap = engine.snapshot
    spec = topo.components[cid]
    status = snap.components.get(cid)
    checks = []
    for check_id in engine.component_checks.get(cid, ()):
        check = daemon.scheduler.plan.get(check_id)
        result = daemon.store.latest(check_id)
        samples = [] if result is None else list(result.samples)
        checks.append(
            {
                "id": check_id,
                "kind": check.kind if check else "",
                "target": check.target if check else "",
                "interval": check.interval if check else 0,
                "success": None if result is None else result.success,
                "error": None
                if result is None or result.error is None
                else bound_text(result.error),
                "at": None if result is None else result.timestamp,
                "duration": None if result is None else result.duration,
                "samples": [
                    {"name": s.name, "labels": _labels(s.labels), "value": s.value}
                    for s in samples[:MAX_SAMPLES]
                ],
                "more_samples": max(0, len(samples) - MAX_SAMPLES),
                "history": [
                    {
                        "at": r.timestamp,
                        "success": r.success,
                        "duration": r.duration,
                        "error": None if r.error is None else bound_text(r.error, 200),
                    }
                    for r in reversed(daemon.store.history(check_id))
                ],
            }
        )
    deps = []
    for dep in topo.deps.get(cid, ()):
        members = dependency_members(dep)
        need = getattr(dep, "need", 1)
        deps.append(
            {
                "group": not isinstance(dep, str),
                "need": need,
                "members": [_ref(daemon, m, snap) for m in members],
            }
        )
    return {
        "now": time.time(),
        "id": cid,
        "name": spec.name or cid,
        "kind": spec.kind,
        "site": topo.site_name(spec.site) if spec.site else "",
        "criticality": spec.criticality,
        "team": spec.team,
        "runbook_url": safe_url(spec.runbook_url),
        "degraded_mode": spec.degraded_mode,
        "status": None if status is None else api.component_json(status),
        "since": None if status is None else status.since,
        "roots": []
        if status is None
        else [_ref(daemon, r, snap) for r in status.roots if r != cid],
        "checks": checks,
        "deps": deps,
        "dependents": [_ref(daemon, d, snap) for d in sorted(set(topo.dependents.get(cid, ())))],
        "transitions": [
            {"at": t.at, "state": t.state.name} for t in reversed(daemon.history.transitions(cid))
        ],
        "incident": None if status is None else _incident_of(status, snap),
        "budget": _budget(daemon, cid),
    }


def _budget(daemon: Daemon, cid: str) -> dict[str, Any] | None:
    """The component's detection budget with the names of what decides it, or None."""
    budgets = daemon.loaded.budget()
    budget = budgets.components.get(cid)
    if budget is None:
        return None
    row = budget_json(budget, budgets.target(budget))
    row["via_name"] = name_of(daemon, budget.via)
    return row


def _ref(daemon: Daemon, cid: str, snap: Snapshot) -> dict[str, Any]:
    status = snap.components.get(cid)
    return {
        "id": cid,
        "name": name_of(daemon, cid),
        "state": status.state.name if status is not None else "UNKNOWN",
    }


# --- handlers --------------------------------------------------------------------------------


def _html(
    request: web.Request, template: str, /, http_status: int = 200, **context: Any
) -> web.Response:
    # Every page tells the crisis cell when Vigie itself runs degraded (state_dir unwritable).
    monitor = getattr(request.app[DAEMON_KEY], "state_dir", None)
    notice = monitor.summary() if monitor is not None else None
    text = request.app[PAGES_KEY].render(template, vigie_notice=notice, **context)
    return web.Response(text=text, status=http_status, content_type="text/html", charset="utf-8")


async def overview_page(request: web.Request) -> web.Response:
    """Serve the overview: sites, open incidents, applications by criticality."""
    return _html(request, "overview.html", **overview(request.app[DAEMON_KEY]))


async def incident_handler(request: web.Request) -> web.Response:
    """Serve one open incident; a closed one points to the recovery board."""
    daemon = request.app[DAEMON_KEY]
    wanted = request.match_info["id"]
    snap = daemon.health.engine.snapshot
    for incident in snap.incidents.values():
        if incident.id == wanted:
            return _html(request, "incident.html", **incident_page(daemon, incident))
    return _html(
        request,
        "notfound.html",
        http_status=404,
        now=time.time(),
        what=f"incident {bound_text(wanted, 120)}",
        hint="It may have been resolved: see the recovery board.",
    )


async def component_handler(request: web.Request) -> web.Response:
    """Serve one component's checks, results, history and dependencies."""
    daemon = request.app[DAEMON_KEY]
    cid = request.match_info["id"]
    if cid not in daemon.health.engine.topology.components:
        return _html(
            request,
            "notfound.html",
            http_status=404,
            now=time.time(),
            what=f"component {bound_text(cid, 120)}",
            hint="It is not in the configured topology.",
        )
    return _html(request, "component.html", **component_page(daemon, cid))


async def recovery_handler(request: web.Request) -> web.Response:
    """Serve the recovery board: what is still down and what has come back, since when."""
    daemon = request.app[DAEMON_KEY]
    rows = recovery_rows(daemon)
    return _html(
        request,
        "recovery.html",
        now=time.time(),
        rows=rows,
        down=sum(1 for r in rows if not r["back"]),
        back=sum(1 for r in rows if r["back"]),
    )


async def checks_handler(request: web.Request) -> web.Response:
    """Serve the plain list of checks with their last result."""
    return _html(
        request, "checks.html", now=time.time(), checks=check_rows(request.app[DAEMON_KEY])
    )


def add_routes(app: web.Application) -> None:
    """Register the status pages (and their template environment) on app."""
    app[PAGES_KEY] = Pages.create()
    app.router.add_get("/", overview_page)
    app.router.add_get("/incident/{id}", incident_handler)
    app.router.add_get("/component/{id}", component_handler)
    app.router.add_get("/recovery", recovery_handler)
    app.router.add_get("/checks", checks_handler)
    app.router.add_get("/api/v1/recovery", recovery_api)


async def recovery_api(request: web.Request) -> web.Response:
    """List applications that failed: state, down since, back at, stable for (JSON)."""
    return web.json_response(public(recovery_rows(request.app[DAEMON_KEY])))
