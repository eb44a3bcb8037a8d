"""Durable health state: incident starts and component `since` (so restarts don't re-page), and
the state-change history the recovery board shows (so a restart mid-recovery keeps it).

A write the disk refuses (full, read-only, permissions) never stops the health loop: what was
not written stays pending in memory (the last saved state is only moved on success, so the
next save writes the whole difference; history rows wait in a bounded list) and is written by
the next save or flush() that the file accepts. A file that cannot even be opened at start is
read only (when it can be) and opened again by flush().
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from vigie.monitor.alerting.outbox import WriteReport, open_store, write_failure
from vigie.monitor.health.states import State

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (key TEXT PRIMARY KEY, started_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS components (
    id TEXT PRIMARY KEY, state INTEGER NOT NULL, since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (id TEXT NOT NULL, at REAL NOT NULL, state INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_by_id ON transitions (id, at);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""

Durable = tuple[dict[str, float], dict[str, tuple[State, float]]]


class HealthStateStore:
    """SQLite (WAL) file holding what must survive a restart of the health model."""

    STORE = "health"

    def __init__(self, path: Path, *, report: WriteReport | None = None) -> None:
        self.path = path
        self._report = report
        self._db: sqlite3.Connection | None = None
        self._saved: Durable = ({}, {})
        """What the file holds (as far as we know): save() writes the difference."""
        self._wanted: Durable | None = None
        """The last state asked for, while it is not on disk."""
        self._history: dict[str, list[tuple[float, State]]] = {}
        self._removed: set[str] = set()
        self._per_component = 50
        self.failing = False
        """True while something asked for is not on disk."""
        self._db = self._try_open()

    def _try_open(self) -> sqlite3.Connection | None:
        """Open (creating) the file; on a refusal report it and return None."""
        try:
            return open_store(self.path, _SCHEMA)
        except Exception as exc:
            if not write_failure(exc):
                raise
            self._failed(exc)
            return None

    def _failed(self, exc: BaseException) -> None:
        self.failing = True
        if self._report is not None:
            self._report.failed(self.STORE, self.path, exc)

    def _reader(self) -> tuple[sqlite3.Connection | None, bool]:
        """Return a connection to read from (the file, or a read-only view of it) and
        whether the caller must close it."""
        if self._db is not None:
            return self._db, False
        from vigie.monitor.statedir import read_only_copy

        return read_only_copy(self.path), True

    def _read_durable(self, db: sqlite3.Connection) -> Durable:
        incidents = dict(db.execute("SELECT key, started_at FROM incidents").fetchall())
        components = {
            cid: (State(state), since)
            for cid, state, since in db.execute("SELECT id, state, since FROM components")
        }
        return incidents, components

    def load(self) -> Durable:
        """Return (incident start times by key, component (state, since) by id)."""
        db, close = self._reader()
        if db is None:
            return {}, {}
        try:
            incidents, components = self._read_durable(db)
        except sqlite3.Error:
            return {}, {}  # unreadable as well: start without it
        finally:
            if close:
                db.close()
        self._saved = (dict(incidents), dict(components))
        return incidents, components

    def save(
        self, incidents: Mapping[str, float], components: Mapping[str, tuple[State, float]]
    ) -> None:
        """Write what changed since the last save, in one transaction (kept if refused)."""
        wanted = (dict(incidents), dict(components))
        if wanted == self._saved and self._wanted is None:
            return
        self._wanted = wanted
        self._write()

    def save_history(
        self,
        added: Sequence[tuple[str, float, State]],
        removed: Iterable[str],
        per_component: int,
    ) -> None:
        """Append transitions, keep the last per_component of each, drop removed components."""
        self._per_component = per_component
        for cid in removed:
            self._removed.add(cid)
            self._history.pop(cid, None)
        for cid, at, state in added:
            log = self._history.setdefault(cid, [])
            log.append((at, state))
            del log[:-per_component]  # bounded while the disk refuses writes
        self._write()

    def flush(self) -> bool:
        """Write whatever is pending (opening the file if it could not be); True when done."""
        if self._db is None:
            self._db = self._try_open()
            if self._db is None:
                return False
            try:
                self._saved = self._read_durable(self._db)
            except sqlite3.Error as exc:
                self._failed(exc)
                return False
        if self.failing and self._wanted is None:
            self._wanted = self._saved  # nothing pending: prove a write works all the same
        return self._write()

    def _write(self) -> bool:
        """Write the pending state and history in one transaction; report the outcome."""
        db = self._db
        if db is None:
            return False
        wanted = self._wanted
        if wanted is None and not self._history and not self._removed:
            return True
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if wanted is not None:
                    self._write_durable(db, wanted)
                self._write_history(db)
                db.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('written', ?)",
                    (time.time(),),
                )
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
        if wanted is not None:
            self._saved, self._wanted = wanted, None
        self._history.clear()
        self._removed.clear()
        if self.failing:
            self.failing = False
            if self._report is not None:
                self._report.ok(self.STORE)
        return True

    def _write_durable(self, db: sqlite3.Connection, wanted: Durable) -> None:
        old_inc, old_comp = self._saved
        incidents, components = wanted
        for key in old_inc.keys() - incidents.keys():
            db.execute("DELETE FROM incidents WHERE key = ?", (key,))
        for key, started in incidents.items():
            if old_inc.get(key) != started:
                db.execute("INSERT OR REPLACE INTO incidents VALUES (?, ?)", (key, started))
        for cid in old_comp.keys() - components.keys():
            db.execute("DELETE FROM components WHERE id = ?", (cid,))
        for cid, (state, since) in components.items():
            if old_comp.get(cid) != (state, since):
                db.execute(
                    "INSERT OR REPLACE INTO components VALUES (?, ?, ?)",
                    (cid, int(state), since),
                )

    def _write_history(self, db: sqlite3.Connection) -> None:
        for cid in self._removed:
            db.execute("DELETE FROM transitions WHERE id = ?", (cid,))
        db.executemany(
            "INSERT INTO transitions VALUES (?, ?, ?)",
            [(cid, at, int(state)) for cid, log in self._history.items() for at, state in log],
        )
        for cid in self._history:
            db.execute(
                "DELETE FROM transitions WHERE id = ? AND rowid NOT IN (SELECT rowid FROM"
                " transitions WHERE id = ? ORDER BY at DESC, rowid DESC LIMIT ?)",
                (cid, cid, self._per_component),
            )

    def load_history(self, per_component: int) -> dict[str, list[tuple[float, State]]]:
        """Return the last per_component (at, state) transitions of each component, oldest first."""
        db, close = self._reader()
        if db is None:
            return {}
        out: dict[str, list[tuple[float, State]]] = {}
        try:
            rows = db.execute("SELECT id, at, state FROM transitions ORDER BY id, at, rowid")
            for cid, at, state in rows:
                try:
                    out.setdefault(cid, []).append((at, State(state)))
                except ValueError:
                    continue  # a state code this version does not know: skip the row
        except sqlite3.Error:
            return {}
        finally:
            if close:
                db.close()
        return {cid: log[-per_component:] for cid, log in out.items()}

    def close(self) -> None:
        """Write what is pending if the file takes it, then close the database."""
        if self.failing or self._wanted is not None or self._history or self._removed:
            self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None
