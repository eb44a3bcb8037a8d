"""One poll's conversation with an agent over a gufo-snmp socket, and the agent's address.

`Client.exchange` sends a request and awaits its answer with the check's retries, request
timeout and deadline, counting PDUs; `NoAnswer` says how many tries went unanswered (and
whether the host refused). Targets are `host[:port]`, `[v6]:port` or a bare IPv6 address.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
import time
from collections.abc import Callable
from typing import TypeVar

from gufo.snmp import User
from gufo.snmp._fast import (
    SnmpV1ClientSocket,
    SnmpV2cClientSocket,
    SnmpV3ClientSocket,
)

from vigie.probes.nonblocking import send_when_writable, settle
from vigie.probes.snmp.auth import SnmpAuth
from vigie.probes.snmp.failures import SnmpFailure

__all__ = [
    "Client",
    "NoAnswer",
    "Socket",
    "client_socket",
    "format_target",
    "open_v3",
    "parse_target",
    "resolve",
]

T = TypeVar("T")
Socket = SnmpV1ClientSocket | SnmpV2cClientSocket | SnmpV3ClientSocket

_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.%a-zA-Z]+)\]|(?P<host>[^:\[\]\s/]+))"
    r"(?::(?P<port>\d{1,5}))?$"
)


def parse_target(target: str) -> tuple[str, int]:
    """Return (host, port) of `host[:port]`, `[v6addr]:port` or a bare IPv6 address."""
    text = target.strip()
    if text.count(":") > 1 and not text.startswith("["):
        try:
            return str(ipaddress.IPv6Address(text)), 161
        except ValueError:
            raise ValueError(f"write IPv6 targets as [addr]:port, got {target!r}") from None
    match = _HOST_PORT.match(text)
    if match is None:
        raise ValueError(f"target must be host[:port] or [IPv6]:port, got {target!r}")
    port = int(match["port"] or 161)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1 to 65535, got {port}")
    if match["v6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["v6"])), port
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {target!r}") from None
    return match["host"], port


def format_target(host: str, port: int) -> str:
    """Return `host:port`, or `[v6]:port` for an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NoAnswer(Exception):
    """No answer within the request timeout and retries (or the poll's deadline)."""

    def __init__(self, tries: int, refused: bool = False) -> None:
        super().__init__(tries)
        self.tries = tries
        self.refused = refused


class Client:
    """One poll's SNMP conversation over a gufo-snmp socket: retries, deadline, PDU count."""

    def __init__(self, sock: Socket, request_timeout: float, retries: int, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.get_fd()
        self.request_timeout = request_timeout
        self.retries = retries
        self.deadline = deadline
        self.pdus = 0
        self.answered = 0

    async def exchange(self, send: Callable[[], None], recv: Callable[[], T]) -> T:
        """Send a request and await its answer, resending on silence; raise NoAnswer."""
        for attempt in range(self.retries + 1):
            if time.monotonic() >= self.deadline:
                raise NoAnswer(attempt)
            try:
                await self._send(send)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED or "refused" in str(exc).lower():
                    raise NoAnswer(attempt + 1, refused=True) from None
                raise
            self.pdus += 1
            end = min(time.monotonic() + self.request_timeout, self.deadline)
            try:
                result = await self._receive(recv, end)
            except TimeoutError as exc:
                if "refused" in str(exc):
                    raise NoAnswer(attempt + 1, refused=True) from None
                continue
            self.answered += 1
            return result
        raise NoAnswer(self.retries + 1)

    async def _send(self, send: Callable[[], None]) -> None:
        """Send now, or when the socket's buffer has room."""
        await send_when_writable(self.fd, send)

    async def _receive(self, recv: Callable[[], T], end: float) -> T:
        """Read the answer when the socket becomes readable, until `end` (loop time)."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.fd, settle, ready)
            try:
                async with asyncio.timeout(remaining):
                    await ready
            finally:
                loop.remove_reader(self.fd)
            try:
                return recv()
            except BlockingIOError:
                continue  # a stale or foreign datagram was dropped: keep waiting


def client_socket(auth: SnmpAuth, addr: str) -> Socket:
    """Return a non-blocking gufo-snmp socket for the auth's version (v3 before discovery)."""
    if auth.version == 3:
        return SnmpV3ClientSocket(addr, b"", "", 0, b"", 0, b"", 0, 0, 0, 0)
    community = auth.community.get_secret_value() if auth.community is not None else ""
    cls = SnmpV1ClientSocket if auth.version == 1 else SnmpV2cClientSocket
    return cls(addr, community, 0, 0, 0, 0)


async def resolve(host: str, port: int) -> str:
    """Return `ip:port` for gufo-snmp (which takes addresses only), resolving names."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise SnmpFailure("dns", f"DNS: cannot resolve {host!r}: {exc.strerror}") from None
        ip = ipaddress.ip_address(infos[0][4][0])
    return format_target(str(ip), port)


async def open_v3(client: Client, user: User | None) -> None:
    """For v3: discover the engine ID, set the user's keys, sync engine boots and time."""
    sock = client.sock
    if not isinstance(sock, SnmpV3ClientSocket) or user is None:
        return
    await client.exchange(sock.send_refresh, sock.recv_refresh)
    sock.set_keys(
        user.name,
        user.get_auth_alg(),
        user.get_auth_key(),
        user.get_priv_alg(),
        user.get_priv_key(),
    )
    await client.exchange(sock.send_refresh, sock.recv_refresh)
