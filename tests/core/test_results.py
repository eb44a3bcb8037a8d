"""Results and samples: bounded error text, Prometheus number formatting."""

from __future__ import annotations

import math

from vigie.core.results import (
    MAX_ERROR_CHARS,
    ProbeResult,
    Sample,
    bound_text,
    format_value,
    seconds,
)


def test_bound_text_cuts_and_cleans_untrusted_text() -> None:
    """A target's error text is bounded and its control characters are blanked."""
    text = bound_text("refused\r\n\x1b[31m" + "x" * 5000)
    assert len(text) == MAX_ERROR_CHARS and text.endswith("…")
    assert "\r" not in text and "\x1b" not in text
    assert bound_text("short") == "short"


def test_format_value_writes_what_prometheus_reads() -> None:
    """Integers without a dot, specials as Go writes them, the rest as repr."""
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.nan) == "NaN"
    assert format_value(math.inf) == "+Inf" and format_value(-math.inf) == "-Inf"
    assert format_value(1e20) == "1e+20"


def test_result_defaults_and_sample_defaults() -> None:
    """A result is stamped when made; a sample is a gauge without labels unless told."""
    result = ProbeResult(success=True, samples=(Sample("up", 1.0),))
    assert result.timestamp > 0 and result.error is None
    assert result.samples[0].type == "gauge" and result.samples[0].labels == ()


def test_durations_are_kept_to_the_microsecond() -> None:
    """A measured duration keeps six decimals: /metrics lines carry no clock noise."""
    assert seconds(0.016526422999959323) == 0.016526
    assert repr(seconds(1.0471154309998383)) == "1.047115"
    assert seconds(0.0000004) == 0.0
