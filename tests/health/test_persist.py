"""HealthStateStore: the SQLite file that carries health state and history over restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vigie.monitor.health.persist import HealthStateStore
from vigie.monitor.health.states import State


def test_component_states_and_incidents_round_trip(tmp_path: Path) -> None:
    """What save wrote, a new store on the same file loads; removed entries are gone."""
    path = tmp_path / "health.sqlite"
    store = HealthStateStore(path)
    store.save({"site:nord": 100.0}, {"srv": (State.DOWN, 99.0), "app": (State.OK, 1.0)})
    store.save({"site:nord": 100.0}, {"srv": (State.DOWN, 99.0)})
    store.close()
    again = HealthStateStore(path)
    assert again.load() == ({"site:nord": 100.0}, {"srv": (State.DOWN, 99.0)})


def test_history_is_appended_bounded_and_dropped_with_its_component(tmp_path: Path) -> None:
    """Transitions come back oldest first, the last N of each; a removed component's go."""
    path = tmp_path / "health.sqlite"
    store = HealthStateStore(path)
    states = [State.OK, State.DOWN]
    for i in range(7):
        store.save_history([("dpi", float(i), states[i % 2])], [], per_component=3)
    store.save_history([("pacs", 1.0, State.OK)], [], per_component=3)
    store.save_history([], ["pacs"], per_component=3)
    store.close()
    loaded = HealthStateStore(path).load_history(per_component=3)
    assert loaded == {"dpi": [(4.0, State.OK), (5.0, State.DOWN), (6.0, State.OK)]}


def test_history_skips_rows_of_an_unknown_state_code(tmp_path: Path) -> None:
    """A state code this version does not know (written by a newer one) is skipped, not fatal."""
    path = tmp_path / "health.sqlite"
    HealthStateStore(path).save_history([("dpi", 1.0, State.DOWN)], [], per_component=5)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO transitions VALUES ('dpi', 2.0, 99)")
    assert HealthStateStore(path).load_history(per_component=5) == {"dpi": [(1.0, State.DOWN)]}
