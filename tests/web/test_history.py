"""StateHistory: bounded transitions per component and the recovery it derives."""

from __future__ import annotations

import dataclasses

import pytest

from vigie.monitor.health.history import Recovery, StateHistory, Transition
from vigie.monitor.health.snapshot import ComponentStatus, Snapshot
from vigie.monitor.health.states import State


def snap(at: float, **states: tuple[State, float]) -> Snapshot:
    """A snapshot with components in the given (state, since)."""
    comps = {
        cid: ComponentStatus(cid, "application", "nord", state, state, since, (), ())
        for cid, (state, since) in states.items()
    }
    return Snapshot(at, comps, {}, {})


def test_only_changes_are_recorded_with_the_engine_since() -> None:
    """Repeated snapshots in the same state add nothing; a change records its `since`."""
    h = StateHistory()
    h.observe(snap(10, dpi=(State.OK, 5)))
    h.observe(snap(11, dpi=(State.OK, 5)))
    h.observe(snap(20, dpi=(State.DOWN, 19)))
    h.observe(snap(21, dpi=(State.IMPACTED, 21)))
    assert h.transitions("dpi") == [
        Transition(5, State.OK),
        Transition(19, State.DOWN),
        Transition(21, State.IMPACTED),
    ]
    assert h.transitions("unknown") == []


def test_history_is_bounded_and_forgets_removed_components() -> None:
    """At most per_component transitions are kept; a component gone from the topology is dropped."""
    h = StateHistory(per_component=3)
    for i in range(10):
        h.observe(snap(i, dpi=(State.DOWN if i % 2 else State.OK, i), pacs=(State.OK, 0)))
    assert [t.at for t in h.transitions("dpi")] == [7, 8, 9]
    h.observe(snap(11, pacs=(State.OK, 0)))
    assert h.transitions("dpi") == [] and len(h.transitions("pacs")) == 1


@pytest.mark.parametrize(
    ("changes", "now", "expected"),
    [
        ([(0, State.OK)], 50, None),
        ([(0, State.OK), (10, State.DOWN)], 50, Recovery("a", State.DOWN, 10, None, None)),
        (
            [(0, State.OK), (10, State.DOWN), (12, State.IMPACTED), (30, State.OK)],
            50,
            Recovery("a", State.OK, 10, 30, 20),
        ),
        (  # a warning after coming back is still back
            [(0, State.OK), (10, State.DOWN), (30, State.WARNING)],
            40,
            Recovery("a", State.WARNING, 10, 30, 10),
        ),
        (  # a new outage after a recovery starts over
            [(0, State.OK), (10, State.DOWN), (30, State.OK), (35, State.IMPACTED)],
            40,
            Recovery("a", State.IMPACTED, 35, None, None),
        ),
    ],
)
def test_recovery_from_transitions(
    changes: list[tuple[float, State]], now: float, expected: Recovery | None
) -> None:
    """Down since is the start of the last outage, back at its end, stable for the time since."""
    h = StateHistory()
    for since, state in changes:
        h.observe(snap(since, a=(state, since)))
    assert h.recovery("a", now) == expected
    assert h.recoveries(["a", "b"], now) == ([] if expected is None else [expected])


def test_observe_reports_what_changed_for_the_durable_copy() -> None:
    """observe returns the transitions it added and the components that left."""
    h = StateHistory()
    first = h.observe(snap(10, dpi=(State.OK, 5), pacs=(State.OK, 0)))
    assert first.added == [("dpi", 5, State.OK), ("pacs", 0, State.OK)] and first.removed == []
    assert h.observe(snap(11, dpi=(State.OK, 5), pacs=(State.OK, 0))) == ([], [])
    later = h.observe(snap(20, dpi=(State.DOWN, 19)))
    assert later.added == [("dpi", 19, State.DOWN)] and later.removed == ["pacs"]


def test_the_engine_s_same_statuses_are_not_walked_again() -> None:
    """A snapshot re-dated with the very same statuses (most ticks) adds nothing."""
    h = StateHistory()
    first = snap(10, dpi=(State.OK, 5))
    h.observe(first)
    h._log["dpi"].clear()  # were the statuses walked again, dpi's transition would come back
    assert h.observe(dataclasses.replace(first, at=11)) == ([], [])
    assert h.transitions("dpi") == []
    assert h.observe(snap(12, dpi=(State.OK, 5))).added == [("dpi", 5, State.OK)]


def test_restored_history_goes_on_without_a_duplicate() -> None:
    """A history restored after a restart keeps the outage; the same state adds nothing."""
    h = StateHistory(restored={"dpi": [(5, State.OK), (19, State.DOWN)]})
    assert h.observe(snap(30, dpi=(State.DOWN, 19))).added == []
    h.observe(snap(40, dpi=(State.OK, 40)))
    assert h.recovery("dpi", 50) == Recovery("dpi", State.OK, 19, 40, 10)
