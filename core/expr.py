"""Rule conditions, evaluated on a check's latest samples (and, for ranges, their history).

    condition := left OP number[unit]
    left      := [+|-] term { (+|-) term }     with exactly one metric term
    term      := metric{label="v",label!="v"}
               | rate(metric{...}[window]) | increase(metric{...}[window])
               | time() | number[unit]

OP is one of == != < <= > >=; units are ms s m h d w (seconds in the end: `30d` is 2592000).
`time()` is now in epoch seconds, so `probe_tls_cert_expiry_timestamp_seconds - time() < 30d`
holds from thirty days before expiry, and the health engine re-evaluates it when that moment
comes (`Condition.due`). `increase(m[30m])` is how much a counter grew over the last thirty
minutes and `rate(m[5m])` that per second (counter resets as Prometheus: see core/window.py);
both read a `Window` the caller keeps per check, and say nothing until it covers the range.
A condition holds when any series of the metric makes it hold.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vigie.core.results import Sample, format_value
from vigie.core.window import Window

__all__ = ["UNITS", "Condition", "parse_condition"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
"""Units a number may carry in an expression; the value is in seconds."""
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_UNIT = r"(?:ms|s|m|h|d|w)"
_TERM = re.compile(
    rf"""\s*(?P<sign>[-+])?\s*(?:
        (?P<time>time\s*\(\s*\))
      | (?P<func>rate|increase)\s*\(\s*(?P<fname>{_NAME})\s*(?:\{{(?P<flabels>[^}}]*)\}})?\s*
        \[\s*(?P<window>{_NUMBER}{_UNIT})\s*\]\s*\)
      | (?P<num>{_NUMBER})(?P<unit>{_UNIT})?(?![A-Za-z0-9_:.])
      | (?P<name>{_NAME})\s*(?:\{{(?P<labels>[^}}]*)\}})?
    )""",
    re.X,
)
_OP = re.compile(r"\s*(==|!=|<=|>=|<|>)")
_RIGHT = re.compile(rf"^\s*(?P<num>[-+]?{_NUMBER})(?P<unit>{_UNIT})?\s*$")
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=|!=)\s*"([^"]*)"\s*$')
_SYNTAX = (
    'expected metric{label="value"} OP number, OP one of == != < <= > >=, the left side '
    "maybe with rate(m[5m]), increase(m[30m]), time() and numbers with units (30d) "
    "added or taken away"
)
_LABELS_SHOWN = 120
"""Bound on the series labels a description shows (they come from the target)."""

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed comparison of one metric's series (maybe over a window, maybe against now)."""

    text: str
    metric: str
    matchers: tuple[tuple[str, bool, str], ...]
    op: str
    threshold: float
    function: str = ""
    """"rate" or "increase" over `window` seconds; "" for the latest value."""
    window: float = 0.0
    sign: float = 1.0
    """The metric term's sign on the left side."""
    clock: float = 0.0
    """How many times time() is on the left side (signed): 0 when time plays no part."""
    offset: float = 0.0
    """The constant terms of the left side, summed."""
    left: str = field(default="", compare=False)
    """The left side in words (`time()` as now), for descriptions."""

    @property
    def plain(self) -> bool:
        """True for a bare `metric op number`, described as it always was."""
        return not self.function and not self.clock and not self.offset and self.sign == 1.0

    def memory(self) -> Window | None:
        """Return a fresh window for this condition's range function, None when it has none."""
        return Window(self.window) if self.function else None

    def evaluate(
        self,
        samples: Iterable[Sample],
        now: float = 0.0,
        memory: Window | None = None,
        *,
        record: bool = True,
    ) -> tuple[bool | None, str]:
        """Return (holds, what was seen); holds is None when the metric is absent.

        A range condition first records the samples into `memory` (unless `record` is
        False: a re-evaluation at a timer) and is None until the window is covered.
        """
        compare = _OPS[self.op]
        seen: tuple[float, Labels] | None = None
        extra = self.clock * now + self.offset
        if not self.function:  # the hot path: every result of every check, no list built
            for sample in samples:
                if sample.name != self.metric or not self._labels_match(sample.labels):
                    continue
                left = self.sign * sample.value + extra
                seen = (left, sample.labels)
                if compare(left, self.threshold):
                    return True, self.describe(left, sample.labels)
        else:
            values = self._values(samples, now, memory, record)
            if isinstance(values, str):
                return None, values
            for labels, value in values:
                left = self.sign * value + extra
                seen = (left, labels)
                if compare(left, self.threshold):
                    return True, self.describe(left, labels)
        if seen is None:
            return None, f"{self.metric} absent"
        return False, self.describe(*seen)

    def due(self, samples: Iterable[Sample], now: float, memory: Window | None = None) -> float:
        """Return when time alone next changes this condition's outcome (inf: never).

        Only `time()` moves on its own: the left side of each series is a line in time,
        crossing the threshold once; the moment is returned a millisecond after the crossing.
        """
        if not self.clock:
            return math.inf
        values = self._values(samples, now, memory, False)
        due = math.inf
        if isinstance(values, str):
            return due
        for _, value in values:
            crossing = (self.threshold - self.sign * value - self.offset) / self.clock
            if crossing >= now:
                due = min(due, crossing + 0.001)
        return due

    def describe(self, value: float, labels: Labels = ()) -> str:
        """Say what was seen, e.g. `ups_battery_runtime_seconds (312) < 600`."""
        if self.plain:
            return f"{self.metric} ({format_value(value)}) {self.op} {format_value(self.threshold)}"
        left = self.left
        if labels:
            shown = ",".join(f'{k}="{v}"' for k, v in labels)[:_LABELS_SHOWN]
            left = left.replace(self.metric, f"{self.metric}{{{shown}}}", 1)
        return f"{left} ({format_value(value)}) {self.op} {format_value(self.threshold)}"

    def _values(
        self, samples: Iterable[Sample], now: float, memory: Window | None, record: bool
    ) -> list[tuple[Labels, float]] | str:
        """Return each series' value (over the window for a range), or why there is none."""
        matched = [
            (s.labels, s.value)
            for s in samples
            if s.name == self.metric and self._labels_match(s.labels)
        ]
        if not self.function:
            return matched
        if memory is None:
            return f"{self.metric}: no window kept for {self.function}"
        if record:
            memory.record(matched, now)
        read = memory.rate if self.function == "rate" else memory.increase
        values = [(k, v) for k in memory.labels() if (v := read(k, now)) is not None]
        if values:
            return values
        if memory.series:
            return f"{self.left}: history shorter than {_span(self.window)}"
        return f"{self.metric} absent"

    def _labels_match(self, labels: Labels) -> bool:
        if not self.matchers:
            return True
        present = dict(labels)
        return all((present.get(k) == v) == eq for k, eq, v in self.matchers)


def parse_condition(text: str) -> Condition:
    """Parse a condition or raise ValueError naming what is wrong."""
    pos = 0
    metric: tuple[str, str | None, str, float] | None = None  # name, labels, function, window
    sign = 1.0
    clock = offset = 0.0
    words: list[str] = []
    first = True
    op: str | None = None
    while True:
        term = _TERM.match(text, pos)
        if term is None or (not first and term.group("sign") is None):
            raise ValueError(f"invalid condition {text!r}: {_SYNTAX}")
        first = False
        pos = term.end()
        minus = term.group("sign") == "-"
        factor = -1.0 if minus else 1.0
        if words or minus:
            words.append("-" if minus else "+")
        if term.group("time"):
            clock += factor
            words.append("now")
        elif term.group("num"):
            offset += factor * _number(term.group("num"), term.group("unit"))
            words.append(term.group("num") + (term.group("unit") or ""))
        else:
            if metric is not None:
                raise ValueError(f"invalid condition {text!r}: one metric only on the left side")
            if term.group("func"):
                window = _number(*_split_unit(term.group("window")))
                if window <= 0:
                    raise ValueError(f"invalid condition {text!r}: an empty window")
                metric = (term.group("fname"), term.group("flabels"), term.group("func"), window)
                words.append(f"{term.group('fname')} {term.group('func')} over {_span(window)}")
            else:
                metric = (term.group("name"), term.group("labels"), "", 0.0)
                words.append(term.group("name"))
            sign = factor
        found = _OP.match(text, pos)
        if found is not None:
            op, pos = found.group(1), found.end()
            break
    right = _RIGHT.match(text[pos:])
    if metric is None or right is None:
        raise ValueError(f"invalid condition {text!r}: {_SYNTAX}")
    name, labels, function, window = metric
    return Condition(
        text=text.strip(),
        metric=name,
        matchers=_matchers(labels or "", text),
        op=op,
        threshold=_number(right.group("num"), right.group("unit")),
        function=function,
        window=window,
        sign=sign,
        clock=clock,
        offset=offset,
        left=" ".join(words),
    )


def _matchers(labels: str, text: str) -> tuple[tuple[str, bool, str], ...]:
    """Parse `a="x",b!="y"` into (name, equal, value) triples."""
    matchers: list[tuple[str, bool, str]] = []
    for part in filter(None, labels.split(",")):
        m = _MATCHER.match(part)
        if m is None:
            raise ValueError(f"invalid label matcher {part.strip()!r} in {text!r}")
        matchers.append((m.group(1), m.group(2) == "=", m.group(3)))
    return tuple(matchers)


def _number(number: str, unit: str | None) -> float:
    """Return a number in its unit's base (seconds for durations)."""
    return float(number) * (UNITS[unit] if unit else 1.0)


def _split_unit(text: str) -> tuple[str, str | None]:
    """Split `30m` into ("30", "m")."""
    unit = "ms" if text.endswith("ms") else text[-1]
    return text[: -len(unit)], unit


def _span(seconds: float) -> str:
    """Say a window in its largest whole unit: 30m, 2h, 90s."""
    for unit in ("w", "d", "h", "m", "s"):
        if seconds >= UNITS[unit] and (seconds / UNITS[unit]).is_integer():
            return f"{int(seconds / UNITS[unit])}{unit}"
    return f"{format_value(seconds)}s"
