"""The icmp probe: unprivileged ping through a datagram ICMP socket, in asyncio, no root, no fork.

Linux lets a process open `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` (and its ICMPv6 twin)
when one of its groups is inside the sysctl `net.ipv4.ping_group_range` (which also governs
IPv6). The kernel fills in the echo identifier and checksum, and hands the socket only the
replies to its own identifier. Debian's default range, "1 0", allows nobody: the service's
group must be added (see docs/probes.md); `ping_permission_problem` says when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import re
import secrets
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.probes.base import Check, ProbeContext
from vigie.probes.nonblocking import send_when_writable
from vigie.probes.tls import os_error_reason

__all__ = [
    "PING_GROUP_RANGE",
    "IcmpProbe",
    "IcmpSettings",
    "ping_permission_problem",
    "read_ping_group_range",
]

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
_SYSCTL = "net.ipv4.ping_group_range"
# The probe's own deadline, as a share of the check's timeout, so lost packets are reported
# as loss rather than as the scheduler's bare timeout.
_OWN_DEADLINE_SHARE = 0.9
_ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_TOKEN_BYTES = 8
_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")


def read_ping_group_range(path: Path = PING_GROUP_RANGE) -> tuple[int, int] | None:
    """Return the (low, high) gids of net.ipv4.ping_group_range, or None if unreadable."""
    try:
        low, high = path.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def ping_permission_problem(
    gid_range: tuple[int, int] | None = None, groups: Iterable[int] | None = None
) -> str | None:
    """Return why this process may not open ICMP datagram sockets, or None when it may.

    The kernel allows the socket when any of the process's groups (effective and
    supplementary) is inside the range; the defaults read the running process and the sysctl.
    """
    if gid_range is None:
        gid_range = read_ping_group_range()
        if gid_range is None:
            return None  # not Linux, or /proc hidden: let the socket call say
    gids = set(groups) if groups is not None else {os.getegid(), *os.getgroups()}
    low, high = gid_range
    if any(low <= gid <= high for gid in gids):
        return None
    shown = ", ".join(str(g) for g in sorted(gids))
    return (
        f"{_SYSCTL} is '{low} {high}', which excludes this process's groups ({shown}): icmp"
        f" checks will fail; allow the service's group, e.g. sysctl -w"
        f" {_SYSCTL}='{min(gids)} {min(gids)}'"
    )


def _split_target(target: str) -> str:
    """Return the normal form of an icmp target (an IP address or a host name)."""
    text = target.strip()
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        pass
    if not _HOSTNAME.match(text):
        raise ValueError(
            f"must be an IP address or host name (no port), got {bound_text(target, 100)!r}"
        )
    return text.lower()


class IcmpSettings(BaseModel):
    """Settings of an icmp check; the target is a host name or IP address."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(3, ge=1, le=100, description="Echo requests sent per run.")
    interval: float = Field(0.2, ge=0.01, le=10.0, description="Seconds between two echo requests.")
    packet_timeout: float = Field(
        1.0,
        gt=0.0,
        le=30.0,
        description="Seconds to wait for a reply after the last request (within the check's"
        " timeout).",
    )
    payload_bytes: int = Field(
        56, ge=_TOKEN_BYTES, le=1400, description="Bytes of data after the ICMP header."
    )
    ip_version: Literal[4, 6] | None = Field(
        None, description="Address family of a host name: 4, 6, or the resolver's first."
    )
    max_loss_ratio: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Highest share of lost packets counted as success (0 fails on any loss).",
    )
    max_rtt: float | None = Field(
        None, gt=0.0, description="Fail when the average round trip exceeds these seconds."
    )


def _gauge(name: str, value: float, help: str) -> Sample:
    """Return a gauge sample."""
    return Sample(name=name, value=value, type="gauge", help=help)


@dataclass(slots=True)
class _Echo:
    """One run's requests and replies: send times by sequence, round trips received."""

    sent: dict[int, float] = field(default_factory=dict)
    rtts: dict[int, float] = field(default_factory=dict)
    error: OSError | None = None
    all_sent: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def update(self) -> None:
        """Mark the run settled once every request is answered or an error stopped it."""
        if self.error is not None or (self.all_sent and len(self.rtts) == len(self.sent)):
            self.settled.set()


class IcmpProbe:
    """Probe kind "icmp": echo requests to the target, loss ratio and round trips."""

    kind: ClassVar[str] = "icmp"
    Settings: ClassVar[type[BaseModel]] = IcmpSettings

    def parse_target(self, target: str) -> str:
        """Return the normalised address or host name, or raise ValueError saying why."""
        return _split_target(target)

    def host_of(self, target: str) -> str:
        """Return the target itself: it is the host."""
        return _split_target(target)

    async def __call__(self, check: Check[IcmpSettings], ctx: ProbeContext) -> ProbeResult:
        """Ping the target count times and judge loss and round trip."""
        settings = check.settings
        samples: list[Sample] = []
        error = await self._run(check, settings, ctx, samples)
        if error is not None:
            error = bound_text(error)
            ctx.log("icmp_failed", error=error)
            return ProbeResult(success=False, error=error, samples=tuple(samples))
        return ProbeResult(success=True, samples=tuple(samples))

    async def _run(
        self,
        check: Check[IcmpSettings],
        settings: IcmpSettings,
        ctx: ProbeContext,
        samples: list[Sample],
    ) -> str | None:
        """Resolve, open the socket, exchange echoes; return the failure reason or None."""
        try:
            family, address = await _resolve(check.target, settings.ip_version)
        except socket.gaierror as exc:
            return f"DNS: cannot resolve {check.target!r}: {exc.strerror}"
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        except PermissionError:
            problem = ping_permission_problem()
            return f"ICMP socket refused: {problem or f'check {_SYSCTL}'}"
        except OSError as exc:
            return f"cannot open an ICMP socket: {os_error_reason(exc)}"
        with sock:
            sock.setblocking(False)
            echo = _Echo()
            token = secrets.token_bytes(_TOKEN_BYTES)
            payload = token + bytes(settings.payload_bytes - _TOKEN_BYTES)
            receiver = asyncio.create_task(_receive(sock, family, token, echo))
            own_deadline = time.monotonic() + check.timeout * _OWN_DEADLINE_SHARE
            try:
                await _send_all(
                    sock, (address, family), payload, settings, echo=echo, deadline=own_deadline
                )
                left = min(own_deadline - time.monotonic(), settings.packet_timeout)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(echo.settled.wait(), max(left, 0.0))
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver
        ctx.log("icmp_done", address=address, sent=len(echo.sent), received=len(echo.rtts))
        return _judge(check, settings, address, echo, samples)


async def _resolve(target: str, version: Literal[4, 6] | None) -> tuple[socket.AddressFamily, str]:
    """Return (family, address) of target, resolving a host name in the wanted family."""
    try:
        ip = ipaddress.ip_address(target)
    except ValueError:
        pass
    else:
        return (socket.AF_INET if ip.version == 4 else socket.AF_INET6), ip.compressed
    family = {4: socket.AF_INET, 6: socket.AF_INET6, None: socket.AF_UNSPEC}[version]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(target, None, family=family, type=socket.SOCK_DGRAM)
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    return infos[0][0], str(infos[0][4][0])


async def _send_all(
    sock: socket.socket,
    to: tuple[str, socket.AddressFamily],
    payload: bytes,
    settings: IcmpSettings,
    *,
    echo: _Echo,
    deadline: float,
) -> None:
    """Send count echo requests interval apart (stopping at a send error or the deadline)."""
    address, family = to
    for seq in range(1, settings.count + 1):
        if seq > 1:
            wait = min(settings.interval, deadline - time.monotonic())
            if wait <= 0 or echo.error is not None:
                return
            await asyncio.sleep(wait)
        packet = _HEADER.pack(_ECHO_REQUEST[family], 0, 0, 0, seq) + payload
        echo.sent[seq] = time.monotonic()
        try:
            send = functools.partial(sock.sendto, packet, (address, 0))
            await send_when_writable(sock.fileno(), send)
        except OSError as exc:
            del echo.sent[seq]
            echo.error = exc
            echo.update()
            return
    echo.all_sent = True
    echo.update()


async def _receive(
    sock: socket.socket, family: socket.AddressFamily, token: bytes, echo: _Echo
) -> None:
    """Record the round trip of each reply to this run (own token, known sequence)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.sock_recv(sock, 2048)
        except OSError as exc:  # an ICMP error for our requests (e.g. host unreachable)
            echo.error = exc
            echo.update()
            return
        now = time.monotonic()
        if len(data) < _HEADER.size + _TOKEN_BYTES:
            continue
        kind, _, _, _, seq = _HEADER.unpack_from(data)
        if kind != _ECHO_REPLY[family] or data[_HEADER.size : _HEADER.size + _TOKEN_BYTES] != token:
            continue
        if seq in echo.sent and seq not in echo.rtts:
            echo.rtts[seq] = now - echo.sent[seq]
            echo.update()


def _judge(
    check: Check[IcmpSettings],
    settings: IcmpSettings,
    address: str,
    echo: _Echo,
    samples: list[Sample],
) -> str | None:
    """Record the run's metrics; return why it fails, or None."""
    sent, received = len(echo.sent), len(echo.rtts)
    loss = 1.0 - received / sent if sent else 1.0
    samples += [
        _gauge("icmp_packets_sent", sent, "Echo requests sent in the last run."),
        _gauge("icmp_packets_received", received, "Echo replies received in the last run."),
        _gauge("icmp_loss_ratio", loss, "Share of echo requests without a reply (0 to 1)."),
    ]
    rtts = list(echo.rtts.values())
    avg = sum(rtts) / len(rtts) if rtts else None
    if rtts and avg is not None:
        samples += [
            _gauge("icmp_rtt_min_seconds", min(rtts), "Shortest round trip of the last run."),
            _gauge("icmp_rtt_avg_seconds", avg, "Average round trip of the last run."),
            _gauge("icmp_rtt_max_seconds", max(rtts), "Longest round trip of the last run."),
        ]
    where = address if address == check.target else f"{check.target} ({address})"
    if echo.error is not None and not rtts:
        return f"ping {where}: {os_error_reason(echo.error)}"
    if not rtts:
        return f"no echo reply from {where}: {sent} sent, 100% loss"
    if loss > settings.max_loss_ratio:
        return (
            f"{loss:.0%} loss pinging {where} ({received} of {sent} replies), above"
            f" max_loss_ratio {settings.max_loss_ratio:g}"
        )
    if settings.max_rtt is not None and avg is not None and avg > settings.max_rtt:
        return (
            f"average round trip {avg * 1000:.3g} ms to {where}, above max_rtt"
            f" {settings.max_rtt * 1000:g} ms"
        )
    return None
