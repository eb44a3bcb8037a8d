"""The daemon's own families written straight as text, byte for byte as generate_latest would.

A collector of one series per component (state, down time, page budget) builds 5,000
client_python `Metric` objects with a dict of labels each at every scrape; at 5k components that
cost about 200 ms a scrape, most of a 20k-check page. A `TextCollector` also renders its families
itself through `FamilyText`, which remembers each series' label text, so a scrape only formats
values. `OwnRegistry` keeps its collectors in registration order, so the page can ask each one
for text; `collect()` stays for every other reader of the registry.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from math import copysign

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

MEMO_MAX = 100_000
"""Label texts remembered per family before the memo starts afresh (series come and go)."""


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    """Escape a HELP text for the text format."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class FamilyText:
    """One family's header and the label text of each of its series, kept across scrapes."""

    def __init__(self, name: str, type_: str, help_: str, labelnames: Sequence[str]) -> None:
        self.name = f"{name}_total" if type_ == "counter" else name
        self.header = f"# HELP {self.name} {escape_help(help_)}\n# TYPE {self.name} {type_}\n"
        # generate_latest writes labels sorted by name: remember where each one comes from
        self._order = sorted(range(len(labelnames)), key=lambda i: labelnames[i])
        self._names = [labelnames[i] for i in self._order]
        self._memo: dict[tuple[str, ...], str] = {}

    def render(self, rows: Iterable[tuple[tuple[str, ...], float]]) -> str:
        """Return the family's text for (label values in labelnames' order, value) rows."""
        memo = self._memo
        if len(memo) > MEMO_MAX:
            memo.clear()
        out = [self.header]
        number: Callable[[float], str] = floatToGoString  # client_python's formatting, untyped
        shown: dict[float, str] = {}  # the same few values come back: states, 0.0
        for values, value in rows:
            head = memo.get(values)
            if head is None:
                head = memo[values] = self._head(values)
            if value == 0.0:  # -0.0 equals 0.0 as a key but is written "-0.0"
                text = "0.0" if copysign(1.0, value) > 0 else number(value)
            elif (known := shown.get(value)) is not None:
                text = known
            else:
                text = shown[value] = number(value)
            out.append(f"{head}{text}\n")
        return "".join(out)

    def _head(self, values: tuple[str, ...]) -> str:
        """Return `name{a="x",b="y"} ` for these values, as generate_latest writes it."""
        labels = ",".join(
            f'{n}="{escape_label_value(values[i])}"'
            for n, i in zip(self._names, self._order, strict=True)
        )
        return f"{self.name}{{{labels}}} " if labels else f"{self.name} "


class TextCollector(Collector):
    """A collector that can also write its families as text without building Metric objects."""

    @abstractmethod
    def text(self) -> str:
        """Return the families as generate_latest would write them; safe from a worker thread."""


class OwnRegistry(CollectorRegistry):
    """The daemon's registry: remembers its collectors in order, for `collectors()`."""

    def __init__(self) -> None:
        super().__init__()
        self._ordered: list[Collector] = []

    def register(self, collector: Collector) -> None:
        """Register as client_python does, and remember the order."""
        super().register(collector)
        self._ordered.append(collector)

    def unregister(self, collector: Collector) -> None:
        """Unregister as client_python does."""
        super().unregister(collector)
        self._ordered.remove(collector)

    def collectors(self) -> list[Collector]:
        """Return the collectors in registration order (generate_latest's order)."""
        return list(self._ordered)
