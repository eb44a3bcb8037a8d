"""Counter history for `rate()` and `increase()`: a bounded window of samples per series.

One `Window` belongs to one range condition on one check (the health engine keeps it beside
the rule's timers). It keeps, per series, the running increase of the counter (a value lower
than the one before is a counter reset: the counter restarted from zero, so its new value
counts in full, as Prometheus does) at the times samples arrived, and forgets what lies before
the window's start except one base point. The bound: at most `MAX_SERIES` series of at most
`POINTS + 3` points each (points closer than span/POINTS are merged, which loses nothing since
increases are cumulative), so a window costs the same whatever the check's interval.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

__all__ = ["MAX_SERIES", "POINTS", "Window"]

MAX_SERIES = 64
"""Series one window follows; samples of further series are ignored (and counted)."""
POINTS = 256
"""Points per series across the window (one more at each end, and the base before it)."""

Labels = tuple[tuple[str, str], ...]


class _Series:
    """One series: its last raw value and (time, running increase) points."""

    __slots__ = ("last", "points", "total")

    def __init__(self) -> None:
        self.last: float | None = None
        self.total = 0.0
        self.points: collections.deque[tuple[float, float]] = collections.deque()


class Window:
    """Bounded history of the counter series one range condition reads."""

    __slots__ = ("ignored", "series", "span")

    def __init__(self, span: float) -> None:
        self.span = span
        self.series: dict[Labels, _Series] = {}
        self.ignored = 0  # samples of series beyond MAX_SERIES

    def record(self, values: Iterable[tuple[Labels, float]], now: float) -> None:
        """Add the values a result brought, by series labels; forget what left the window."""
        for labels, value in values:
            series = self.series.get(labels)
            if series is None:
                if len(self.series) >= MAX_SERIES:
                    self.ignored += 1
                    continue
                series = self.series[labels] = _Series()
            if series.last is not None:
                series.total += value - series.last if value >= series.last else value
            series.last = value
            points = series.points
            if len(points) >= 2 and now - points[-2][0] < self.span / POINTS:
                points[-1] = (now, series.total)  # merge: the running total says it all
            else:
                points.append((now, series.total))
            start = now - self.span
            while len(points) >= 2 and points[1][0] <= start:
                points.popleft()
        start = now - self.span
        for labels in [k for k, s in self.series.items() if s.points[-1][0] < start]:
            del self.series[labels]  # a series gone for a whole window

    def increase(self, labels: Labels, now: float) -> float | None:
        """Return how much the series grew over the window ending now; None until covered.

        Counted from the last point at or before the window's start, so a history shorter
        than the window says nothing (a restarted daemon does not see a silence at once).
        """
        series = self.series.get(labels)
        if series is None or not series.points:
            return None
        base = series.points[0]
        if base[0] > now - self.span:
            return None
        for at, total in series.points:  # the base is the last point at or before the start
            if at > now - self.span:
                break
            base = (at, total)
        return series.points[-1][1] - base[1]

    def rate(self, labels: Labels, now: float) -> float | None:
        """Return the per-second increase over the window ending now; None until covered."""
        grown = self.increase(labels, now)
        if grown is None:
            return None
        series = self.series[labels]
        base_at = max(at for at, _ in series.points if at <= now - self.span)
        covered = series.points[-1][0] - base_at
        return grown / covered if covered > 0 else 0.0

    def labels(self) -> list[Labels]:
        """Return the series followed, in a stable order."""
        return sorted(self.series)

    def size(self) -> int:
        """Return the points held (for the memory figures)."""
        return sum(len(s.points) for s in self.series.values())
