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
