"""Roles, the audit log's page and API, and incident updates posted by operators.

Two roles: `viewer` reads the pages and the read API; `operator` also acts (maintenance
windows, incident updates, acknowledgements made on the page or the API, reload). The config's
`web.roles` maps basic-auth users (web.yml's basic_auth_users) and client-certificate subjects
(when web.yml asks for client certificates) to a role; anyone authenticated and not listed is a
viewer. Without `web.roles`, there are no roles: whoever reaches the web may act, as before.
Every request that changes something (any method but GET/HEAD/OPTIONS) needs the operator role
(one middleware: no route can forget it), except the signed acknowledgement links of pages
(/ack/), whose token is their own authority; a change whose Origin is another site is refused
(a browser's saved password must not let another page act). Every operator action goes in
the audit log with who, what, when and from where.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from vigie.core.results import bound_text
from vigie.core.sanitise import sanitise
from vigie.monitor.audit import MAX_TEXT, UPDATE, Action, AuditLog
from vigie.monitor.i18n import ANONYMOUS, Speech, negotiate
from vigie.monitor.web.keys import SOURCE_KEY

VIEWER = "viewer"
OPERATOR = "operator"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_BODY = 4096
AUDIT_SHOWN = 500

USER_KEY: web.RequestKey[str] = web.RequestKey("vigie_user", str)
"""Where web.yml's basic-auth middleware leaves the user it checked (request[USER_KEY])."""


@dataclass(frozen=True, slots=True)
class Roles:
    """The config's web.roles: who is an operator; None: no roles (everyone may act)."""

    mapping: Mapping[str, str] | None = None

    def role(self, user: str | None, subject: str | None, common_name: str | None) -> str:
        """Return the role of a basic-auth user and/or a certificate (the higher of the two)."""
        if self.mapping is None:
            return OPERATOR
        found = [self.mapping.get(k) for k in (user, subject, common_name) if k]
        return OPERATOR if OPERATOR in found else VIEWER


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sends a request, how they were known, their role and address."""

    who: str
    via: str
    role: str
    remote: str

    @property
    def operator(self) -> bool:
        """True when they may act."""
        return self.role == OPERATOR


@dataclass(frozen=True, slots=True)
class Operations:
    """What the web needs to check roles, record actions and show updates."""

    roles: Roles
    audit: AuditLog
    on_update: Callable[[], None] = lambda: None
    """Called after an incident update: the daemon re-sends the incident's alert with it."""


OPS_KEY: web.AppKey[Operations] = web.AppKey("operations", Operations)


def certificate(request: web.Request) -> tuple[str | None, str | None]:
    """Return the verified client certificate's subject ('O=...,CN=...') and CN, or Nones."""
    transport = request.transport
    cert: Any = None if transport is None else transport.get_extra_info("peercert")
    if not cert:  # no certificate, or one the TLS layer did not verify
        return None, None
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "localityName": "L",
        "stateOrProvinceName": "ST",
    }
    parts: list[str] = []
    common: str | None = None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            parts.append(f"{short.get(name, name)}={value}")
            if name == "commonName":
                common = f"CN={value}"
    return (",".join(parts) or None), common


def principal(request: web.Request) -> Principal:
    """Return who sends this request and their role."""
    ops = request.app.get(OPS_KEY)
    roles = ops.roles if ops is not None else Roles()
    user = request.get(USER_KEY)
    subject, common = certificate(request)
    role = roles.role(user, subject, common)
    if user:
        who, via = user, "basic_auth"
    elif subject:
        who, via = subject, "certificate"
    else:
        who, via = ANONYMOUS, ANONYMOUS
    return Principal(sanitise(who)[:200], via, role, request.remote or "")


def may_operate(request: web.Request) -> bool:
    """True when this request's sender may act (forms for actions are shown to them only)."""
    return principal(request).operator


def record(
    request: web.Request,
    action: str,
    target: str = "",
    detail: str = "",
    expected: float | None = None,
) -> Action | None:
    """Write an operator action in the audit log, as the request's sender; None without a log."""
    ops = request.app.get(OPS_KEY)
    if ops is None:
        return None
    p = principal(request)
    return ops.audit.record(
        who=p.who,
        role=p.role,
        via=p.via,
        remote=p.remote,
        action=action,
        target=target,
        detail=detail,
        expected=expected,
    )


def record_link(request: web.Request, receiver: str, target: str, detail: str) -> Action | None:
    """Write an acknowledgement made through a paged link: the receiver it was sent to acts."""
    ops = request.app.get(OPS_KEY)
    if ops is None:
        return None
    return ops.audit.record(
        who=receiver,
        role="receiver",
        via="link",
        remote=request.remote or "",
        action="acknowledge",
        target=target,
        detail=detail,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def require_operator(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 403 naming the role needed to any change (not GET) from someone not an operator."""
    if request.method in SAFE_METHODS or request.path.startswith("/ack/"):
        return await handler(request)
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        # a page of another site posting with the browser's saved credentials (CSRF)
        return web.Response(status=403, text="Forbidden: a request from another site.\n")
    p = principal(request)
    if p.operator:
        return await handler(request)
    if request.path.startswith("/api/"):
        message = f"this needs the operator role; {p.who} is a {p.role}"
        return web.json_response({"error": message, "role_needed": OPERATOR}, status=403)
    return refusal(request, p)


def refusal(request: web.Request, p: Principal) -> web.Response:
    """403 for a page: the role needed and the sender's, in the reader's language."""
    source = request.app.get(SOURCE_KEY)
    default = source.speech().language if source is not None else "en"
    sp = Speech(negotiate(request.headers.get("Accept-Language"), default))
    text = sp.t(
        "forbidden.role",
        role=sp.t("role." + OPERATOR),
        who=sp.who(p.who),
        has=sp.t("role." + p.role),
    )
    return web.Response(status=403, text=text + "\n")


# --- incident updates --------------------------------------------------------------------------


def update_json(a: Action) -> dict[str, Any]:
    """An incident update as the API shows it."""
    out = a.json()
    return {
        "incident": a.target,
        "at": out["at"],
        "by": a.who,
        "text": a.detail,
        "expected_recovery": out["expected_recovery"],
    }


def parse_expected(value: object, now: datetime) -> float | None:
    """Read an expected recovery: ISO 8601, or 'HH:MM' today (tomorrow if past) in now's zone."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("expected_recovery: an ISO 8601 time or HH:MM")
    text = value.strip()
    try:
        if len(text) <= 5 and ":" in text:
            hour, minute = (int(x) for x in text.split(":"))
            at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if at < now:
                at = at.fromtimestamp(at.timestamp() + 86400, at.tzinfo)
            return at.timestamp()
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected_recovery: an ISO 8601 time or HH:MM") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=now.tzinfo)
    return parsed.timestamp()


def _open_incident(request: web.Request, wanted: str) -> str | None:
    """Return the id of the open incident named (by id or key), None when none is open."""
    for incident in request.app[SOURCE_KEY].snapshot().incidents.values():
        if wanted in (incident.id, incident.key):
            return incident.id
    return None


def _post_update(request: web.Request, incident: str, text: object, expected: object) -> Action:
    """Check and record an update; raise ValueError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text: a short sentence is needed")
    if len(text) > MAX_TEXT:
        raise ValueError(f"text: at most {MAX_TEXT} characters")
    speech: Speech = request.app[SOURCE_KEY].speech()
    at = parse_expected(expected, datetime.now(speech.zone))
    done = record(request, UPDATE, incident, text.strip(), at)
    assert done is not None  # the routes are only added with an Operations
    request.app[OPS_KEY].on_update()
    return done


async def api_post_update(request: web.Request) -> web.Response:
    """Post an update on an open incident: {"text": ..., "expected_recovery": "16:00"}."""
    incident = _open_incident(request, request.match_info["id"])
    if incident is None:
        return web.json_response({"error": "no open incident with this id"}, status=404)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return web.json_response({"error": "body too large"}, status=413)
    try:
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError('expected {"text": "...", "expected_recovery": "16:00"}')
        done = _post_update(request, incident, body.get("text"), body.get("expected_recovery"))
    except ValueError as exc:
        return web.json_response({"error": bound_text(str(exc))}, status=400)
    return web.json_response(update_json(done), status=201)


async def api_updates(request: web.Request) -> web.Response:
    """List an incident's updates, newest first."""
    ops = request.app[OPS_KEY]
    return web.json_response([update_json(a) for a in ops.audit.updates(request.match_info["id"])])


async def form_post_update(request: web.Request) -> web.Response:
    """The incident page's form: post the update, then back to the incident page."""
    wanted = request.match_info["id"]
    incident = _open_incident(request, wanted)
    if incident is None:
        return web.Response(status=404, text="No open incident with this id.\n")
    if (request.content_length or 0) > MAX_BODY:
        return web.Response(status=413, text="Body too large.\n")
    form = await request.post()
    try:
        _post_update(request, incident, form.get("text"), form.get("expected_recovery"))
    except ValueError as exc:
        return web.Response(status=400, text=bound_text(str(exc)) + "\n")
    raise web.HTTPSeeOther(f"/incident/{incident}")


@dataclass(frozen=True, slots=True)
class UpdateForm:
    """The form posting an update on an open incident (operators only; the page never refreshes)."""

    now: float
    id: str
    summary: str
    severity: str
    root_name: str


async def form_page(request: web.Request) -> web.Response:
    """Serve the update form to an operator; a viewer gets 403 naming the role needed."""
    import time

    from vigie.monitor.web.pages import page_response

    p = principal(request)
    if not p.operator:
        return refusal(request, p)
    wanted = request.match_info["id"]
    for incident in request.app[SOURCE_KEY].snapshot().incidents.values():
        if incident.id == wanted:
            form = UpdateForm(
                now=time.time(),
                id=incident.id,
                summary=incident.summary,
                severity=incident.severity,
                root_name=incident.root_cause,
            )
            return page_response(request, "update.html", form)
    return web.Response(status=404, text="No open incident with this id.\n")


def incident_updates(request: web.Request, incident: str) -> list[Action]:
    """An incident's updates for its page, newest first ([] without an audit log)."""
    ops = request.app.get(OPS_KEY)
    return [] if ops is None else ops.audit.updates(incident)


def latest_updates(request: web.Request) -> dict[str, Action]:
    """The newest update of each open incident, for the overview."""
    ops = request.app.get(OPS_KEY)
    if ops is None:
        return {}
    incidents = request.app[SOURCE_KEY].snapshot().incidents.values()
    return ops.audit.latest_updates([i.id for i in incidents])


# --- the audit page and API ---------------------------------------------------------------------


async def api_audit(request: web.Request) -> web.Response:
    """List operator actions, newest first (?limit=, at most 5000)."""
    try:
        limit = max(0, min(5000, int(request.query.get("limit", AUDIT_SHOWN))))
    except ValueError:
        return web.json_response({"error": "limit: a number"}, status=400)
    return web.json_response([a.json() for a in request.app[OPS_KEY].audit.recent(limit)])


@dataclass(frozen=True, slots=True)
class AuditPage:
    """The audit page: the latest operator actions, newest first."""

    now: float
    actions: tuple[Action, ...]


async def audit_page(request: web.Request) -> web.Response:
    """Serve the audit log: who did what, when, from where."""
    import time

    from vigie.monitor.web.pages import page_response

    page = AuditPage(now=time.time(), actions=tuple(request.app[OPS_KEY].audit.recent()))
    return page_response(request, "audit.html", page)


def add_routes(app: web.Application) -> None:
    """Check roles on every change; add the audit and incident-update routes.

    Until configure() gives the daemon's, there are no roles and the log is in memory only.
    """
    app[OPS_KEY] = Operations(Roles(), AuditLog(None))
    app.middlewares.append(require_operator)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/api/v1/audit", api_audit)
    app.router.add_get("/api/v1/incidents/{id}/updates", api_updates)
    app.router.add_post("/api/v1/incidents/{id}/updates", api_post_update)
    app.router.add_get("/incident/{id}/update", form_page)
    app.router.add_post("/incident/{id}/updates", form_post_update)


def configure(app: web.Application, ops: Operations) -> None:
    """Give the application the daemon's roles, audit log and update hook (before it starts)."""
    app[OPS_KEY] = ops
