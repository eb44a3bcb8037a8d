"""What the daemon's trap receiver needs from a probe kind, whatever its protocol.

The receiver (vigie.monitor.traps) owns the socket, size bounds, per-source rate limits, its
metrics and the dispatch of a notification to checks. A probe kind that receives
notifications (`TrapProbe`: snmp) gives it a `TrapDecoder`, which screens a datagram cheaply
on the event loop, then decodes and authenticates it on the receiver's decoding thread; and
a check's settings that say what notifications mean (`TrapSource`) let the receiver apply
them to the check's last result.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from vigie.probes.base import Check

__all__ = [
    "ConfigProblem",
    "TrapDecoder",
    "TrapMeaning",
    "TrapNotification",
    "TrapOptions",
    "TrapProbe",
    "TrapRefusal",
    "TrapSource",
    "normalise_ip",
]

ConfigProblem = tuple[tuple[int | str, ...], str]
"""(where in the config file, message): an error the config loader places at its line."""


@dataclass(frozen=True, slots=True)
class TrapRefusal:
    """A datagram the decoder will not pass on: the receiver's drop reason and what to log."""

    reason: str
    """One of the receiver's drop reasons: malformed, community, user."""
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrapNotification:
    """An authenticated notification: what it is and which devices may have sent it."""

    key: str
    """What the notification is (an SNMP trap OID): the key of a TrapSource's meanings."""
    addresses: tuple[str, ...]
    """Addresses of its sender to match checks by, first that matches wins."""


class TrapMeaning(Protocol):
    """What one notification means for a check's metrics (an SNMP profile's TrapDef)."""

    @property
    def name(self) -> str:
        """The notification's name, for logs."""
        ...

    @property
    def oid(self) -> str:
        """Its key (the trap OID)."""
        ...

    @property
    def set(self) -> Mapping[str, float]:
        """Metric families it sets until the next poll (empty: re-poll only)."""
        ...


@runtime_checkable
class TrapSource(Protocol):
    """Check settings whose device sends notifications, and what they mean."""

    def trap_meanings(self) -> Mapping[str, TrapMeaning]:
        """Return the meanings by key (trap OID)."""
        ...

    def family_helps(self) -> Mapping[str, str]:
        """Return the HELP text of each family a notification may set."""
        ...


class TrapOptions(Protocol):
    """The decoder's part of the config's `traps:` block (credentials and engine IDs)."""

    @property
    def auths(self) -> Sequence[str]:
        """Names of the section's credentials accepted on notifications (none: the checks')."""
        ...

    @property
    def engine_ids(self) -> Sequence[str]:
        """Engine IDs (hex) of the senders whose notifications are authenticated."""
        ...

    @property
    def engine_id(self) -> str | None:
        """The receiver's own engine ID (hex), None to generate one."""
        ...


class TrapDecoder(Protocol):
    """A protocol's decoding for the receiver: screen on the loop, decode on its thread.

    `open`, `configure`, `decode` and `close` run on the receiver's decoding thread, one at a
    time; `screen` runs on the daemon's loop and must cost the same whatever the datagram holds.
    """

    def screen(self, data: memoryview) -> TrapRefusal | None:
        """Return why a datagram is refused from its header alone, or None to decode it."""
        ...

    def open(self, sock: socket.socket, family: int, options: TrapOptions) -> str:
        """Start decoding for datagrams read from sock (replies go out on it); return own ID."""
        ...

    def configure(
        self, plan: Mapping[str, Check], section: BaseModel | None, options: TrapOptions
    ) -> None:
        """Take the credentials to accept from the kind's config section and the plan."""
        ...

    def decode(
        self, address: tuple[Any, ...], data: bytes
    ) -> TrapNotification | TrapRefusal | None:
        """Decode one screened datagram; None when it was no notification (a discovery)."""
        ...

    def close(self) -> None:
        """Release what open took."""
        ...


@runtime_checkable
class TrapProbe(Protocol):
    """A probe kind that receives notifications: its config section names their credentials."""

    kind: ClassVar[str]

    def trap_decoder(self) -> TrapDecoder:
        """Return a new decoder for one receiver."""
        ...

    def trap_problems(self, options: TrapOptions, section: BaseModel | None) -> list[ConfigProblem]:
        """Return what is wrong in the `traps:` block for this kind (e.g. an unknown auth)."""
        ...


def normalise_ip(text: str) -> str:
    """Return an address as text, IPv4-mapped IPv6 addresses as IPv4."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
