"""Host:port targets: one parser for every kind whose target is "host:port" or "[v6]:port"."""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar

from vigie.core.results import bound_text

__all__ = ["HostPortTarget", "format_host_port", "split_host_port"]

_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")
_PORT = re.compile(r"^[0-9]{1,10}$")


def split_host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    """Return (host, port) of "host:port" or "[v6]:port"; raise ValueError saying what is wrong.

    With a default port (ssh's 22, dns's 53), "host", "[v6]" and a bare IPv6 address take it.
    """
    text = target.strip()
    shown = bound_text(target, 200)
    if default_port is not None:
        text = _with_port(text, default_port, shown)
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"must be [ipv6]:port, got {shown!r}")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"{bound_text(host, 100)!r} in brackets is not an IPv6 address"
            ) from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"must be host:port, got {shown!r}")
        if ":" in host:
            raise ValueError(f"must be host:port with an IPv6 host in brackets, got {shown!r}")
        if not _HOSTNAME.match(host):
            raise ValueError(f"host {bound_text(host, 100)!r} is not a valid host name or address")
    if not _PORT.match(port_text):
        raise ValueError(f"port must be a number, got {bound_text(port_text, 20)!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")
    return host, port


def _with_port(text: str, port: int, shown: str) -> str:
    """Return text with the default port added when it names a host without one."""
    if text.startswith("[") and text.endswith("]"):
        return f"{text}:{port}"
    if text.count(":") > 1 and not text.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(text).compressed}]:{port}"
        except ValueError:
            raise ValueError(f"write IPv6 targets as [addr]:port, got {shown!r}") from None
    return text if ":" in text else f"{text}:{port}"


def format_host_port(host: str, port: int) -> str:
    """Return the normal form of a target: "host:port", host names lower-case, "[v6]:port"."""
    if ":" in host:
        return f"[{ipaddress.IPv6Address(host).compressed}]:{port}"
    return f"{host.lower()}:{port}"


class HostPortTarget:
    """Target handling for kinds whose target is "host:port" (tcp, hl7, dicom, ssh, dns).

    A kind with a well-known port (ssh, dns) sets `default_port`, so its targets may omit it.
    """

    default_port: ClassVar[int | None] = None

    def parse_target(self, target: str) -> str:
        """Return the normalised "host:port", or raise ValueError saying why it is invalid."""
        return format_host_port(*split_host_port(target, self.default_port))

    def host_of(self, target: str) -> str:
        """Return the host of "host:port"."""
        return split_host_port(target, self.default_port)[0]
