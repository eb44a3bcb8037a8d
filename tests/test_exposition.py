"""Exposition: lines rendered per result, grouped by family, and dropped with their check."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from vigie.core.results import ProbeResult, Sample, format_value
from vigie.monitor.exposition import Exposition, label_text


def make() -> Exposition:
    """Return an exposition with two checks' labels set."""
    exp = Exposition(CollectorRegistry())
    exp.set_labels(
        {
            "a": [("check", "a"), ("kind", "http"), ("target", "http://x/")],
            "b": [("check", "b"), ("kind", "tcp"), ("target", 'evil"\n\\')],
        }
    )
    return exp


def test_samples_grouped_by_family_with_one_header_each() -> None:
    """Two checks' samples of one family share one HELP/TYPE header."""
    exp = make()
    exp.update(
        "a",
        ProbeResult(True, 0.25, (Sample("probe_http_status_code", 200, (), "gauge", "Status."),)),
    )
    exp.update("b", ProbeResult(False, 1.5))
    text = exp.render().decode()
    assert text.count("# TYPE probe_success gauge") == 1
    assert 'probe_success{check="a",kind="http",target="http://x/"} 1\n' in text
    assert 'probe_duration_seconds{check="a",kind="http",target="http://x/"} 0.25\n' in text
    assert 'probe_http_status_code{check="a",kind="http",target="http://x/"} 200\n' in text
    lines = text.splitlines()
    success = [i for i, line in enumerate(lines) if line.startswith("probe_success{")]
    assert success == list(range(success[0], success[0] + 2)), "family lines must be contiguous"


def test_label_values_are_escaped() -> None:
    """Quotes, newlines and backslashes in a target are escaped, not injected."""
    exp = make()
    exp.update("b", ProbeResult(True, 0.1))
    assert 'target="evil\\"\\n\\\\"' in exp.render().decode()


def test_failed_result_removes_families_the_success_had() -> None:
    """A family a check no longer reports disappears from the page."""
    exp = make()
    exp.update("a", ProbeResult(True, 0.1, (Sample("probe_http_status_code", 200),)))
    exp.update("a", ProbeResult(False, 0.1))
    assert 'probe_http_status_code{check="a"' not in exp.render().decode()


def test_removed_check_vanishes() -> None:
    """A check dropped from the plan leaves no series behind."""
    exp = make()
    exp.update("a", ProbeResult(True, 0.1))
    exp.update("b", ProbeResult(True, 0.1))
    exp.set_labels({"b": [("check", "b"), ("kind", "tcp"), ("target", "t")]})
    text = exp.render().decode()
    assert 'check="a"' not in text
    exp.update("b", ProbeResult(True, 0.1))
    assert 'probe_success{check="b",kind="tcp",target="t"} 1' in exp.render().decode()


def test_result_for_unknown_check_is_ignored() -> None:
    """A late result of a check no longer planned is not exposed."""
    exp = make()
    exp.update("zzz", ProbeResult(True, 0.1))
    assert "zzz" not in exp.render().decode()


def test_own_metrics_are_appended() -> None:
    """The daemon's own registry is rendered after the probe families."""
    reg = CollectorRegistry()
    from prometheus_client import Gauge

    Gauge("vigie_test_gauge", "Test.", registry=reg).set(3)
    exp = Exposition(reg)
    assert "vigie_test_gauge 3.0" in exp.render().decode()


def test_format_value_specials() -> None:
    """Special floats use Prometheus spellings; integers print without a fraction."""
    assert [format_value(v) for v in (1.0, 0.5, float("inf"), float("-inf"))] == [
        "1",
        "0.5",
        "+Inf",
        "-Inf",
    ]
    assert format_value(float("nan")) == "NaN"
    assert format_value(1.7e308) == repr(1.7e308)


def test_label_text_orders_as_given() -> None:
    """Labels are rendered in the given order."""
    assert label_text([("b", "1"), ("a", "2")]) == 'b="1",a="2"'
