"""Acknowledgement routes: the signed link sent in pages, and the operators' API.

GET /ack/{token} only shows the incident and a button: mail scanners and SMS link previews
fetch links, and must not acknowledge. POST /ack/{token} acknowledges as the receiver the link
was sent to. The link needs no login (it arrives by SMS): the signed token is the credential,
so web.yml's basic auth lets /ack/ through. POST /api/v1/acknowledgements is for operators
(behind basic auth when web.yml sets it) and records the logged-in user.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from vigie.core.results import bound_text
from vigie.core.sanitise import sanitise
from vigie.monitor.alerting.ack import BadToken
from vigie.monitor.alerting.escalation import Escalation, Escalations, UnknownEscalation
from vigie.monitor.web import operators

ESCALATIONS_KEY: web.AppKey[Escalations] = web.AppKey("escalations")
MAX_BODY = 4096

_PAGE = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Vigie: {title}</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:1em auto;padding:0 1em}}
button{{font-size:1.4em;padding:.5em 1em}}.ok{{color:#060}}.bad{{color:#a00}}
td,th{{padding:.2em .5em;text-align:left;border-bottom:1px solid #ddd}}</style>
</head><body><h1>{title}</h1>{body}</body></html>
"""


def _html(title: str, body: str, status: int = 200) -> web.Response:
    page = _PAGE.format(title=html.escape(title), body=body)
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _when(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def escalation_json(esc: Escalation) -> dict[str, Any]:
    """Return an escalation as the API shows it."""
    return {
        "id": esc.id,
        "incident": esc.alert_key,
        "team": esc.team,
        "tier": esc.tier,
        "summary": esc.summary,
        "level": esc.level + 1,
        "opened": esc.opened,
        "next_due": esc.due,
        "acknowledged_by": esc.acked_by,
        "acknowledged_at": esc.acked_at,
        "acknowledged_via": esc.ack_via,
        "time_to_acknowledge": None if esc.acked_at is None else esc.acked_at - esc.opened,
        "resolved_at": esc.resolved_at,
        "silence": esc.silence,
        "timeline": [{"at": at, "event": what, "detail": d} for at, what, d in esc.events],
    }


def _state(esc: Escalation) -> str:
    if esc.acknowledged:
        who = html.escape(esc.acked_by or "")
        return f'<p class="ok">Pris en compte par {who} le {_when(esc.acked_at)}.</p>'
    if not esc.open:
        return f'<p class="ok">Incident résolu le {_when(esc.resolved_at)}.</p>'
    return ""


async def ack_page(request: web.Request) -> web.Response:
    """Show the incident a link is for, with the button that acknowledges it."""
    escalations = request.app[ESCALATIONS_KEY]
    try:
        esc, receiver = escalations.check_token(request.match_info["token"])
    except (BadToken, UnknownEscalation) as exc:
        reason = exc.args[0] if isinstance(exc, BadToken) else "unknown incident"
        return _html("Lien invalide", f'<p class="bad">{html.escape(str(reason))}</p>', 403)
    body = (
        f"<p><strong>{html.escape(esc.summary)}</strong></p>"
        f"<p>Équipe {html.escape(esc.team)}, niveau {esc.level + 1}, "
        f"depuis {_when(esc.opened)}.</p>"
    )
    state = _state(esc)
    if state:
        return _html("Incident", body + state)
    body += (
        '<form method="post"><button type="submit">Je prends en compte</button></form>'
        f"<p>En tant que {html.escape(receiver)}.</p>"
    )
    return _html("Incident", body)


async def ack_post(request: web.Request) -> web.Response:
    """Acknowledge the incident as the receiver the link was sent to."""
    escalations = request.app[ESCALATIONS_KEY]
    try:
        esc, receiver = escalations.check_token(request.match_info["token"])
    except (BadToken, UnknownEscalation) as exc:
        reason = exc.args[0] if isinstance(exc, BadToken) else "unknown incident"
        return _html("Lien invalide", f'<p class="bad">{html.escape(str(reason))}</p>', 403)
    done = escalations.acknowledge(esc.id, receiver, "link")
    operators.record_link(request, receiver, esc.alert_key, done.summary)
    return _html("Incident", f"<p>{html.escape(done.summary)}</p>" + _state(done))


def _operator(request: web.Request, given: object) -> str:
    """Return the logged-in user (basic auth, checked by web.yml's middleware) or the body's."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            user = ""
        if user:
            return sanitise(user)[:100]
    if isinstance(given, str) and given.strip():
        return sanitise(given.strip())[:100]
    return "operator"


async def api_acknowledge(request: web.Request) -> web.Response:
    """Acknowledge every open escalation of an incident: {"incident": key, "by": name}."""
    escalations = request.app[ESCALATIONS_KEY]
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return web.json_response({"error": "body too large"}, status=413)
    try:
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict) or not isinstance(body.get("incident"), str):
            raise ValueError('expected {"incident": "<incident alert key>"}')
    except ValueError as exc:
        return web.json_response({"error": bound_text(str(exc))}, status=400)
    by = _operator(request, body.get("by"))
    try:
        done = escalations.acknowledge_incident(body["incident"], by, "api")
    except UnknownEscalation:
        return web.json_response({"error": "no open escalation for this incident"}, status=404)
    operators.record(request, "acknowledge", body["incident"], f"as {by}")
    return web.json_response([escalation_json(e) for e in done])


async def api_escalations(request: web.Request) -> web.Response:
    """List the escalations kept (open and recently closed), with their timelines."""
    escalations = request.app[ESCALATIONS_KEY]
    return web.json_response([escalation_json(e) for e in escalations.all()])


def team_summary(escalations: list[Escalation]) -> dict[str, dict[str, Any]]:
    """Per team: escalations, acknowledged, unacknowledged (open or resolved), median time."""
    out: dict[str, dict[str, Any]] = {}
    for esc in escalations:
        row = out.setdefault(
            esc.team,
            {"escalations": 0, "acknowledged": 0, "unacknowledged": 0, "open": 0, "times": []},
        )
        row["escalations"] += 1
        row["open"] += esc.open
        if esc.acked_at is not None:
            row["acknowledged"] += 1
            row["times"].append(esc.acked_at - esc.opened)
        elif esc.level >= 0:
            row["unacknowledged"] += 1
    for row in out.values():
        times = sorted(row.pop("times"))
        row["median_time_to_acknowledge"] = times[len(times) // 2] if times else None
    return dict(sorted(out.items()))


async def api_summary(request: web.Request) -> web.Response:
    """Per-team figures over the escalations kept (7 days): for post-incident reports."""
    return web.json_response(team_summary(request.app[ESCALATIONS_KEY].all()))


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.0f} min"


async def escalations_page(request: web.Request) -> web.Response:
    """The escalations kept: unacknowledged open ones in red, and per-team figures."""
    kept = request.app[ESCALATIONS_KEY].all()
    rows = []
    for esc in reversed(kept):
        unacked = esc.open and not esc.acknowledged and esc.level >= 0
        state = (
            f"pris en compte par {html.escape(esc.acked_by or '')}"
            if esc.acknowledged
            else ("NON PRIS EN COMPTE" if unacked else "")
        )
        if not esc.open:
            state += (", " if state else "") + "résolu"
        tta = _minutes(None if esc.acked_at is None else esc.acked_at - esc.opened)
        style = ' class="bad"' if unacked else ""
        rows.append(
            f"<tr{style}><td>{_when(esc.opened)}</td><td>{html.escape(esc.team)}</td>"
            f"<td>{html.escape(esc.summary)}</td><td>{esc.level + 1}</td>"
            f"<td>{state}</td><td>{tta}</td></tr>"
        )
    teams = "".join(
        f"<tr><td>{html.escape(team)}</td><td>{row['escalations']}</td>"
        f"<td>{row['acknowledged']}</td><td>{row['unacknowledged']}</td>"
        f"<td>{_minutes(row['median_time_to_acknowledge'])}</td></tr>"
        for team, row in team_summary(kept).items()
    )
    body = (
        "<table><tr><th>Début</th><th>Équipe</th><th>Incident</th><th>Niveau</th>"
        f"<th>État</th><th>Délai de prise en compte</th></tr>{''.join(rows)}</table>"
        "<h2>Par équipe (7 jours)</h2><table><tr><th>Équipe</th><th>Escalades</th>"
        "<th>Prises en compte</th><th>Sans prise en compte</th><th>Délai médian</th></tr>"
        f"{teams}</table>"
    )
    return _html("Astreinte : escalades", body)


def add_routes(app: web.Application, escalations: Escalations) -> None:
    """Register the acknowledgement routes on an application."""
    app[ESCALATIONS_KEY] = escalations
    app.router.add_get("/ack/{token}", ack_page)
    app.router.add_post("/ack/{token}", ack_post)
    app.router.add_post("/api/v1/acknowledgements", api_acknowledge)
    app.router.add_get("/api/v1/escalations", api_escalations)
    app.router.add_get("/api/v1/escalations/summary", api_summary)
    app.router.add_get("/escalations", escalations_page)
