"""The audit log: every operator action (who, what, when, from where) in state_dir/audit.sqlite.

Append-only. An action is kept in memory first, then written in one transaction; a write the
disk refuses (full, read-only, permissions, a lock) never fails the operator's request: the
action stays in memory, the failure is reported to the state-dir monitor (store `audit`, the
self-incident, /-/healthy), and every pending action is written back, in order, when the file
takes writes again (on the next action or the daemon's retry loop calling flush()).

Incident updates posted by operators are audit actions too (`incident_update`, with their text
and expected recovery time): the incident page, the overview and the alert annotations read
them from here.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from vigie.core.results import bound_text
from vigie.core.sanitise import sanitise
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.outbox import open_store

STORE = "audit"
KEEP = 5000
"""Actions held in memory for the page and the API (the file keeps them all)."""
MAX_WHO = 200
MAX_TEXT = 500
"""An incident update is a short sentence: "IT is restoring the lab link, expected 16:00"."""

UPDATE = "incident_update"
REPLICA_VIA = "replica "
"""How an update posted on a peer replica was known here: `replica <name>` (pulled from it)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS action (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    role TEXT NOT NULL,
    via TEXT NOT NULL,
    remote TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    expected REAL
);
CREATE INDEX IF NOT EXISTS action_target ON action (action, target);
"""


class WriteReport(Protocol):
    """Where the log reports its writes (vigie.monitor.statedir.StateDirMonitor)."""

    def failed(self, store: str, path: Path, error: BaseException) -> None:
        """Count a failed write of path."""
        ...

    def ok(self, store: str) -> None:
        """Record that the store wrote everything it held."""
        ...


@dataclass(frozen=True, slots=True)
class Action:
    """One operator action: who did what to which target, when, from where, through what."""

    at: float
    who: str
    role: str
    via: str
    """How the actor was known: basic_auth, certificate, link (a paged receiver), anonymous."""
    remote: str
    action: str
    target: str
    detail: str
    expected: float | None = None
    """For an incident update: the expected time of recovery, if the operator gave one."""

    def json(self) -> dict[str, Any]:
        """Return the action as the API shows it."""
        from datetime import UTC, datetime

        def iso(ts: float | None) -> str | None:
            if ts is None:
                return None
            return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")

        return {
            "at": iso(self.at),
            "who": self.who,
            "role": self.role,
            "via": self.via,
            "remote": self.remote,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
            "expected_recovery": iso(self.expected),
        }


def write_failure(exc: BaseException) -> bool:
    """Tell a failure of the disk or the file from a bug of ours (which must raise)."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, sqlite3.Error) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
    )


class AuditLog:
    """Operator actions, in SQLite when a path is given (else in memory only)."""

    def __init__(
        self,
        path: Path | None,
        *,
        report: WriteReport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._report = report
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._kept: list[Action] = []
        self._seen: set[tuple[str, float, str, str]] | None = None
        """Updates this log holds, by (incident, time, author, text): built when first asked."""
        self._pending: list[Action] = []
        self._failing = False
        if path is not None:
            try:
                self._db = self._open(path)
                self._kept = self._load(self._db)
            except Exception as exc:
                if not write_failure(exc):
                    raise
                self._failed(exc)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        return open_store(path, _SCHEMA)

    @staticmethod
    def _load(db: sqlite3.Connection) -> list[Action]:
        rows = db.execute(
            "SELECT at, who, role, via, remote, action, target, detail, expected FROM action"
            " ORDER BY id DESC LIMIT ?",
            (KEEP,),
        ).fetchall()
        return [Action(*row) for row in reversed(rows)]

    def _failed(self, exc: BaseException) -> None:
        self._failing = True
        if self._report is not None and self.path is not None:
            self._report.failed(STORE, self.path, exc)

    @property
    def pending(self) -> int:
        """Actions held in memory that the file has not taken yet."""
        return len(self._pending)

    def record(
        self,
        *,
        who: str,
        role: str,
        via: str,
        remote: str,
        action: str,
        target: str = "",
        detail: str = "",
        expected: float | None = None,
    ) -> Action:
        """Keep one action (texts sanitised and bounded) and write it; never raise on a disk."""
        entry = Action(
            at=self._clock(),
            who=sanitise(who)[:MAX_WHO] or "-",
            role=role,
            via=via,
            remote=bound_text(remote, 100),
            action=action,
            target=bound_text(target, MAX_WHO),
            detail=bound_text(sanitise(detail), MAX_TEXT),
            expected=expected,
        )
        self._kept.append(entry)
        if len(self._kept) > KEEP:
            del self._kept[: len(self._kept) - KEEP]
        if self._seen is not None and entry.action == UPDATE:
            self._seen.add(_update_key(entry))
        if self.path is not None:
            self._pending.append(entry)
            self.flush()
        return entry

    def flush(self) -> bool:
        """Write every pending action, oldest first; True when the file holds them all."""
        if self.path is None or not (self._pending or self._failing):
            return True
        try:
            if self._db is None:  # it could not be opened at start: what it held shows now
                self._db = self._open(self.path)
                self._kept = (self._load(self._db) + self._kept)[-KEEP:]
                self._seen = None
            with _transaction(self._db) as db:
                db.executemany(
                    "INSERT INTO action (at, who, role, via, remote, action, target, detail,"
                    " expected) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            a.at,
                            a.who,
                            a.role,
                            a.via,
                            a.remote,
                            a.action,
                            a.target,
                            a.detail,
                            a.expected,
                        )
                        for a in self._pending
                    ],
                )
        except Exception as exc:
            if not write_failure(exc):
                raise
            self._failed(exc)
            return False
        self._pending.clear()
        if self._failing:
            self._failing = False
            if self._report is not None:
                self._report.ok(STORE)
        return True

    def adopt_update(
        self,
        *,
        at: float,
        who: str,
        role: str,
        replica: str,
        remote: str,
        incident: str,
        text: str,
        expected: float | None,
    ) -> Action | None:
        """Keep an incident update posted on a peer replica, as it was posted there (its time,
        its author), via `replica <name>`; None when this log holds it already."""
        entry = Action(
            at=at,
            who=sanitise(who)[:MAX_WHO] or "-",
            role=sanitise(role)[:20],
            via=f"{REPLICA_VIA}{sanitise(replica)[:40]}",
            remote=bound_text(remote, 100),
            action=UPDATE,
            target=bound_text(sanitise(incident), MAX_WHO),
            detail=bound_text(sanitise(text), MAX_TEXT),
            expected=expected,
        )
        if self._seen is None:
            self._seen = {_update_key(a) for a in self._kept if a.action == UPDATE}
        if _update_key(entry) in self._seen:
            return None
        self._seen.add(_update_key(entry))
        self._kept.append(entry)
        if len(self._kept) > KEEP:
            del self._kept[: len(self._kept) - KEEP]
        if self.path is not None:
            self._pending.append(entry)
            self.flush()
        return entry

    def local_updates(self, since: float, limit: int) -> list[Action]:
        """Updates posted on this replica at or after `since`, oldest first (what peers pull)."""
        found = [
            a
            for a in self._kept
            if a.action == UPDATE and a.at >= since and not a.via.startswith(REPLICA_VIA)
        ]
        return sorted(found, key=_update_order)[:limit]

    def recent(self, limit: int = 500) -> list[Action]:
        """The latest actions, newest first (written or still pending)."""
        return list(reversed(self._kept[-limit:])) if limit > 0 else []

    def updates(self, incident: str) -> list[Action]:
        """The updates posted on an incident (here or on a peer replica), newest first."""
        found = [a for a in self._kept if a.action == UPDATE and a.target == incident]
        return sorted(found, key=_update_order, reverse=True)

    def latest_updates(self, incidents: Sequence[str]) -> dict[str, Action]:
        """The newest update of each of these incidents that has one.

        Newest by the time it was posted, not by when this log learnt it: a replica that
        pulls its peer's update late still annotates the alert as its peer does.
        """
        wanted = set(incidents)
        out: dict[str, Action] = {}
        for a in self._kept:
            if a.action == UPDATE and a.target in wanted:
                held = out.get(a.target)
                if held is None or _update_order(a) > _update_order(held):
                    out[a.target] = a
        return out

    def close(self) -> None:
        """Write what is pending if the file takes it, then close the file."""
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None


def _update_key(a: Action) -> tuple[str, float, str, str]:
    """What makes an update the same on every replica: incident, time, author, text."""
    return (a.target, a.at, a.who, a.detail)


def _update_order(a: Action) -> tuple[float, str, str]:
    """Updates sort by when they were posted; equal times by author and text (the same order
    on every replica)."""
    return (a.at, a.who, a.detail)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; a failure anywhere rolls back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def annotate(alerts: Sequence[Alert], log: AuditLog) -> list[Alert]:
    """Give each incident's alert its newest update as annotations (re-sent as an update)."""
    latest = log.latest_updates([a.annotations.get("incident", "") for a in alerts])
    if not latest:
        return list(alerts)
    out: list[Alert] = []
    for given in alerts:
        alert = given
        update = latest.get(alert.annotations.get("incident", ""))
        if update is not None:
            shown = update.json()
            extra = {"update": update.detail, "update_by": update.who, "update_at": shown["at"]}
            if shown["expected_recovery"] is not None:
                extra["expected_recovery"] = shown["expected_recovery"]
            alert = replace(alert, annotations={**alert.annotations, **extra})
        out.append(alert)
    return out
