"""Rules: one parsed type shared by the config and the probes that bring their own."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from vigie.core.results import Sample
from vigie.core.rules import DEFAULT_RULE, Rule, rule_text, text_values


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


def test_a_schedule_needs_a_zone_and_says_when_the_rule_applies() -> None:
    """`active` is read in the zone given by the daemon (the config's `timezone:`)."""
    with pytest.raises(ValueError, match="time zone"):
        Rule.parse("silent", "increase(x[30m]) == 0", active="07:00-20:00")
    rule = Rule.parse(
        "silent", "increase(x[30m]) == 0", active="07:00-20:00", zone=ZoneInfo("Europe/Paris")
    )
    morning = datetime(2026, 7, 1, 5, 30, tzinfo=UTC).timestamp()  # 07:30 in Paris (summer)
    assert rule.applies(morning) and not rule.applies(morning - 3600)
    assert Rule.parse("always", "x > 1").applies(0.0)


def test_rule_text_is_checked_when_declared() -> None:
    """A rule's plain words: one string is English; unknown languages and placeholders fail."""
    assert rule_text(None) == ()
    assert rule_text("server off") == (("en", "server off"),)
    assert rule_text({"fr": "serveur éteint", "en": "server off"}) == (
        ("en", "server off"),
        ("fr", "serveur éteint"),
    )
    with pytest.raises(ValueError, match=r"unknown placeholder \{minutes\}"):
        rule_text({"en": "{minutes} left"})
    with pytest.raises(ValueError, match="unknown language 'de'"):
        rule_text({"de": "Server aus"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="bad placeholder"):
        rule_text({"en": "{value:.0q}"})
    assert "{value_minutes:.0f} min".format(**text_values(432, 600)) == "7 min"
    assert DEFAULT_RULE.text and dict(DEFAULT_RULE.text)["fr"] == "la sonde a échoué"
