"""The SQLite outbox: written before sent, dedup rules per delivery mode, survives reopening."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.alerting.conftest import T0, make_alert
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.outbox import SCHEMA_VERSION, Entry, Outbox
from vigie.monitor.alerting.sink import Delivery

AM = "alertmanager:http://am:9093"
MAIL = "smtp:mail:587"


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    """A fresh outbox file."""
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


def latest(alert: Alert, sink: str = AM, refresh: bool = False) -> Entry:
    """An entry for a sink in latest mode."""
    return Entry(sink, alert, Delivery.LATEST, refresh=refresh)


def each(alert: Alert, sink: str = MAIL) -> Entry:
    """An entry for a sink in each mode."""
    return Entry(sink, alert, Delivery.EACH)


def sql(box: Outbox, query: str, *args: object) -> list[tuple[Any, ...]]:
    """Read the outbox's file as an operator would, through a connection of our own."""
    with contextlib.closing(sqlite3.connect(box.path)) as db:
        return db.execute(query, args).fetchall()


def states(box: Outbox, sink: str) -> list[tuple[str, str, str]]:
    """Return (key, state, alertname) of every queued row of a sink, oldest first."""
    rows = sql(box, "SELECT key, state, alert FROM outbox WHERE sink = ? ORDER BY id", sink)
    return [(k, s, Alert.from_json(a).name) for k, s, a in rows]


def later(alert: Alert, minutes: int) -> Alert:
    """Return the alert resolved some minutes after T0."""
    return alert.resolved(T0 + timedelta(minutes=minutes))


def test_rows_and_active_survive_reopening(tmp_path: Path) -> None:
    """What was recorded is there after the file is closed and opened again."""
    path = tmp_path / "state" / "outbox.sqlite"
    box = Outbox(path)
    alert = make_alert()
    box.record([latest(alert), each(alert)], activate=[alert])
    box.close()
    again = Outbox(path)
    try:
        assert again.depth() == {AM: 1, MAIL: 1}
        assert again.active() == {alert.key: alert}
        assert [r.alert for r in again.pending(AM, 10)] == [alert]
        assert sql(again, "PRAGMA journal_mode") == [("wal",)]
    finally:
        again.close()


def test_newer_firing_supersedes_queued_firing(outbox: Outbox) -> None:
    """In latest mode, an update replaces the queued firing row of the same key."""
    first = make_alert()
    second = Alert(first.key, first.labels, {"summary": "updated"}, starts_at=T0)
    outbox.record([latest(first)])
    outbox.record([latest(second)])
    rows = outbox.pending(AM, 10)
    assert [r.alert.annotations for r in rows] == [{"summary": "updated"}]


def test_resolve_supersedes_firing(outbox: Outbox) -> None:
    """In latest mode, a resolve replaces the queued firing row: the latest state counts."""
    alert = make_alert()
    outbox.record([latest(alert)])
    outbox.record([latest(later(alert, 5))])
    assert states(outbox, AM) == [(alert.key, "resolved", "VigieIncident")]


def test_queued_resolve_is_never_dropped(outbox: Outbox) -> None:
    """A re-fire queues behind a queued resolve instead of replacing it."""
    alert = make_alert()
    outbox.record([latest(later(alert, 5))])
    refire = Alert(alert.key, alert.labels, starts_at=T0 + timedelta(minutes=9))
    outbox.record([latest(refire)])
    assert [s for _, s, _ in states(outbox, AM)] == ["resolved", "firing"]
    # One row per key per batch, the oldest: the resolve goes first.
    assert [r.alert.state for r in outbox.pending(AM, 10)] == ["resolved"]


def test_resolve_of_another_label_set_is_kept(outbox: Outbox) -> None:
    """Resolves of two label sets of one key (a relabel) are both kept."""
    old = make_alert(severity="warning")
    new = make_alert(severity="critical")
    outbox.record([latest(later(old, 1)), latest(new)])
    outbox.record([latest(later(new, 2))])
    rows = sql(outbox, "SELECT state, alert FROM outbox ORDER BY id")
    assert [(s, Alert.from_json(a).labels["severity"]) for s, a in rows] == [
        ("resolved", "warning"),
        ("resolved", "critical"),
    ]


def test_each_mode_keeps_every_state_change_once(outbox: Outbox) -> None:
    """In each mode (mail) every transition is queued, and a repeated one only once."""
    alert = make_alert()
    refire = Alert(alert.key, alert.labels, starts_at=T0 + timedelta(minutes=9))
    for entry in (alert, alert, later(alert, 5), refire, later(refire, 12)):
        outbox.record([each(entry)])
    assert [s for _, s, _ in states(outbox, MAIL)] == ["firing", "resolved", "firing", "resolved"]


def test_refresh_only_when_nothing_is_queued(outbox: Outbox) -> None:
    """A keep-alive is queued only if the sink has nothing queued for that key."""
    alert = make_alert()
    assert outbox.record([latest(alert, refresh=True)]) == 1
    assert outbox.record([latest(alert, refresh=True)]) == 0
    outbox.ack([r.id for r in outbox.pending(AM, 10)])
    assert outbox.record([latest(alert, refresh=True)]) == 1


def test_pending_is_oldest_first_one_per_key(outbox: Outbox) -> None:
    """pending() gives the oldest row of each key, in queue order, up to the limit."""
    a, b, c = (make_alert(key=k, alertname=k.upper()) for k in ("a", "b", "c"))
    outbox.record([latest(a), latest(b)])
    outbox.record([latest(later(a, 1)), latest(c)])
    assert [r.alert.name for r in outbox.pending(AM, 10)] == ["B", "A", "C"]
    assert [r.alert.name for r in outbox.pending(AM, 2)] == ["B", "A"]
    assert outbox.pending(MAIL, 10) == []


def test_ack_and_failed(outbox: Outbox) -> None:
    """ack() forgets rows; failed() counts attempts and keeps the reason."""
    outbox.record([latest(make_alert())])
    (row,) = outbox.pending(AM, 10)
    outbox.failed([row.id], "am: HTTP 503")
    outbox.failed([row.id], "am: HTTP 503")
    (again,) = outbox.pending(AM, 10)
    assert again.attempts == 2
    assert sql(outbox, "SELECT last_error FROM outbox") == [("am: HTTP 503",)]
    outbox.ack([row.id])
    assert outbox.depth() == {}


def test_active_set(outbox: Outbox) -> None:
    """activate/deactivate keep the set of firing alerts by key."""
    a, b = make_alert(key="a"), make_alert(key="b")
    outbox.record([], activate=[a, b])
    outbox.record([], deactivate=["a"])
    assert outbox.active() == {"b": b}


def test_record_is_atomic(outbox: Outbox) -> None:
    """A failing record() leaves nothing behind: rows and active set change together or not."""
    alert = make_alert()

    class Boom(Exception):
        pass

    def entries() -> Iterator[Entry]:
        yield latest(alert)
        raise Boom

    with pytest.raises(Boom):
        outbox.record(entries(), activate=[alert])
    assert outbox.depth() == {}
    assert outbox.active() == {}


def test_drop_sinks(outbox: Outbox) -> None:
    """Rows of sinks no longer configured are dropped, others kept."""
    alert = make_alert()
    outbox.record([latest(alert), each(alert)])
    assert outbox.drop_sinks([AM]) == {MAIL: 1}
    assert outbox.depth() == {AM: 1}


def test_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    """A corrupt outbox is kept aside for inspection and a fresh one starts."""
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    box = Outbox(path)
    try:
        assert box.moved_aside is not None
        assert box.moved_aside.read_bytes().startswith(b"this is not")
        assert box.depth() == {}
    finally:
        box.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file from a newer Vigie is not touched."""
    path = tmp_path / "outbox.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer than this Vigie"):
        Outbox(path)
