"""Probe results and the store that keeps the latest one per check with a short history."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from vigie.monitor.sanitise import sanitise

MetricType = Literal["gauge", "counter", "info", "stateset"]

MAX_ERROR_CHARS = 512
"""Bound on an error text: it may come from a target and is untrusted."""


def bound_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Return an error or log text through the one sanitiser, bounded for logs and pages."""
    return sanitise(text, limit)


class Sample(NamedTuple):
    """One metric sample a probe produced; check labels are added at exposition time.

    A named tuple rather than a frozen dataclass: probes make thousands a second, and a
    tuple is built in half the time.
    """

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    type: MetricType = "gauge"
    help: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one run of a check produced: success, duration, samples, failure reason, debug log.

    error is why the run failed; on a successful run it says what could not be read (a
    partial result, e.g. one Redfish resource of many), else it is None.
    """

    success: bool
    duration: float = 0.0
    samples: tuple[Sample, ...] = ()
    error: str | None = None
    phases: tuple[tuple[str, float], ...] = ()
    logs: tuple[str, ...] = ()
    timestamp: float = field(default_factory=time.time)


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
