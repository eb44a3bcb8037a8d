"""Escalation: page a team level by level until someone acknowledges or the incident resolves.

Each paged incident opens one escalation per team of the applications it hits (the `*` policy
takes the others). Its state (level reached, next due time, who acknowledged and when, the
silence mirroring the acknowledgement) is a row of the outbox's SQLite file, written in the
same transaction as the pages of the level, so a restart neither repeats nor skips a level;
a refused write moves both to memory together, as the outbox does. Pages are Alerts queued
for one sink each (Delivery.EACH), delivered and retried by the dispatcher like any other.
A level whose every page has failed (or that could address no one) escalates at once.

With replicas, every replica keeps the same escalations and queues the same pages; pages go to
direct sinks (not re-sent), which the dispatcher delivers only from the sending replica
(`AlertDispatcher(sender=ReplicaSet.is_sender)`, issue 15): the survivor of a pair carries
on from the level reached, neither repeating nor skipping one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from vigie.core.results import bound_text
from vigie.monitor.alerting.ack import (
    ACK_COMMENT,
    AckTokens,
    SilenceFirstSink,
    Silences,
    acknowledges,
)
from vigie.monitor.alerting.alertmanager import AlertmanagerSink
from vigie.monitor.alerting.dispatcher import AlertDispatcher
from vigie.monitor.alerting.httpsink import (
    PAGE_ACK_URL,
    PAGE_CONTACT,
    PAGE_LEVEL,
    PAGE_MAIL,
    PAGE_MESSAGE,
    PAGE_PHONE,
    PAGE_TEAM,
    compose_sms,
)
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.oncall import Calendar, OnCall
from vigie.monitor.alerting.outbox import Entry, Outbox
from vigie.monitor.alerting.settings import AlertingSettings, OncallSettings, PolicySettings
from vigie.monitor.alerting.sink import Delivery, Sink
from vigie.monitor.health.snapshot import Snapshot

PAGED_SEVERITIES = frozenset({"critical"})
"""Warnings (redundancy lost) are mailed and shown, not escalated by SMS at night."""
MAX_EVENTS = 50
"""A timeline keeps its first events and the latest ones (a long Alertmanager outage)."""
KEEP_CLOSED = 7 * 86400.0
"""Closed escalations are kept this long (their figures feed the reports)."""


@dataclass(frozen=True, slots=True)
class PagedIncident:
    """A firing incident alert, with the team(s), tier and tier-1 applications it hits."""

    alert: Alert
    teams: tuple[str, ...]
    tier: int
    tier1: tuple[str, ...]


def paged_incidents(
    snapshot: Snapshot,
    active: Mapping[str, Alert],
    severities: Iterable[str] = PAGED_SEVERITIES,
) -> list[PagedIncident]:
    """Return the incidents of a snapshot whose alert is firing at the dispatcher."""
    wanted = set(severities)
    out = []
    for incident in snapshot.incidents.values():
        alert = active.get(f"{incident.key}/{incident.severity}")
        if alert is None or incident.severity not in wanted:
            continue
        apps = incident.applications
        teams = tuple(sorted({a.team for a in apps if a.team})) or ("*",)
        tier = min((a.criticality for a in apps), default=4)
        tier1 = tuple(a.name for a in apps if a.criticality == 1)
        out.append(PagedIncident(alert, teams, tier, tier1))
    return out


@dataclass(frozen=True)
class Escalation:
    """One team's escalation of one incident, as kept in the outbox's file."""

    id: int
    key: str
    alert_key: str
    team: str
    tier: int
    opened: float
    labels: dict[str, str]
    summary: str
    tier1: list[str]
    level: int = -1
    """Index of the last level paged; -1 before the first."""
    due: float | None = None
    level_pages: int = 0
    """Pages queued for the current level (to tell when all of them failed)."""
    paged: list[list[str]] = field(default_factory=list)
    """[sink, contact] pairs paged so far: they get the resolved message."""
    acked_by: str | None = None
    acked_at: float | None = None
    ack_via: str | None = None
    silence: str | None = None
    resolved_at: float | None = None
    events: list[list[Any]] = field(default_factory=list)
    """The escalation's timeline: [time, what, detail]."""

    @property
    def open(self) -> bool:
        """Not resolved yet."""
        return self.resolved_at is None

    @property
    def acknowledged(self) -> bool:
        """Someone acknowledged it."""
        return self.acked_at is not None

    def to_json(self) -> str:
        """Serialize for the outbox's escalation table."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_row(cls, eid: object, data: object) -> Escalation:
        """Read back a row of the escalation table."""
        fields = json.loads(str(data))
        fields["id"] = int(str(eid))
        return cls(**fields)

    def event(self, at: float, what: str, detail: str = "") -> Escalation:
        """Return the escalation with an event added to its timeline."""
        events = [*self.events, [at, what, bound_text(detail, 300)]]
        return replace(self, events=events[:5] + events[5:][-(MAX_EVENTS - 5) :])


class EscalationMetrics:
    """Time to acknowledge and pages sent, per team."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ack_seconds = Histogram(
            "vigie_incident_acknowledge_seconds",
            "Time from an escalation's start to its acknowledgement, by team.",
            ["team"],
            buckets=(60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400),
            registry=registry,
        )
        self.pages = Counter(
            "vigie_escalation_pages",
            "Pages queued by escalation policies, by team and level (1 = first).",
            ["team", "level"],
            registry=registry,
        )
        self.unacknowledged = Counter(
            "vigie_escalation_unacknowledged",
            "Escalations that resolved without an acknowledgement, by team.",
            ["team"],
            registry=registry,
        )


class Routed:
    """A sink that gets only escalation pages (a webhook or mail relay named in a level)."""

    routed = True

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name = inner.name
        self.delivery = inner.delivery
        self.refresh = inner.refresh
        self.batch_size = inner.batch_size

    async def send(self, alerts: Sequence[Alert], session: aiohttp.ClientSession) -> None:
        """Send through the wrapped sink."""
        await self.inner.send(alerts, session)


class UnknownEscalation(KeyError):
    """No escalation has this id or incident key."""


class Escalations:
    """The escalation engine: opens, advances, acknowledges and closes escalations."""

    def __init__(
        self,
        settings: AlertingSettings,
        oncall: OncallSettings,
        outbox: Outbox,
        session: aiohttp.ClientSession,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        logger: Any = None,
    ) -> None:
        self._settings = settings
        self._oncall = oncall
        self._outbox = outbox
        self._session = session
        self._clock = clock
        self._log = logger if logger is not None else structlog.get_logger()
        self.metrics = EscalationMetrics(registry)
        self._contacts = {c.name: c for c in oncall.contacts}
        self._policies = {p.team: p for p in oncall.policies}
        self._oncall_of: dict[str, OnCall] = {
            p.team: OnCall(
                p.rotation,
                Calendar(p.calendar, list(self._contacts), logger=self._log)
                if p.calendar
                else None,
            )
            for p in oncall.policies
        }
        self._tokens = (
            AckTokens(oncall.ack.key, oncall.ack.ttl, clock) if oncall.ack is not None else None
        )
        self._silences = Silences(settings.alertmanagers, session, settings.timeout)
        self._dispatcher: AlertDispatcher | None = None
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()

    # --- wiring ------------------------------------------------------------------------

    def wrap_sinks(self, sinks: Sequence[Sink]) -> list[Sink]:
        """Return the sinks as escalation needs them.

        Each Alertmanager's resolves wait until the acknowledgement silences expired; a
        webhook or mail relay named in a policy's level gets only its pages (the policy
        replaces the pager route), not every alert state change.
        """
        used = {n.sink for p in self._oncall.policies for lv in p.levels for n in lv.notify}
        out: list[Sink] = []
        for sink in sinks:
            if isinstance(sink, AlertmanagerSink):
                out.append(
                    SilenceFirstSink(
                        sink, self.silences_of, self._silences.expire, self._forget_silence
                    )
                )
            elif sink.name in used and not getattr(sink, "routed", False):
                out.append(Routed(sink))
            else:
                out.append(sink)
        return out

    def attach(self, dispatcher: AlertDispatcher) -> None:
        """Deliver pages through this dispatcher (its sinks are the pages' sinks)."""
        self._dispatcher = dispatcher

    # --- store ---------------------------------------------------------------------------

    def all(self, *, open_only: bool = False) -> list[Escalation]:
        """Return the escalations kept, oldest first."""
        sql = "SELECT id, data FROM escalation" + (" WHERE open = 1" if open_only else "")
        return [Escalation.from_row(i, d) for i, d in self._outbox.query(sql + " ORDER BY id")]

    def get(self, eid: int) -> Escalation:
        """Return the escalation with this id."""
        rows = self._outbox.query("SELECT id, data FROM escalation WHERE id = ?", (eid,))
        if not rows:
            raise UnknownEscalation(eid)
        return Escalation.from_row(*rows[0])

    @staticmethod
    def _save(db: sqlite3.Connection, esc: Escalation) -> int:
        """Insert or update an escalation row; return its id."""
        data = esc.to_json()
        if esc.id:
            # The key column is unique among open escalations only: a closed one gives its key
            # up, so the same incident coming back opens a new escalation.
            key = esc.key if esc.open else f"{esc.key}#{esc.id}"
            db.execute(
                "UPDATE escalation SET key = ?, open = ?, data = ? WHERE id = ?",
                (key, int(esc.open), data, esc.id),
            )
            return esc.id
        cursor = db.execute(
            "INSERT INTO escalation (key, open, data) VALUES (?, 1, ?)", (esc.key, data)
        )
        eid = int(cursor.lastrowid or 0)
        db.execute(
            "UPDATE escalation SET data = json_set(data, '$.id', ?) WHERE id = ?", (eid, eid)
        )
        return eid

    def _store(self, esc: Escalation) -> None:
        """Write one escalation row in its own transaction."""
        self._outbox.write(lambda db: self._save(db, esc))

    def silences_of(self, alert_key: str) -> list[str]:
        """Return the acknowledgement silences held on an incident alert."""
        return [e.silence for e in self.all() if e.alert_key == alert_key and e.silence is not None]

    def _forget_silence(self, silence: str) -> None:
        for esc in self.all():
            if esc.silence == silence:
                done = replace(esc, silence=None).event(self._clock(), "silence_expired", silence)
                self._store(done)

    # --- observing incidents ----------------------------------------------------------

    def policy(self, team: str) -> PolicySettings | None:
        """Return the policy of a team (or the `*` policy)."""
        return self._policies.get(team) or self._policies.get("*")

    def observe(self, snapshot: Snapshot, active: Mapping[str, Alert]) -> None:
        """Open escalations for new paged incidents, close those whose incident is over.

        Called from the health loop: a failure is logged, never raised into it (the alerts
        themselves are already recorded); the next snapshot tries again.
        """
        try:
            self.sync(paged_incidents(snapshot, active))
        except Exception as exc:
            self._log.error("escalation_failed", error=bound_text(f"{type(exc).__name__}: {exc}"))

    def sync(self, incidents: Iterable[PagedIncident]) -> None:
        """Make these the paged incidents: open what is new, close what is gone."""
        now = self._clock()
        wanted: dict[str, tuple[PagedIncident, str, PolicySettings]] = {}
        for inc in incidents:
            for team in inc.teams:
                policy = self.policy(team)
                if policy is not None:
                    wanted[f"{inc.alert.key}|{policy.team}"] = (inc, policy.team, policy)
        current = {e.key: e for e in self.all(open_only=True)}
        opened = False
        for key, (inc, team, policy) in wanted.items():
            if key in current:
                continue
            delays = policy.delays(inc.tier)
            esc = Escalation(
                id=0,
                key=key,
                alert_key=inc.alert.key,
                team=team,
                tier=inc.tier,
                opened=now,
                labels=dict(inc.alert.labels),
                summary=inc.alert.annotations.get("summary", inc.alert.name),
                tier1=list(inc.tier1),
                due=now + delays[0],
            ).event(now, "opened", f"team {team}, tier {inc.tier}")
            self._store(esc)
            self._log.info("escalation_opened", key=key, team=team, tier=inc.tier)
            opened = True
        for key, esc in current.items():
            if key not in wanted:
                self._close(esc, now)
        if opened:
            self._wake.set()

    def _close(self, esc: Escalation, now: float) -> None:
        """Resolve an escalation: a resolved message to everyone paged, in one transaction."""
        done = replace(esc, resolved_at=now, due=None).event(now, "resolved")
        if not esc.acknowledged and esc.level >= 0:
            self.metrics.unacknowledged.labels(team=esc.team).inc()
        at = datetime.fromtimestamp(now, UTC)
        entries = [
            Entry(sink, self._page(esc, sink, contact, -1, "resolved").resolved(at), Delivery.EACH)
            for sink, contact in esc.paged
        ]
        self._queue(entries, done)
        self._log.info(
            "escalation_resolved",
            key=esc.key,
            acknowledged=esc.acknowledged,
            level=esc.level + 1,
            told=len(entries),
        )

    def _queue(self, entries: Sequence[Entry], esc: Escalation) -> None:
        """Record pages and the escalation's new state in one transaction."""
        if self._dispatcher is not None:
            known = set(self._dispatcher.sink_names)
            gone = sorted({e.sink for e in entries} - known)
            if gone:  # paged before a restart with another config: nobody to send it to now
                self._log.warning("escalation_sink_gone", key=esc.key, sinks=gone)
                entries = [e for e in entries if e.sink in known]
        if self._dispatcher is not None and entries:
            self._dispatcher.page(entries, also=lambda db: self._save(db, esc))
        else:
            self._outbox.write(lambda db: self._save(db, esc))

    # --- pages ----------------------------------------------------------------------------

    def ack_url(self, esc: Escalation, receiver: str) -> str:
        """Return the acknowledgement link for a receiver ('' without ack or external_url)."""
        base = self._settings.external_url
        if self._tokens is None or not base:
            return ""
        return f"{base.rstrip('/')}/ack/{self._tokens.make(esc.id, receiver)}"

    def _page(self, esc: Escalation, sink: str, contact: str, level: int, tag: str) -> Alert:
        """Return the page of a level (or the resolved message) for one sink and contact."""
        person = self._contacts.get(contact)
        link = self.ack_url(esc, contact or sink) if level >= 0 else ""
        message = compose_sms(esc.summary, esc.tier1, link, resolved=level < 0)
        notes = {
            "summary": esc.summary,
            PAGE_MESSAGE: message,
            PAGE_ACK_URL: link,
            PAGE_LEVEL: str(level + 1),
            PAGE_TEAM: esc.team,
            PAGE_CONTACT: contact,
            PAGE_PHONE: (person.phone or "") if person else "",
            PAGE_MAIL: (person.mail or "") if person else "",
        }
        return Alert(
            key=f"page:{esc.id}:{tag}:{sink}:{contact}",
            labels={**esc.labels, "escalation_team": esc.team},
            annotations={k: v for k, v in notes.items() if v},
            starts_at=datetime.fromtimestamp(esc.opened, UTC),
        )

    def _level_failed(self, esc: Escalation) -> bool:
        """True when the current level addressed no one, or every page of it failed."""
        if esc.level < 0:
            return False
        if esc.level_pages == 0:
            return True
        rows = self._outbox.query(
            "SELECT attempts FROM outbox WHERE key LIKE ? AND state = 'firing'",
            (f"page:{esc.id}:L{esc.level + 1}:%",),
        )
        return len(rows) == esc.level_pages and all(int(str(n)) > 0 for (n,) in rows)

    def advance(self) -> int:
        """Page each escalation whose next level is due (or whose level failed); return how many."""
        now = self._clock()
        moved = 0
        for esc in self.all(open_only=True):
            if esc.acknowledged or esc.due is None:
                continue
            if esc.due > now and not self._level_failed(esc):
                continue
            self._next_level(esc, now)
            moved += 1
        return moved

    def _next_level(self, esc: Escalation, now: float) -> None:
        policy = self.policy(esc.team)
        if policy is None or esc.level + 1 >= len(policy.levels):
            self._queue([], replace(esc, due=None).event(now, "exhausted"))
            return
        level = esc.level + 1
        at = datetime.fromtimestamp(now, UTC)
        oncall = self._oncall_of[policy.team]
        entries: list[Entry] = []
        paged = [list(p) for p in esc.paged]
        names = []
        for notify in policy.levels[level].notify:
            contact = oncall.resolve(notify.to, at)
            if contact is None:
                self._log.warning("escalation_nobody_on_call", team=esc.team, to=notify.to)
                continue
            page = self._page(esc, notify.sink, contact, level, f"L{level + 1}")
            entries.append(Entry(notify.sink, page, Delivery.EACH))
            if [notify.sink, contact] not in paged:
                paged.append([notify.sink, contact])
            names.append(f"{contact} via {notify.sink}")
        delays = policy.delays(esc.tier)
        nxt = esc.opened + delays[level + 1] if level + 1 < len(delays) else None
        if nxt is not None:
            nxt = max(nxt, now)
        updated = replace(esc, level=level, due=nxt, level_pages=len(entries), paged=paged).event(
            now, f"level {level + 1}", ", ".join(names) or "nobody to page"
        )
        self._queue(entries, updated)
        self.metrics.pages.labels(team=esc.team, level=str(level + 1)).inc(len(entries))
        self._log.info(
            "escalation_level", key=esc.key, team=esc.team, level=level + 1, pages=len(entries)
        )

    # --- acknowledgement ------------------------------------------------------------------

    def check_token(self, token: str) -> tuple[Escalation, str]:
        """Return the escalation and receiver a link's token names (BadToken otherwise)."""
        if self._tokens is None:
            from vigie.monitor.alerting.ack import BadToken

            raise BadToken("acknowledgement links are not configured")
        claim = self._tokens.check(token)
        return self.get(claim.escalation), claim.receiver

    def acknowledge(self, eid: int, by: str, via: str, *, silence: str | None = None) -> Escalation:
        """Acknowledge an escalation: stop its levels, record who and when, mirror a silence.

        With `silence` (a peer's acknowledgement read from Alertmanager), that silence is the
        mirror: none is created.
        """
        esc = self.get(eid)
        if esc.acknowledged or not esc.open:
            return esc
        now = self._clock()
        done = replace(
            esc,
            acked_by=bound_text(by, 100),
            acked_at=now,
            ack_via=via,
            due=None,
            silence=silence or esc.silence,
        )
        done = done.event(now, "acknowledged", f"{by} ({via})")
        self._store(done)
        self.metrics.ack_seconds.labels(team=esc.team).observe(max(0.0, now - esc.opened))
        self._log.info(
            "incident_acknowledged",
            key=esc.key,
            team=esc.team,
            by=done.acked_by,
            via=via,
            after=round(now - esc.opened, 1),
        )
        self._wake.set()
        return done

    def acknowledge_incident(self, alert_key: str, by: str, via: str) -> list[Escalation]:
        """Acknowledge every open escalation of an incident alert (operators, the API)."""
        found = [e for e in self.all(open_only=True) if e.alert_key == alert_key]
        if not found:
            raise UnknownEscalation(alert_key)
        return [self.acknowledge(e.id, by, via) for e in found]

    async def _read_peer_acks(self) -> None:
        """Take acknowledgements made on another replica, read back as Alertmanager silences."""
        if not self._silences.enabled:
            return
        waiting = [e for e in self.all(open_only=True) if not e.acknowledged]
        if not waiting:
            return
        try:
            silences = await self._silences.active()
        except Exception as exc:  # Alertmanager down: the local state goes on alone
            self._log.debug("ack_silences_unreadable", error=bound_text(str(exc)))
            return
        for esc in waiting:
            for silence in silences:
                if acknowledges(silence, esc.labels):
                    by = str(silence.get("createdBy") or "alertmanager")
                    self.acknowledge(esc.id, by, "alertmanager", silence=str(silence.get("id")))
                    break

    async def _mirror_silences(self) -> None:
        """Create the silence of each acknowledged open escalation; expire orphans."""
        if not self._silences.enabled or self._oncall.ack is None:
            return
        for esc in self.all():
            if esc.silence is not None and not esc.open:
                # Resolved while its silence was being made: expire it now.
                with contextlib.suppress(Exception):
                    await self._silences.expire(esc.silence)
                    self._forget_silence(esc.silence)
                continue
            if not (esc.open and esc.acknowledged and esc.silence is None):
                continue
            if any(e[1] == "silence_failed" and e[0] > self._clock() - 30 for e in esc.events[-1:]):
                continue
            # Alertmanager's time, not the engine's clock (which tests move by minutes).
            until = datetime.fromtimestamp(time.time() + self._oncall.ack.silence, UTC)
            try:
                silence = await self._silences.create(
                    esc.labels,
                    author=esc.acked_by or "vigie",
                    comment=f"{ACK_COMMENT} ({esc.ack_via}): {esc.summary}",
                    until=until,
                )
            except Exception as exc:  # retried next tick; the escalation is stopped anyway
                self._log.warning("ack_silence_failed", key=esc.key, error=bound_text(str(exc)))
                failed = self.get(esc.id).event(self._clock(), "silence_failed", str(exc))
                self._store(failed)
                continue
            fresh = self.get(esc.id)
            done = replace(fresh, silence=silence).event(self._clock(), "silenced", silence)
            self._store(done)
            if not fresh.open:
                with contextlib.suppress(Exception):
                    await self._silences.expire(silence)
                    self._forget_silence(silence)

    def _prune(self) -> None:
        cutoff = self._clock() - KEEP_CLOSED
        old = [e.id for e in self.all() if not e.open and (e.resolved_at or 0) < cutoff]
        if old:
            self._outbox.write(
                lambda db: db.executemany(
                    "DELETE FROM escalation WHERE id = ?", [(i,) for i in old]
                )
            )

    # --- loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Refresh calendars, page due levels and mirror acknowledgements until stop()."""
        self._log.info("escalation_started", open=len(self.all(open_only=True)))
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                for oncall in self._oncall_of.values():
                    await oncall.refresh(self._session)
                await self._read_peer_acks()  # before advancing: a peer's ack stops the level
                self.advance()
                await self._mirror_silences()
                self._prune()
            except Exception as exc:  # a failing disk or a bug must not end escalation
                self._log.error(
                    "escalation_failed", error=bound_text(f"{type(exc).__name__}: {exc}")
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._oncall.tick):
                    await self._wake.wait()

    def stop(self) -> None:
        """Stop run()."""
        self._stopped.set()
        self._wake.set()

    def time_to_acknowledge(self) -> dict[str, list[float]]:
        """Return, per team, the times to acknowledge of the escalations kept (for reports)."""
        out: dict[str, list[float]] = {}
        for esc in self.all():
            if esc.acked_at is not None:
                out.setdefault(esc.team, []).append(esc.acked_at - esc.opened)
        return out


def escalations_for(
    settings: AlertingSettings,
    outbox: Outbox,
    session: aiohttp.ClientSession,
    registry: CollectorRegistry,
    *,
    logger: Any = None,
) -> Escalations | None:
    """Return the escalation engine the settings call for, None without `oncall`."""
    if settings.oncall is None:
        return None
    return Escalations(settings, settings.oncall, outbox, session, registry, logger=logger)
