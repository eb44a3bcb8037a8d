"""Turn the varbinds of a poll into samples with the check's profiles.

Rows get their labels from the table index and lookups, values their scale and factors,
enums their states; booleans and reset flags are derived from the metrics' raw values.
Everything a device sends that becomes a label is sanitised and bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vigie.core.results import Sample
from vigie.core.sanitise import LABEL_VALUE_CHARS, sanitise
from vigie.probes.snmp.profiles.model import IndexDef, MetricDef, Profile
from vigie.probes.snmp.profiles.plan import Collected, Value

__all__ = ["evaluate"]

Log = Callable[..., None]


def _text(value: Value, fmt: str = "text") -> str:
    """Render a value from the device as a label value: printable and bounded."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        if fmt == "hex":
            return sanitise(value[:LABEL_VALUE_CHARS].hex(":"))
        return sanitise(value.rstrip(b"\x00").decode("utf-8", errors="replace"))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return sanitise(str(value))


def _key(value: Value) -> str | None:
    """Return the text an enum value is matched by (integers, OIDs, numeric strings)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.rstrip(b"\x00").decode("utf-8", errors="replace").strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Value) -> float | None:
    """Return a numeric value; strings holding a number (some agents) count too."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.decode("ascii", errors="replace") if isinstance(value, bytes) else value
    try:
        number = float(text.strip().rstrip("\x00"))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_index(suffix: str, indexes: Sequence[IndexDef]) -> list[tuple[str, str, str]] | None:
    """Split a row suffix into (label, value, sub-oid) per index component; None if malformed."""
    parts = [int(p) for p in suffix.split(".")] if suffix else []
    out: list[tuple[str, str, str]] = []
    pos = 0
    for i, idx in enumerate(indexes):
        if idx.type == "integer":
            take = 1
            text = str(parts[pos]) if pos < len(parts) else None
        elif idx.type == "ipv4":
            take = 4
            text = ".".join(map(str, parts[pos : pos + 4])) if pos + 4 <= len(parts) else None
        elif idx.type == "string":
            if pos >= len(parts):
                return None
            take = parts[pos] + 1
            chars = parts[pos + 1 : pos + take]
            text = _chars(chars) if len(chars) == take - 1 else None
        else:  # implied_string: the rest of the OID, only valid last
            take = len(parts) - pos if i == len(indexes) - 1 else -1
            text = _chars(parts[pos:]) if take >= 0 else None
        if text is None or take < 0:
            return None
        out.append((idx.label, text, ".".join(map(str, parts[pos : pos + take]))))
        pos += take
    return out if pos == len(parts) or not indexes else None


def _chars(codes: Sequence[int]) -> str | None:
    """Return a string index component as a label value (printable, bounded)."""
    if any(c > 255 for c in codes):
        return None
    return sanitise(bytes(codes).decode("utf-8", errors="replace"))


@dataclass(frozen=True, slots=True)
class _Row:
    """One instance of a metric: its labels, its raw value, its row suffix."""

    labels: tuple[tuple[str, str], ...]
    raw: Value
    suffix: str


Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _RowCache:
    """Memo of one poll: a table's columns share their rows' parsed indexes and labels."""

    indexes: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[str, str, str]] | None] = (
        field(default_factory=dict)
    )
    labels: dict[tuple[object, ...], Labels] = field(default_factory=dict)


def _rows(m: MetricDef, data: Collected, log: Log, cache: _RowCache | None = None) -> list[_Row]:
    """Return the metric's instances with their index and lookup labels."""
    if m.walked:
        instances = data.walks.get(m.oid, {})
    elif m.oid not in data.scalars:
        return []
    elif not (m.indexes or m.lookups or m.label or m.valid_when):
        return [_Row((), data.scalars[m.oid], "")]  # a plain scalar: most of a GET
    else:
        instances = {"": data.scalars[m.oid]}
    rows: list[_Row] = []
    cache = _RowCache() if cache is None else cache
    shape = tuple((i.label, i.type) for i in m.indexes)
    # Labels depend on the row and on how the metric names it; a value label (info) does not
    # repeat across columns, so only metrics without one share their rows' labels.
    sig: tuple[object, ...] | None = (
        None
        if m.label is not None
        else (
            shape,
            m.drop_indexes,
            tuple(
                (lk.label, lk.oid, tuple(lk.indexes or ()), lk.indexes is None, lk.format,
                 tuple(lk.map.items()))
                for lk in m.lookups
            ),
        )
    )  # fmt: skip
    when = m.valid_when
    valid = set(when.in_) if when is not None else set()
    for suffix, raw in instances.items():
        if when is not None and _key(data.related(when.oid, suffix)) not in valid:
            continue
        known = cache.labels.get((suffix, sig)) if sig is not None else None
        if known is not None:
            rows.append(_Row(known, raw, suffix))
            continue
        key = (suffix, shape)
        if not m.indexes:
            parsed: list[tuple[str, str, str]] | None = []
        elif key in cache.indexes:
            parsed = cache.indexes[key]
        else:
            parsed = cache.indexes[key] = _parse_index(suffix, m.indexes)
        if parsed is None:
            log("snmp_bad_index", metric=m.name, suffix=suffix)
            continue
        labels = [] if m.drop_indexes else [(lb, text) for lb, text, _ in parsed]
        if m.label is not None:
            labels.append((m.label, _text(raw, m.format)))
        subs = {lb: sub for lb, _, sub in parsed}
        for lk in m.lookups:
            inst = ".".join(subs[i] for i in lk.indexes) if lk.indexes is not None else suffix
            text = _text(data.related(lk.oid, inst), lk.format)
            labels.append((lk.label, lk.map.get(text, text)))
        row_labels = tuple(labels)
        if sig is not None:
            cache.labels[(suffix, sig)] = row_labels
        rows.append(_Row(row_labels, raw, suffix))
    return rows


def evaluate(
    profiles: Iterable[Profile],
    data: Collected,
    previous: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    log: Log,
) -> tuple[list[Sample], dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Turn a poll's varbinds into samples; return them and the values resets must remember."""
    samples: list[Sample] = []
    remember: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for profile in profiles:
        rows_by_metric: dict[str, list[_Row]] = {}
        values_by_metric: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        cache = _RowCache()
        for m in profile.metrics:
            rows = rows_by_metric[m.name] = _rows(m, data, log, cache)
            if m.type in ("gauge", "counter"):
                values_by_metric[m.name] = _numeric(m, rows, data, samples, log)
            elif m.type == "stateset":
                _stateset(m, rows, samples, log)
            else:
                samples.extend(Sample(m.name, 1.0, r.labels, "info", m.help) for r in rows)
        by_name = {m.name: m for m in profile.metrics}
        for b in profile.booleans:
            src = by_name[b.metric]
            names = {v: k for k, v in src.states.items()}
            wanted = {names.get(v, v) for v in b.in_}
            merged: dict[tuple[tuple[str, str], ...], bool] = {(): False} if src.merged else {}
            for r in rows_by_metric[b.metric]:
                merged[r.labels] = merged.get(r.labels, False) or _key(r.raw) in wanted
            samples.extend(
                Sample(b.name, 1.0 if on else 0.0, labels, "gauge", b.help)
                for labels, on in merged.items()
            )
        for reset in profile.resets:
            for labels, value in values_by_metric.get(reset.metric, []):
                before = previous.get((reset.name, labels))
                remember[(reset.name, labels)] = value
                down = before is not None and value < before
                if down:
                    log("snmp_reset_detected", metric=reset.metric, before=before, now=value)
                samples.append(
                    Sample(reset.name, 1.0 if down else 0.0, labels, "gauge", reset.help)
                )
    return samples, remember


def _numeric(
    m: MetricDef, rows: list[_Row], data: Collected, out: list[Sample], log: Log
) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    """Append a gauge or counter's samples; return (labels, value) of each for resets."""
    values: list[tuple[tuple[tuple[str, str], ...], float]] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for r in rows:
        number = _number(r.raw)
        if number is None:
            log("snmp_not_numeric", metric=m.name, suffix=r.suffix, value=_text(r.raw)[:40])
            continue
        name, help_text, scale = m.name, m.help, m.scale
        if m.variants is not None:
            variant = m.variants.values.get(_key(data.related(m.variants.oid, r.suffix)) or "")
            if variant is not None:
                name, help_text, scale = variant.name, variant.help, m.scale * variant.scale
        value = number * scale
        for factor in m.factors:
            f = _number(data.related(factor.oid, r.suffix))
            if f is None:
                value = math.nan
                break
            if factor.power_of_ten is not None:
                p = factor.power_of_ten
                f = 10.0 ** (p.multiplier * (f + p.offset))
            value *= f
        if math.isnan(value):
            log("snmp_missing_factor", metric=m.name, suffix=r.suffix)
            continue
        value = _tidy(value)
        if (name, r.labels) in seen:
            log("snmp_duplicate_series", metric=name, labels=r.labels)
            continue
        seen.add((name, r.labels))
        out.append(Sample(name, value, r.labels, m.type, help_text))
        values.append((r.labels, value))
    return values


def _tidy(value: float) -> float:
    """Round away binary noise of decimal scales (57 * 0.1 -> 5.7), leaving integers exact."""
    if value.is_integer():
        return value + 0.0  # -0.0 -> 0.0
    return float(f"{value:.15g}")


def _stateset(m: MetricDef, rows: list[_Row], out: list[Sample], log: Log) -> None:
    """Append a stateset's samples: one per state, 1 for the current one(s); rows may merge."""
    # A merged set (an alarm table) is emitted even when empty: no row means no alarm.
    active: dict[tuple[tuple[str, str], ...], set[str]] = {(): set()} if m.merged else {}
    for r in rows:
        key = _key(r.raw)
        states = active.setdefault(r.labels, set())
        if key in m.states:
            states.add(key)
        else:
            log("snmp_unknown_state", metric=m.name, suffix=r.suffix, value=sanitise(key or "", 40))
    for labels, states in active.items():
        out.extend(
            Sample(
                m.name,
                1.0 if raw in states else 0.0,
                (*labels, (m.state_label, name)),
                "stateset",
                m.help,
            )
            for raw, name in m.states.items()
        )
