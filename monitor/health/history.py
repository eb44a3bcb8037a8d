"""State-change history per component, fed from each health snapshot, for timelines and recovery.

The engine keeps only the current state and its `since`; the crisis cell also needs to know
when an application went down and when it came back. This tracker keeps a bounded list of
(time, state) transitions per component; the daemon saves each change in its state_dir
(HealthStateStore) and restores them at start, so a restart mid-recovery keeps the board.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from vigie.monitor.health.engine import Snapshot
from vigie.monitor.health.states import State


@dataclass(frozen=True, slots=True)
class Transition:
    """A component entered `state` at `at` (epoch seconds)."""

    at: float
    state: State


@dataclass(frozen=True, slots=True)
class Recovery:
    """An application's outage and recovery as the recovery board shows it."""

    component: str
    state: State
    down_since: float | None
    back_at: float | None
    stable_for: float | None


class Changes(NamedTuple):
    """What one snapshot changed in the history."""

    added: list[tuple[str, float, State]]
    removed: list[str]


class StateHistory:
    """Bounded per-component transitions, appended when a snapshot shows a new state."""

    def __init__(
        self,
        per_component: int = 50,
        restored: Mapping[str, Iterable[tuple[float, State]]] | None = None,
    ) -> None:
        self.limit = per_component
        self._log: dict[str, collections.deque[Transition]] = {
            cid: collections.deque((Transition(at, st) for at, st in log), maxlen=per_component)
            for cid, log in (restored or {}).items()
        }
        self._seen: Mapping[str, object] | None = None  # the components last observed

    def observe(self, snapshot: Snapshot) -> Changes:
        """Record every component whose state differs from its last recorded one.

        Return what changed, for the durable copy: (component, at, state) transitions added,
        and components that left the topology (their history is dropped).
        """
        if snapshot.components is self._seen:
            return Changes([], [])  # the engine's same statuses: nothing changed (most ticks)
        self._seen = snapshot.components
        added: list[tuple[str, float, State]] = []
        for cid, status in snapshot.components.items():
            log = self._log.get(cid)
            if log is None:
                log = self._log[cid] = collections.deque(maxlen=self.limit)
            if not log or log[-1].state is not status.state:
                log.append(Transition(status.since, status.state))
                added.append((cid, status.since, status.state))
        removed = list(self._log.keys() - snapshot.components.keys())
        for gone in removed:
            del self._log[gone]  # left the topology on reload
        return Changes(added, removed)

    def transitions(self, component: str) -> list[Transition]:
        """Return a component's recorded transitions, oldest first."""
        return list(self._log.get(component, ()))

    def recovery(self, component: str, now: float) -> Recovery | None:
        """Return the last outage of a component and whether it is back; None if never failed."""
        log = self._log.get(component)
        if not log:
            return None
        down_since: float | None = None
        back_at: float | None = None
        for t in log:
            if t.state.failing:
                if down_since is None or back_at is not None:
                    down_since, back_at = t.at, None  # a new outage starts
            elif down_since is not None and back_at is None:
                back_at = t.at
        if down_since is None:
            return None
        current = log[-1].state
        stable = now - back_at if back_at is not None and not current.failing else None
        return Recovery(component, current, down_since, back_at, stable)

    def recoveries(self, components: Iterable[str], now: float) -> list[Recovery]:
        """Return the recovery of each component that failed, in the given order."""
        out = []
        for cid in components:
            rec = self.recovery(cid, now)
            if rec is not None:
                out.append(rec)
        return out
