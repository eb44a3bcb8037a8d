"""The incident archive: closed incidents kept with their timeline, and every state change.

The health state file keeps the last 50 changes of each component for the recovery board; the
crisis cell's review needs more: each incident as it was at close (root cause, applications,
state changes, who was paged and who acknowledged) and every state change for the availability
figures. Both live in state_dir/archive.sqlite for `health.archive_retention` (400 days by
default). A write the disk refuses never stops the health loop: what was not written stays in
memory (bounded) and is written by the next write or flush() the file accepts.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from vigie.core.results import bound_text
from vigie.monitor.alerting.escalation import Escalation
from vigie.monitor.alerting.outbox import WriteReport, open_store, write_failure
from vigie.monitor.health.history import Transition
from vigie.monitor.health.snapshot import Incident
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import ComponentSpec
from vigie.monitor.health.wording import mains_lost_at
from vigie.monitor.i18n import Moment, Text

DEFAULT_RETENTION = 400 * 86400.0
"""Closed incidents and state changes are kept 400 days: a year's review and some margin."""
MARGIN = 300.0
"""The timeline starts this long before the incident: what led to it."""
MAX_PENDING_RECORDS = 1000
MAX_PENDING_CHANGES = 100_000
"""What waits in memory while the disk refuses writes (oldest dropped beyond)."""
PRUNE_EVERY = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS archive (
    id TEXT PRIMARY KEY, started_at REAL NOT NULL, closed_at REAL NOT NULL,
    apps TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_by_start ON archive (started_at);
CREATE TABLE IF NOT EXISTS changes (
    id TEXT NOT NULL, at REAL NOT NULL, state INTEGER NOT NULL, maint INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS changes_by_id ON changes (id, at);
"""

Change = tuple[str, float, State, bool]
"""(component, at, state, in a maintenance window) from then on."""


@dataclass(frozen=True, slots=True)
class Spell:
    """A component's state from `at` on, and whether a maintenance window covered it."""

    at: float
    state: State
    maintenance: bool = False


# --- translatable texts as JSON ---------------------------------------------------------------


def _encode(value: object) -> object:
    """A Text's parameter as JSON (Texts, moments and tuples tagged so they come back)."""
    if isinstance(value, Text):
        return {"$text": encode_text(value)}
    if isinstance(value, Moment):
        return {"$moment": value.at}
    if isinstance(value, tuple | list):
        return {"$tuple": [_encode(v) for v in value]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def encode_text(text: str) -> object:
    """A sentence as JSON: a Text keeps its id and parameters (so it renders in French too)."""
    if not isinstance(text, Text):
        return str(text)
    return {
        "key": text.key,
        "own": text.own,
        "params": {k: _encode(v) for k, v in text.params.items()},
    }


def _decode(value: object) -> object:
    if isinstance(value, dict):
        if "$text" in value:
            return decode_text(value["$text"])
        if "$moment" in value:
            return Moment(float(value["$moment"]))
        if "$tuple" in value:
            return tuple(_decode(v) for v in value["$tuple"])
    return value


def decode_text(data: object) -> str:
    """Read back encode_text's JSON; anything unexpected reads as plain text."""
    if isinstance(data, dict):
        try:
            params = {str(k): _decode(v) for k, v in dict(data.get("params", {})).items()}
            return Text(str(data["key"]), dict(data.get("own") or {}), **params)
        except Exception:  # a record written by another version: keep what can be read
            return str(data.get("key", ""))
    return str(data)


# --- the archived record ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchivedApp:
    """An application the incident hit, with its tier and degraded mode."""

    id: str
    name: str
    criticality: int
    degraded_mode: str
    team: str


@dataclass(frozen=True, slots=True)
class ArchivedChange:
    """One line of the timeline: a state change, or an event of no component (`mains_lost`)."""

    at: float
    id: str
    name: str
    was: str
    state: str
    event: str = ""


@dataclass(frozen=True, slots=True)
class ArchivedPaging:
    """One team's escalation: who was paged, who acknowledged, its events."""

    team: str
    opened: float
    paged: tuple[tuple[str, str], ...]
    acked_by: str | None
    acked_at: float | None
    ack_via: str | None
    resolved_at: float | None
    events: tuple[tuple[float, str, str], ...]


@dataclass(frozen=True, slots=True)
class ArchivedIncident:
    """A closed incident as the daemon knew it at close."""

    id: str
    key: str
    severity: str
    summary: str
    root_cause: str
    root_name: str
    site: str
    site_name: str
    site_wide: bool
    maintenance: bool
    started_at: float
    closed_at: float
    applications: tuple[ArchivedApp, ...]
    impacted: tuple[str, ...]
    timeline: tuple[ArchivedChange, ...]
    paging: tuple[ArchivedPaging, ...] = field(default=())
    updates: tuple[tuple[float, str, str, float | None], ...] = field(default=())
    """The crisis cell's posted updates, oldest first: (at, by, text, expected recovery)."""

    @property
    def duration(self) -> float:
        """Seconds from start to close."""
        return max(0.0, self.closed_at - self.started_at)

    def to_json(self) -> str:
        """The record as stored (the summary keeps its translatable form)."""
        data = asdict(self)
        data["summary"] = encode_text(self.summary)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArchivedIncident:
        """Read back to_json's text."""
        d: dict[str, Any] = json.loads(text)
        return cls(
            id=str(d["id"]),
            key=str(d["key"]),
            severity=str(d["severity"]),
            summary=decode_text(d["summary"]),
            root_cause=str(d["root_cause"]),
            root_name=str(d["root_name"]),
            site=str(d["site"]),
            site_name=str(d["site_name"]),
            site_wide=bool(d["site_wide"]),
            maintenance=bool(d["maintenance"]),
            started_at=float(d["started_at"]),
            closed_at=float(d["closed_at"]),
            applications=tuple(ArchivedApp(**a) for a in d["applications"]),
            impacted=tuple(d["impacted"]),
            timeline=tuple(ArchivedChange(**c) for c in d["timeline"]),
            paging=tuple(
                ArchivedPaging(
                    team=p["team"],
                    opened=p["opened"],
                    paged=tuple((s, c) for s, c in p["paged"]),
                    acked_by=p["acked_by"],
                    acked_at=p["acked_at"],
                    ack_via=p["ack_via"],
                    resolved_at=p["resolved_at"],
                    events=tuple((float(a), str(w), str(x)) for a, w, x in p["events"]),
                )
                for p in d.get("paging", ())
            ),
            updates=tuple(
                (float(at), str(by), str(text), None if eta is None else float(eta))
                for at, by, text, eta in d.get("updates", ())
            ),
        )


class Names(Protocol):
    """What a record needs of the topology: component specs and site names."""

    @property
    def components(self) -> Mapping[str, ComponentSpec]:
        """Components by id."""

    def site_name(self, site: str) -> str:
        """A site's human name, or its id."""


def _name(topology: Names, cid: str) -> str:
    spec = topology.components.get(cid)
    return spec.name if spec is not None and spec.name else cid


def archived_incident(
    incident: Incident,
    closed_at: float,
    topology: Names,
    transitions: Callable[[str], Sequence[Transition]],
    *,
    escalations: Iterable[Escalation] = (),
    updates: Iterable[tuple[float, str, str, float | None]] = (),
) -> ArchivedIncident:
    """Build the record of an incident that just closed from what the daemon knows now."""
    since = incident.started_at - MARGIN
    components = [] if incident.site_wide else [incident.root_cause]
    timeline: list[ArchivedChange] = []
    for cid in dict.fromkeys([*components, *incident.impacted]):
        previous = ""
        for t in transitions(cid):
            if since <= t.at <= closed_at and (previous or t.state is not State.OK):
                timeline.append(
                    ArchivedChange(t.at, cid, _name(topology, cid), previous, t.state.name)
                )
            previous = t.state.name
    site_name = topology.site_name(incident.site) if incident.site else ""
    lost = mains_lost_at(incident.summary) if incident.site_wide else None
    if lost is not None:
        timeline.append(ArchivedChange(lost, "", site_name, "", "DOWN", "mains_lost"))
    timeline.sort(key=lambda c: (c.at, c.id != ""))
    paging = tuple(
        ArchivedPaging(
            team=e.team,
            opened=e.opened,
            paged=tuple((bound_text(s, 100), bound_text(c, 200)) for s, c in e.paged),
            acked_by=None if e.acked_by is None else bound_text(e.acked_by, 200),
            acked_at=e.acked_at,
            ack_via=e.ack_via,
            resolved_at=e.resolved_at,
            events=tuple((float(a), str(w), bound_text(str(x), 300)) for a, w, x, *_ in e.events),
        )
        for e in escalations
        if e.key == incident.key or e.alert_key.startswith(f"{incident.key}/")
    )
    return ArchivedIncident(
        id=incident.id,
        key=incident.key,
        severity=incident.severity,
        summary=incident.summary,
        root_cause=incident.root_cause,
        root_name=site_name if incident.site_wide else _name(topology, incident.root_cause),
        site=incident.site,
        site_name=site_name,
        site_wide=incident.site_wide,
        maintenance=incident.maintenance,
        started_at=incident.started_at,
        closed_at=closed_at,
        applications=tuple(
            ArchivedApp(a.id, a.name, a.criticality, a.degraded_mode, a.team)
            for a in incident.applications
        ),
        impacted=incident.impacted,
        timeline=tuple(timeline),
        paging=paging,
        updates=tuple(
            (at, bound_text(by, 200), bound_text(text, 600), eta)
            for at, by, text, eta in sorted(updates, key=lambda u: u[0])
        ),
    )


class Closings:
    """Follows the open incidents from snapshot to snapshot and tells which closed, each with
    every application and component it hit during its life (not only those still hit at the
    end: applications often come back before their root cause's incident closes)."""

    def __init__(self) -> None:
        self._open: dict[str, Incident] = {}

    def observe(self, incidents: Mapping[str, Incident]) -> list[Incident]:
        """Return the incidents open before and gone from `incidents`, as they were at most."""
        closed = [i for k, i in self._open.items() if k not in incidents]
        following: dict[str, Incident] = {}
        for key, current in incidents.items():
            before = self._open.get(key)
            following[key] = current
            if before is not None:
                apps = {a.id: a for a in (*before.applications, *current.applications)}
                following[key] = replace(
                    current,
                    applications=tuple(sorted(apps.values(), key=lambda a: (a.criticality, a.id))),
                    impacted=tuple(dict.fromkeys([*before.impacted, *current.impacted])),
                )
        self._open = following
        return closed


# --- the file ---------------------------------------------------------------------------------


class IncidentArchive:
    """SQLite (WAL) file of closed incidents and state changes, pruned past the retention."""

    STORE = "archive"

    def __init__(
        self,
        path: Path,
        retention: float = DEFAULT_RETENTION,
        *,
        report: WriteReport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.retention = retention
        self._report = report
        self._clock = clock
        self._records: list[ArchivedIncident] = []
        self._changes: list[Change] = []
        self._pruned = 0.0
        self.failing = False
        """True while something asked for is not on disk."""
        self._db: sqlite3.Connection | None = self._try_open()

    def _try_open(self) -> sqlite3.Connection | None:
        db: sqlite3.Connection | None = None
        try:
            db = open_store(self.path, _SCHEMA)
            with contextlib.suppress(sqlite3.OperationalError):  # a file of the first version
                db.execute("ALTER TABLE changes ADD COLUMN maint INTEGER NOT NULL DEFAULT 0")
        except Exception as exc:
            if db is not None:
                db.close()
            if not write_failure(exc):
                raise
            self._failed(exc)
            return None
        return db

    def _failed(self, exc: BaseException) -> None:
        self.failing = True
        if self._report is not None:
            self._report.failed(self.STORE, self.path, exc)

    # --- writes ---------------------------------------------------------------------------

    def add(self, record: ArchivedIncident) -> None:
        """Keep a closed incident (written now, or when the disk takes it)."""
        self._records.append(record)
        del self._records[:-MAX_PENDING_RECORDS]
        self._write()

    def record_changes(self, added: Sequence[Change]) -> None:
        """Keep changes (component, at, state, maintenance) for the availability figures."""
        if not added:
            return
        self._changes.extend(added)
        del self._changes[:-MAX_PENDING_CHANGES]
        self._write()

    def flush(self) -> bool:
        """Write what is pending (opening the file if it could not be); True when done."""
        if self._db is None:
            self._db = self._try_open()
            if self._db is None:
                return False
        return self._write(force=True)

    def _write(self, *, force: bool = False) -> bool:
        db = self._db
        if db is None:
            return False
        now = self._clock()
        prune = now - self._pruned >= PRUNE_EVERY
        if not (self._records or self._changes or prune or force):
            return True
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO archive VALUES (?, ?, ?, ?, ?)",
                    [
                        (
                            r.id,
                            r.started_at,
                            r.closed_at,
                            "|" + "|".join(a.id for a in r.applications) + "|",
                            r.to_json(),
                        )
                        for r in self._records
                    ],
                )
                db.executemany(
                    "INSERT INTO changes VALUES (?, ?, ?, ?)",
                    [(cid, at, int(st), int(m)) for cid, at, st, m in self._changes],
                )
                if prune:
                    cutoff = now - self.retention
                    db.execute("DELETE FROM archive WHERE closed_at < ?", (cutoff,))
                    self._prune_changes(db, cutoff)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        except Exception as exc:
            if not write_failure(exc):
                raise
            self._failed(exc)
            return False
        self._records.clear()
        self._changes.clear()
        if prune:
            self._pruned = now
        if self.failing:
            self.failing = False
            if self._report is not None:
                self._report.ok(self.STORE)
        return True

    @staticmethod
    def _prune_changes(db: sqlite3.Connection, cutoff: float) -> None:
        """Drop changes older than cutoff, but each component's last one before it (its state
        at the cutoff, so availability over the whole retention still starts right)."""
        db.execute(
            "DELETE FROM changes WHERE at < ? AND rowid NOT IN (SELECT (SELECT c2.rowid FROM"
            " changes c2 WHERE c2.id = c.id AND c2.at < ? ORDER BY c2.at DESC, c2.rowid DESC"
            " LIMIT 1) FROM (SELECT DISTINCT id FROM changes) c)",
            (cutoff, cutoff),
        )

    # --- reads ----------------------------------------------------------------------------

    def _reader(self) -> tuple[sqlite3.Connection | None, bool]:
        if self._db is not None:
            return self._db, False
        from vigie.monitor.statedir import read_only_copy

        return read_only_copy(self.path), True

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        db, close = self._reader()
        if db is None:
            return []
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.Error:
            return []
        finally:
            if close:
                db.close()

    def get(self, incident_id: str) -> ArchivedIncident | None:
        """Return the archived incident with this id (pending ones included), or None."""
        for r in self._records:
            if r.id == incident_id:
                return r
        rows = self._query("SELECT data FROM archive WHERE id = ?", (incident_id,))
        return ArchivedIncident.from_json(rows[0][0]) if rows else None

    def search(
        self,
        since: float | None = None,
        until: float | None = None,
        application: str | None = None,
        limit: int = 200,
    ) -> list[ArchivedIncident]:
        """Closed incidents started in [since, until), hitting an application; newest first."""
        sql, params = "SELECT data FROM archive WHERE 1=1", list[object]()
        if since is not None:
            sql += " AND started_at >= ?"
            params.append(since)
        if until is not None:
            sql += " AND started_at < ?"
            params.append(until)
        if application:
            sql += " AND instr(apps, ?) > 0"
            params.append(f"|{application}|")
        sql += " ORDER BY started_at DESC LIMIT ?"
        params.append(limit)
        found = {
            r.id: r for r in (ArchivedIncident.from_json(d) for (d,) in self._query(sql, params))
        }
        for r in self._records:  # not on disk yet
            if (
                (since is None or r.started_at >= since)
                and (until is None or r.started_at < until)
                and (not application or any(a.id == application for a in r.applications))
            ):
                found[r.id] = r
        return sorted(found.values(), key=lambda r: -r.started_at)[:limit]

    def changes(self, component: str, since: float, until: float) -> list[Spell]:
        """A component's spells begun in [since, until), the one in force at since first."""
        rows: list[tuple[Any, ...]] = self._query(
            "SELECT at, state, maint FROM (SELECT at, state, maint, rowid FROM changes WHERE id = ?"
            " AND at < ? ORDER BY at DESC, rowid DESC LIMIT 1) UNION ALL SELECT at, state, maint"
            " FROM (SELECT at, state, maint, rowid FROM changes WHERE id = ? AND at >= ? AND"
            " at < ? ORDER BY at, rowid)",
            (component, since, component, since, until),
        )
        rows += [(at, int(st), m) for cid, at, st, m in self._changes if cid == component]
        out: list[Spell] = []
        for at, state, maint in sorted(rows, key=lambda r: float(r[0])):
            if float(at) >= until:
                continue
            with contextlib.suppress(ValueError):  # a state this version does not know
                out.append(Spell(float(at), State(state), bool(maint)))
        before = [t for t in out if t.at < since]
        return [*before[-1:], *(t for t in out if t.at >= since)]

    def size_bytes(self) -> int:
        """The file's size on disk, its write-ahead log included."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    def count(self) -> int:
        """Closed incidents kept."""
        rows = self._query("SELECT count(*) FROM archive")
        return int(rows[0][0]) + len(self._records) if rows else len(self._records)

    def close(self) -> None:
        """Write what is pending if the file takes it, then close the database."""
        if self._records or self._changes:
            self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None
