"""Derived samples: ratio, pool-full forecast and EWMA baseline ratio, with a fake clock.

The clock is a plain number passed to `apply`: time is not a peer, so no server is involved.
"""

from __future__ import annotations

import json
import math
import textwrap
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from vigie.core.results import Sample
from vigie.core.yamlpos import load_yaml
from vigie.probes.derive import (
    MAX_POINTS,
    MAX_SERIES,
    DeriveDef,
    DeriveState,
    EwmaRatio,
    ForecastFull,
    Ratio,
    fit_line,
)
from vigie.probes.snmp.profiles import Profile
from vigie.probes.snmp.profiles.docs import profiles_markdown

POOL = (("pool", "aggr1"),)
NFS = (("protocol", "nfs3"),)
DEFS: TypeAdapter[DeriveDef] = TypeAdapter(DeriveDef)


def derive(raw: dict[str, Any]) -> Ratio | ForecastFull | EwmaRatio:
    """Validate one `derive:` entry."""
    return DEFS.validate_python({"help": "h", **raw})


def gauge(name: str, value: float, labels: tuple[tuple[str, str], ...] = POOL) -> Sample:
    """A gauge sample."""
    return Sample(name, value, labels, "gauge", "h")


class Run:
    """A DeriveState driven with a fake clock; collects logged events."""

    def __init__(self, *defs: dict[str, Any]) -> None:
        self.state = DeriveState(tuple(derive(d) for d in defs))
        self.events: list[str] = []

    def __call__(self, now: float, *samples: Sample) -> dict[tuple[str, Any], float]:
        """Apply one poll at time now; return derived values by (name, labels)."""
        out = self.state.apply(samples, now, lambda event, **_: self.events.append(event))
        return {(s.name, s.labels): s.value for s in out}


FORECAST = {"kind": "forecast_full", "name": "full_in_seconds", "metric": "used_ratio"}
EWMA = {
    "kind": "ewma_ratio",
    "name": "lat_baseline_ratio",
    "metric": "lat_seconds",
    "half_life": "30m",
    "k": 3,
}


# --------------------------------------------------------------------------- ratio


def test_ratio_divides_matching_label_sets() -> None:
    """ratio divides numerator by denominator per label set and skips a zero denominator."""
    run = Run({"kind": "ratio", "name": "used_ratio", "numerator": "used", "denominator": "size"})
    other = (("pool", "empty"),)
    got = run(
        0.0,
        gauge("used", 30.0),
        gauge("size", 120.0),
        gauge("used", 0.0, other),
        gauge("size", 0.0, other),
        gauge("used", 5.0, (("pool", "orphan"),)),
    )
    assert got == {("used_ratio", POOL): 0.25}


# --------------------------------------------------------------------------- forecast


def test_line_fit_is_exact_on_a_line() -> None:
    """The least-squares fit of points on a line returns its slope and last value."""
    slope, level = fit_line([(t, 0.5 + 0.001 * t) for t in (0.0, 60.0, 120.0, 180.0)]) or (0, 0)
    assert slope == pytest.approx(0.001)
    assert level == pytest.approx(0.68)
    assert fit_line([(5.0, 1.0), (5.0, 2.0)]) is None


def test_forecast_gives_seconds_until_full_on_steady_growth() -> None:
    """A pool growing 1 % a minute from 50 % is forecast full 50 minutes after the last poll."""
    run = Run(FORECAST)
    got: dict[tuple[str, Any], float] = {}
    for minute in range(6):
        got = run(60.0 * minute, gauge("used_ratio", 0.50 + 0.01 * minute))
        if minute < 2:
            assert got == {}, "no forecast before min_points"
    assert got[("full_in_seconds", POOL)] == pytest.approx(45 * 60)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.6, 0.6, 0.6, 0.6], math.inf), ([0.7, 0.65, 0.6, 0.55], math.inf), ([1.0] * 4, 0.0)],
    ids=["flat", "shrinking", "full"],
)
def test_forecast_is_infinite_when_not_growing(values: list[float], expected: float) -> None:
    """A flat or shrinking pool is never full (+Inf); a full one is full now (0)."""
    run = Run(FORECAST)
    got = {}
    for i, v in enumerate(values):
        got = run(60.0 * i, gauge("used_ratio", v))
    assert got[("full_in_seconds", POOL)] == expected


def test_forecast_forgets_points_older_than_the_window() -> None:
    """After a burst that stopped, the window slides past it and the forecast returns to +Inf."""
    run = Run({**FORECAST, "window": "10m"})
    for i in range(5):
        run(60.0 * i, gauge("used_ratio", 0.5 + 0.05 * i))
    got = {}
    for i in range(5, 30):
        got = run(60.0 * i, gauge("used_ratio", 0.7))
    assert got[("full_in_seconds", POOL)] == math.inf
    assert len(run.state.points[("full_in_seconds", POOL)]) == 11


def test_forecast_memory_is_bounded() -> None:
    """A fast check over a long window keeps at most MAX_POINTS points per series."""
    run = Run({**FORECAST, "window": "1d"})
    for i in range(3 * MAX_POINTS):
        run(float(i), gauge("used_ratio", 0.1 + i * 1e-5))
    points = run.state.points[("full_in_seconds", POOL)]
    assert len(points) <= MAX_POINTS
    assert points[0][0] == 0.0 and points[-1][0] == 3 * MAX_POINTS - 1


def test_new_series_beyond_the_cap_are_ignored_and_logged() -> None:
    """A device inventing rows cannot grow the state past MAX_SERIES label sets per derive."""
    run = Run(FORECAST)
    samples = [gauge("used_ratio", 0.5, (("pool", str(i)),)) for i in range(MAX_SERIES + 5)]
    run(0.0, *samples)
    assert len(run.state.points) == MAX_SERIES
    assert run.events.count("derive_series_cap") == 5


# --------------------------------------------------------------------------- EWMA ratio


def test_ewma_baseline_follows_a_steady_value() -> None:
    """At a steady latency the ratio stays 1; after one half-life the baseline is halfway."""
    run = Run(EWMA)
    assert run(0.0, gauge("lat_seconds", 0.002, NFS)) == {("lat_baseline_ratio", NFS): 1.0}
    run(1800.0, gauge("lat_seconds", 0.004, NFS))  # ratio 2 (< k): learnt at full speed
    baseline = run.state.baselines[("lat_baseline_ratio", NFS)].baseline
    assert baseline == pytest.approx(0.003)


def test_ewma_does_not_learn_a_degradation() -> None:
    """Latency held at 5x for hours keeps the ratio at 5: the frozen baseline stays at normal."""
    run = Run(EWMA)
    for minute in range(0, 120, 1):
        run(60.0 * minute, gauge("lat_seconds", 0.002, NFS))
    got = {}
    for minute in range(120, 480, 1):
        got = run(60.0 * minute, gauge("lat_seconds", 0.010, NFS))
    assert got[("lat_baseline_ratio", NFS)] == pytest.approx(5.0)


def test_ewma_slow_learning_above_k_absorbs_a_new_normal_eventually() -> None:
    """With above_half_life the baseline creeps up while above k, much slower than normal."""
    run = Run({**EWMA, "above_half_life": "2h"})
    run(0.0, gauge("lat_seconds", 0.002, NFS))
    first = run(600.0, gauge("lat_seconds", 0.010, NFS))[("lat_baseline_ratio", NFS)]
    later = run(7800.0, gauge("lat_seconds", 0.010, NFS))[("lat_baseline_ratio", NFS)]
    assert first == pytest.approx(5.0)
    assert 1.0 < later < first


def test_ewma_rising_latency_crosses_k() -> None:
    """A latency rising 10 % a minute from a learnt baseline crosses 3x and keeps climbing."""
    run = Run(EWMA)
    for minute in range(60):
        run(60.0 * minute, gauge("lat_seconds", 0.002, NFS))
    ratios = []
    latency = 0.002
    for minute in range(60, 90):
        latency *= 1.1
        ratios.append(
            run(60.0 * minute, gauge("lat_seconds", latency, NFS))[("lat_baseline_ratio", NFS)]
        )
    assert ratios == sorted(ratios)
    assert ratios[-1] > 10  # latency is 17x the start: the baseline learnt little of it


def test_ewma_floor_keeps_an_idle_array_quiet() -> None:
    """With a floor, going from 0.1 ms to 0.3 ms on an idle array is not a 3x degradation."""
    run = Run({**EWMA, "floor": 0.0005})
    run(0.0, gauge("lat_seconds", 0.0001, NFS))
    got = run(60.0, gauge("lat_seconds", 0.0003, NFS))
    assert got[("lat_baseline_ratio", NFS)] == pytest.approx(0.6)


def test_ewma_ignores_a_clock_that_did_not_move() -> None:
    """Two polls at the same time give a ratio but do not move the baseline."""
    run = Run(EWMA)
    run(10.0, gauge("lat_seconds", 0.002, NFS))
    run(10.0, gauge("lat_seconds", 0.004, NFS))
    assert run.state.baselines[("lat_baseline_ratio", NFS)].baseline == 0.002


def test_keep_definitions_drops_state_of_removed_derives() -> None:
    """After a reload without a derive, its state is dropped."""
    run = Run(FORECAST, EWMA)
    run(0.0, gauge("used_ratio", 0.5), gauge("lat_seconds", 0.001, NFS))
    run.state.keep_definitions([derive(EWMA)])
    assert run.state.points == {} and len(run.state.baselines) == 1


def test_derives_chain_in_order() -> None:
    """A forecast can read the ratio a previous derive made in the same poll."""
    run = Run(
        {"kind": "ratio", "name": "used_ratio", "numerator": "used", "denominator": "size"},
        FORECAST,
    )
    got = {}
    for i in range(3):
        got = run(60.0 * i, gauge("used", 50.0 + i), gauge("size", 100.0))
    assert got[("full_in_seconds", POOL)] == pytest.approx(48 * 60)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**FORECAST, "name": "full_in"}, "must end with _seconds"),
        ({**EWMA, "name": "lat_baseline"}, "must end with _ratio"),
        ({**EWMA, "k": 1}, "greater than 1"),
        ({**EWMA, "half_life": "0s"}, "greater than 0"),
        ({**FORECAST, "kind": "median"}, "does not match any of the expected tags"),
    ],
)
def test_invalid_derive_is_rejected(raw: dict[str, Any], message: str) -> None:
    """A derive with a bad name, k, duration or kind is rejected with its reason."""
    with pytest.raises(ValidationError, match=message):
        derive(raw)


PROFILE = """
source: test
metrics:
  - {name: lat_seconds, oid: 1.3.6.1.4.1.9.1.0, type: gauge, unit: seconds, help: Latency.,
     lookups: [{label: node, oid: 1.3.6.1.4.1.9.2.0}]}
derive:
  - {kind: ewma_ratio, name: lat_baseline_ratio, metric: %s, help: Ratio.}
rules:
  - {name: slow, expr: 'lat_baseline_ratio{node="a"} > 3', severity: warning, for: 5m}
"""


def test_profile_derive_families_have_source_labels_and_rules_may_use_them() -> None:
    """A derived family carries its source's labels; rules and the docs know it."""
    prof = Profile.model_validate(load_yaml(textwrap.dedent(PROFILE % "lat_seconds"), "t", {}))
    assert prof.family_labels()["lat_baseline_ratio"] == ["node"]
    assert "`lat_baseline_ratio` | gauge (ewma_ratio)" in profiles_markdown({"t": prof})


def test_profile_derive_of_unknown_metric_is_rejected() -> None:
    """A derive naming a metric the profile does not have is an error naming it."""
    with pytest.raises(ValidationError, match="derive 'lat_baseline_ratio': unknown metric 'nope'"):
        Profile.model_validate(load_yaml(textwrap.dedent(PROFILE % "nope"), "t", {}))


# --------------------------------------------------------------------------- over a restart


def test_state_dumped_and_restored_goes_on_as_if_never_stopped() -> None:
    """A dump through JSON, restored in a new state, keeps the baseline and forecast points."""
    run = Run(EWMA, FORECAST)
    for minute in range(60):
        run(
            60.0 * minute,
            gauge("lat_seconds", 0.002, NFS),
            gauge("used_ratio", 0.5 + minute / 1000),
        )
    data = json.loads(json.dumps(run.state.dump()))
    again = Run(EWMA, FORECAST)
    again.state.restore(data)
    assert again.state.baselines == run.state.baselines
    assert again.state.points == run.state.points
    later = 60.0 * 70
    slow = gauge("lat_seconds", 0.010, NFS)
    assert again(later, slow, gauge("used_ratio", 0.57)) == run(
        later, slow, gauge("used_ratio", 0.57)
    )
    assert again(later + 60, slow)[("lat_baseline_ratio", NFS)] == pytest.approx(5.0)


def test_restore_skips_malformed_entries_and_undeclared_derives() -> None:
    """Bad entries of a damaged file and state of derives no longer declared are dropped."""
    data = {
        "baselines": [
            ["lat_baseline_ratio", [["protocol", "nfs3"]], 0.002, 10.0],
            ["lat_baseline_ratio", [["protocol"]], 0.002, 10.0],  # a label without value
            ["lat_baseline_ratio", [["protocol", "smb"]], "fast", 10.0],
            ["lat_baseline_ratio", [["protocol", "iscsi"]], math.inf, 10.0],
            ["gone_ratio", [], 0.002, 10.0],
        ],
        "points": [["full_in_seconds", "not labels", [[0, 0.5]]], 42],
    }
    run = Run(EWMA, FORECAST)
    run.state.restore(data)
    assert list(run.state.baselines) == [("lat_baseline_ratio", NFS)]
    assert run.state.points == {}
