"""Durable health state: incident starts and component `since` (so restarts don't re-page), and
the state-change history the recovery board shows (so a restart mid-recovery keeps it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from monitor.health.states import State

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (key TEXT PRIMARY KEY, started_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS components (
    id TEXT PRIMARY KEY, state INTEGER NOT NULL, since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (id TEXT NOT NULL, at REAL NOT NULL, state INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_by_id ON transitions (id, at);
"""


class HealthStateStore:
    """SQLite (WAL) file holding what must survive a restart of the health model."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._saved: tuple[dict[str, float], dict[str, tuple[State, float]]] = ({}, {})

    def load(self) -> tuple[dict[str, float], dict[str, tuple[State, float]]]:
        """Return (incident start times by key, component (state, since) by id)."""
        incidents = dict(self._db.execute("SELECT key, started_at FROM incidents").fetchall())
        components = {
            cid: (State(state), since)
            for cid, state, since in self._db.execute("SELECT id, state, since FROM components")
        }
        self._saved = (dict(incidents), dict(components))
        return incidents, components

    def save(
        self, incidents: Mapping[str, float], components: Mapping[str, tuple[State, float]]
    ) -> None:
        """Write what changed since the last save, in one transaction."""
        old_inc, old_comp = self._saved
        if dict(incidents) == old_inc and dict(components) == old_comp:
            return
        with self._db:
            self._db.execute("BEGIN")
            for key in old_inc.keys() - incidents.keys():
                self._db.execute("DELETE FROM incidents WHERE key = ?", (key,))
            for key, started in incidents.items():
                if old_inc.get(key) != started:
                    self._db.execute(
                        "INSERT OR REPLACE INTO incidents VALUES (?, ?)", (key, started)
                    )
            for cid in old_comp.keys() - components.keys():
                self._db.execute("DELETE FROM components WHERE id = ?", (cid,))
            for cid, (state, since) in components.items():
                if old_comp.get(cid) != (state, since):
                    self._db.execute(
                        "INSERT OR REPLACE INTO components VALUES (?, ?, ?)",
                        (cid, int(state), since),
                    )
        self._saved = (dict(incidents), dict(components))

    def load_history(self, per_component: int) -> dict[str, list[tuple[float, State]]]:
        """Return the last per_component (at, state) transitions of each component, oldest first."""
        out: dict[str, list[tuple[float, State]]] = {}
        rows = self._db.execute("SELECT id, at, state FROM transitions ORDER BY id, at, rowid")
        for cid, at, state in rows:
            try:
                out.setdefault(cid, []).append((at, State(state)))
            except ValueError:
                continue  # a state code this version does not know: skip the row
        return {cid: log[-per_component:] for cid, log in out.items()}

    def save_history(
        self,
        added: Sequence[tuple[str, float, State]],
        removed: Iterable[str],
        per_component: int,
    ) -> None:
        """Append transitions, keep the last per_component of each, drop removed components."""
        with self._db:
            self._db.execute("BEGIN")
            for cid in removed:
                self._db.execute("DELETE FROM transitions WHERE id = ?", (cid,))
            self._db.executemany(
                "INSERT INTO transitions VALUES (?, ?, ?)",
                [(cid, at, int(state)) for cid, at, state in added],
            )
            for cid in {cid for cid, _, _ in added}:
                self._db.execute(
                    "DELETE FROM transitions WHERE id = ? AND rowid NOT IN (SELECT rowid FROM"
                    " transitions WHERE id = ? ORDER BY at DESC, rowid DESC LIMIT ?)",
                    (cid, cid, per_component),
                )

    def close(self) -> None:
        """Close the database."""
        self._db.close()
