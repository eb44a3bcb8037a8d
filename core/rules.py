"""Health rules as the engine runs them: a parsed condition, its severity and its hold times.

Probes declare rules of their own (SNMP profiles, Redfish) and the config declares the rest;
both build this one type, so the rule language lives below either side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Literal

from vigie.core.expr import Condition, parse_condition
from vigie.core.schedule import Schedule, parse_schedule

__all__ = [
    "DEFAULT_RULE",
    "TEXT_LANGUAGES",
    "Rule",
    "Severity",
    "TextLanguage",
    "rule_text",
    "text_values",
]

Severity = Literal["warning", "degraded", "down"]
TextLanguage = Literal["en", "fr"]
TEXT_LANGUAGES: tuple[TextLanguage, ...] = ("en", "fr")
"""Languages a rule's plain text may be given in (those of the pages' catalogue)."""


def text_values(value: float, threshold: float) -> dict[str, float]:
    """Return a rule text's placeholders: value seen, threshold, also in minutes and hours."""
    return {
        "value": value,
        "threshold": threshold,
        "value_minutes": value / 60,
        "threshold_minutes": threshold / 60,
        "value_hours": value / 3600,
        "threshold_hours": threshold / 3600,
    }


def rule_text(texts: Mapping[TextLanguage, str] | str | None) -> tuple[tuple[str, str], ...]:
    """Check a rule's plain text (one string: English) and return it as (language, template).

    Templates are str.format strings with `{value}` (what was seen), `{threshold}` (and
    `{value_minutes}`, `{value_hours}`... for seconds, see text_values), e.g.
    "latency {value:.0f} times its usual level (alert above {threshold:g})"; ValueError names
    an unknown language or a placeholder that cannot be filled.
    """
    if texts is None:
        return ()
    items: dict[TextLanguage, str] = {"en": texts} if isinstance(texts, str) else dict(texts)
    for lang, template in items.items():
        if lang not in TEXT_LANGUAGES:
            raise ValueError(f"text: unknown language {lang!r} (known: en, fr)")
        try:
            template.format(**text_values(1.5, 1.5))
        except KeyError as exc:
            known = ", ".join(text_values(0, 0))
            raise ValueError(
                f"text {lang}: unknown placeholder {{{exc.args[0]}}} (known: {known})"
            ) from exc
        except (IndexError, ValueError) as exc:
            raise ValueError(f"text {lang}: bad placeholder in {template!r}: {exc}") from exc
    return tuple(sorted(items.items()))


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed rule."""

    name: str
    condition: Condition
    clear: Condition | None
    severity: Severity
    for_: float
    clear_for: float
    text: tuple[tuple[str, str], ...] = ()
    """The rule in plain words by language, e.g. (("en", "latency {value:.0f} x usual"),...):
    placeholders {value} (what was seen) and {threshold}; the reason shown when it holds."""
    active: Schedule | None = None
    """When the rule applies (e.g. 07:00-20:00 in the config's zone); None: always. Outside
    it the rule neither holds nor stays active."""

    @property
    def timed(self) -> bool:
        """True when time alone may change the rule: time() in a condition, or a schedule."""
        return bool(
            self.active is not None
            or self.condition.clock
            or (self.clear is not None and self.clear.clock)
        )

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
        text: tuple[tuple[str, str], ...] = (),
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
            text=text,
            active=parse_schedule(active, zone) if active is not None and zone else None,
        )


DEFAULT_RULE = Rule.parse(
    "probe_failed",
    "probe_success == 0",
    text=(("en", "the probe failed"), ("fr", "la sonde a échoué")),
)
"""The rule every check has: a failed probe puts its components DOWN."""
