"""Maintenance windows: pages are held for a component or a site, states are still computed.

Windows come from the config (reviewed code: no id to end, no maximum length) and from the
API (an operator opens one, with an author and a reason, at most `web.maintenance_max` long,
and may end it early), or from a peer replica's Alertmanager silence. With a state_dir, every
window that is not from the config is kept in state_dir/maintenance.sqlite: a restart loads
the open ones, and finished ones stay in the file (and the last few in memory) as a record.

A write the disk refuses (full, read-only, permissions, a lock) never fails the operator's
request: the window holds pages from memory at once, the failure is reported to the state-dir
monitor (store `maintenance`), and every window changed meanwhile is written (its whole row,
latest state) when the file takes writes again (the next change or the retry loop's flush()).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from vigie.core.results import bound_text
from vigie.core.sanitise import sanitise
from vigie.monitor.alerting.outbox import WriteReport, open_store, write_failure

STORE = "maintenance"
"""The store's name in the state-dir monitor's reports."""
KEEP_FINISHED = 100
"""Finished windows (ended early or past their end) kept in memory for the page."""
PRUNE_EVERY = 86400.0
"""Seconds between two deletions of windows past the retention, when windows are written."""
MAX_WHO = 200
MAX_REASON = 500

CONFIG = "config"
API = "api"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS maintenance_window (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    author TEXT NOT NULL,
    silence TEXT,
    ended_at REAL,
    ended_by TEXT
);
CREATE INDEX IF NOT EXISTS window_open ON maintenance_window (ended_at, ends_at);
"""
_COLUMNS = "target, starts_at, ends_at, reason, source, id, author, silence, ended_at, ended_by"


class MaintenanceSpec(BaseModel):
    """A window during which a component or a site is not paged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(description="A component id or a site id.")
    start: AwareDatetime | None = Field(None, description="Start (with timezone); default now.")
    end: AwareDatetime = Field(description="End of the window, with timezone.")
    reason: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _order(self) -> MaintenanceSpec:
        if self.start is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class TooLong(ValueError):
    """A window opened through the API longer than the configured maximum."""


class NotEndable(ValueError):
    """A window from the config file: it ends by editing the file, not through the API."""


@dataclass(frozen=True, slots=True)
class Window:
    """A maintenance window: open (active or future) or finished (ended early, or past its end)."""

    target: str
    start: float
    end: float
    reason: str
    source: str
    """"config", "api" (opened on this replica) or "alertmanager" (a peer's silence)."""
    id: str = ""
    author: str = ""
    """Who opened it: the operator (principal), `config`, or the silence's author."""
    silence: str | None = None
    """The Alertmanager silence holding it in the cluster (with replicas), once created."""
    ended_at: float | None = None
    ended_by: str | None = None
    """Who ended it early, when it was."""

    @property
    def ended_early(self) -> bool:
        """True when someone ended it before its end."""
        return self.ended_at is not None


class MaintenanceBook:
    """Windows from the config, the API and peers; which targets are in maintenance now.

    With a path, every window not from the config is kept in SQLite (see the module's doc).
    """

    def __init__(
        self,
        specs: Iterable[MaintenanceSpec] = (),
        *,
        path: Path | None = None,
        report: WriteReport | None = None,
        clock: Callable[[], float] = time.time,
        retention: float | None = None,
    ) -> None:
        self.path = path
        self._report = report
        self._clock = clock
        # finished windows older than this leave the file (the archive's retention: what
        # availability can look back on); None keeps them all
        self.retention = retention
        self._pruned = float("-inf")
        self._open: dict[str, Window] = {}
        self._finished: dict[str, Window] = {}
        self._pending: dict[str, Window] = {}
        self._failing = False
        self._db: sqlite3.Connection | None = None
        if path is not None:
            try:
                self._db = open_store(path, _SCHEMA)
                self._load(self._db)
            except Exception as exc:
                if not write_failure(exc):
                    raise
                self._failed(exc)
                self._load_read_only(path)
        self.set_config(specs)

    # --- reading ----------------------------------------------------------------------------

    @property
    def windows(self) -> list[Window]:
        """Open windows (active or future), in the order they were added."""
        return list(self._open.values())

    @property
    def finished(self) -> list[Window]:
        """The last finished windows (ended early or past their end), latest end first."""
        return sorted(self._finished.values(), key=_finished_at, reverse=True)

    def get(self, window_id: str) -> Window | None:
        """Return a window, open or recently finished, by id."""
        return self._open.get(window_id) or self._finished.get(window_id)

    def active(self, now: float) -> dict[str, str]:
        """Return target -> reason for the windows open at now; finished ones stop holding."""
        for win in [w for w in self._open.values() if w.end <= now]:
            self._finish(win)
        return {w.target: w.reason or "maintenance" for w in self._open.values() if w.start <= now}

    @property
    def pending(self) -> int:
        """Windows changed in memory that the file has not taken yet."""
        return len(self._pending)

    # --- changing ---------------------------------------------------------------------------

    def set_config(self, specs: Iterable[MaintenanceSpec]) -> None:
        """Replace the windows that come from the config; keep the others."""
        kept = {k: w for k, w in self._open.items() if w.source != CONFIG}
        configured = [window(s, CONFIG, f"config-{i}", CONFIG) for i, s in enumerate(specs)]
        self._open = {**kept, **{w.id: w for w in configured}}

    def add(
        self, spec: MaintenanceSpec, *, author: str = "", longest: float | None = None
    ) -> Window:
        """Open a window through the API; TooLong when it is longer than `longest` seconds."""
        now = self._clock()
        win = window(spec, API, _new_id(), author, now=now)
        if win.end <= now:
            raise ValueError("the window's end is in the past")
        if longest is not None and win.end - win.start > longest:
            raise TooLong(
                f"a window of {_hours(win.end - win.start)} is longer than the maximum"
                f" of {_hours(longest)} (web.maintenance_max)"
            )
        self._keep(win)
        return win

    def adopt(self, win: Window) -> Window:
        """Add a window learnt elsewhere (a peer's silence), under a new id of this book."""
        kept = replace(
            win,
            id=_new_id(),
            author=sanitise(win.author)[:MAX_WHO],
            reason=bound_text(win.reason, MAX_REASON),
        )
        self._keep(kept)
        return kept

    def set_silence(self, window_id: str, silence: str) -> Window | None:
        """Note the silence holding a window in the cluster (open or finished)."""
        win = self.get(window_id)
        if win is None:
            return None
        win = replace(win, silence=silence)
        if win.id in self._open:
            self._open[win.id] = win
        else:
            self._finished[win.id] = win
        self._write(win)
        return win

    def end(self, window_id: str, who: str) -> Window | None:
        """End an open window now: it stops holding pages. None when no such window is open.

        NotEndable for a window from the config file (the file would bring it back).
        """
        win = self._open.get(window_id)
        if win is None:
            return None
        if win.source == CONFIG:
            raise NotEndable(
                f"window {window_id} is in the config file: remove it there and reload"
            )
        ended = replace(win, ended_at=self._clock(), ended_by=sanitise(who)[:MAX_WHO] or "-")
        self._finish(ended)
        self._write(ended)
        return ended

    def silences_of_ended(self) -> set[str]:
        """Silences of windows ended early: they must be expired, never read back as windows."""
        return {w.silence for w in self._finished.values() if w.ended_early and w.silence}

    def silences(self) -> set[str]:
        """Silences of every window known here (open or finished)."""
        return {w.silence for w in (*self._open.values(), *self._finished.values()) if w.silence}

    # --- the file ---------------------------------------------------------------------------

    def flush(self) -> bool:
        """Write every changed window; True when the file holds them all."""
        if self.path is None or not (self._pending or self._failing):
            return True
        now = self._clock()
        prune = self.retention is not None and now - self._pruned >= PRUNE_EVERY
        try:
            if self._db is None:  # it could not be opened at start
                self._db = open_store(self.path, _SCHEMA)
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    f"INSERT OR REPLACE INTO maintenance_window ({_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_row(w) for w in self._pending.values()],
                )
                if prune:
                    self._prune(db, now)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except Exception as exc:
            if not write_failure(exc):
                raise
            self._failed(exc)
            return False
        self._pending.clear()
        if prune:
            self._pruned = now
        if self._failing:
            self._failing = False
            if self._report is not None:
                self._report.ok(STORE)
        return True

    def close(self) -> None:
        """Write what is pending if the file takes it, then close the file."""
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _keep(self, win: Window) -> None:
        self._open[win.id] = win
        self._write(win)

    def _finish(self, win: Window) -> None:
        self._open.pop(win.id, None)
        if win.source == CONFIG:
            return
        self._finished[win.id] = win
        if len(self._finished) > KEEP_FINISHED:
            for old in self.finished[KEEP_FINISHED:]:
                del self._finished[old.id]

    def _write(self, win: Window) -> None:
        if self.path is None or win.source == CONFIG:
            return
        self._pending[win.id] = win
        self.flush()

    def _failed(self, exc: BaseException) -> None:
        self._failing = True
        if self._report is not None and self.path is not None:
            self._report.failed(STORE, self.path, exc)

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        """Delete the windows that finished before the retention (inside a transaction)."""
        if self.retention is not None:
            db.execute(
                "DELETE FROM maintenance_window WHERE coalesce(ended_at, ends_at) < ?",
                (now - self.retention,),
            )

    def _load(self, db: sqlite3.Connection) -> None:
        """Open windows go back to holding pages; the last finished ones are kept to show;
        windows finished before the retention leave the file."""
        now = self._clock()
        if self.retention is not None and not db.in_transaction:
            with contextlib.suppress(sqlite3.OperationalError):  # a read-only copy: keep all
                with db:
                    self._prune(db, now)
                self._pruned = now
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM maintenance_window WHERE ended_at IS NULL AND ends_at > ?"
            " ORDER BY starts_at",
            (now,),
        ).fetchall()
        self._open = {w.id: w for w in (Window(*r) for r in rows)}
        done = db.execute(
            f"SELECT {_COLUMNS} FROM maintenance_window WHERE ended_at IS NOT NULL OR ends_at <= ?"
            " ORDER BY coalesce(ended_at, ends_at) DESC LIMIT ?",
            (now, KEEP_FINISHED),
        ).fetchall()
        self._finished = {w.id: w for w in (Window(*r) for r in done)}

    def _load_read_only(self, path: Path) -> None:
        """The file could not be opened for writing: read what it holds, if it can be read."""
        from vigie.monitor.statedir import read_only_copy

        db = read_only_copy(path)
        if db is None:
            return
        try:
            self._load(db)
        except sqlite3.Error:
            pass  # unreadable as well: start without it
        finally:
            db.close()


def window(
    spec: MaintenanceSpec,
    source: str,
    window_id: str = "",
    author: str = "",
    *,
    now: float | None = None,
) -> Window:
    """Turn a spec into a window with epoch times."""
    start = spec.start.timestamp() if spec.start is not None else now
    if start is None:
        start = datetime.now(UTC).timestamp()
    return Window(
        spec.target,
        start,
        spec.end.timestamp(),
        spec.reason,
        source,
        id=window_id,
        author=sanitise(author)[:MAX_WHO],
    )


def _new_id() -> str:
    """A short random id: unique across replicas and restarts, not guessable in a URL."""
    return f"m-{secrets.token_hex(6)}"


def _finished_at(win: Window) -> float:
    return win.ended_at if win.ended_at is not None else win.end


def _hours(seconds: float) -> str:
    """A length as people write it in the config: `24h`, `90m`, `45s`."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{round(seconds)}s"


def _row(w: Window) -> tuple[object, ...]:
    return (
        w.target,
        w.start,
        w.end,
        w.reason,
        w.source,
        w.id,
        w.author,
        w.silence,
        w.ended_at,
        w.ended_by,
    )
