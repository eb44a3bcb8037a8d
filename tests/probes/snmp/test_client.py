"""Targets: `host[:port]`, `[v6]:port` or a bare IPv6 address, port 161 by default."""

from __future__ import annotations

import pytest

from vigie.probes.snmp import SnmpProbe, parse_target

TARGETS = [
    ("10.0.0.5", ("10.0.0.5", 161), "10.0.0.5:161"),
    ("ups-a.chu.example:1161", ("ups-a.chu.example", 1161), "ups-a.chu.example:1161"),
    ("[::1]:1161", ("::1", 1161), "[::1]:1161"),
    ("[fe80::1]", ("fe80::1", 161), "[fe80::1]:161"),
    ("2001:db8::7", ("2001:db8::7", 161), "[2001:db8::7]:161"),
]


@pytest.mark.parametrize(("target", "parsed", "normal"), TARGETS)
def test_target_syntax(probe: SnmpProbe, target: str, parsed: tuple[str, int], normal: str) -> None:
    """Targets are host[:port] or [v6]:port, with port 161 by default."""
    assert parse_target(target) == parsed
    assert probe.parse_target(target) == normal
    assert probe.host_of(target) == parsed[0]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("host:0", "port must be 1 to 65535"),
        ("host:70000", "port must be 1 to 65535"),
        ("udp://host", "target must be host[:port]"),
        ("[nothex]:161", "invalid IPv6 address"),
        ("1:2:3", "write IPv6 targets as [addr]:port"),
    ],
)
def test_invalid_target_is_rejected(target: str, message: str) -> None:
    """A malformed target is a config error saying what is expected."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_target(target)
