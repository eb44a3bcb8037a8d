"""The result store: the latest result per check with a short history, and its listeners."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable

from vigie.core.results import ProbeResult

Listener = Callable[[str, ProbeResult | None], None]


class _Outcomes:
    """One check's recent outcomes in a fixed ring: time, duration, success and reason.

    The history is only read for a check's page (when, how long, ok or not, why), so it keeps
    those, not the samples: a full result holds a dozen samples and the phases, about 2 KiB
    each, 40 KiB a check at 20 kept. The ring is allocated whole at the first result and
    never grows, so a check's memory is known from its first run and stays flat.
    """

    __slots__ = ("count", "errors", "next", "ok", "times")

    def __init__(self, size: int) -> None:
        self.times = array("d", bytes(16 * size))  # timestamp, duration per slot
        self.errors: list[str | None] | None = None  # made at the first reason: most have none
        self.ok = 0  # bit i: slot i succeeded
        self.next = 0  # slot the next outcome goes to
        self.count = 0

    def add(self, result: ProbeResult) -> None:
        """Keep a result's outcome, over the oldest when the ring is full."""
        i = self.next
        size = len(self.times) // 2
        self.times[2 * i] = result.timestamp
        self.times[2 * i + 1] = result.duration
        if self.errors is None and result.error is not None:
            self.errors = [None] * size
        if self.errors is not None:
            self.errors[i] = result.error
        if result.success:
            self.ok |= 1 << i
        else:
            self.ok &= ~(1 << i)
        self.next = (i + 1) % size
        self.count = min(self.count + 1, size)

    def results(self) -> list[ProbeResult]:
        """Return the kept outcomes as results without samples, oldest first."""
        size = len(self.times) // 2
        start = (self.next - self.count) % size
        out = []
        for k in range(self.count):
            i = (start + k) % size
            out.append(
                ProbeResult(
                    success=bool(self.ok >> i & 1),
                    duration=self.times[2 * i + 1],
                    error=self.errors[i] if self.errors is not None else None,
                    timestamp=self.times[2 * i],
                )
            )
        return out


class ResultStore:
    """Latest result per check plus its recent outcomes; notifies listeners on change."""

    def __init__(self, history: int = 20) -> None:
        self._latest: dict[str, ProbeResult] = {}
        self._history: dict[str, _Outcomes] = {}
        self._history_len = max(1, history)
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call listener(check_id, result) on every update, and with None on removal."""
        self._listeners.append(listener)

    def update(self, check_id: str, result: ProbeResult) -> None:
        """Record a new result for check_id."""
        self._latest[check_id] = result
        hist = self._history.get(check_id)
        if hist is None:
            hist = self._history[check_id] = _Outcomes(self._history_len)
        hist.add(result)
        for listener in self._listeners:
            listener(check_id, result)

    def remove(self, check_id: str) -> None:
        """Forget a check that left the plan, so no stale series remain."""
        self._latest.pop(check_id, None)
        self._history.pop(check_id, None)
        for listener in self._listeners:
            listener(check_id, None)

    def latest(self, check_id: str) -> ProbeResult | None:
        """Return the latest result of a check (whole, with its samples), if any."""
        return self._latest.get(check_id)

    def history(self, check_id: str) -> list[ProbeResult]:
        """Return a check's recent outcomes, oldest first (success, duration, error, time)."""
        hist = self._history.get(check_id)
        return hist.results() if hist is not None else []

    def check_ids(self) -> Iterable[str]:
        """Return the ids of checks that have a result."""
        return self._latest.keys()
