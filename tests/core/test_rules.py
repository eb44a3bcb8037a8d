"""Rules: one parsed type shared by the config and the probes that bring their own."""

from __future__ import annotations

import pytest

from vigie.core.results import Sample
from vigie.core.rules import DEFAULT_RULE, Rule


def test_parse_builds_conditions_and_hold_times() -> None:
    """Expression, clear expression, severity and hold times in one call."""
    rule = Rule.parse(
        "low_runtime",
        "ups_runtime_seconds < 600",
        "degraded",
        for_=60.0,
        clear_expr="ups_runtime_seconds > 900",
        clear_for=120.0,
    )
    assert rule.condition.metric == "ups_runtime_seconds" and rule.clear is not None
    assert (rule.severity, rule.for_, rule.clear_for) == ("degraded", 60.0, 120.0)


def test_bad_expression_is_refused() -> None:
    """A probe's or profile's rule with a typo fails where it is declared."""
    with pytest.raises(ValueError, match="invalid condition"):
        Rule.parse("broken", "ups_runtime_seconds <<< 600")


def test_default_rule_is_a_failed_probe() -> None:
    """Every check is DOWN when its probe fails."""
    assert DEFAULT_RULE.severity == "down" and DEFAULT_RULE.clear is None
    assert DEFAULT_RULE.condition.evaluate([Sample("probe_success", 0.0)])[0] is True
