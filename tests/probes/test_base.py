"""Tests of the probe interface: ProbeLog, the registry, and the optional hooks found by type."""

from __future__ import annotations

import asyncio
import io
import json
import os
from typing import Any

import pytest
import structlog

from vigie.core.rules import Rule
from vigie.monitor.eventloop import loop_name
from vigie.monitor.logs import configure_logging
from vigie.probes import ProbeRegistry, default_registry
from vigie.probes.base import Closing, KeepsCheckState, ProbeLog, RuleSource, StatefulProbe
from vigie.probes.http import HttpProbe, HttpSettings
from vigie.probes.redfish import RedfishProbe, RedfishSettings


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


class Keeping:
    """Keeps per-check state under the hook's name."""

    def keep_only(self, check_ids: set[str]) -> None:
        """Drop the others."""


class OldName:
    """The former name of the hook: no longer a hook, so the daemon would not call it."""

    def retain(self, check_ids: set[str]) -> None:
        """Not the hook."""


class Holding:
    """Holds a resource to release."""

    async def close(self) -> None:
        """Release it."""


class Learning:
    """Keeps learnt state over restarts."""

    kind = "learning"

    def save_state(self) -> dict[str, Any]:
        """Nothing learnt."""
        return {}

    def load_state(self, data: dict[str, Any]) -> None:
        """Nothing to take back."""


class Ruling:
    """Settings that bring their own health rules."""

    def health_rules(self) -> list[Rule]:
        """None here."""
        return []


@pytest.mark.parametrize(
    ("thing", "hooks"),
    [
        (Keeping(), {KeepsCheckState}),
        (OldName(), set()),
        (Holding(), {Closing}),
        (Learning(), {StatefulProbe}),
        (Ruling(), {RuleSource}),
        (object(), set()),
    ],
)
def test_hooks_are_found_by_type(thing: object, hooks: set[type]) -> None:
    """Each optional hook is a protocol an object meets by having the method, and only then."""
    protocols = (KeepsCheckState, Closing, StatefulProbe, RuleSource)
    assert {p for p in protocols if isinstance(thing, p)} == hooks


def test_shipped_kinds_declare_their_hooks() -> None:
    """Redfish logs out of its BMC sessions at stop and brings health rules; http has neither."""
    assert isinstance(RedfishProbe(), Closing)
    assert not isinstance(HttpProbe(), Closing | KeepsCheckState | StatefulProbe)
    redfish = RedfishSettings.model_validate({"auth": "none"})
    assert isinstance(redfish, RuleSource) and redfish.health_rules()
    assert not isinstance(HttpSettings(), RuleSource)


async def test_the_probes_tests_run_on_the_daemons_loop() -> None:
    """The probes' async tests run on uvloop, as `vigie run` does (tests/conftest.py), unless
    VIGIE_TEST_LOOP names another loop (`make test-asyncio`)."""
    want = os.environ.get("VIGIE_TEST_LOOP") or "uvloop"
    assert loop_name(asyncio.get_running_loop()) == want
