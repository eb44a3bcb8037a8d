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


def test_time_arithmetic_and_units() -> None:
    """`x - time() < 30d`: durations with units are seconds, now is the caller's clock."""
    cond = parse_condition("probe_tls_cert_expiry_timestamp_seconds - time() < 30d")
    assert (cond.threshold, cond.clock, cond.sign) == (30 * 86400.0, -1.0, 1.0)
    expiry = [Sample("probe_tls_cert_expiry_timestamp_seconds", 100 * 86400.0)]
    assert cond.evaluate(expiry, now=69 * 86400.0)[0] is False
    holds, seen = cond.evaluate(expiry, now=71 * 86400.0)
    assert holds is True
    assert seen == "probe_tls_cert_expiry_timestamp_seconds - now (2505600) < 2592000"
    # time alone makes it hold 30 days before expiry: the engine's timer is set there
    assert cond.due(expiry, now=0.0) == 70 * 86400.0 + 0.001
    assert cond.due(expiry, now=71 * 86400.0) == float("inf")


def test_time_first_and_constants_on_the_left() -> None:
    """`time() - last_seen - 1h > 30m`: signs, several constants, minutes and hours."""
    cond = parse_condition("time() - last_seen_timestamp_seconds - 1h > 30m")
    assert (cond.sign, cond.clock, cond.offset, cond.threshold) == (-1.0, 1.0, -3600.0, 1800.0)
    seen = [Sample("last_seen_timestamp_seconds", 1000.0)]
    assert cond.evaluate(seen, now=1000.0 + 5400.0)[0] is False
    assert cond.evaluate(seen, now=1000.0 + 5401.0)[0] is True


def test_increase_over_a_window_kept_by_the_caller() -> None:
    """`increase(m[30m]) == 0` is unknown until 30 minutes are seen, then judges growth."""
    cond = parse_condition('increase(mirth_channel_received_total{channel="LAB"}[30m]) == 0')
    assert (cond.function, cond.window) == ("increase", 1800.0)
    memory = cond.memory()
    assert memory is not None
    labels = (("channel", "LAB"),)
    results = []
    for minute in range(0, 61, 5):
        value = float(min(minute, 20))  # the feed stops at minute 20
        sample = Sample("mirth_channel_received_total", value, labels, "counter")
        results.append(cond.evaluate([sample], minute * 60.0, memory)[0])
    assert results[:6] == [None] * 6  # less than 30 minutes seen
    assert results[6:10] == [False] * 4  # grew over the window
    assert results[10:] == [True] * 3  # from minute 50: nothing for 30 minutes
    assert cond.evaluate([], 3600.0, memory, record=False) == (
        True,
        'mirth_channel_received_total{channel="LAB"} increase over 30m (0) == 0',
    )


def test_rate_per_second() -> None:
    """`rate(m[5m])` is the increase over the covered span, per second."""
    cond = parse_condition("rate(requests_total[5m]) > 1")
    memory = cond.memory()
    for second in range(0, 301, 30):
        got = cond.evaluate([Sample("requests_total", second * 2.0)], float(second), memory)
    assert got == (True, "requests_total rate over 5m (2) > 1")
    assert parse_condition("requests_total > 1").memory() is None


def test_a_range_without_a_window_is_unknown() -> None:
    """A caller that keeps no window gets no answer rather than a wrong one."""
    cond = parse_condition("increase(x[1m]) > 0")
    assert cond.evaluate([Sample("x", 1.0)], 0.0)[0] is None


@pytest.mark.parametrize(
    "bad",
    [
        "increase(x) > 1",
        "rate(x[5]) > 1",
        "x + y > 1",
        "x > time()",
        "x time() > 1",
        "5min > x",
        "x > 5min",
    ],
)
def test_bad_functions_and_arithmetic(bad: str) -> None:
    """Ranges need a unit, one metric only, the right side is a number."""
    with pytest.raises(ValueError, match="invalid condition"):
        parse_condition(bad)
