"""Tests of the probe interface's helpers: ProbeLog and the registry."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from vigie.monitor.logs import configure_logging
from vigie.probes import ProbeRegistry, default_registry
from vigie.probes.base import ProbeLog


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    """Put structlog back as the other tests expect it after each test."""
    yield
    structlog.reset_defaults()


def test_probe_log_skips_events_nobody_sees() -> None:
    """At info level a ProbeLog that keeps no lines is disabled and writes nothing."""
    out = io.StringIO()
    configure_logging("info", out)
    log = ProbeLog(structlog.get_logger().bind(check="c"), keep=False)
    assert not log.enabled
    log("http_request", url="http://x/")
    assert log.lines == [] and out.getvalue() == ""


def test_probe_log_writes_debug_events_at_debug_level() -> None:
    """At debug level the events reach the log with the bound check id."""
    out = io.StringIO()
    configure_logging("debug", out)
    log = ProbeLog(structlog.get_logger().bind(check="c"), keep=False)
    assert log.enabled
    log("http_request", url="http://x/")
    event = json.loads(out.getvalue().splitlines()[-1])
    assert event["event"] == "http_request" and event["check"] == "c"
    assert log.lines == []


def test_probe_log_keeps_bounded_lines_for_debug_runs() -> None:
    """keep=True records each event as one printable line, even at info level."""
    configure_logging("info", io.StringIO())
    log = ProbeLog(structlog.get_logger(), keep=True)
    assert log.enabled
    log("http_body", bytes=3, note="a\nb")
    assert log.lines == ["http_body bytes=3 note=a b"]


def test_registry_rejects_a_duplicate_kind() -> None:
    """Two probes of one kind in a registry is an error naming the kind."""
    probe = default_registry()["http"]
    with pytest.raises(ValueError, match="http"):
        ProbeRegistry([probe, probe])
