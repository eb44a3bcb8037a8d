"""Health rules as the engine runs them: a parsed condition, its severity and its hold times.

Probes declare rules of their own (SNMP profiles, Redfish) and the config declares the rest;
both build this one type, so the rule language lives below either side.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Literal

from vigie.core.expr import Condition, parse_condition
from vigie.core.schedule import Schedule, parse_schedule

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
    active: Schedule | None = None
    """When the rule applies (e.g. 07:00-20:00 in the config's zone); None: always. Outside
    it the rule neither holds nor stays active."""

    def applies(self, now: float) -> bool:
        """True when the rule's schedule (if any) includes the epoch time now."""
        return self.active is None or self.active.active(now)

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
        active: str | None = None,
        zone: tzinfo | None = None,
    ) -> Rule:
        """Parse a rule from its texts; raise ValueError naming what is wrong in an expression.

        `active` is a schedule ("Mon-Fri 07:00-20:00") read in `zone`, which it then needs.
        """
        if active is not None and zone is None:
            raise ValueError(f"rule {name}: a schedule needs a time zone")
        return cls(
            name=name,
            condition=parse_condition(expr),
            clear=parse_condition(clear_expr) if clear_expr else None,
            severity=severity,
            for_=for_,
            clear_for=clear_for,
            active=parse_schedule(active, zone) if active is not None and zone else None,
        )


DEFAULT_RULE = Rule.parse("probe_failed", "probe_success == 0")
"""The rule every check has: a failed probe puts its components DOWN."""
