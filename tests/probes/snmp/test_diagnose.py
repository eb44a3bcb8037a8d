"""Why a poll failed, said by asking the agent again: wrong community, v3 errors, silence."""

from __future__ import annotations

import pytest

from tests.probes.snmp.polls import poll, v2
from tests.snmp_peers import HalfWalkAgent, Snmpd, serve_udp, snmp_check, v3_auth
from vigie.probes.base import ProbeContext
from vigie.probes.snmp import SnmpProbe


async def test_wrong_community_looks_like_a_timeout(
    probe: SnmpProbe, agent: Snmpd, ctx: ProbeContext
) -> None:
    """A wrong community gets no answer: the error says so, and that the agent is alive."""
    check = snmp_check(
        agent.target(),
        auths={"x": {"version": 2, "community": "c0mmun1ty-X"}},
        auth="x",
        timeout=1.0,
    )
    result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith("timeout: no answer to community requests")
    assert "wrong community" in result.error
    assert "a wrong community looks like a timeout" in result.error
    assert "c0mmun1ty-X" not in result.error


V3_FAILURES = [
    ("wrong auth password", {"auth_password": "not-the-password"}, "SNMPv3 wrong digest"),
    ("wrong auth protocol", {"auth_protocol": "MD5"}, "SNMPv3 wrong digest"),
    ("wrong priv password", {"priv_password": "not-the-password"}, "SNMPv3 decryption error"),
    ("wrong key extension", {"priv_protocol": "AES256C"}, "SNMPv3 decryption error"),
    ("unknown user", {"username": "nobody"}, "SNMPv3 unknown user 'nobody'"),
]


@pytest.mark.parametrize(
    ("override", "expected"), [c[1:] for c in V3_FAILURES], ids=[c[0] for c in V3_FAILURES]
)
async def test_v3_failures_are_classified(
    probe: SnmpProbe, agent: Snmpd, ctx: ProbeContext, override: dict[str, str], expected: str
) -> None:
    """Each v3 credential mistake gives its own reason, never the password."""
    user = "sha_aes256" if override.get("priv_protocol") == "AES256C" else "sha_aes"
    check = snmp_check(
        agent.target(), auths={"v3": v3_auth(user, **override)}, auth="v3", timeout=1.5
    )
    result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error is not None and result.error.startswith(expected), result.error
    assert "not-the-password" not in result.error and "-pw" not in result.error


async def test_agent_down_is_refused(probe: SnmpProbe, own_agent: Snmpd, ctx: ProbeContext) -> None:
    """A stopped agent on loopback answers with port unreachable: 'agent down'."""
    check = snmp_check(own_agent.target(), auths=v2(own_agent), auth="lab", timeout=1.0)
    own_agent.stop()
    result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error is not None and result.error.startswith("agent down:"), result.error


async def test_silent_agent_times_out(probe: SnmpProbe, ctx: ProbeContext) -> None:
    """A port that swallows requests gives a timeout naming the tries and the community hint."""
    agent = HalfWalkAgent("1.3.6.1.2.1.2.2.1.2", rows=10, answers=0)
    transport, port = await serve_udp(agent)
    try:
        check = snmp_check(f"127.0.0.1:{port}", timeout=2.0, retries=2)
        result = await poll(probe, check, ctx)
    finally:
        transport.close()
    assert not result.success
    assert result.error == (
        f"timeout: no answer from 127.0.0.1:{port} after 3 tries of 0.5s (agent down or "
        "unreachable; with SNMPv1/v2c a wrong community looks like a timeout too)"
    )
    assert agent.received == 4  # 3 tries + 1 SNMPv3 discovery to tell a dead agent apart
