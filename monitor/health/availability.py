"""Availability per component, application and tier over any range, and down time as a counter.

An application is unavailable while its state is failing (DOWN, IMPACTED, FLAPPING, DEGRADED:
what the recovery board counts as down). Time in a maintenance window is left out of both the
down time and the time it counts against; so is time Vigie did not know the state (UNKNOWN, or
before its first record, e.g. Vigie stopped). Figures come from the archive's kept changes
(`Spell`s); the counter `vigie_component_down_seconds_total` adds, between two snapshots, the
time each component spent failing outside maintenance, since this Vigie started.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric

from vigie.monitor.health.archive import Change, Spell
from vigie.monitor.health.snapshot import Snapshot
from vigie.monitor.health.states import State
from vigie.monitor.textformat import FamilyText, TextCollector


@dataclass(frozen=True, slots=True)
class Figures:
    """What one component (or a sum of them) did over a range, in seconds."""

    observed: float = 0.0
    """Time the state was known and outside maintenance: what availability counts against."""
    down: float = 0.0
    maintenance: float = 0.0

    @property
    def availability(self) -> float | None:
        """The share of observed time not down (None when nothing was observed)."""
        return None if self.observed <= 0 else 1.0 - self.down / self.observed

    def __add__(self, other: Figures) -> Figures:
        """Sum two components' figures (a tier's)."""
        return Figures(
            self.observed + other.observed,
            self.down + other.down,
            self.maintenance + other.maintenance,
        )


def figures(spells: Sequence[Spell], since: float, until: float) -> Figures:
    """Return the figures of a component over [since, until) from its spells, oldest first."""
    observed = down = maintenance = 0.0
    for i, spell in enumerate(spells):
        start = max(spell.at, since)
        end = min(spells[i + 1].at if i + 1 < len(spells) else until, until)
        if end <= start:
            continue
        seconds = end - start
        if spell.maintenance:
            maintenance += seconds
        elif spell.state is not State.UNKNOWN:
            observed += seconds
            if spell.state.failing:
                down += seconds
    return Figures(observed, down, maintenance)


DOWN_NAME = "vigie_component_down_seconds"
DOWN_HELP = (
    "Seconds the component was failing (DOWN, IMPACTED, FLAPPING, DEGRADED) outside"
    " maintenance windows, since this Vigie started."
)
DOWN_LABELS = ("component", "site", "kind")


class DownTime(TextCollector):
    """Follows snapshots: changes of state or maintenance to keep, and down seconds to count."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[State, bool]] = {}
        self._at: float | None = None
        self._down: dict[str, float] = {}
        self._meta: dict[str, tuple[str, str]] = {}
        self._text = FamilyText(DOWN_NAME, "counter", DOWN_HELP, DOWN_LABELS)
        self._kept: str | None = None  # the text, written again only after a count moved
        self._moved = True
        self._counting: set[str] = set()  # failing outside maintenance: their time counts
        self._seen: Mapping[str, object] | None = None  # the components last observed

    def observe(self, snapshot: Snapshot) -> list[Change]:
        """Count the down time since the last snapshot; return the changes this one brings."""
        at = snapshot.at
        if self._at is not None and at > self._at:
            dt = at - self._at
            for cid in self._counting:
                self._down[cid] = self._down.get(cid, 0.0) + dt
                self._moved = True
        self._at = at if self._at is None else max(self._at, at)
        changes: list[Change] = []
        if snapshot.components is self._seen:
            return changes  # the engine's same statuses: nothing changed (most ticks)
        self._seen = snapshot.components
        for cid, status in snapshot.components.items():
            now = (status.state, status.maintenance)
            before = self._last.get(cid)
            if before != now:
                # a state change dates from the engine's `since`; a window opening from now
                when = status.since if before is None or before[0] is not now[0] else at
                changes.append((cid, when, status.state, status.maintenance))
                self._last[cid] = now
                if status.state.failing and not status.maintenance:
                    self._counting.add(cid)
                else:
                    self._counting.discard(cid)
            meta = self._meta.get(cid)
            if meta is None or meta[0] != status.site or meta[1] != status.kind:
                self._meta[cid] = (status.site, status.kind)
                self._down.setdefault(cid, 0.0)
                self._moved = True
        for gone in self._last.keys() - snapshot.components.keys():
            del self._last[gone]  # left the topology: its counter stays (a counter never drops)
            self._counting.discard(gone)
        return changes

    def down_seconds(self) -> Mapping[str, float]:
        """Seconds each component spent failing outside maintenance since this Vigie started."""
        return dict(self._down)

    def collect(self) -> Iterator[Metric]:
        """Yield vigie_component_down_seconds_total."""
        family = CounterMetricFamily(DOWN_NAME, DOWN_HELP, labels=list(DOWN_LABELS))
        for labels, seconds in self._rows():
            family.add_metric(list(labels), seconds)
        yield family

    def text(self) -> str:
        """Write vigie_component_down_seconds_total as text (kept while no count moves)."""
        kept = self._kept
        if kept is None or self._moved:
            self._moved = False  # before the copy: a count moving meanwhile is seen next time
            kept = self._kept = self._text.render(self._rows())
        return kept

    def _rows(self) -> list[tuple[tuple[str, ...], float]]:
        """(component, site, kind), seconds, by component id; a copy, so a thread may read it."""
        meta = self._meta.copy()
        return [
            ((cid, *meta.get(cid, ("", ""))), seconds)
            for cid, seconds in sorted(self._down.copy().items())
        ]


def tiers(per_app: Iterable[tuple[int, Figures]]) -> dict[int, Figures]:
    """Sum applications' figures by tier (criticality 1 to 4; 5: none set)."""
    out: dict[int, Figures] = {}
    for tier, fig in per_app:
        out[tier] = out.get(tier, Figures()) + fig
    return dict(sorted(out.items()))
