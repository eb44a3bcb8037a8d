"""Health rules as the engine runs them: a parsed condition, its severity and its hold times.

Probes declare rules of their own (SNMP profiles, Redfish) and the config declares the rest;
both build this one type, so the rule language lives below either side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vigie.core.expr import Condition, parse_condition

__all__ = ["DEFAULT_RULE", "Rule", "Severity"]

Severity = Literal["warning", "degraded", "down"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed rule."""

    name: str
    condition: Condition
    clear: Condition | None
    severity: Severity
    for_: float
    clear_for: float

    @classmethod
    def parse(
        cls,
        name: str,
        expr: str,
        severity: Severity = "down",
        *,
        for_: float = 0.0,
        clear_expr: str | None = None,
        clear_for: float = 0.0,
    ) -> Rule:
        """Parse a rule from its texts; raise ValueError naming what is wrong in an expression."""
        return cls(
            name=name,
            condition=parse_condition(expr),
            clear=parse_condition(clear_expr) if clear_expr else None,
            severity=severity,
            for_=for_,
            clear_for=clear_for,
        )


DEFAULT_RULE = Rule.parse("probe_failed", "probe_success == 0")
"""The rule every check has: a failed probe puts its components DOWN."""
