"""Fast /metrics: each check's lines are rendered when its result arrives and joined on scrape."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest

from vigie.core.results import ProbeResult, Sample, format_value
from vigie.probes.base import Check

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family's header: its type and help text."""

    type: str
    help: str


COMMON_FAMILIES = {
    "probe_success": Family("gauge", "Whether the probe succeeded (1) or failed (0)."),
    "probe_duration_seconds": Family("gauge", "How long the probe took, in seconds."),
}

LABEL_CACHE_SIZE = 4096
"""Label texts remembered per check before the memo starts afresh."""

_TEXT_TYPES = {"gauge": "gauge", "counter": "counter", "info": "gauge", "stateset": "gauge"}


def check_labels(check: Check) -> list[tuple[str, str]]:
    """Return the labels that identify a check's series: check, kind, target, then config labels."""
    return [("check", check.id), ("kind", check.kind), ("target", check.target), *check.labels]


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    """Escape a HELP text for the text format."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def label_text(labels: Iterable[tuple[str, str]]) -> str:
    """Render label pairs as `a="x",b="y"` (without braces)."""
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)


def result_samples(result: ProbeResult) -> list[Sample]:
    """Return the samples of a result including the common probe_success and duration."""
    return [
        Sample("probe_success", 1.0 if result.success else 0.0),
        Sample("probe_duration_seconds", result.duration),
        *result.samples,
    ]


class Exposition:
    """Holds rendered lines per family and per check; renders the whole page on scrape."""

    def __init__(self, own_registry: CollectorRegistry) -> None:
        self._own = own_registry
        self._families: dict[str, Family] = dict(COMMON_FAMILIES)
        # Encoded once when a result arrives, so a scrape only joins bytes.
        self._lines: dict[str, dict[str, bytes]] = {}
        self._check_families: dict[str, set[str]] = {}
        self._prefixes: dict[str, str] = {}
        # Per check: a sample's labels -> the rendered label text (check prefix included).
        # The same series come back at every run, so they are escaped once, not every time.
        self._label_texts: dict[str, dict[tuple[tuple[str, str], ...], str]] = {}

    def set_labels(self, labels_by_check: Mapping[str, Iterable[tuple[str, str]]]) -> None:
        """Set each check's identifying labels; checks no longer listed are dropped."""
        for cid in list(self._prefixes):
            if cid not in labels_by_check:
                self.drop(cid)
        for cid, labels in labels_by_check.items():
            prefix = label_text(labels)
            if self._prefixes.get(cid) not in (None, prefix):
                self.drop(cid)
            self._prefixes[cid] = prefix

    def update(self, check_id: str, result: ProbeResult | None) -> None:
        """Render a check's new result, or drop its series when result is None."""
        if result is None:
            self.drop(check_id)
            return
        prefix = self._prefixes.get(check_id)
        if prefix is None:
            return
        texts = self._label_texts.setdefault(check_id, {})
        if len(texts) > LABEL_CACHE_SIZE:  # series come and go (a table's rows): start afresh
            texts.clear()
        rendered = self.render_samples(prefix, result_samples(result), texts)
        old = self._check_families.get(check_id)
        if old is None or old != rendered.keys():  # families came or went: usually not
            for family in (old or set()) - rendered.keys():
                self._lines[family].pop(check_id, None)
            self._check_families[check_id] = set(rendered)
        lines = self._lines
        for family, text in rendered.items():
            per_check = lines.get(family)
            if per_check is None:
                per_check = lines[family] = {}
            per_check[check_id] = text.encode()

    def render_samples(
        self,
        prefix: str,
        samples: Iterable[Sample],
        texts: dict[tuple[tuple[str, str], ...], str] | None = None,
    ) -> dict[str, str]:
        """Render samples grouped by family, registering new families' headers.

        texts memoises label texts for this prefix (a table's rows carry the same labels in
        every column's family, and a check's series repeat from run to run).
        """
        out: dict[str, list[str]] = {}
        texts = {} if texts is None else texts
        families = self._families
        isfinite = math.isfinite
        for name, value, labels, type_, help_ in samples:
            if name not in families:
                families[name] = Family(_TEXT_TYPES[type_], help_)
            text = texts.get(labels)
            if text is None:
                own = label_text(labels)
                text = texts[labels] = f"{prefix},{own}" if prefix and own else prefix or own
            if value.__class__ is float and not value.is_integer() and isfinite(value):
                shown = repr(value)  # the common case, without format_value's call
            else:
                shown = format_value(value)
            line = f"{name}{{{text}}} {shown}\n" if text else f"{name} {shown}\n"
            family_lines = out.get(name)
            if family_lines is None:
                out[name] = [line]
            else:
                family_lines.append(line)
        return {name: ls[0] if len(ls) == 1 else "".join(ls) for name, ls in out.items()}

    def drop(self, check_id: str) -> None:
        """Remove every series of a check."""
        for family in self._check_families.pop(check_id, set()):
            self._lines[family].pop(check_id, None)
        self._prefixes.pop(check_id, None)
        self._label_texts.pop(check_id, None)

    def render_text(self, families: Mapping[str, str]) -> str:
        """Render a family->lines mapping with headers, e.g. for one check's debug output."""
        parts: list[str] = []
        for name, lines in families.items():
            fam = self._families[name]
            parts.append(f"# HELP {name} {escape_help(fam.help)}\n# TYPE {name} {fam.type}\n")
            parts.append(lines)
        return "".join(parts)

    def render(self) -> bytes:
        """Return the whole /metrics page: probe families, then the daemon's own metrics."""
        parts: list[bytes] = []
        for name, per_check in self._lines.items():
            if not per_check:
                continue
            fam = self._families[name]
            header = f"# HELP {name} {escape_help(fam.help)}\n# TYPE {name} {fam.type}\n"
            parts.append(header.encode())
            parts.extend(per_check.values())
        parts.append(generate_latest(self._own))
        return b"".join(parts)
