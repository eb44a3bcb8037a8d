"""Host:port targets: one parser, normal forms, errors that bound what they echo."""

from __future__ import annotations

import re

import pytest

from vigie.core.hostport import HostPortTarget, format_host_port, split_host_port


@pytest.mark.parametrize(
    ("target", "parts", "normal"),
    [
        ("pacs.chu.local:104", ("pacs.chu.local", 104), "pacs.chu.local:104"),
        ("PACS:11112", ("PACS", 11112), "pacs:11112"),
        ("[::1]:2575", ("::1", 2575), "[::1]:2575"),
        ("[2001:db8:0:0::1]:53", ("2001:db8:0:0::1", 53), "[2001:db8::1]:53"),
        (" 10.0.0.1:161 ", ("10.0.0.1", 161), "10.0.0.1:161"),
    ],
)
def test_split_and_normalise(target: str, parts: tuple[str, int], normal: str) -> None:
    """Names lower-cased, IPv6 compressed and bracketed."""
    assert split_host_port(target) == parts
    assert format_host_port(*parts) == normal
    assert HostPortTarget().parse_target(target) == normal
    assert HostPortTarget().host_of(target) == parts[0]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("pacs", "must be host:port"),
        (":104", "must be host:port"),
        ("::1:104", "IPv6 host in brackets"),
        ("[zz]:104", "not an IPv6 address"),
        ("[::1]104", "must be [ipv6]:port"),
        ("pa cs:104", "not a valid host name"),
        ("pacs:http", "port must be a number"),
        ("pacs:70000", "between 1 and 65535"),
        ("pacs:0", "between 1 and 65535"),
    ],
)
def test_bad_targets_say_why(target: str, reason: str) -> None:
    """Each mistake named."""
    with pytest.raises(ValueError, match=re.escape(reason)):
        split_host_port(target)


def test_the_echoed_target_is_bounded() -> None:
    """A huge target in a config is not copied whole into the error."""
    with pytest.raises(ValueError) as caught:
        split_host_port("x" * 100_000)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("srv.chu.local", ("srv.chu.local", 22)),
        ("srv.chu.local:2222", ("srv.chu.local", 2222)),
        ("::1", ("::1", 22)),
        ("2001:db8:0:0::1", ("2001:db8::1", 22)),
        ("[::1]", ("::1", 22)),
        ("[::1]:2222", ("::1", 2222)),
    ],
)
def test_a_default_port_fills_in_when_the_target_has_none(
    target: str, parts: tuple[str, int]
) -> None:
    """ssh's and dns's targets may omit the port; bare IPv6 addresses are taken as hosts."""
    assert split_host_port(target, default_port=22) == parts


def test_a_default_port_does_not_make_bad_targets_pass() -> None:
    """Without brackets, colons must make an IPv6 address; the echo stays bounded."""
    with pytest.raises(ValueError, match=re.escape("write IPv6 targets as [addr]:port")):
        split_host_port("1:2:3:zz", default_port=22)
    with pytest.raises(ValueError) as caught:
        split_host_port("a:b:" + "x" * 100_000, default_port=22)
    assert len(str(caught.value)) < 300
    with pytest.raises(ValueError, match="not a valid host name"):
        split_host_port("a b", default_port=22)
    with pytest.raises(ValueError, match="must be host:port"):
        split_host_port("", default_port=22)


def test_a_kind_with_a_well_known_port_declares_it() -> None:
    """HostPortTarget normalises with the kind's default port; without one the port is required."""

    class Ssh(HostPortTarget):
        default_port = 22

    assert Ssh().parse_target("SRV") == "srv:22" and Ssh().host_of("[::1]") == "::1"
    with pytest.raises(ValueError, match="must be host:port"):
        HostPortTarget().parse_target("srv")
