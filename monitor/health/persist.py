"""Durable health state: incident start times and component `since`, so restarts don't re-page."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from monitor.health.states import State

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (key TEXT PRIMARY KEY, started_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS components (
    id TEXT PRIMARY KEY, state INTEGER NOT NULL, since REAL NOT NULL
);
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

    def close(self) -> None:
        """Close the database."""
        self._db.close()
