"""The maintenance book on its own: windows with an id and an author, ended early, a maximum
length, kept in state_dir/maintenance.sqlite across restarts, and kept in memory (then written
back) while the state directory refuses writes.

The clock is a plain variable the tests move (no sleeps); the files are real SQLite files in
pytest's tmp_path, and the refused writes are a state_dir that is a file, as the audit log's
test does it.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from vigie.monitor.health.maintenance import (
    MaintenanceBook,
    MaintenanceSpec,
    NotEndable,
    TooLong,
)
from vigie.monitor.statedir import StateDirMonitor

T0 = 1_767_000_000.0


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def spec(
    target: str, hours: float, reason: str = "firmware", start: float | None = None
) -> MaintenanceSpec:
    """A window on target from start (default: now) lasting `hours`."""
    begin = T0 if start is None else start
    return MaintenanceSpec(
        target=target,
        start=None if start is None else datetime.fromtimestamp(begin, UTC),
        end=datetime.fromtimestamp(begin + hours * 3600, UTC),
        reason=reason,
    )


def test_a_window_has_an_id_an_author_holds_pages_and_ends_early() -> None:
    """Opened with its author, it holds its target; ended early it stops at once, says who
    ended it and when, and its id no longer names an open window."""
    clock = Clock()
    book = MaintenanceBook(clock=clock)
    win = book.add(spec("srv-1", 2), author="alice")
    assert win.id.startswith("m-") and win.author == "alice" and win.source == "api"
    assert book.active(clock()) == {"srv-1": "firmware"}
    clock.now += 600
    ended = book.end(win.id, "bob")
    assert ended is not None
    assert (ended.ended_at, ended.ended_by, ended.ended_early) == (T0 + 600, "bob", True)
    assert book.active(clock()) == {}
    assert book.windows == [] and book.finished == [ended]
    assert book.end(win.id, "bob") is None  # no longer open
    assert book.end("m-nope", "bob") is None


def test_config_windows_are_not_limited_and_not_ended_through_the_api() -> None:
    """A window of the config file may be long and cannot be ended early (the file would
    bring it back); an API window longer than the maximum is refused naming it."""
    book = MaintenanceBook([spec("dc-nord", 72)], clock=Clock())
    [configured] = book.windows
    assert configured.id == "config-0" and configured.author == "config"
    with pytest.raises(NotEndable, match="config file"):
        book.end("config-0", "alice")
    with pytest.raises(TooLong, match="maximum of 24h"):
        book.add(spec("srv-1", 25), author="alice", longest=86400)
    with pytest.raises(ValueError, match="in the past"):
        book.add(spec("srv-1", 1, start=T0 - 7200), author="alice")
    assert book.add(spec("srv-1", 24), author="alice", longest=86400).end == T0 + 86400
    book.set_config([])  # a reload without it: the API's window stays
    assert [w.target for w in book.windows] == ["srv-1"]


def test_windows_survive_a_restart_and_finished_ones_are_kept(tmp_path: Path) -> None:
    """Open a book on a state dir, add windows, close, reopen: the open window is back with
    its id, author and silence; the one ended early and the one past its end no longer hold
    pages but are kept (in the file, and in the book's finished list)."""
    path = tmp_path / "state" / "maintenance.sqlite"
    clock = Clock()
    book = MaintenanceBook(path=path, clock=clock)
    held = book.add(spec("srv-1", 2), author="alice")
    book.set_silence(held.id, "0d7a-silence")
    short = book.add(spec("srv-2", 0.5), author="alice")
    ended = book.add(spec("srv-3", 2), author="carol")
    book.end(ended.id, "bob")
    book.close()

    clock.now += 3600  # srv-2's window ran out meanwhile
    again = MaintenanceBook(path=path, clock=clock)
    [back] = again.windows
    assert (back.id, back.target, back.author, back.silence) == (
        held.id,
        "srv-1",
        "alice",
        "0d7a-silence",
    )
    assert again.active(clock()) == {"srv-1": "firmware"}
    finished = {w.id: w for w in again.finished}
    assert finished[ended.id].ended_by == "bob" and finished[ended.id].ended_at == T0
    assert finished[short.id].ended_at is None
    assert again.silences() == {"0d7a-silence"}
    again.close()
    db = sqlite3.connect(path)
    try:
        count = db.execute("SELECT count(*) FROM maintenance_window").fetchone()[0]
    finally:
        db.close()
    assert count == 3


def rows(path: Path) -> set[str]:
    """The targets of the windows the file holds."""
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT target FROM maintenance_window")}
    finally:
        db.close()


def test_windows_finished_before_the_retention_leave_the_file(tmp_path: Path) -> None:
    """With a 30-day retention, a window finished more than 30 days ago leaves the file at a
    write (at most one pruning a day) or at the next start; open windows and recent ones stay.
    Without a retention everything is kept."""
    path = tmp_path / "maintenance.sqlite"
    clock = Clock()
    day = 86400.0
    book = MaintenanceBook(path=path, clock=clock, retention=30 * day)
    old = book.add(spec("srv-old", 1), author="alice")
    book.end(old.id, "alice")
    clock.now += 20 * day
    book.add(spec("srv-recent", 1, start=clock.now), author="bob")
    assert rows(path) == {"srv-old", "srv-recent"}
    clock.now += 11 * day  # srv-old ended 31 days ago, srv-recent about 11 days ago
    book.add(spec("srv-open", 24 * 40, start=clock.now), author="carol")
    assert rows(path) == {"srv-recent", "srv-open"}  # that write pruned
    book.close()
    clock.now += 21 * day  # srv-recent finished 32 days ago: the next start prunes it
    again = MaintenanceBook(path=path, clock=clock, retention=30 * day)
    assert rows(path) == {"srv-open"}
    assert again.finished == [] and [w.target for w in again.windows] == ["srv-open"]
    again.close()
    clock.now += 100 * day
    keep_all = MaintenanceBook(path=path, clock=clock)
    keep_all.close()
    assert rows(path) == {"srv-open"}


def test_an_unwritable_state_dir_keeps_windows_in_memory_and_writes_them_back(
    tmp_path: Path,
) -> None:
    """The state_dir is a file: a window still holds pages at once, the monitor names the
    store; once it is a directory again, flush() writes the window's latest state (ended
    early too) and the problem clears; a restart then finds it."""
    state = tmp_path / "state"
    state.write_text("not a directory")
    monitor = StateDirMonitor(state, CollectorRegistry())
    clock = Clock()
    book = MaintenanceBook(path=state / "maintenance.sqlite", report=monitor, clock=clock)
    win = book.add(spec("srv-1", 2), author="alice")
    kept = book.add(spec("srv-2", 2), author="alice")
    assert book.active(clock()) == {"srv-1": "firmware", "srv-2": "firmware"}
    book.end(win.id, "bob")
    assert book.pending == 2
    summary = monitor.summary()
    assert summary is not None and "maintenance.sqlite" in summary
    assert not book.flush()
    state.unlink()
    state.mkdir()
    assert book.flush()
    assert book.pending == 0 and monitor.summary() is None
    book.close()
    again = MaintenanceBook(path=state / "maintenance.sqlite", clock=clock)
    assert [w.id for w in again.windows] == [kept.id]
    assert [(w.id, w.ended_by) for w in again.finished] == [(win.id, "bob")]
    again.close()


def test_a_file_locked_by_another_process_keeps_the_window_and_writes_it_later(
    tmp_path: Path,
) -> None:
    """An sqlite3 shell left in a transaction holds the file: a window opened meanwhile holds
    pages from memory, the monitor says the file is locked; once the lock is gone, the retry
    loop's flush() writes it and a restart finds it."""
    path = tmp_path / "state" / "maintenance.sqlite"
    clock = Clock()
    monitor = StateDirMonitor(path.parent, CollectorRegistry())
    book = MaintenanceBook(path=path, report=monitor, clock=clock)
    shell = sqlite3.connect(path, isolation_level=None)
    try:
        shell.execute("BEGIN IMMEDIATE")
        win = book.add(spec("srv-1", 2), author="alice")
        assert book.active(clock()) == {"srv-1": "firmware"}
        assert book.pending == 1
        summary = monitor.summary()
        assert summary is not None and "locked by another process" in summary
        shell.execute("ROLLBACK")
    finally:
        shell.close()
    assert book.flush() and monitor.summary() is None
    book.close()
    again = MaintenanceBook(path=path, clock=clock)
    assert [(w.id, w.author) for w in again.windows] == [(win.id, "alice")]
    again.close()
