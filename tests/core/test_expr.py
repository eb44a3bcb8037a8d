"""Rule conditions: parse `metric{label="v"} op number` and judge a check's samples."""

from __future__ import annotations

import pytest

from vigie.core.expr import parse_condition
from vigie.core.results import Sample


def test_condition_holds_on_a_matching_sample() -> None:
    """The first sample that matches name, labels and comparison makes it hold."""
    cond = parse_condition('ups_battery_status{ups="1"} != 2')
    samples = [Sample("ups_battery_status", 2.0, (("ups", "1"),)), Sample("other", 0.0)]
    assert cond.evaluate(samples) == (False, "ups_battery_status (2) != 2")
    samples.append(Sample("ups_battery_status", 3.0, (("ups", "1"),)))
    assert cond.evaluate(samples) == (True, "ups_battery_status (3) != 2")


def test_absent_metric_is_neither_true_nor_false() -> None:
    """An absent metric is said as such: the engine decides what that means."""
    assert parse_condition("x < 1").evaluate([Sample("y", 0.0)]) == (None, "x absent")


def test_negative_matchers_and_numbers() -> None:
    """`!=` on a label, exponents and signs in the threshold."""
    cond = parse_condition('temp{sensor!="cpu"} >= -1.5e1')
    assert cond.matchers == (("sensor", False, "cpu"),) and cond.threshold == -15.0
    assert cond.evaluate([Sample("temp", -10.0, (("sensor", "inlet"),))])[0] is True
    assert cond.evaluate([Sample("temp", -10.0, (("sensor", "cpu"),))])[0] is None


@pytest.mark.parametrize("bad", ["x", "x > ", "x >> 1", "x{a=b} > 1", "1 > x"])
def test_bad_conditions_name_what_is_expected(bad: str) -> None:
    """A config mistake is refused with the syntax it should have."""
    with pytest.raises(ValueError, match="invalid"):
        parse_condition(bad)
