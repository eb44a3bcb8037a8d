"""The result store: the latest result per check with a short history, and its listeners."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

from vigie.core.results import ProbeResult

Listener = Callable[[str, ProbeResult | None], None]


class ResultStore:
    """Latest result per check plus its recent history; notifies listeners on change."""

    def __init__(self, history: int = 20) -> None:
        self._latest: dict[str, ProbeResult] = {}
        self._history: dict[str, collections.deque[ProbeResult]] = {}
        self._history_len = history
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call listener(check_id, result) on every update, and with None on removal."""
        self._listeners.append(listener)

    def update(self, check_id: str, result: ProbeResult) -> None:
        """Record a new result for check_id."""
        self._latest[check_id] = result
        hist = self._history.get(check_id)
        if hist is None:
            hist = self._history[check_id] = collections.deque(maxlen=self._history_len)
        hist.append(result)
        for listener in self._listeners:
            listener(check_id, result)

    def remove(self, check_id: str) -> None:
        """Forget a check that left the plan, so no stale series remain."""
        self._latest.pop(check_id, None)
        self._history.pop(check_id, None)
        for listener in self._listeners:
            listener(check_id, None)

    def latest(self, check_id: str) -> ProbeResult | None:
        """Return the latest result of a check, if any."""
        return self._latest.get(check_id)

    def history(self, check_id: str) -> list[ProbeResult]:
        """Return the recent results of a check, oldest first."""
        return list(self._history.get(check_id, ()))

    def check_ids(self) -> Iterable[str]:
        """Return the ids of checks that have a result."""
        return self._latest.keys()
