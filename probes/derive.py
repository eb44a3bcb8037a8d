"""Derived samples computed from a check's successive results, declared as data in profiles.

A profile's `derive:` list turns the samples of one poll, and the polls before it, into new
families: `ratio` (used / size, per label set), `forecast_full` (seconds until a ratio reaches
1, by a least-squares line over a window) and `ewma_ratio` (a value over its own slowly learnt
baseline, which does not learn a degradation). The state lives in a `DeriveState` per check,
bounded in series and points; the clock is passed in, so nothing here reads the time itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from vigie.core.durations import Duration
from vigie.core.results import Sample

__all__ = [
    "MAX_FORECAST",
    "MAX_POINTS",
    "MAX_SERIES",
    "DeriveDef",
    "DeriveState",
    "EwmaRatio",
    "ForecastFull",
    "Ratio",
]

MAX_SERIES = 1000
"""Most label sets one derive keeps state for: a device inventing rows cannot grow memory."""

MAX_FORECAST = 10 * 365 * 86400.0
"""Forecasts beyond ten years count as not growing (+Inf): a flat pool's float noise is no trend."""

MAX_POINTS = 720
"""Most points a forecast keeps per series (one hour at a 5 s interval); older ones thin out."""

Labels = tuple[tuple[str, str], ...]
Log = Callable[..., None]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ratio(_Strict):
    """numerator / denominator of two families with the same labels (e.g. used / size)."""

    kind: Literal["ratio"]
    name: MetricName = Field(description="Derived family; ends with _ratio.")
    help: str = Field(min_length=1)
    numerator: MetricName = Field(description="Family of this profile (e.g. used bytes).")
    denominator: MetricName = Field(description="Family of this profile (e.g. size bytes).")

    @property
    def sources(self) -> tuple[str, ...]:
        """Return the families this derive reads."""
        return (self.numerator, self.denominator)

    @model_validator(mode="after")
    def _check(self) -> Self:
        """A ratio's name ends with _ratio."""
        if not self.name.endswith("_ratio"):
            raise ValueError(f"ratio name {self.name!r} must end with _ratio")
        return self


class ForecastFull(_Strict):
    """Seconds until a 0-to-1 ratio reaches 1, from a least-squares line over a window."""

    kind: Literal["forecast_full"]
    name: MetricName = Field(description="Derived family; ends with _seconds.")
    help: str = Field(min_length=1)
    metric: MetricName = Field(description="A 0-to-1 ratio family of this profile.")
    window: Duration = Field(3600.0, description="How far back the regression looks.")
    min_points: int = Field(3, ge=2, le=MAX_POINTS, description="Points needed to forecast.")

    @property
    def sources(self) -> tuple[str, ...]:
        """Return the families this derive reads."""
        return (self.metric,)

    @model_validator(mode="after")
    def _check(self) -> Self:
        """A forecast's name ends with _seconds."""
        if not self.name.endswith("_seconds"):
            raise ValueError(f"forecast_full name {self.name!r} must end with _seconds")
        return self


class EwmaRatio(_Strict):
    """Current value / its EWMA baseline; the baseline learns slowly (or not) while above k."""

    kind: Literal["ewma_ratio"]
    name: MetricName = Field(description="Derived family; ends with _ratio.")
    help: str = Field(min_length=1)
    metric: MetricName = Field(description="Family of this profile (e.g. a latency).")
    half_life: Duration = Field(1800.0, description="Half-life of the baseline's memory.")
    k: float = Field(3.0, gt=1.0, description="Above k times the baseline, learn slowly.")
    above_half_life: Duration | None = Field(
        None, description="Half-life while above k; none: the baseline freezes."
    )
    floor: float = Field(
        0.0, ge=0.0, description="Smallest baseline divided by (idle arrays: 0.5 ms latency)."
    )

    @property
    def sources(self) -> tuple[str, ...]:
        """Return the families this derive reads."""
        return (self.metric,)

    @model_validator(mode="after")
    def _check(self) -> Self:
        """An ewma_ratio's name ends with _ratio."""
        if not self.name.endswith("_ratio"):
            raise ValueError(f"ewma_ratio name {self.name!r} must end with _ratio")
        return self


DeriveDef = Annotated[Ratio | ForecastFull | EwmaRatio, Field(discriminator="kind")]


# --------------------------------------------------------------------------- computation


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """Return (slope, value at the last point's time) of a least-squares line; None if flat x."""
    n = len(points)
    t0 = points[-1][0]  # centre on the last time: keeps the sums small and exact
    sx = sum(t - t0 for t, _ in points)
    sy = sum(v for _, v in points)
    sxx = sum((t - t0) ** 2 for t, _ in points)
    sxy = sum((t - t0) * v for t, v in points)
    denom = n * sxx - sx * sx
    if denom <= 0:
        return None
    slope = (n * sxy - sx * sy) / denom
    intercept = (sy - slope * sx) / n
    return slope, intercept


@dataclass(slots=True)
class _Ewma:
    """One series' baseline and when it was last updated."""

    baseline: float
    at: float


@dataclass(slots=True)
class DeriveState:
    """Derived-sample state of one check: forecast points and EWMA baselines per label set."""

    defs: tuple[Ratio | ForecastFull | EwmaRatio, ...]
    points: dict[tuple[str, Labels], deque[tuple[float, float]]] = field(default_factory=dict)
    baselines: dict[tuple[str, Labels], _Ewma] = field(default_factory=dict)

    def apply(self, samples: Iterable[Sample], now: float, log: Log) -> list[Sample]:
        """Return the derived samples of one poll's samples, updating the state at time now."""
        by_family: dict[str, dict[Labels, float]] = {}
        for s in samples:
            if s.type in ("gauge", "counter"):
                by_family.setdefault(s.name, {})[s.labels] = s.value
        out: list[Sample] = []
        for d in self.defs:
            if isinstance(d, Ratio):
                made = self._ratio(d, by_family)
            elif isinstance(d, ForecastFull):
                made = self._forecast(d, by_family.get(d.metric, {}), now, log)
            else:
                made = self._ewma(d, by_family.get(d.metric, {}), now, log)
            by_family[d.name] = {s.labels: s.value for s in made}  # later derives may read it
            out.extend(made)
        return out

    @staticmethod
    def _ratio(d: Ratio, by_family: dict[str, dict[Labels, float]]) -> list[Sample]:
        """numerator / denominator for label sets both have; a zero denominator gives nothing."""
        den = by_family.get(d.denominator, {})
        return [
            Sample(d.name, value / den[labels], labels, "gauge", d.help)
            for labels, value in by_family.get(d.numerator, {}).items()
            if den.get(labels) and math.isfinite(value)
        ]

    def _room(self, store: Mapping[tuple[str, Labels], object], key: tuple[str, Labels]) -> bool:
        """Whether a new series may be tracked: known ones always, new ones up to MAX_SERIES."""
        if key in store:
            return True
        return sum(1 for k in store if k[0] == key[0]) < MAX_SERIES

    def _forecast(
        self, d: ForecastFull, series: dict[Labels, float], now: float, log: Log
    ) -> list[Sample]:
        """Seconds to full per series: +Inf when not growing, nothing until min_points."""
        out: list[Sample] = []
        for labels, value in series.items():
            key = (d.name, labels)
            if not math.isfinite(value):
                continue
            if not self._room(self.points, key):
                log("derive_series_cap", derive=d.name, cap=MAX_SERIES)
                continue
            points = self.points.setdefault(key, deque())
            if points and now <= points[-1][0]:
                points.pop()  # the clock did not move: keep the newest value for that time
            points.append((now, value))
            while points and points[0][0] < now - d.window:
                points.popleft()
            if len(points) > MAX_POINTS:
                _thin(points)
            if len(points) < d.min_points:
                continue
            fit = fit_line(points)
            if fit is None:
                continue
            slope, level = fit
            if level >= 1.0:
                seconds = 0.0
            elif slope <= 0.0:
                seconds = math.inf
            else:
                seconds = (1.0 - level) / slope
                if seconds > MAX_FORECAST:
                    seconds = math.inf
            out.append(Sample(d.name, seconds, labels, "gauge", d.help))
        return out

    def _ewma(
        self, d: EwmaRatio, series: dict[Labels, float], now: float, log: Log
    ) -> list[Sample]:
        """Value / baseline per series, then move the baseline (slowly or not while above k)."""
        out: list[Sample] = []
        for labels, value in series.items():
            key = (d.name, labels)
            if not math.isfinite(value) or value < 0:
                continue
            state = self.baselines.get(key)
            if state is None:
                if not self._room(self.baselines, key):
                    log("derive_series_cap", derive=d.name, cap=MAX_SERIES)
                    continue
                state = self.baselines[key] = _Ewma(value, now)
            base = max(state.baseline, d.floor)
            # A zero baseline (no floor) makes any load infinitely slower, idle stays 1.
            ratio = value / base if base > 0.0 else (1.0 if value == 0.0 else math.inf)
            out.append(Sample(d.name, ratio, labels, "gauge", d.help))
            dt = now - state.at
            if dt <= 0:
                continue
            half_life = d.half_life if ratio <= d.k else d.above_half_life
            state.at = now
            if half_life is None:
                continue  # frozen: a degradation must not become the new normal
            alpha = 1.0 - 2.0 ** (-dt / half_life)
            state.baseline += alpha * (value - state.baseline)
        return out

    def dump(self) -> dict[str, Any]:
        """Return the forecast points and baselines as JSON-ready data, to survive a restart."""
        return {
            "points": [
                [name, [list(pair) for pair in labels], [list(point) for point in points]]
                for (name, labels), points in self.points.items()
            ],
            "baselines": [
                [name, [list(pair) for pair in labels], state.baseline, state.at]
                for (name, labels), state in self.baselines.items()
            ],
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take back dumped state for the derives still declared; malformed entries are skipped."""
        names = {d.name for d in self.defs}
        for entry in data.get("points", ()):
            try:
                name, labels, points = entry[0], labels_of(entry[1]), entry[2]
                kept = deque((float(t), float(v)) for t, v in points[-MAX_POINTS:])
            except (TypeError, ValueError, IndexError):
                continue
            if name in names and self._room(self.points, (name, labels)):
                self.points[(name, labels)] = kept
        for entry in data.get("baselines", ()):
            try:
                name, labels = entry[0], labels_of(entry[1])
                state = _Ewma(float(entry[2]), float(entry[3]))
            except (TypeError, ValueError, IndexError):
                continue
            finite = math.isfinite(state.baseline) and math.isfinite(state.at)
            if finite and name in names and self._room(self.baselines, (name, labels)):
                self.baselines[(name, labels)] = state

    def keep_definitions(self, defs: Sequence[Ratio | ForecastFull | EwmaRatio]) -> None:
        """Take the derives a reload declares; drop the state of those no longer declared."""
        self.defs = tuple(defs)
        names = {d.name for d in defs}
        for key in [k for k in self.points if k[0] not in names]:
            del self.points[key]
        for key in [k for k in self.baselines if k[0] not in names]:
            del self.baselines[key]


def labels_of(raw: object) -> Labels:
    """Return labels read back from JSON ([[name, value], ...]); raise ValueError if malformed."""
    if not isinstance(raw, list):
        raise ValueError("labels must be a list")
    pairs = []
    for pair in raw:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        ):
            raise ValueError("a label must be [name, value]")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _thin(points: deque[tuple[float, float]]) -> None:
    """Drop every other point of the older half: the window keeps its span, memory stays bounded."""
    half = len(points) // 2
    older = [p for i, p in enumerate(list(points)[:half]) if i % 2 == 0]
    newer = list(points)[half:]
    points.clear()
    points.extend(older + newer)
