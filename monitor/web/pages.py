"""The status page for the crisis cell: overview, incident, component, recovery board, checks.

Server-rendered with Jinja2 (autoescape on), inline CSS, no JavaScript and no external asset
so it works with the internet down, refreshing itself with a meta refresh. Each page is a plain
dataclass (monitor.web.views) built from the read model (monitor.web.readmodel.StatusSource)
with the same functions as the JSON API (monitor.web.api), so page and API never disagree.
Everything a device or target sent (error texts, sample labels) is untrusted: bounded with
bound_text here and escaped by Jinja2.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from vigie.core.results import bound_text
from vigie.monitor.health.history import Transition
from vigie.monitor.health.model import APPLICATION_KINDS
from vigie.monitor.health.snapshot import ComponentStatus, Incident, Snapshot
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import dependency_members
from vigie.monitor.health.wording import mains_lost_at
from vigie.monitor.i18n import Speech, Text, negotiate
from vigie.monitor.web import api, svg
from vigie.monitor.web.keys import SOURCE_KEY
from vigie.monitor.web.operators import incident_updates, latest_updates, may_operate
from vigie.monitor.web.readmodel import Paging, StatusSource, TopologyView
from vigie.monitor.web.views import (
    AppRow,
    BudgetView,
    Cause,
    Change,
    CheckDetail,
    ChecksPage,
    ComponentPage,
    ComponentRef,
    DepGroup,
    ImpactedRow,
    IncidentCard,
    IncidentPage,
    KindRef,
    NotFound,
    Overview,
    Page,
    Recovered,
    RecoveryBoard,
    RecoveryRow,
    ResultRow,
    SampleRow,
    TransitionRow,
    WarningRow,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

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
        env.filters["clock"] = _clock
        env.filters["ago"] = _ago
        env.filters["who"] = _who
        env.filters["state"] = _state
        env.filters["say"] = _say
        env.filters["reason"] = _reason
        env.filters["state_class"] = state_class
        env.filters["safe_url"] = safe_url
        env.filters["path"] = lambda value: quote(str(value), safe="")
        svg.install(env)  # restoration_curve, outage_bars, month_strip, strip_legend
        return cls(env)

    def render(
        self,
        name: str,
        page: Page | DataclassInstance,
        /,
        sp: Speech | None = None,
        **context: Any,
    ) -> str:
        """Render one template in a reader's language: the page's fields are its variables."""
        sp = sp or Speech("en")
        data = {f.name: getattr(page, f.name) for f in fields(page)}
        return self.env.get_template(name).render(
            refresh=REFRESH_SECONDS, sp=sp, t=sp.t, **data, **context
        )


PAGES_KEY: web.AppKey[Pages] = web.AppKey("pages", Pages)


# --- formatting ------------------------------------------------------------------------------


def clock(ts: float | None) -> str:
    """Return an epoch time as local date and time, as staff read it on the wall."""
    if ts is None or ts <= 0:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%d/%m %H:%M:%S")


@jinja2.pass_context
def _clock(ctx: jinja2.runtime.Context, ts: float | None) -> str:
    """A time in the reader's zone, with the zone: `02/12 02:47 CET`."""
    speech: Speech = ctx["sp"]
    return speech.clock(ts)


@jinja2.pass_context
def _who(ctx: jinja2.runtime.Context, name: str) -> str:
    """Who acted, in the reader's language (the anonymous visitor is translated)."""
    speech: Speech = ctx["sp"]
    return speech.who(name)


@jinja2.pass_context
def _ago(ctx: jinja2.runtime.Context, seconds: float | None) -> str:
    """A duration in the reader's language."""
    speech: Speech = ctx["sp"]
    return speech.duration(seconds)


@jinja2.pass_context
def _state(ctx: jinja2.runtime.Context, name: str) -> str:
    """A state's name in the reader's language (the CSS class keeps the English id)."""
    speech: Speech = ctx["sp"]
    return speech.state(name)


@jinja2.pass_context
def _say(ctx: jinja2.runtime.Context, text: str) -> str:
    """An engine sentence (a Text) in the reader's language; other text as it is, bounded."""
    speech: Speech = ctx["sp"]
    return bound_text(speech.say(text))


@jinja2.pass_context
def _reason(ctx: jinja2.runtime.Context, text: str) -> tuple[str, str]:
    """A reason as (plain words, technical detail shown small): a rule's text first."""
    speech: Speech = ctx["sp"]
    if isinstance(text, Text) and text.key == "reason.rule_text":
        what = text.params["what"]
        detail = f"{text.params['check']}: {text.params['rule']}: {text.params['seen']}"
        return bound_text(speech.say(what if isinstance(what, str) else "")), bound_text(detail)
    return bound_text(speech.say(text)), ""


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


def name_of(topo: TopologyView, cid: str) -> str:
    """Return a component's human name, or its id."""
    spec = topo.components.get(cid)
    return spec.name if spec is not None and spec.name else cid


def tier_of(topo: TopologyView, cid: str) -> int:
    """Return a component's criticality (5 when unset, so it sorts after tier 4)."""
    spec = topo.components.get(cid)
    return spec.criticality if spec is not None and spec.criticality is not None else 5


site_rows = api.site_rows
check_rows = api.check_rows
ordered_incidents = api.ordered_incidents


def application_ids(topo: TopologyView) -> list[str]:
    """Applications by criticality, then name."""
    apps = [c for c, spec in topo.components.items() if spec.kind in APPLICATION_KINDS]
    return sorted(apps, key=lambda c: (tier_of(topo, c), name_of(topo, c).lower()))


OUTAGE_GAP = 600.0
"""An OK spell shorter than this inside an outage is a flap of it, not its end (the default
flap window): a flapping application is down since the outage began, not since its last flap."""


def outage_start(
    transitions: Iterable[Transition], down_since: float | None, gap: float = OUTAGE_GAP
) -> float | None:
    """Return when the outage holding `down_since` began, across OK spells shorter than gap."""
    if down_since is None:
        return None
    start: float | None = None
    ok_since: float | None = None
    for t in transitions:
        if t.at > down_since:
            break
        if t.state.failing:
            if start is None or (ok_since is not None and t.at - ok_since >= gap):
                start = t.at
            ok_since = None
        elif ok_since is None and start is not None:
            ok_since = t.at
    return down_since if start is None else min(start, down_since)


def recovery_rows(source: StatusSource, now: float | None = None) -> list[RecoveryRow]:
    """Each application that failed: state, down since, back at, stable for (API and page)."""
    now = time.time() if now is None else now
    snap = source.snapshot()
    topo = source.topology()
    rows: list[RecoveryRow] = []
    for rec in source.recoveries(application_ids(topo), now):
        status = snap.components.get(rec.component)
        state = status.state if status is not None else rec.state
        spec = topo.components.get(rec.component)
        rows.append(
            RecoveryRow(
                id=rec.component,
                name=name_of(topo, rec.component),
                criticality=tier_of(topo, rec.component),
                state=state.name,
                back=not state.failing,
                down_since=outage_start(source.transitions(rec.component), rec.down_since),
                back_at=rec.back_at,
                stable_for_seconds=None if rec.stable_for is None else round(rec.stable_for, 1),
                degraded_mode=spec.degraded_mode if spec is not None else "",
            )
        )
    # still down first, then back; most critical on top in each, then the longest down or the
    # most recently back
    rows.sort(
        key=lambda r: (
            r.back,
            r.criticality,
            -(r.back_at or 0.0) if r.back else (r.down_since or 0.0),
            r.name.lower(),
        )
    )
    return rows


# --- page data -------------------------------------------------------------------------------


def _ref(topo: TopologyView, cid: str, snap: Snapshot) -> ComponentRef:
    status = snap.components.get(cid)
    return ComponentRef(
        id=cid,
        name=name_of(topo, cid),
        state=status.state.name if status is not None else "UNKNOWN",
    )


def _app_row(topo: TopologyView, c: ComponentStatus, snap: Snapshot) -> AppRow:
    spec = topo.components[c.id]
    return AppRow(
        id=c.id,
        name=spec.name or c.id,
        criticality=spec.criticality,
        state=c.state.name,
        failing=c.state.failing or c.state is State.UNKNOWN,
        since=c.since,
        degraded_mode=spec.degraded_mode,
        runbook_url=safe_url(spec.runbook_url),
        roots=tuple(_ref(topo, r, snap) for r in c.roots if r != c.id),
        incident=_incident_of(c, snap),
        maintenance=c.maintenance,
    )


def _incident_of(c: ComponentStatus, snap: Snapshot) -> str | None:
    """Return the id of the open incident explaining a component, if any."""
    for incident in snap.incidents.values():
        if c.id == incident.root_cause or c.id in incident.impacted:
            return incident.id
        if any(r == incident.root_cause for r in c.roots):
            return incident.id
    return None


def _root_name(topo: TopologyView, incident: Incident) -> str:
    """The site's name for a site-wide incident, else the root component's."""
    if incident.site_wide:
        return topo.site_name(incident.site)
    return name_of(topo, incident.root_cause)


def _incident_card(
    topo: TopologyView, snap: Snapshot, i: Incident, paging: Mapping[str, Paging]
) -> IncidentCard:
    paged = paging.get(i.key)
    return IncidentCard(
        id=i.id,
        severity=i.severity,
        summary=i.summary,
        started=i.started_at,
        maintenance=i.maintenance,
        root_name=_root_name(topo, i),
        site_name=topo.site_name(i.site) if i.site else "",
        causes=tuple(
            ComponentRef(id=c, name=name_of(topo, c), state=snap.components[c].state.name)
            for c in root_components(snap, i)
        ),
        applications=i.applications,
        paged=paged is not None,
        acked_by=paged.acked_by if paged else None,
        acked_at=paged.acked_at if paged else None,
    )


def overview(source: StatusSource) -> Overview:
    """What the crisis cell sees first: sites, open incidents, applications, failing checks."""
    snap = source.snapshot()
    topo = source.topology()
    paging = source.paging()
    sites = site_rows(source)
    sites.sort(key=lambda s: (topo.datacenter(s.id), s.parent is not None, s.id))
    apps = [
        _app_row(topo, snap.components[c], snap)
        for c in application_ids(topo)
        if c in snap.components
    ]
    apps.sort(key=lambda a: (a.criticality or 5, not a.failing, a.name.lower()))
    recovered = [r for r in recovery_rows(source, snap.at or None) if r.back]
    return Overview(
        now=time.time(),
        evaluated=snap.at,
        sites=tuple(sites),
        incidents=tuple(_incident_card(topo, snap, i, paging) for i in ordered_incidents(snap)),
        apps=tuple(apps),
        apps_down=sum(1 for a in apps if a.failing),
        warnings=tuple(
            WarningRow(id=w.id, name=name_of(topo, w.id), reasons=_reasons(w), since=w.since)
            for w in snap.warnings.values()
        ),
        failing_checks=tuple(r for r in check_rows(source) if r.success is False),
        recovered=len(recovered),
    )


def _reasons(c: ComponentStatus) -> tuple[str, ...]:
    return tuple(bound_text(r) for r in c.reasons)


def root_components(snap: Snapshot, incident: Incident) -> list[str]:
    """The failing components at the root of an incident (a site's: those failing on their own)."""
    if not incident.site_wide:
        return [incident.root_cause]
    comps = snap.components
    return [c for c in incident.impacted if c in comps and comps[c].roots == (c,)]


def _timeline(
    source: StatusSource, topo: TopologyView, components: Iterable[str], since: float
) -> list[Change]:
    """State changes of these components from `since` on, oldest first."""
    events: list[Change] = []
    for cid in dict.fromkeys(components):
        previous = ""
        for t in source.transitions(cid):
            # the first state seen is no change unless Vigie started during the outage
            if t.at >= since and (previous or t.state is not State.OK):
                events.append(
                    Change(
                        at=t.at,
                        id=cid,
                        name=name_of(topo, cid),
                        was=previous or "first seen",
                        state=t.state.name,
                    )
                )
            previous = t.state.name
    events.sort(key=lambda e: (e.at, ORDER.get(State[e.state], 9)))
    return events


def _blast_radius(topo: TopologyView, incident: Incident) -> list[str]:
    """Everything the incident's root can reach: impacted now, or impacted and recovered."""
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


def _recovered(
    source: StatusSource, topo: TopologyView, snap: Snapshot, incident: Incident, margin: float
) -> list[Recovered]:
    """What the incident's reach had lost since it started (or just before) and got back."""
    comps = snap.components
    now = snap.at or time.time()
    recovered: list[Recovered] = []
    for cid in _blast_radius(topo, incident):
        rec = source.recovery(cid, now)
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
            Recovered(
                id=cid,
                name=name_of(topo, cid),
                kind=topo.components[cid].kind,
                down_since=rec.down_since,
                back_at=rec.back_at,
                stable_for=rec.stable_for,
            )
        )
    recovered.sort(
        key=lambda r: (
            topo.components[r.id].kind not in APPLICATION_KINDS,
            tier_of(topo, r.id),
            r.back_at,
        )
    )
    return recovered


def incident_page(source: StatusSource, incident: Incident) -> IncidentPage:
    """Root cause, timeline, impacted applications with degraded modes, what recovered."""
    snap = source.snapshot()
    topo = source.topology()
    comps = snap.components
    roots = root_components(snap, incident)
    causes = tuple(
        Cause(
            id=r,
            name=name_of(topo, r),
            state=comps[r].state.name,
            since=comps[r].since,
            reasons=_reasons(comps[r]),
        )
        for r in roots
        if r in comps
    )
    apps = sorted(incident.applications, key=lambda a: (a.criticality, a.name.lower()))
    margin = 300.0  # show what led to the incident too
    recovered = _recovered(source, topo, snap, incident, margin)
    timeline = _timeline(
        source,
        topo,
        [*roots, *incident.impacted, *(r.id for r in recovered)],
        incident.started_at - margin,
    )
    lost_at = mains_lost_at(incident.summary) if incident.site_wide else None
    if lost_at is not None:
        name = topo.site_name(incident.site)
        lost = Change(at=lost_at, id="", name=name, was="", state="DOWN", event="mains_lost")
        timeline = sorted([lost, *timeline], key=lambda e: (e.at, e.id != ""))
    return IncidentPage(
        now=time.time(),
        incident=incident,
        started=incident.started_at,
        root_name=_root_name(topo, incident),
        site_name=topo.site_name(incident.site) if incident.site else "",
        causes=causes,
        apps=tuple(
            ImpactedRow(
                id=a.id,
                name=a.name,
                criticality=a.criticality,
                state=a.state.name,
                since=comps[a.id].since if a.id in comps else None,
                degraded_mode=a.degraded_mode,
                runbook_url=safe_url(a.runbook_url),
                team=a.team,
            )
            for a in apps
        ),
        runbook_url=safe_url(incident.runbook_url),
        impacted_other=tuple(
            KindRef(
                id=c, name=name_of(topo, c), kind=topo.components[c].kind, state=comps[c].state.name
            )
            for c in incident.impacted
            if c in comps and topo.components[c].kind not in APPLICATION_KINDS
        ),
        timeline=tuple(timeline),
        recovered=tuple(recovered),
    )


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={bound_text(v, MAX_LABEL_CHARS)}" for k, v in labels)


def _check_detail(source: StatusSource, check_id: str) -> CheckDetail:
    """A check feeding a component: last result, its first samples, its recent results."""
    check = source.plan().get(check_id)
    result = source.latest(check_id)
    samples = [] if result is None else list(result.samples)
    return CheckDetail(
        id=check_id,
        kind=check.kind if check else "",
        target=check.target if check else "",
        interval=check.interval if check else 0,
        success=None if result is None else result.success,
        error=None if result is None or result.error is None else bound_text(result.error),
        at=None if result is None else result.timestamp,
        duration=None if result is None else result.duration,
        samples=tuple(
            SampleRow(name=s.name, labels=_labels(s.labels), value=s.value)
            for s in samples[:MAX_SAMPLES]
        ),
        more_samples=max(0, len(samples) - MAX_SAMPLES),
        history=tuple(
            ResultRow(
                at=r.timestamp,
                success=r.success,
                duration=r.duration,
                error=None if r.error is None else bound_text(r.error, 200),
            )
            for r in reversed(source.results(check_id))
        ),
    )


def component_page(source: StatusSource, cid: str) -> ComponentPage:
    """A component's checks with their last results and history, dependencies, dependents."""
    topo = source.topology()
    snap = source.snapshot()
    spec = topo.components[cid]
    status = snap.components.get(cid)
    deps = tuple(
        DepGroup(
            group=not isinstance(dep, str),
            need=1 if isinstance(dep, str) else dep.need,
            members=tuple(_ref(topo, m, snap) for m in dependency_members(dep)),
        )
        for dep in topo.deps.get(cid, ())
    )
    return ComponentPage(
        now=time.time(),
        id=cid,
        name=spec.name or cid,
        kind=spec.kind,
        site=topo.site_name(spec.site) if spec.site else "",
        criticality=spec.criticality,
        team=spec.team,
        runbook_url=safe_url(spec.runbook_url),
        degraded_mode=spec.degraded_mode,
        state=None if status is None else status.state.name,
        reasons=() if status is None else _reasons(status),
        since=None if status is None else status.since,
        roots=()
        if status is None
        else tuple(_ref(topo, r, snap) for r in status.roots if r != cid),
        checks=tuple(_check_detail(source, c) for c in source.component_checks(cid)),
        deps=deps,
        dependents=tuple(_ref(topo, d, snap) for d in sorted(set(topo.dependents.get(cid, ())))),
        transitions=tuple(
            TransitionRow(at=t.at, state=t.state.name) for t in reversed(source.transitions(cid))
        ),
        incident=None if status is None else _incident_of(status, snap),
        budget=_budget(source, topo, cid),
    )


def _budget(source: StatusSource, topo: TopologyView, cid: str) -> BudgetView | None:
    """The component's detection budget with the names of what decides it, or None."""
    budgets = source.budgets()
    budget = budgets.components.get(cid)
    if budget is None:
        return None
    target = budgets.target(budget)
    return BudgetView(
        seconds=budget.seconds,
        target=target,
        over_target=target is not None and budget.seconds > target,
        tier=budget.tier,
        check=budget.check,
        via=budget.via,
        via_name=name_of(topo, budget.via),
        interval=budget.interval,
        timeout=budget.timeout,
        for_=budget.for_,
        confirm=budget.confirm,
        group_wait=budget.group_wait,
    )


def recovery_board(source: StatusSource) -> RecoveryBoard:
    """The recovery board: what is still down and what has come back, since when."""
    now = time.time()
    rows = recovery_rows(source, now)
    tracks = tuple(
        svg.track(
            r.id,
            r.name,
            r.criticality,
            ((t.at, t.state) for t in source.transitions(r.id)),
            r.down_since if r.down_since is not None else now,
        )
        for r in rows
    )
    first = min((r.down_since for r in rows if r.down_since is not None), default=now)
    return RecoveryBoard(
        now=now,
        rows=tuple(rows),
        down=sum(1 for r in rows if not r.back),
        back=sum(1 for r in rows if r.back),
        tracks=tracks,
        since=first - max(60.0, (now - first) * 0.03),  # a little before the first fall
    )


def checks_page(source: StatusSource) -> ChecksPage:
    """The plain list of checks with their last result."""
    return ChecksPage(now=time.time(), checks=tuple(check_rows(source)))


# --- handlers --------------------------------------------------------------------------------


def reader_speech(request: web.Request, config: Speech) -> Speech:
    """The config's language and zone, the language overridden by the browser's preference."""
    language = negotiate(request.headers.get("Accept-Language"), config.language)
    return config if language == config.language else Speech(language, config.zone)


def _html(
    request: web.Request,
    template: str,
    page: Page | DataclassInstance,
    /,
    http_status: int = 200,
    **context: Any,
) -> web.Response:
    # Every page tells the crisis cell when Vigie itself runs degraded (state_dir unwritable),
    # and, with replicas, which one answers and whether it sees its peers alive. Forms for
    # operator actions are shown to operators only (can_operate); open incidents' latest
    # updates (posted by operators) show wherever the incident does.
    source = request.app[SOURCE_KEY]
    notice = source.state_dir_problem()
    text = request.app[PAGES_KEY].render(
        template,
        page,
        reader_speech(request, source.speech()),
        vigie_notice=notice,
        replica=source.replica(),
        can_operate=may_operate(request),
        updates=latest_updates(request),
        **context,
    )
    return web.Response(text=text, status=http_status, content_type="text/html", charset="utf-8")


page_response = _html
"""Render a page (other modules' pages too: the audit page) as every page is rendered."""


async def overview_page(request: web.Request) -> web.Response:
    """Serve the overview: sites, open incidents, applications by criticality."""
    return _html(request, "overview.html", overview(request.app[SOURCE_KEY]))


async def incident_handler(request: web.Request) -> web.Response:
    """Serve one open incident; a closed one shows its archived record (404 if not kept)."""
    source = request.app[SOURCE_KEY]
    wanted = request.match_info["id"]
    for incident in source.snapshot().incidents.values():
        if incident.id == wanted:
            return _html(
                request,
                "incident.html",
                incident_page(source, incident),
                incident_updates=incident_updates(request, incident.id),
            )
    from vigie.monitor.web.archive import archived_response  # it renders with this module

    archived = archived_response(request, wanted)
    if archived is not None:
        return archived
    missing = NotFound(
        now=time.time(),
        what=Text("w.incident_missing", id=bound_text(wanted, 120)),
        hint=Text("w.hint_resolved"),
    )
    return _html(request, "notfound.html", missing, http_status=404)


async def component_handler(request: web.Request) -> web.Response:
    """Serve one component's checks, results, history and dependencies."""
    source = request.app[SOURCE_KEY]
    cid = request.match_info["id"]
    if cid not in source.topology().components:
        missing = NotFound(
            now=time.time(),
            what=Text("w.component_missing", id=bound_text(cid, 120)),
            hint=Text("w.hint_topology"),
        )
        return _html(request, "notfound.html", missing, http_status=404)
    return _html(request, "component.html", component_page(source, cid))


async def recovery_handler(request: web.Request) -> web.Response:
    """Serve the recovery board: what is still down and what has come back, since when."""
    return _html(request, "recovery.html", recovery_board(request.app[SOURCE_KEY]))


async def checks_handler(request: web.Request) -> web.Response:
    """Serve the plain list of checks with their last result."""
    return _html(request, "checks.html", checks_page(request.app[SOURCE_KEY]))


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
    return web.json_response([r.json() for r in recovery_rows(request.app[SOURCE_KEY])])
