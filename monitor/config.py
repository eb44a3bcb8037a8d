"""Configuration: YAML with positions, pydantic models built from the probe registry, the plan."""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from vigie.core.durations import Duration
from vigie.core.secrets import ConfigPath
from vigie.core.yamlpos import (
    ConfigError,
    ConfigErrors,
    Mark,
    PosDict,
    PosList,
    load_yaml,
    parse_yaml,
)
from vigie.monitor.alerting.settings import AlertingSettings, single_site_levels
from vigie.monitor.bus.settings import BusSettings
from vigie.monitor.health.budget import Budgets, budgets_of, over_target
from vigie.monitor.health.maintenance import MaintenanceSpec
from vigie.monitor.health.topology import ComponentSpec, HealthSettings, RuleSpec, SiteSpec
from vigie.monitor.health.validate import validate_topology
from vigie.monitor.i18n import DEFAULT_LANGUAGE, Language, zone_of
from vigie.monitor.replicas import ReplicaSettings, expand_raw, replica_warnings
from vigie.probes.base import Check, ProbeRegistry, SectionProbe
from vigie.probes.traps import TrapProbe

RESERVED_LABELS = frozenset({"check", "target", "kind", "job", "instance"})
"""Labels Vigie sets itself on every series: the config may not set them."""

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
CheckId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$")]

# --- Models --------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    reserved = sorted(RESERVED_LABELS & labels.keys())
    if reserved:
        raise ValueError(f"label {reserved[0]!r} is reserved: Vigie sets it on every series")
    return labels


class Defaults(_Strict):
    """Values every check inherits unless it sets its own."""

    interval: Duration = Field(30.0, description="Time between two runs of a check.")
    timeout: Duration = Field(10.0, description="Time a run may take before it fails.")
    labels: dict[LabelName, str] = Field(
        default_factory=dict, description="Labels added to every check's series."
    )

    _labels = field_validator("labels")(_check_labels)


def _check_listen(value: str) -> str:
    """Check a host:port listen address."""
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be host:port with a port from 0 to 65535, got {value!r}")
    return value


ListenAddress = Annotated[str, AfterValidator(_check_listen)]


def split_listen(listen: str) -> tuple[str, int]:
    """Return the host (all addresses when empty) and port of a listen address."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


Role = Literal["viewer", "operator"]
"""What a web user may do: read (viewer), or read and act (operator)."""


class WebSettings(_Strict):
    """The HTTP server for /metrics, health endpoints and the probe debug page."""

    listen: ListenAddress = Field("127.0.0.1:9465", description="host:port to listen on.")
    config_file: ConfigPath | None = Field(
        None,
        description="exporter-toolkit web.yml: TLS and basic auth for every web endpoint.",
    )
    language: Language = Field(
        DEFAULT_LANGUAGE,
        description="Language of the pages (a browser's Accept-Language naming another supported"
        " one wins) and of alert annotations: en or fr.",
    )
    roles: dict[str, Role] | None = Field(
        None,
        description="Who may act: a basic-auth user name (web.yml's basic_auth_users) or a client"
        " certificate's subject ('CN=cellule-crise' or the whole 'O=CHU,CN=cellule-crise') mapped"
        " to viewer (pages and read API) or operator (maintenance, incident updates,"
        " acknowledgements, reload). Anyone authenticated and not listed is a viewer. Unset:"
        " no roles, whoever reaches the web may act (as before roles existed).",
    )
    # operator state (maintenance windows): the longest window an operator may open
    maintenance_max: Duration = Field(
        86400.0,
        description="Longest maintenance window an operator may open through the API or the"
        " page (refused with 400 naming it); windows in the config file are not limited.",
    )

    def host_port(self) -> tuple[str, int]:
        """Return the host and port to bind."""
        return split_listen(self.listen)


class SchedulerSettings(_Strict):
    """Limits that protect targets and the monitoring host."""

    max_concurrency: int = Field(1024, gt=0, description="Probes running at once, in all.")
    per_host_concurrency: int = Field(8, gt=0, description="Probes running at once per host.")
    drain_timeout: Duration = Field(10.0, description="On stop, time left to in-flight probes.")
    ondemand_rate: float = Field(
        50.0,
        gt=0,
        description="On-demand runs a second at most (the health engine's active confirmation);"
        " beyond it, scheduled runs decide (health.confirm_max at most).",
    )


def _hex_engine_id(value: str) -> str:
    """Check an SNMP engine ID written in hex (RFC 3411: 5 to 32 octets)."""
    text = value.lower().removeprefix("0x").replace(":", "")
    if not re.fullmatch(r"(?:[0-9a-f]{2}){5,32}", text):
        raise ValueError(
            f"engine ID must be 5 to 32 octets in hex (e.g. 0x80001f8880...), got {value!r}"
        )
    return text


EngineId = Annotated[str, AfterValidator(_hex_engine_id)]


class TrapSettings(_Strict):
    """The SNMP trap receiver: where it listens and which credentials it accepts."""

    listen: ListenAddress = Field(
        "127.0.0.1:162",
        description="host:port to listen on (UDP); port 162 needs CAP_NET_BIND_SERVICE.",
    )
    auths: list[str] = Field(
        default_factory=list,
        description="Names of snmp.auths accepted on traps; default: the auths of the snmp checks.",
    )
    engine_ids: list[EngineId] = Field(
        default_factory=list,
        description="snmpEngineID (hex) of each SNMPv3 trap sender: v3 traps are authenticated "
        "with the sender's engine ID (INFORMs use the receiver's own).",
    )
    engine_id: EngineId | None = Field(
        None, description="The receiver's own engine ID for v3 INFORMs (hex); default: generated."
    )
    log_interval: Duration = Field(
        300.0, description="Log an unmatched or refused trap at most once per source per interval."
    )
    max_datagram_bytes: int = Field(
        8192,
        ge=484,
        le=65507,
        description="Larger datagrams are dropped unread (reason oversize); SNMP needs 484.",
    )
    source_rate: float = Field(
        20.0,
        gt=0,
        description="Datagrams per second accepted from one source address (token bucket; "
        "one token per started KiB of a datagram); the rest are dropped (reason rate).",
    )
    source_burst: int = Field(
        100, ge=1, description="Tokens (datagrams, one per started KiB) of a source's bucket."
    )
    max_sources: int = Field(
        4096,
        ge=1,
        description="Source addresses given a bucket of their own; beyond, new sources share one.",
    )

    def host_port(self) -> tuple[str, int]:
        """Return the host and port to bind."""
        return split_listen(self.listen)


class CheckBase(_Strict):
    """Fields every check has, whatever its kind."""

    id: CheckId = Field(description="Unique id of the check; the `check` label.")
    target: str = Field(description="What to probe: a URL, host:port... depending on the kind.")
    interval: Duration = Field(30.0, description="Time between two runs.")
    timeout: Duration = Field(10.0, description="Time a run may take; at most the interval.")
    labels: dict[LabelName, str] = Field(default_factory=dict, description="Extra labels.")
    module: str | None = Field(None, description="Name of a module whose settings to inherit.")

    _labels = field_validator("labels")(_check_labels)

    @field_validator("timeout")
    @classmethod
    def _timeout_within_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval")
        if interval is not None and value > interval:
            raise ValueError(f"timeout ({value:g}s) is longer than the interval ({interval:g}s)")
        return value


class ModuleBase(_Strict):
    """Settings shared by many checks, as blackbox_exporter's modules."""

    interval: Duration | None = None
    timeout: Duration | None = None
    labels: dict[LabelName, str] = Field(default_factory=dict)


class ConfigBase(_Strict):
    """The whole configuration file; `checks` and `modules` are typed from the registry."""

    defaults: Defaults = Field(default_factory=Defaults)
    modules: dict[str, ModuleBase] = Field(default_factory=dict)
    checks: list[CheckBase] = Field(default_factory=list)
    web: WebSettings = Field(default_factory=WebSettings)
    timezone: str | None = Field(
        None,
        description="IANA time zone of the times shown on pages and in alerts, e.g."
        " Europe/Paris; default: the host's local time zone.",
    )
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    sites: list[SiteSpec] = Field(default_factory=list, description="Datacenters and rooms.")
    components: list[ComponentSpec] = Field(
        default_factory=list, description="What can fail, what it depends on, what it feeds."
    )
    rules: list[RuleSpec] = Field(
        default_factory=list, description="Conditions on checks' metrics that set states."
    )
    health: HealthSettings = Field(default_factory=HealthSettings)
    maintenance: list[MaintenanceSpec] = Field(
        default_factory=list, description="Windows during which pages are held."
    )
    state_dir: ConfigPath | None = Field(
        None, description="Where durable state (alert outbox, incidents) is kept."
    )
    alerting: AlertingSettings | None = Field(
        None, description="Alert delivery: Alertmanager, webhooks, SMTP."
    )
    traps: TrapSettings | None = Field(
        None, description="SNMP trap receiver: traps update snmp checks at once and re-poll them."
    )
    bus: BusSettings | None = Field(
        None,
        description="Probe workers on NATS: `vigie worker` runs the checks, `vigie run` takes "
        "their results (docs/scaling.md). Unset: one process runs everything.",
    )

    replicas: ReplicaSettings | None = Field(
        None,
        description="Identical Vigies (one per datacenter) watching each other; Alertmanager's"
        " cluster deduplicates their alerts (docs/ha.md). Unset: one Vigie.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone_of(value)
        return value

    @model_validator(mode="after")
    def _alerting_needs_state(self) -> ConfigBase:
        if self.alerting is not None and self.state_dir is None:
            raise ValueError("alerting needs state_dir: the durable alert outbox is kept there")
        return self


class SharedSettings:
    """One settings object for the checks of a kind that set the same: settings are frozen.

    At 20,000 checks a settings object per check weighed about 1 KiB each (an http check's
    dozen fields, its TLS block, lists and dicts): the default is made once per kind, and a
    check's settings equal to the default or to the previous check's of its kind are that
    object (consecutive checks usually share a module or a generator's settings).
    """

    def __init__(self, factory: type[BaseModel]) -> None:
        self.factory = factory
        self.default: BaseModel | None = None
        self.required = False  # the kind has a field without default: no default settings

    def _default(self) -> BaseModel | None:
        """Return the kind's default settings made once, or None when it has none."""
        if self.default is None and not self.required:
            try:
                self.default = self.factory()
            except ValidationError:  # e.g. the exporter kind's `metrics`
                self.required = True
        return self.default

    def __call__(self) -> BaseModel:
        """Return the kind's default settings (raising, as the model does, when it has none)."""
        default = self._default()
        return default if default is not None else self.factory()

    def intern(self, value: BaseModel, info: ValidationInfo) -> BaseModel:
        """Return the equal default or previous settings of this load, else value."""
        pool = info.context.get(INTERNED) if isinstance(info.context, dict) else None
        if pool is None:  # validated outside load_config: nothing to share with
            return value
        default = self._default()
        if default is not None and value == default:
            return default
        last: BaseModel | None = pool.get(self.factory)
        if last is not None and last == value:
            return last
        pool[self.factory] = value
        return value


def _interning(kind: str, shared: SharedSettings) -> Any:
    """Return the validator that shares a kind's equal settings (SharedSettings.intern)."""

    def intern(cls: type[BaseModel], value: BaseModel, info: ValidationInfo) -> BaseModel:
        return shared.intern(value, info)

    return field_validator(kind)(classmethod(intern))


INTERNED = "interned_settings"
"""The validation context's key of the settings pool of one load (SharedSettings.intern)."""


def build_config_model(registry: ProbeRegistry) -> type[ConfigBase]:
    """Build the Config model whose checks are a union tagged by `kind`, one member per probe."""
    checks: list[Any] = []
    modules: list[Any] = []
    sections: dict[str, Any] = {}
    for probe in registry:
        if isinstance(probe, SectionProbe):
            sections[probe.kind] = (
                probe.Section,
                Field(default_factory=probe.Section, description=f"Shared {probe.kind} settings."),
            )
        kind = probe.kind
        shared = SharedSettings(probe.Settings)
        settings_field = (probe.Settings, Field(default_factory=shared))

        def valid_target(cls: type[BaseModel], value: str, _probe: Any = probe) -> str:
            result: str = _probe.parse_target(value)
            return result

        title = kind.capitalize()
        checks.append(
            create_model(  # type: ignore[call-overload]
                f"{title}Check",
                __base__=CheckBase,
                __validators__={
                    "_target": field_validator("target")(classmethod(valid_target)),
                    "_shared": _interning(kind, shared),
                },
                kind=(Literal[kind], Field(description="Probe kind.")),
                **{kind: settings_field},
            )
        )
        modules.append(
            create_model(  # type: ignore[call-overload]
                f"{title}Module",
                __base__=ModuleBase,
                __validators__={"_shared": _interning(kind, shared)},
                kind=(Literal[kind], Field(description="Probe kind.")),
                **{kind: settings_field},
            )
        )
    if len(checks) == 1:
        check_type: Any = checks[0]
        module_type: Any = modules[0]
    else:
        check_type = Annotated[_union(checks), Field(discriminator="kind")]
        module_type = Annotated[_union(modules), Field(discriminator="kind")]
    model: type[ConfigBase] = create_model(
        "Config",
        __base__=ConfigBase,
        checks=(list[check_type], Field(default_factory=list, description="The checks to run.")),
        modules=(
            dict[str, module_type],
            Field(default_factory=dict, description="Settings shared by checks, by name."),
        ),
        **sections,
    )
    return model


def _union(members: list[Any]) -> Any:
    result = members[0]
    for member in members[1:]:
        result = result | member
    return result


# --- Loading -------------------------------------------------------------------------------


def _path_text(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _position(raw: Any, loc: tuple[int | str, ...]) -> Mark:
    """Return the position of the deepest node of loc that exists in the raw data."""
    node, mark = raw, getattr(raw, "mark", (1, 1))
    for part in loc:
        if isinstance(node, PosDict) and part in node:
            mark, node = node.pos.get(part, mark), node[part]
        elif isinstance(node, PosList) and isinstance(part, int) and 0 <= part < len(node):
            mark, node = node.pos[part], node[part]
        else:
            break
    return mark


def _message(error: Any, kinds: list[str]) -> tuple[tuple[int | str, ...], str]:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    kind_list = ", ".join(kinds)
    etype = error["type"]
    if etype == "union_tag_invalid":
        tag = error["ctx"]["tag"]
        return (*loc, "kind"), f"unknown probe kind {tag!r}; known kinds: {kind_list}"
    if etype == "union_tag_not_found":
        return loc, f"missing 'kind'; known kinds: {kind_list}"
    if etype == "extra_forbidden":
        return loc, "unknown key"
    if etype == "missing":
        return loc, "required field is missing"
    msg: str = error["msg"]
    return loc, msg.removeprefix("Value error, ")


def _strip_tags(loc: tuple[int | str, ...], kinds: list[str]) -> tuple[int | str, ...]:
    """Drop the union tag pydantic inserts after `checks[i]` and `modules.name`."""
    if len(kinds) < 2 or len(loc) < 3 or loc[0] not in ("checks", "modules"):
        return loc
    if loc[2] in kinds:
        return (*loc[:2], *loc[3:])
    return loc


def _copy_pos(target: PosDict, source: PosDict) -> None:
    for key, mark in source.pos.items():
        target.pos.setdefault(key, mark)


def _merge(base: Any, over: Any) -> Any:
    """Deep-merge two raw mappings, `over` winning, keeping positions from both."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    merged = PosDict(base)
    merged.mark = getattr(over, "mark", (1, 1))
    for key, value in over.items():
        merged[key] = _merge(base[key], value) if key in base else value
    if isinstance(over, PosDict):
        _copy_pos(merged, over)
    if isinstance(base, PosDict):
        _copy_pos(merged, base)
    return merged


def _valid_defaults(defaults: Any) -> dict[str, Any]:
    """Return the defaults that are valid: a bad one is reported once, at its line, not copied."""
    if not isinstance(defaults, dict):
        return {}
    valid = PosDict()
    for key in ("interval", "timeout", "labels"):
        if key in defaults:
            try:
                Defaults.model_validate({key: defaults[key]})
            except ValidationError:
                continue
            valid[key] = defaults[key]
            if isinstance(defaults, PosDict) and key in defaults.pos:
                valid.pos[key] = defaults.pos[key]
    return valid


def _expand_checks(raw: PosDict, file: str) -> list[ConfigError]:
    """Apply modules and defaults to each raw check in place; return unknown-module errors."""
    errors: list[ConfigError] = []
    modules = raw.get("modules") or {}
    defaults = _valid_defaults(raw.get("defaults"))
    checks = raw.get("checks")
    if not isinstance(checks, list) or not isinstance(modules, dict):
        return errors
    for i, check in enumerate(checks):
        if not isinstance(check, PosDict):
            continue
        name = check.get("module")
        merged = check
        if name is not None:
            module = modules.get(name) if isinstance(name, str) else None
            if not isinstance(module, dict):
                line, col = check.pos.get("module", check.mark)
                known = ", ".join(sorted(map(str, modules))) or "none defined"
                errors.append(
                    ConfigError(
                        file,
                        line,
                        col,
                        f"checks[{i}].module",
                        f"unknown module {name!r}; known modules: {known}",
                    )
                )
                continue
            merged = _merge(module, check)
        if isinstance(defaults, dict):
            for key in ("interval", "timeout"):
                if key not in merged and key in defaults:
                    merged[key] = defaults[key]
                    if isinstance(defaults, PosDict) and key in defaults.pos:
                        merged.pos[key] = defaults.pos[key]  # errors point at the default
            labels = defaults.get("labels")
            if isinstance(labels, dict):
                merged["labels"] = _merge(labels, merged.get("labels") or PosDict())
        checks[i] = merged
    return errors


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and the plan of checks derived from it."""

    path: Path
    config: ConfigBase
    plan: dict[str, Check]
    warnings: list[ConfigError] = field(default_factory=list)
    budgets: Budgets | None = None  # detection budgets, computed at load (monitor.health.budget)

    def running(self) -> LoadedConfig:
        """Return the config as a daemon keeps it: without the validated check models.

        The plan holds what runs; the list of pydantic models it was built from weighed about
        1 KiB a check at 20,000 checks, kept for nothing (`config.checks` is empty here).
        """
        if not self.config.checks:
            return self
        config = self.config.model_copy(update={"checks": []})
        return replace(self, config=config, budgets=self.budget())

    def budget(self) -> Budgets:
        """Return the detection budgets, computing them for a config built without load_config."""
        return self.budgets if self.budgets is not None else budgets_of(self.config, self.plan)

    def checks_by_kind(self) -> dict[str, int]:
        """Return the number of checks of each kind."""
        counts: dict[str, int] = {}
        for check in self.plan.values():
            counts[check.kind] = counts.get(check.kind, 0) + 1
        return dict(sorted(counts.items()))

    def sites(self) -> dict[str, int]:
        """Return the number of checks per site: its `site` label, else its component's site."""
        fed: dict[str, str] = {}
        for comp in getattr(self.config, "components", []):
            for cid in comp.checks:
                fed.setdefault(cid, comp.site)
            if comp.selector:
                for cid, check in self.plan.items():
                    labels = dict(check.labels)
                    if all(labels.get(k) == v for k, v in comp.selector.items()):
                        fed.setdefault(cid, comp.site)
        counts: dict[str, int] = {}
        for cid, check in self.plan.items():
            site = dict(check.labels).get("site") or fed.get(cid) or "(no site)"
            counts[site] = counts.get(site, 0) + 1
        return dict(sorted(counts.items()))


LIST_SECTIONS = ("checks", "sites", "components", "rules", "maintenance")
"""Top-level lists whose refused entries are set aside so the rest can still be checked."""

DROPPABLE = frozenset(
    {"defaults", "web", "scheduler", "health", "alerting", "state_dir", "replicas"}
)
"""Top-level settings that, when refused, are left at their defaults so the rest is checked:
none is referred to by name elsewhere (unlike snmp auths or modules), so no error cascades."""

SECRET_FILE_KEY = re.compile(r"(?:password|token|community|passphrase|key|secret)_files?$")
"""Config keys naming a file that holds a secret (passwords, tokens, private keys)."""

Loc = tuple[int | str, ...]
Problem = tuple[Loc, str]

_TYPE_ERRORS = frozenset({"string_type", "model_type", "model_attributes_type", "dict_type"})


def _node(raw: Any, loc: Loc) -> Any:
    """Return the raw node at loc, or None when the path leaves the data."""
    node = raw
    for part in loc:
        if not _has(node, part):
            return None
        node = node[part]
    return node


def _has(node: Any, part: int | str) -> bool:
    """Return whether a raw mapping has the key, or a raw list the index."""
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _untag(raw: Any, loc: Loc, etype: str) -> tuple[Loc, Loc | None]:
    """Drop the union member names pydantic puts in a location; return it and the union's.

    A part is a member name when the data has no such key: after a scalar, or inside a mapping
    unless it is the last part of a missing-field or unknown-key error.
    """
    out: list[int | str] = []
    node = raw
    union: Loc | None = None
    for n, part in enumerate(loc):
        last = n == len(loc) - 1
        if _has(node, part):
            node = node[part]
        elif isinstance(part, str) and (
            not isinstance(node, (dict, list))
            or not last
            or etype not in ("missing", "extra_forbidden")
        ):
            if union is None:
                union = tuple(out)
            continue
        else:
            node = None
        out.append(part)
    return tuple(out), union


def _refine(raw: Any, loc: Loc, msg: str) -> tuple[Loc, str]:
    """Move a `field: reason` message's field into the location when the data has that key."""
    field_name, sep, rest = msg.partition(": ")
    node = _node(raw, loc)
    if sep and isinstance(node, dict) and field_name in node:
        return (*loc, field_name), rest
    return loc, msg


def _validate(
    model: type[ConfigBase], raw: PosDict, config_dir: Path, kinds: list[str]
) -> tuple[ConfigBase | None, list[Problem]]:
    """Validate raw data; return the config or None, and each error at its data location."""
    try:
        context = {"config_dir": config_dir, INTERNED: {}}
        return model.model_validate(raw, context=context), []
    except ValidationError as exc:
        found: list[tuple[Loc, str, str, Loc | None]] = []
        for err in exc.errors():
            loc, msg = _message(err, kinds)
            loc, union = _untag(raw, _strip_tags(loc, kinds), err["type"])
            found.append((loc, msg, err["type"], union))
    # Where a value matched no member of a union (a name or a group), keep the errors of the
    # member meant by the value's shape: a mapping is no bad string, a string no bad mapping.
    by_union: dict[Loc, int] = {}
    for _, _, _, union in found:
        if union is not None:
            by_union[union] = by_union.get(union, 0) + 1
    problems: list[Problem] = []
    shown: set[Loc | None] = set()
    for loc, msg, etype, union in found:
        if union is not None and by_union[union] > 1 and etype in _TYPE_ERRORS:
            continue
        shown.add(union)
        problems.append(_refine(raw, loc, msg))
    for loc, msg, _, union in found:  # a value of no member's shape (a list): its first error
        if union not in shown:
            shown.add(union)
            problems.append(_refine(raw, loc, msg))
    return None, problems


def _set_aside(loc: Loc) -> bool:
    """Return whether an error's place can be set aside: a list entry or a droppable setting."""
    if len(loc) > 1 and loc[0] in LIST_SECTIONS and isinstance(loc[1], int):
        return True
    return bool(loc) and loc[0] in DROPPABLE


def _without(raw: PosDict, drop: Mapping[str, set[int]]) -> tuple[PosDict, dict[str, list[int]]]:
    """Return raw less the dropped entries of its lists, and each kept entry's first index."""
    reduced = PosDict(raw)
    reduced.mark, reduced.pos = raw.mark, dict(raw.pos)
    index: dict[str, list[int]] = {}
    for section, indices in drop.items():
        items = raw.get(section)
        if not isinstance(items, PosList):
            continue
        kept = PosList()
        kept.mark = items.mark
        index[section] = []
        for i, item in enumerate(items):
            if i not in indices:
                kept.append(item)
                kept.pos.append(items.pos[i])
                index[section].append(i)
        reduced[section] = kept
    return reduced, index


def _secret_file_warnings(raw: Any, config_dir: Path) -> list[Problem]:
    """Warn about each secret file (`*password_file`, `*key_file`...) other users can read."""
    warnings: list[Problem] = []
    secret_keys: dict[Any, bool] = {}  # the same few keys come back in every check

    def visit(node: Any, loc: Loc, secret: bool) -> None:
        # Only a secret's strings and the containers that may hold one are visited.
        if isinstance(node, dict):
            for key, value in node.items():
                key_is_secret = secret_keys.get(key)
                if key_is_secret is None:
                    key_is_secret = secret_keys[key] = key == "env_files" or (
                        isinstance(key, str) and bool(SECRET_FILE_KEY.search(key))
                    )
                if secret or key_is_secret or isinstance(value, dict | list):
                    visit(value, (*loc, key), secret or key_is_secret)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if secret or isinstance(value, dict | list):
                    visit(value, (*loc, i), secret)
        elif secret and isinstance(node, str) and node:
            path = Path(node) if Path(node).is_absolute() else config_dir / node
            try:
                mode = path.stat().st_mode
            except OSError:
                return  # a missing file is an error of its own, named by its field
            if mode & 0o007:
                warnings.append(
                    (
                        loc,
                        f"secret file {str(path)!r} can be read by other users (mode "
                        f"{mode & 0o777:04o}): make it root:vigie 0640 (chmod o-rwx)",
                    )
                )

    visit(raw, (), False)
    return warnings


def _web_config_errors(web_file: Path, key: Loc, file: str, raw: Any) -> list[ConfigError]:
    """Read and check web.config_file as `vigie run` does; errors name its file, line, field."""
    from vigie.monitor.web.webconfig import WebConfig, WebConfigError, load_web_config

    web = str(web_file)
    try:
        text = web_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        line, col = _position(raw, key)
        return [
            ConfigError(
                file, line, col, _path_text(key), f"cannot read web config {web!r}: {reason}"
            )
        ]
    try:
        data = load_yaml(text.replace("$", "$$"), web, {}) or PosDict()
    except ConfigErrors as exc:
        return exc.errors
    if not isinstance(data, PosDict):
        return [ConfigError(web, 1, 1, "", "the top level must be a mapping")]
    try:
        WebConfig.model_validate(data)
    except ValidationError as exc:
        return [
            ConfigError(web, *_position(data, loc), _path_text(loc), msg)
            for loc, msg in (_message(err, []) for err in exc.errors())
        ]
    try:
        load_web_config(web_file)  # TLS: files, versions and client CA, as at start
    except WebConfigError as exc:
        text = str(exc).removeprefix(f"{web}: ")
        where, sep, reason = text.partition(": ")
        loc: Loc = tuple(where.split(".")) if sep else ()
        msg = reason if sep else text
        return [ConfigError(web, *_position(data, loc), where if sep else "", msg)]
    return []


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a config load, then put it back as it was.

    A load builds hundreds of thousands of containers that all stay alive; the collections
    their number sets off would find no garbage and cost most of a 20k-check load's time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_config(
    path: Path | str, registry: ProbeRegistry, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Read, validate and plan a config file; raise ConfigErrors listing every problem.

    Every mistake is reported once: entries that fail validation are set aside and the rest
    is still planned and checked (references to a refused entry are no error of their own).
    """
    with _collector_paused():
        return _load_config(Path(path), registry, env)


def load_config_logged(
    path: str | Path, registry: ProbeRegistry, env: Mapping[str, str], log: Any
) -> LoadedConfig | None:
    """Load the config for a process start (`vigie run`, `vigie worker`): every error logged as
    `config_invalid`, None when there is one."""
    try:
        return load_config(path, registry, env)
    except ConfigErrors as exc:
        for error in exc.errors:
            log.error("config_invalid", error=str(error))
        return None


def _load_config(
    path: Path, registry: ProbeRegistry, env: Mapping[str, str] | None
) -> LoadedConfig:
    """Load a config (see load_config), the garbage collector paused."""
    file = str(path)
    env = os.environ if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([ConfigError(file, 1, 1, "", f"cannot read config: {exc}")]) from None
    raw, yaml_problems, tainted = parse_yaml(text, file, env)
    errors = [ConfigError(file, ln, col, "", msg) for (ln, col), msg in yaml_problems]
    if raw is None:
        raw = PosDict()
    if not isinstance(raw, PosDict):
        top = ConfigError(file, 1, 1, "", "the top level must be a mapping")
        raise ConfigErrors([*errors, top])
    errors += _expand_checks(raw, file)
    expand_raw(raw)  # each replica's vigie check and monitor component, as if written
    # A check whose module is unknown has no kind yet: its own error says enough.
    unmerged = {(int(e.path[len("checks[") : -len("].module")]),) for e in errors if e.path}
    kinds = registry.kinds()
    model = build_config_model(registry)
    config, invalid = _validate(model, raw, path.parent, kinds)
    index: dict[str, list[int]] = {}

    def located(problems: list[Problem]) -> list[ConfigError]:
        """Place problems found on the reduced data at their entries' lines in the file."""
        out = []
        for where, msg in problems:
            loc = where
            if len(loc) > 1 and loc[0] in index and isinstance(loc[1], int):
                loc = (loc[0], index[str(loc[0])][loc[1]], *loc[2:])
            line, col = _position(raw, loc)
            if (line, col) in tainted:
                continue  # the value of an unset variable: its own error says enough
            out.append(ConfigError(file, line, col, _path_text(loc), msg))
        return out

    errors += located(
        [(loc, msg) for loc, msg in invalid if loc[:1] != ("checks",) or loc[1:2] not in unmerged]
    )
    refused: dict[str, set[str]] = {}
    if config is None and all(_set_aside(loc) for loc, _ in invalid):
        drop: dict[str, set[int]] = {}
        for loc, _ in invalid:
            if loc[0] in LIST_SECTIONS:
                drop.setdefault(str(loc[0]), set()).add(int(loc[1]))
        if unmerged:
            drop.setdefault("checks", set()).update(i for (i,) in unmerged)
        for section, indices in drop.items():
            for i in indices:
                entry = _node(raw, (section, i))
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    refused.setdefault(section, set()).add(entry["id"])
        reduced, index = _without(raw, drop)
        for loc, _ in invalid:
            if loc[0] in DROPPABLE:
                reduced.pop(loc[0], None)
        config, again = _validate(model, reduced, path.parent, kinds)
        if again:
            config = None
    if config is None:
        raise ConfigErrors(_one_per_mistake(errors))
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, check in enumerate(config.checks):
        if check.id in seen:
            first = seen[check.id]
            first_raw = index["checks"][first] if "checks" in index else first
            first_line, _ = _position(raw, ("checks", first_raw, "id"))
            message = f"duplicate check id {check.id!r} (first at line {first_line})"
            problems.append((("checks", i, "id"), message))
        seen.setdefault(check.id, i)
    plan, bind_errors = _plan(config, registry, path.parent)
    refused.setdefault("checks", set()).update(c.id for c in config.checks if c.id not in plan)
    topo_errors, topo_warnings = validate_topology(
        config.sites, config.components, config.rules, plan, config.maintenance, invalid=refused
    )
    errors += located(problems + bind_errors + topo_errors)
    web_file = config.web.config_file
    if web_file is not None:
        errors += _web_config_errors(web_file, ("web", "config_file"), file, raw)
    if errors:
        raise ConfigErrors(_one_per_mistake(errors))
    budgets = budgets_of(config, plan)
    topo_warnings += over_target(budgets, config.components)
    topo_warnings += _secret_file_warnings(raw, path.parent)
    topo_warnings += replica_warnings(config.replicas, config.alerting)
    topo_warnings += single_site_levels(config.alerting) if config.alerting else []
    from vigie.monitor.web.webconfig import role_warnings  # lazy, as above: web needs config

    topo_warnings += role_warnings(config.web.roles, web_file)
    warnings = _one_per_mistake(located(topo_warnings))
    return LoadedConfig(
        path=path,
        config=config,
        plan=plan,
        warnings=sorted(warnings, key=lambda e: e.line),
        budgets=budgets,
    )


def _one_per_mistake(errors: list[ConfigError]) -> list[ConfigError]:
    """Keep one error per place and message: a default or module copied into checks is one."""
    kept: dict[tuple[str, int, int, str], ConfigError] = {}
    for error in errors:
        key = (error.file, error.line, error.column, error.message)
        other = kept.get(key)
        in_check = error.path.startswith("checks[")
        if other is None or (other.path.startswith("checks[") and not in_check):
            kept[key] = error
    return list(kept.values())


def build_plan(
    config: ConfigBase, registry: ProbeRegistry, config_dir: Path | None = None
) -> dict[str, Check]:
    """Turn validated checks into scheduler Checks, keyed by id; raise ValueError on bad refs."""
    plan, errors = _plan(config, registry, config_dir or Path("."))
    if errors:
        raise ValueError("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in errors))
    return plan


def _plan(
    config: ConfigBase, registry: ProbeRegistry, config_dir: Path
) -> tuple[dict[str, Check], list[tuple[tuple[int | str, ...], str]]]:
    """Build the plan, binding each check's settings to its kind's section when it has one."""
    plan: dict[str, Check] = {}
    errors: list[tuple[tuple[int | str, ...], str]] = []
    # Once per kind, not per check: isinstance of a runtime Protocol inspects its members.
    sections: dict[str, SectionProbe[Any]] = {
        probe.kind: probe for probe in registry if isinstance(probe, SectionProbe)
    }
    # Checks sharing settings (SharedSettings) share their bound settings too: bound once.
    bound: dict[int, BaseModel | str] = {}
    for i, item in enumerate(config.checks):
        kind: str = getattr(item, "kind")  # noqa: B009 - set by the dynamic model
        probe = registry[kind]
        settings = getattr(item, kind)
        section_probe = sections.get(kind)
        if section_probe is not None:
            done = bound.get(id(settings))
            if done is None:
                try:
                    done = section_probe.bind(settings, getattr(config, kind), config_dir)
                except ValueError as exc:
                    done = str(exc)
                bound[id(settings)] = done
            if isinstance(done, str):
                errors.append((("checks", i, kind), done))
                continue
            settings = done
        plan[item.id] = Check(
            id=item.id,
            kind=kind,
            target=item.target,
            interval=item.interval,
            timeout=item.timeout,
            settings=settings,
            labels=tuple(sorted(item.labels.items())),
            host=probe.host_of(item.target),
        )
    traps: TrapSettings | None = getattr(config, "traps", None)
    if traps is not None and traps.auths:  # the names of its kind's credentials, checked by it
        for probe in registry:
            if isinstance(probe, TrapProbe):
                errors += probe.trap_problems(traps, getattr(config, probe.kind, None))
    return plan, errors


def json_schema(registry: ProbeRegistry) -> dict[str, Any]:
    """Return the JSON Schema of the config file."""
    schema = build_config_model(registry).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Vigie configuration"
    return schema
