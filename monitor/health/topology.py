"""Topology in the config: sites, components, dependencies (with redundancy groups), rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, tzinfo
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from vigie.core.durations import Duration
from vigie.core.expr import parse_condition
from vigie.core.rules import Rule, Severity, TextLanguage, rule_text
from vigie.core.schedule import parse_schedule

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]

ComponentKind = Literal[
    "ups",
    "pdu",
    "san_array",
    "san_fabric",
    "switch",
    "hypervisor_cluster",
    "server",
    "vm",
    "database",
    "application",
    "business_service",
    "monitor",  # a Vigie replica, watched by the others (monitor.replicas)
]

Tier = Annotated[int, Field(ge=1, le=4)]
DEFAULT_PAGE_WITHIN: dict[int, float] = {1: 60.0, 2: 120.0, 3: 300.0, 4: 900.0}
"""Default detection-budget target per tier: how soon someone must know (health.page_within)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSpec(_Strict):
    """A datacenter or a room of one; rooms name their datacenter as parent."""

    id: Ident
    name: str = Field("", description="Human name, e.g. 'Datacenter Nord'.")
    parent: Ident | None = Field(None, description="The site this room belongs to.")


class AnyOf(_Strict):
    """A redundancy group: the dependent needs `need` of these members healthy."""

    any_of: list[Ident] = Field(min_length=1)
    need: int = Field(1, ge=1)


Dependency = Ident | AnyOf


class ComponentSpec(_Strict):
    """One thing that can fail: a UPS, a SAN array, a server, an application..."""

    id: Ident
    kind: ComponentKind
    site: Ident | None = None
    name: str = ""
    checks: list[Ident] = Field(default_factory=list, description="Ids of the checks feeding it.")
    selector: dict[str, str] = Field(
        default_factory=dict, description="Checks whose labels all match also feed it."
    )
    depends_on: list[Dependency] = Field(default_factory=list)
    powered_by: list[Dependency] = Field(
        default_factory=list, description="Power feeds; two feeds (A/B) are any_of need 1."
    )
    criticality: int | None = Field(None, ge=1, le=4, description="Tier 1 (vital) to 4.")
    team: str = ""
    runbook_url: str = ""
    degraded_mode: str = Field("", description="What clinicians do while it is down.")

    @field_validator("powered_by")
    @classmethod
    def _feeds(cls, value: list[Dependency]) -> list[Dependency]:
        """Several plain feeds mean A/B power: one healthy feed is enough."""
        plain = [v for v in value if isinstance(v, str)]
        if len(plain) > 1:
            return [AnyOf(any_of=plain, need=1), *(v for v in value if not isinstance(v, str))]
        return value


class RuleSpec(_Strict):
    """A condition on a check's metrics that puts its components in a state."""

    name: str
    expr: str = Field(description="e.g. 'ups_battery_runtime_seconds < 600'.")
    severity: Severity = "down"
    for_: Duration | None = Field(None, alias="for", description="How long it must hold.")
    clear_expr: str | None = Field(None, description="Condition to clear; default: not expr.")
    clear_for: Duration | None = Field(None, description="How long clear must hold.")
    checks: list[Ident] = Field(default_factory=list, description="Checks it applies to.")
    selector: dict[str, str] = Field(default_factory=dict, description="Or checks by labels.")
    text: dict[TextLanguage, str] | str | None = Field(
        None,
        description="The rule in plain words, shown as the reason: one text (English) or one per "
        "language, with {value} and {threshold}, e.g. 'latency {value:.0f} x its usual level'.",
    )

    active: str | None = Field(
        None,
        description="When the rule applies, in the config's `timezone:`: 'HH:MM-HH:MM',"
        " optionally after days ('Mon-Fri 07:00-20:00', 'Sat,Sun 09:00-12:00'); a window"
        " ending before it starts runs over midnight. Outside it the rule neither holds nor"
        " stays active (a silence normal at night). Default: always.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("active")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_schedule(value, UTC)  # the syntax; the zone is the config's
        return value

    @field_validator("text")
    @classmethod
    def _text(
        cls, value: dict[TextLanguage, str] | str | None
    ) -> dict[TextLanguage, str] | str | None:
        rule_text(value)
        return value

    @field_validator("expr", "clear_expr")
    @classmethod
    def _parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_condition(value)
        return value

    def rule(self, zone: tzinfo = UTC) -> Rule:
        """Return the parsed rule the engine runs, its schedule read in zone."""
        return Rule.parse(
            self.name,
            self.expr,
            self.severity,
            for_=self.for_ or 0.0,
            clear_expr=self.clear_expr,
            clear_for=self.clear_for or 0.0,
            text=rule_text(self.text),
            active=self.active,
            zone=zone,
        )


class FlapSettings(_Strict):
    """Flap detection: too many state changes in a window hold the page steady."""

    changes: int = Field(6, ge=2)
    window: Duration = 600.0


class HealthSettings(_Strict):
    """Health model settings."""

    stale_intervals: int = Field(3, ge=1, description="Missed runs before UNKNOWN.")
    flapping: FlapSettings = Field(default_factory=FlapSettings)
    site_window: Duration = Field(120.0, description="Window for a site-wide failure.")
    site_ratio: float = Field(0.5, gt=0, le=1, description="Share of a site failing at once.")
    resolve_hold: Duration | Literal[0] = Field(
        30.0, description="An incident stays open this long after its cause clears (no re-page)."
    )
    confirm_max: Duration | Literal[0] = Field(
        60.0,
        description="Longest hold of a new incident whose root has dependencies, until their"
        " checks report after it began (a dependent failing just before its cause); 0: no hold.",
    )
    archive_retention: Duration = Field(
        400 * 86400.0,
        description="How long closed incidents (the archive) and every state change (the"
        " availability figures) are kept in state_dir/archive.sqlite.",
    )
    page_within: dict[Tier, Duration] = Field(
        default_factory=lambda: dict(DEFAULT_PAGE_WITHIN),
        description="Target per application tier (1 to 4) for the detection budget, the worst"
        " case from a fault to the first notification: `vigie check` warns about every"
        " application over it. Unset tiers keep their defaults (60s, 2m, 5m, 15m).",
    )

    @field_validator("page_within")
    @classmethod
    def _page_within(cls, value: dict[int, float]) -> dict[int, float]:
        """Tiers not given keep their default target."""
        return {**DEFAULT_PAGE_WITHIN, **value}


def dependency_members(dep: Dependency) -> list[str]:
    """Return the component ids a dependency names."""
    return [dep] if isinstance(dep, str) else list(dep.any_of)


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return a dependency cycle as a list of ids (first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when every selector label has that value in labels (an empty selector matches none)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
