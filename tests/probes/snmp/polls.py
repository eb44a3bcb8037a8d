"""Polling helpers of the snmp tests: once under the check's timeout, rendered as /metrics."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from prometheus_client import CollectorRegistry

from tests.snmp_peers import Snmpd
from vigie.core.results import ProbeResult
from vigie.monitor.exposition import Exposition, check_labels, label_text, result_samples
from vigie.probes.base import Check, ProbeContext
from vigie.probes.snmp import SnmpProbe


def v2(agent: Snmpd) -> dict[str, Any]:
    """The `snmp.auths` entry for the agent's v2c community."""
    return {"lab": {"version": 2, "community": agent.community}}


async def poll(probe: SnmpProbe, check: Check[Any], ctx: ProbeContext) -> ProbeResult:
    """Run the probe once, as the scheduler would (under the check's timeout)."""
    async with asyncio.timeout(check.timeout):
        return await probe(check, ctx)


def render(check: Check, result: ProbeResult) -> str:
    """Render a result as /metrics shows it, with a fixed target and without durations."""
    shown = dataclasses.replace(check, target="device")
    exp = Exposition(CollectorRegistry())
    text = exp.render_text(
        exp.render_samples(label_text(check_labels(shown)), result_samples(result))
    )
    return "".join(line for line in text.splitlines(True) if "duration_seconds" not in line)
