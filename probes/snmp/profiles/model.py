"""SNMP device profiles as data: the YAML model, its checks, and loading with positions.

A profile maps OIDs to metrics (name, type, scale, labels from the table index and lookups,
enum states), derives booleans and reset flags from them, and carries the device's health
rules and trap meanings as validated data. profiles/plan.py says what to ask a device for,
profiles/evaluate.py turns its answers into samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from vigie.core.durations import Duration
from vigie.core.rules import TextLanguage, rule_text
from vigie.core.shipped import shipped
from vigie.core.yamlpos import ConfigError, ConfigErrors, PosDict, PosList, load_yaml
from vigie.probes.derive import DeriveDef

__all__ = [
    "SHIPPED_PROFILE_DIR",
    "BooleanDef",
    "IndexDef",
    "MetricDef",
    "Profile",
    "ResetDef",
    "RuleDef",
    "TrapDef",
    "family_names",
    "load_profile_dirs",
    "load_profile_file",
]

SHIPPED_PROFILE_DIR = shipped("profiles")
"""The profiles Vigie ships: always loaded, before the config's own profile_dirs."""

BASE_UNITS = (
    "seconds",
    "ratio",
    "volts",
    "hertz",
    "amperes",
    "watts",
    "joules",
    "celsius",
    "bytes",
)


def _strip_dot(value: Any) -> Any:
    """Accept OIDs written with a leading dot, as net-snmp prints them."""
    return value.removeprefix(".") if isinstance(value, str) else value


Oid = Annotated[
    str,
    BeforeValidator(_strip_dot),
    StringConstraints(pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$"),
]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$")]
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
Unit = Literal[
    "seconds", "ratio", "volts", "hertz", "amperes", "watts", "joules", "celsius", "bytes"
]


def _keys_to_text(value: Any) -> Any:
    """Turn YAML mapping keys (enum integers, OIDs) into text, as values are matched as text."""
    if isinstance(value, dict):
        return {
            str(k).removeprefix(".") if isinstance(k, str) else str(k): v for k, v in value.items()
        }
    return value


def _items_to_text(value: Any) -> Any:
    """Turn a YAML list of enum values (integers or names) into text."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return value


TextKeyed = Annotated[dict[str, str], BeforeValidator(_keys_to_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndexDef(_Strict):
    """One component of a table index and the label it becomes."""

    label: LabelName = Field(description="Label name for this index component.")
    type: Literal["integer", "string", "implied_string", "ipv4"] = Field(
        "integer",
        description="How the component is encoded in the OID: one sub-id, a length-prefixed "
        "string, a string to the end of the OID, or four sub-ids of an IPv4 address.",
    )


class Lookup(_Strict):
    """A label whose value is read from another OID of the same row (e.g. ifName for ifIndex)."""

    label: LabelName = Field(description="Label name.")
    oid: Oid = Field(
        description="Column OID (the row's index is appended), or a full instance OID for "
        "scalar metrics."
    )
    indexes: list[LabelName] | None = Field(
        None, description="Index components forming the lookup's instance; default: all."
    )
    format: Literal["text", "hex", "integer"] = Field(
        "text", description="How to render the value: UTF-8 text, hex bytes (MACs), integer."
    )
    map: TextKeyed = Field(
        default_factory=dict, description="Value -> label value (enum names, OID names)."
    )


class PowerOfTen(_Strict):
    """Factor 10^(multiplier * (value + offset)), as ENTITY-SENSOR-MIB's scale and precision."""

    multiplier: float = 1.0
    offset: float = 0.0


class Factor(_Strict):
    """Multiply a metric by another column of the same row (e.g. hrStorageAllocationUnits)."""

    oid: Oid = Field(description="Column OID (or scalar instance OID) holding the factor.")
    power_of_ten: PowerOfTen | None = Field(
        None, description="Use 10^(multiplier*(value+offset)) instead of the value itself."
    )


class Condition(_Strict):
    """Keep a row only when another column of it has one of these values."""

    oid: Oid = Field(description="Column OID (or scalar instance OID) to test.")
    in_: Annotated[list[str], BeforeValidator(_items_to_text)] = Field(
        alias="in", min_length=1, description="Raw values (as text) that make the row valid."
    )


class Variant(_Strict):
    """The family a row goes to when the selector column has a given value."""

    name: MetricName
    help: str = Field(min_length=1)
    unit: Unit | None = None
    scale: float = 1.0


class Variants(_Strict):
    """Split one column into families by another column's value (e.g. sensor type)."""

    oid: Oid = Field(description="Column OID whose value selects the family.")
    values: Annotated[dict[str, Variant], BeforeValidator(_keys_to_text)] = Field(
        description="Selector value -> family; other rows keep the metric's own name."
    )


class MetricDef(_Strict):
    """One OID (scalar) or column (walked table) and the metric family it becomes."""

    name: MetricName = Field(description="Metric family name, in base units.")
    oid: Oid = Field(description="Scalar instance OID (GET) or table column OID (walked).")
    type: Literal["gauge", "counter", "stateset", "info"]
    help: str = Field(min_length=1, description="HELP text.")
    unit: Unit | None = Field(None, description="Base unit; must appear in the name.")
    scale: float = Field(1.0, description="Multiplier to base units (60: minutes->seconds).")
    walk: bool | None = Field(
        None, description="Walk the column; default: true when indexes are given."
    )
    required: bool = Field(
        False,
        description="The poll fails when the agent does not serve this object (noSuchObject, "
        "noSuchInstance, endOfMibView, an empty walk); other objects the agent lacks only "
        "leave their metric absent and are counted in snmp_objects_missing.",
    )
    optional: bool = Field(
        False,
        description="Deprecated, kept for older profiles: objects are optional by default.",
    )
    indexes: list[IndexDef] = Field(default_factory=list, description="Table index -> labels.")
    drop_indexes: bool = Field(
        False, description="Do not emit index labels (rows with equal labels are merged)."
    )
    lookups: list[Lookup] = Field(default_factory=list, description="Labels from other OIDs.")
    states: TextKeyed = Field(
        default_factory=dict, description="stateset: raw value (integer or OID) -> state name."
    )
    state_label: LabelName = Field("state", description="stateset: label naming the state.")
    label: LabelName | None = Field(None, description="info: label holding the value.")
    format: Literal["text", "hex", "integer"] = Field("text", description="info: value format.")
    factors: list[Factor] = Field(default_factory=list, description="Per-row multipliers.")
    variants: Variants | None = Field(None, description="Per-row family by another column.")
    valid_when: Condition | None = Field(
        None, description="Skip rows unless another column has one of the given values."
    )

    @property
    def walked(self) -> bool:
        """Whether the metric is a table column to walk rather than a scalar to GET."""
        return self.walk if self.walk is not None else bool(self.indexes)

    @property
    def merged(self) -> bool:
        """Whether all rows merge into one label-less series set (e.g. alarms present)."""
        return self.walked and self.drop_indexes and not self.lookups

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Check the fields that go with each type, name suffixes and units."""
        _check_name(self.name, self.type, self.unit)
        if self.type == "stateset" and not self.states:
            raise ValueError("a stateset needs states (value -> state name)")
        if self.type != "stateset" and self.states:
            raise ValueError("states are only for type stateset")
        if self.type == "info" and self.label is None:
            raise ValueError("an info metric needs label (the label holding the value)")
        if self.type != "info" and self.label is not None:
            raise ValueError("label is only for type info")
        if self.type in ("stateset", "info") and (self.factors or self.scale != 1.0):
            raise ValueError(f"scale and factors do not apply to type {self.type}")
        if self.variants is not None and self.type not in ("gauge", "counter"):
            raise ValueError("variants are only for gauge and counter metrics")
        if self.walk is False and self.indexes:
            raise ValueError("indexes need a walked metric (walk: false given)")
        if self.required and self.optional:
            raise ValueError("required and optional contradict each other: keep required")
        names = [i.label for i in self.indexes]
        for lookup in self.lookups:
            unknown = set(lookup.indexes or ()) - set(names)
            if unknown:
                raise ValueError(
                    f"lookup {lookup.label!r} uses unknown index {sorted(unknown)[0]!r}; "
                    f"indexes: {', '.join(names) or 'none'}"
                )
        labels = [*([] if self.drop_indexes else names), *(lk.label for lk in self.lookups)]
        if self.label is not None:
            labels.append(self.label)
        if self.type == "stateset":
            labels.append(self.state_label)
        dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
        if dupes:
            raise ValueError(f"label {dupes[0]!r} is set twice")
        if self.variants is not None:
            for variant in self.variants.values.values():
                _check_name(variant.name, self.type, variant.unit)
        return self

    def label_names(self) -> list[str]:
        """Return the labels the metric's series carry (the state label included)."""
        out = [] if self.drop_indexes else [i.label for i in self.indexes]
        if self.label is not None:
            out.append(self.label)
        out += [lk.label for lk in self.lookups]
        if self.type == "stateset":
            out.append(self.state_label)
        return out

    def families(self) -> list[tuple[str, str, str, str | None]]:
        """Return (name, type, help, unit) of each family the metric can produce."""
        out: list[tuple[str, str, str, str | None]] = [(self.name, self.type, self.help, self.unit)]
        if self.variants is not None:
            for variant in self.variants.values.values():
                entry = (variant.name, self.type, variant.help, variant.unit)
                if all(e[0] != variant.name for e in out):
                    out.append(entry)
        return out


def _check_name(name: str, mtype: str, unit: str | None) -> None:
    """Check Prometheus naming: _total for counters only, _info for info, unit in the name."""
    if mtype == "counter" and not name.endswith("_total"):
        raise ValueError(f"counter name {name!r} must end with _total")
    if mtype != "counter" and name.endswith("_total"):
        raise ValueError(f"only counters end with _total: {name!r}")
    if mtype == "info" and not name.endswith("_info"):
        raise ValueError(f"info name {name!r} must end with _info")
    if unit is not None and not re.search(rf"_{unit}(_total)?$", name):
        raise ValueError(f"name {name!r} must end with its unit _{unit}")


class BooleanDef(_Strict):
    """A 0/1 gauge derived from another metric's raw value (e.g. on battery = source is 5)."""

    name: MetricName
    help: str = Field(min_length=1)
    metric: MetricName = Field(description="Source metric of this profile.")
    in_: Annotated[list[str], BeforeValidator(_items_to_text)] = Field(
        alias="in", min_length=1, description="Raw values or state names that mean 1."
    )


class ResetDef(_Strict):
    """A 0/1 gauge that is 1 when a metric went down since the previous poll (a restart)."""

    name: MetricName
    help: str = Field(min_length=1)
    metric: MetricName = Field(description="Source gauge or counter of this profile.")


class RuleDef(_Strict):
    """A health rule that goes with the device; kept as data until the health engine uses it."""

    name: MetricName
    expr: str = Field(description='`metric{label="value"} <op> number`, e.g. ups_on_battery == 1')
    severity: Literal["info", "warning", "degraded", "critical"]
    for_: Duration | None = Field(None, alias="for", description="How long before it fires.")
    description: str = ""
    text: dict[TextLanguage, str] = Field(
        default_factory=dict,
        description="The rule in plain words by language, shown as the reason when it holds;"
        " {value} is what was seen, {threshold} the rule's number.",
    )

    @field_validator("text")
    @classmethod
    def _text(cls, value: dict[TextLanguage, str]) -> dict[TextLanguage, str]:
        rule_text(value)
        return value


class TrapDef(_Strict):
    """What a notification means for this device's metrics (for the trap receiver)."""

    oid: Oid = Field(description="snmpTrapOID (v2) or enterprise.0.specific (v1, RFC 3584).")
    name: str = Field(min_length=1)
    set: dict[MetricName, float] = Field(
        default_factory=dict, description="Metrics this trap sets until the next poll."
    )
    description: str = ""


class Profile(_Strict):
    """A device profile: where its OIDs come from, its metrics, derived values, rules, traps."""

    source: str = Field(min_length=1, description="RFC / MIB name and version of the OIDs.")
    description: str = ""
    metrics: list[MetricDef] = Field(min_length=1)
    booleans: list[BooleanDef] = Field(default_factory=list)
    resets: list[ResetDef] = Field(default_factory=list)
    rules: list[RuleDef] = Field(default_factory=list)
    traps: list[TrapDef] = Field(default_factory=list)
    derive: list[DeriveDef] = Field(
        default_factory=list,
        description="Families computed from successive polls (ratio, forecast_full, ewma_ratio).",
    )

    @model_validator(mode="after")
    def _cross_check(self) -> Self:
        """Check that names are unique and that every reference names a metric of the profile."""
        seen: dict[str, str] = {}
        for name, what in [
            *((f[0], "metric") for m in self.metrics for f in m.families()),
            *((b.name, "boolean") for b in self.booleans),
            *((r.name, "reset") for r in self.resets),
            *((d.name, "derive") for d in self.derive),
        ]:
            if name in seen:
                raise ValueError(f"family {name!r} is defined twice ({seen[name]} and {what})")
            seen[name] = what
        metrics = {m.name: m for m in self.metrics}
        for b in self.booleans:
            source = metrics.get(b.metric)
            if source is None:
                raise ValueError(f"boolean {b.name!r}: unknown metric {b.metric!r}")
            if source.type == "info":
                raise ValueError(f"boolean {b.name!r}: source {b.metric!r} is an info metric")
            names = set(source.states.values())
            for value in b.in_:
                if source.states and value not in names and value not in source.states:
                    raise ValueError(
                        f"boolean {b.name!r}: {value!r} is not a state of {b.metric!r} "
                        f"({', '.join(source.states.values())})"
                    )
        for r in self.resets:
            source = metrics.get(r.metric)
            if source is None or source.type not in ("gauge", "counter"):
                raise ValueError(f"reset {r.name!r}: {r.metric!r} is not a gauge or counter")
        labels = self.family_labels()
        for d in self.derive:
            for src in d.sources:
                if src not in labels or src == d.name:
                    raise ValueError(f"derive {d.name!r}: unknown metric {src!r}")
            if len(d.sources) == 2 and labels[d.sources[0]] != labels[d.sources[1]]:
                raise ValueError(f"derive {d.name!r}: {' and '.join(d.sources)} have other labels")
        states = {
            f[0]: (m.state_label, set(m.states.values()))
            for m in self.metrics
            for f in m.families()
            if m.type == "stateset"
        }
        rule_names: set[str] = set()
        for rule in self.rules:
            if rule.name in rule_names:
                raise ValueError(f"rule {rule.name!r} is defined twice")
            rule_names.add(rule.name)
            _check_expr(rule.name, rule.expr, labels, states)
        for trap in self.traps:
            for name in trap.set:
                if name not in labels:
                    raise ValueError(f"trap {trap.name!r} sets unknown metric {name!r}")
        return self

    def family_labels(self) -> dict[str, list[str]]:
        """Return every family this profile produces with the labels its series carry."""
        out: dict[str, list[str]] = {}
        for m in self.metrics:
            for name, *_ in m.families():
                out[name] = m.label_names()
        by_metric = {m.name: m for m in self.metrics}
        for b in self.booleans:
            src = by_metric[b.metric]
            out[b.name] = [
                lb for lb in src.label_names() if lb != src.state_label or src.type != "stateset"
            ]
        for r in self.resets:
            out[r.name] = by_metric[r.metric].label_names()
        for d in self.derive:
            # A derive keeps its source's labels; an unknown source is reported by _cross_check.
            source = out.get(d.sources[0])
            if source is not None:
                out[d.name] = list(source)
        return out


_EXPR = re.compile(
    r"^\s*(?P<metric>[a-z_][a-z0-9_]*)\s*(?:\{(?P<sel>[^}]*)\})?\s*"
    r"(?P<op>==|!=|<=|>=|<|>)\s*(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_SELECTOR = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"\s*$')


def _check_expr(
    rule: str,
    expr: str,
    labels: Mapping[str, list[str]],
    states: Mapping[str, tuple[str, set[str]]],
) -> None:
    """Check a rule expression: a known family, known labels and states, a comparison."""
    match = _EXPR.match(expr)
    if match is None:
        raise ValueError(
            f'rule {rule!r}: expr must be `metric{{label="value"}} <op> number`, got {expr!r}'
        )
    metric = match["metric"]
    if metric not in labels:
        raise ValueError(f"rule {rule!r}: unknown metric {metric!r}")
    for part in filter(None, (match["sel"] or "").split(",")):
        sel = _SELECTOR.match(part)
        if sel is None:
            raise ValueError(f"rule {rule!r}: bad label selector {part.strip()!r}")
        name, value = sel.groups()
        if name not in labels[metric]:
            raise ValueError(f"rule {rule!r}: {metric} has no label {name!r}")
        if metric in states and name == states[metric][0] and value not in states[metric][1]:
            raise ValueError(f"rule {rule!r}: {value!r} is not a state of {metric}")


def _locate(raw: Any, loc: Sequence[int | str]) -> tuple[int, int]:
    """Return the line and column of the deepest node of loc found in the raw YAML."""
    node, mark = raw, getattr(raw, "mark", (1, 1))
    for part in loc:
        if isinstance(node, PosDict) and part in node:
            mark, node = node.pos.get(part, mark), node[part]
        elif isinstance(node, PosDict) and str(part) in {str(k) for k in node}:
            key = next(k for k in node if str(k) == str(part))
            mark, node = node.pos.get(key, mark), node[key]
        elif isinstance(node, PosList) and isinstance(part, int) and 0 <= part < len(node):
            mark, node = node.pos[part], node[part]
        else:
            break
    return mark


def _loc_text(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _profile_errors(exc: ValidationError, raw: Any, file: str) -> list[ConfigError]:
    """Turn pydantic errors into positioned config errors."""
    errors = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
        line, col = _locate(raw, loc)
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required field is missing"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
        errors.append(ConfigError(file, line, col, _loc_text(loc), msg))
    return errors


def load_profile_file(path: Path) -> Profile:
    """Read and validate one profile file; raise ConfigErrors naming file:line on problems."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([ConfigError(file, 1, 1, "", f"cannot read profile: {exc}")]) from None
    # Profiles are shipped data: no ${ENV} substitution, a literal `$` stays as written.
    raw = load_yaml(text.replace("$", "$$"), file, {})
    if not isinstance(raw, dict):
        raise ConfigErrors([ConfigError(file, 1, 1, "", "a profile must be a mapping")])
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigErrors(_profile_errors(exc, raw, file)) from None


def load_profile_dirs(dirs: Iterable[Path]) -> dict[str, Profile]:
    """Load every *.yaml of each directory, keyed by file stem; raise ConfigErrors on any error."""
    profiles: dict[str, Profile] = {}
    origin: dict[str, Path] = {}
    errors: list[ConfigError] = []
    for directory in dirs:
        if not directory.is_dir():
            errors.append(ConfigError(str(directory), 1, 1, "", "profile directory does not exist"))
            continue
        for path in sorted(directory.glob("*.yaml")):
            name = path.stem
            if name in profiles:
                errors.append(
                    ConfigError(
                        str(path),
                        1,
                        1,
                        "",
                        f"profile {name!r} is already defined in {origin[name]}: rename this file",
                    )
                )
                continue
            try:
                profiles[name] = load_profile_file(path)
                origin[name] = path
            except ConfigErrors as exc:
                errors.extend(exc.errors)
    if errors:
        raise ConfigErrors(errors)
    return profiles


def family_names(profile: Profile) -> list[str]:
    """Return the names of every family a profile can produce."""
    return list(profile.family_labels())
