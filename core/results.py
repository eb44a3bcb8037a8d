"""Probe results and samples: what every probe returns, and the bound on untrusted text."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from vigie.core.sanitise import sanitise

MetricType = Literal["gauge", "counter", "info", "stateset"]

MAX_ERROR_CHARS = 512
"""Bound on an error text: it may come from a target and is untrusted."""


def seconds(value: float) -> float:
    """Return a measured duration kept to the microsecond.

    Finer digits are the clock's noise; on /metrics they were a dozen random digits on every
    duration line (a third of the gzipped page at 20k checks, and its slowest part to pack).
    """
    return round(value, 6)


def bound_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Return an error or log text through the one sanitiser, bounded for logs and pages."""
    return sanitise(text, limit)


class Sample(NamedTuple):
    """One metric sample a probe produced; check labels are added at exposition time.

    A named tuple rather than a frozen dataclass: probes make thousands a second, and a
    tuple is built in half the time.
    """

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    type: MetricType = "gauge"
    help: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one run of a check produced: success, duration, samples, failure reason, debug log.

    error is why the run failed; on a successful run it says what could not be read (a
    partial result, e.g. one Redfish resource of many), else it is None.
    """

    success: bool
    duration: float = 0.0
    samples: tuple[Sample, ...] = ()
    error: str | None = None
    phases: tuple[tuple[str, float], ...] = ()
    logs: tuple[str, ...] = ()
    timestamp: float = field(default_factory=time.time)


def format_value(value: float) -> str:
    """Format a sample value as Prometheus expects (Go's float formatting for specials)."""
    v = float(value)
    if v.is_integer():  # False for NaN and infinities
        return str(int(v)) if -1e15 < v < 1e15 else repr(v)
    if math.isnan(v):
        return "NaN"
    if v in (math.inf, -math.inf):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)
