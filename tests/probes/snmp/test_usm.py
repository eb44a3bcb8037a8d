"""The plaintext USM check: each report an agent sends is named."""

from __future__ import annotations

import pytest

from tests.probes.snmp.polls import poll
from tests.snmp_peers import ReportingV3Agent, serve_udp, snmp_check
from vigie.probes.base import ProbeContext
from vigie.probes.snmp import SnmpProbe

REPORTS = [
    ("1.3.6.1.6.3.15.1.1.1.0", "SNMPv3 unsupported security level: the agent does not accept"),
    ("1.3.6.1.6.3.15.1.1.2.0", "SNMPv3 not in time window: engine boots/time out of sync"),
    ("1.3.6.1.6.3.15.1.1.3.0", "SNMPv3 unknown user 'ops'"),
    ("1.3.6.1.6.3.15.1.1.4.0", "SNMPv3 unknown engine ID"),
    ("1.3.6.1.6.3.15.1.1.5.0", "SNMPv3 wrong digest: auth password or auth protocol (SHA256)"),
    ("1.3.6.1.6.3.15.1.1.6.0", "SNMPv3 decryption error: privacy password or protocol"),
    ("1.3.6.1.6.3.12.1.5.0", "SNMPv3 unknown context"),
    ("1.3.6.1.4.1.99.1.0", "SNMPv3 authentication failed (agent report 1.3.6.1.4.1.99.1.0)"),
]


@pytest.mark.parametrize(("report", "expected"), REPORTS)
async def test_usm_reports_are_named(
    probe: SnmpProbe, ctx: ProbeContext, report: str, expected: str
) -> None:
    """Whatever USM report an agent sends, the error names its reason."""
    agent = ReportingV3Agent(report)
    transport, port = await serve_udp(agent)
    auth = {
        "version": 3,
        "username": "ops",
        "auth_protocol": "SHA256",
        "auth_password": "ops-auth-pw",
    }
    try:
        check = snmp_check(f"127.0.0.1:{port}", auths={"v3": auth}, auth="v3", timeout=1.0)
        result = await poll(probe, check, ctx)
    finally:
        transport.close()
    assert not result.success
    assert result.error is not None and result.error.startswith(expected), result.error
    assert agent.received == 5  # discovery, time sync, GET, then discovery + one request
