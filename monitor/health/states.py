"""Component states and their documented numeric codes (for vigie_component_state)."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class State(enum.IntEnum):
    """A component's state; the value is the code exposed in metrics."""

    OK = 0
    WARNING = 1
    DEGRADED = 2
    DOWN = 3
    UNKNOWN = 4
    IMPACTED = 5
    FLAPPING = 6

    @property
    def failing(self) -> bool:
        """True for states that break what depends on the component."""
        return self in FAILING


NAMES = {state: state.name for state in State}
"""Each state's name, looked up without the enum's slower `name` property (logs, hot path)."""

FAILING = frozenset({State.DEGRADED, State.DOWN, State.IMPACTED, State.FLAPPING})

SEVERITY_STATE = {"warning": State.WARNING, "degraded": State.DEGRADED, "down": State.DOWN}

RANK = {
    State.OK: 0,
    State.UNKNOWN: 1,
    State.WARNING: 2,
    State.DEGRADED: 3,
    State.FLAPPING: 4,
    State.IMPACTED: 4,
    State.DOWN: 5,
}
"""Severity order for `worst` (FLAPPING and IMPACTED tie: the first seen wins)."""


def worst(states: Iterable[State]) -> State:
    """Return the most severe of states (OK when empty)."""
    best, rank = State.OK, 0
    for state in states:
        if RANK[state] > rank:
            best, rank = state, RANK[state]
    return best
