"""Rule conditions: `metric{label="v"} op number`, evaluated on a check's latest samples."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vigie.core.results import Sample, format_value

_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_COND = re.compile(
    r"^\s*(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<labels>[^}]*)\})?\s*"
    r"(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=|!=)\s*"([^"]*)"\s*$')


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed comparison of one metric (optionally filtered by labels) with a number."""

    text: str
    metric: str
    matchers: tuple[tuple[str, bool, str], ...]
    op: str
    threshold: float

    def evaluate(self, samples: Iterable[Sample]) -> tuple[bool | None, str]:
        """Return (holds, what was seen); holds is None when the metric is absent."""
        compare = _OPS[self.op]
        seen: float | None = None
        for sample in samples:
            if sample.name != self.metric or not self._labels_match(sample.labels):
                continue
            seen = sample.value
            if compare(sample.value, self.threshold):
                return True, self.describe(sample.value)
        if seen is None:
            return None, f"{self.metric} absent"
        return False, self.describe(seen)

    def describe(self, value: float) -> str:
        """Say what was seen, e.g. `ups_battery_runtime_seconds (312) < 600`."""
        return f"{self.metric} ({format_value(value)}) {self.op} {format_value(self.threshold)}"

    def _labels_match(self, labels: tuple[tuple[str, str], ...]) -> bool:
        present = dict(labels)
        return all((present.get(k) == v) == eq for k, eq, v in self.matchers)


def parse_condition(text: str) -> Condition:
    """Parse a condition or raise ValueError naming what is wrong."""
    match = _COND.match(text)
    if match is None:
        raise ValueError(
            f'invalid condition {text!r}: expected metric{{label="value"}} OP number, '
            "OP one of == != < <= > >="
        )
    matchers: list[tuple[str, bool, str]] = []
    for part in filter(None, (match.group("labels") or "").split(",")):
        m = _MATCHER.match(part)
        if m is None:
            raise ValueError(f"invalid label matcher {part.strip()!r} in {text!r}")
        matchers.append((m.group(1), m.group(2) == "=", m.group(3)))
    return Condition(
        text=text.strip(),
        metric=match.group("name"),
        matchers=tuple(matchers),
        op=match.group("op"),
        threshold=float(match.group("value")),
    )
