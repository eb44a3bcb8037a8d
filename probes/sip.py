"""The sip probe: an OPTIONS ping over UDP or TCP (RFC 3261), final status code and latency.

The request is written here (Via with a z9hG4bK branch, From tag, Call-ID, CSeq,
Max-Forwards, Content-Length); the answer is parsed with bounds, since it comes from the target:
one datagram, or over TCP a header block of at most `max_response_bytes`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vigie.core.hostport import HostPortTarget, format_host_port, split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.probes.base import Check, ProbeContext
from vigie.probes.tcp import close_writer
from vigie.probes.tls import os_error_reason

__all__ = ["SipError", "SipProbe", "SipResponse", "SipSettings", "parse_response"]

# The probe's own deadline, as a share of the check's timeout, so a silent server is reported
# as such rather than as the scheduler's bare timeout.
_OWN_DEADLINE_SHARE = 0.9
_T1 = 0.5  # RFC 3261 timer T1: first UDP retransmission, doubled each time
_T2 = 4.0  # RFC 3261 timer T2: the retransmission interval's cap for non-INVITE requests
_CHUNK = 4096
_SHOWN_BYTES = 40
_MAX_HEADERS = 100
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2})(?: (.*))?$")
_COMPACT = {"i": "call-id", "v": "via", "l": "content-length", "f": "from", "t": "to"}
_BRANCH = re.compile(r";\s*branch=([^;,\s]+)", re.IGNORECASE)


class SipError(Exception):
    """The peer's answer is not a well-formed SIP response (the message says what was seen)."""


@dataclass(frozen=True, slots=True)
class SipResponse:
    """The parts of a SIP response the probe checks."""

    code: int
    reason: str
    call_id: str
    cseq: str
    branch: str
    server: str
    content_length: int


def _shown(data: bytes) -> str:
    """Return the first bytes of untrusted data as a short printable text."""
    text = sanitise(data[:_SHOWN_BYTES].decode("latin-1"), _SHOWN_BYTES)
    return repr(text) + ("..." if len(data) > _SHOWN_BYTES else "")


def parse_response(head: bytes) -> SipResponse:
    """Parse a response's status line and headers (up to the blank line); raise SipError."""
    text = head.decode("utf-8", errors="replace")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    match = _STATUS_LINE.match(lines[0])
    if match is None:
        raise SipError(f"answer is not a SIP response: starts with {_shown(head)}")
    headers: dict[str, str] = {}
    count = 0
    for line in lines[1:]:
        if not line:
            break
        count += 1
        if count > _MAX_HEADERS:
            raise SipError(f"more than {_MAX_HEADERS} header lines")
        name, sep, value = line.partition(":")
        if not sep:
            if line[:1] in " \t":  # folded continuation line: irrelevant to what is checked
                continue
            raise SipError(f"header line without a colon: {sanitise(line, 60)!r}")
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        headers.setdefault(key, value.strip())  # the first Via is the one that matters
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or len(length_text) > 9:
        raise SipError(f"bad Content-Length {sanitise(length_text, 20)!r}")
    branch = _BRANCH.search(headers.get("via", ""))
    return SipResponse(
        code=int(match.group(1)),
        reason=sanitise(match.group(2) or "", 80),
        call_id=headers.get("call-id", ""),
        cseq=" ".join(headers.get("cseq", "").split()),
        branch=branch.group(1) if branch else "",
        server=sanitise(headers.get("server", ""), 80),
        content_length=int(length_text),
    )


class SipSettings(BaseModel):
    """Settings of a sip check; the target is the server's host:port (port 5060 by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["udp", "tcp"] = Field(
        "udp", description="udp (retransmitted per RFC 3261 timers) or tcp."
    )
    request_uri: str | None = Field(
        None,
        description="Request-URI and To of the OPTIONS request; default sip:<host>:<port> of"
        " the target.",
    )
    from_user: str = Field("vigie", description="User part of the From URI.")
    expect_codes: list[int] = Field(
        default_factory=lambda: [200],
        min_length=1,
        description="Final status codes counted as success (e.g. add 404 or 403 for a server"
        " that does not answer OPTIONS to unknown users but is up).",
    )
    max_response_bytes: int = Field(
        16 * 1024,
        ge=512,
        le=1024 * 1024,
        description="Read at most this many bytes of a response's status line and headers.",
    )

    @field_validator("expect_codes")
    @classmethod
    def _final_codes(cls, value: list[int]) -> list[int]:
        """Accept final status codes only (200 to 699): 1xx answers are never final."""
        bad = [c for c in value if not 200 <= c <= 699]
        if bad:
            raise ValueError(f"must be final SIP status codes (200-699), got {bad}")
        return value

    @field_validator("request_uri")
    @classmethod
    def _valid_uri(cls, value: str | None) -> str | None:
        """Require a sip: or sips: URI without spaces or control characters."""
        if value is None:
            return None
        if not re.match(r"^sips?:[^\s\x00-\x1f\x7f<>\"]{1,200}$", value):
            raise ValueError("must be a sip: or sips: URI without spaces, e.g. sip:pbx.chu.local")
        return value

    @field_validator("from_user")
    @classmethod
    def _valid_user(cls, value: str) -> str:
        """Require a plain user part (letters, digits, - . _)."""
        if not re.match(r"^[A-Za-z0-9._-]{1,64}$", value):
            raise ValueError("must be 1 to 64 letters, digits, '-', '.' or '_'")
        return value


def _gauge(name: str, value: float, help: str) -> Sample:
    """Return a gauge sample."""
    return Sample(name=name, value=value, type="gauge", help=help)


@dataclass(frozen=True, slots=True)
class _Request:
    """One OPTIONS request and the identifiers its answer must carry."""

    data: bytes
    call_id: str
    branch: str


def _build_request(
    settings: SipSettings, target: str, transport: str, local: tuple[str, int]
) -> _Request:
    """Return an OPTIONS request from local (host, port) to target with fresh identifiers."""
    uri = settings.request_uri or f"sip:{target}"
    branch = "z9hG4bK" + secrets.token_hex(10)
    call_id = f"{secrets.token_hex(12)}@vigie"
    tag = secrets.token_hex(6)
    sent_by = format_host_port(*local)
    from_host = f"[{local[0]}]" if ":" in local[0] else local[0]
    lines = [
        f"OPTIONS {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {sent_by};branch={branch};rport",
        "Max-Forwards: 70",
        f"To: <{uri}>",
        f"From: <sip:{settings.from_user}@{from_host}>;tag={tag}",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        "User-Agent: Vigie",
        "Content-Length: 0",
    ]
    return _Request(("\r\n".join(lines) + "\r\n\r\n").encode(), call_id, branch)


def _ours(response: SipResponse, request: _Request) -> bool:
    """Return whether a response answers request (same Call-ID, CSeq and Via branch)."""
    return (
        response.call_id == request.call_id
        and response.cseq == "1 OPTIONS"
        and response.branch == request.branch
    )


class _Datagrams(asyncio.DatagramProtocol):
    """Collects the datagrams and the ICMP error of a connected UDP socket."""

    def __init__(self) -> None:
        """Start with an empty queue."""
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        """Queue one datagram."""
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        """Queue the error (e.g. port unreachable, seen as ECONNREFUSED)."""
        if isinstance(exc, OSError):
            self.queue.put_nowait(exc)


class SipProbe(HostPortTarget):
    """Probe kind "sip": an OPTIONS request whose final status code must be expected."""

    kind: ClassVar[str] = "sip"
    Settings: ClassVar[type[BaseModel]] = SipSettings
    default_port: ClassVar[int | None] = 5060

    async def __call__(self, check: Check[SipSettings], ctx: ProbeContext) -> ProbeResult:
        """Send OPTIONS, wait for the final answer, check its status code."""
        settings = check.settings
        state = _Progress()
        deadline = check.timeout * _OWN_DEADLINE_SHARE
        try:
            async with asyncio.timeout(deadline):
                if settings.transport == "udp":
                    error = await self._udp(check, settings, ctx, state)
                else:
                    error = await self._tcp(check, settings, ctx, state)
        except TimeoutError:
            error = f"timeout after {deadline:.3g}s: {state.timeout_detail(check.target)}"
        if settings.transport == "udp":
            state.samples.append(
                _gauge(
                    "sip_udp_retransmissions",
                    state.retransmissions,
                    "Times the request was sent again over UDP before its final answer.",
                )
            )
        if error is not None:
            error = bound_text(error)
            ctx.log("sip_failed", error=error)
            return ProbeResult(
                success=False,
                error=error,
                samples=tuple(state.samples),
                phases=tuple(state.phases),
            )
        return ProbeResult(success=True, samples=tuple(state.samples), phases=tuple(state.phases))

    @staticmethod
    def _judge(
        settings: SipSettings,
        response: SipResponse,
        elapsed: float,
        ctx: ProbeContext,
        state: _Progress,
    ) -> str | None:
        """Record the final answer's metrics; return why it fails, or None."""
        samples, phases = state.samples, state.phases
        phases.append(("response", elapsed))
        samples.append(
            _gauge(
                "sip_response_seconds",
                elapsed,
                "Seconds from sending OPTIONS to its final answer (retransmissions included).",
            )
        )
        samples.append(_gauge("sip_status_code", response.code, "Status code of the final answer."))
        ctx.log("sip_answer", code=response.code, reason=response.reason, server=response.server)
        if response.code not in settings.expect_codes:
            reason = f" {response.reason}" if response.reason else ""
            wanted = " or ".join(str(c) for c in settings.expect_codes)
            return f"status {response.code}{reason}, expected {wanted}"
        return None

    async def _udp(
        self,
        check: Check[SipSettings],
        settings: SipSettings,
        ctx: ProbeContext,
        state: _Progress,
    ) -> str | None:
        """Send over UDP, retransmitting on T1 doubling up to T2, until a final answer."""
        host, port = split_host_port(check.target)
        loop = asyncio.get_running_loop()
        state.transport = "UDP"
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            return f"DNS: cannot resolve {host!r}: {exc.strerror}"
        family, _, _, _, address = infos[0]
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                _Datagrams, remote_addr=(str(address[0]), int(address[1])), family=family
            )
        except OSError as exc:
            return f"cannot send to {check.target} (UDP): {os_error_reason(exc)}"
        try:
            local = transport.get_extra_info("sockname")
            request = _build_request(settings, check.target, "udp", (local[0], local[1]))
            start = time.monotonic()
            interval = _T1
            transport.sendto(request.data)
            ctx.log("sip_sent", transport="udp", call_id=request.call_id)
            state.sent = True
            while True:
                try:
                    async with asyncio.timeout(interval):
                        item = await protocol.queue.get()
                except TimeoutError:
                    transport.sendto(request.data)
                    state.retransmissions += 1
                    interval = min(interval * 2, _T2)
                    continue
                if isinstance(item, OSError):
                    return f"no SIP server on {check.target} (UDP): {os_error_reason(item)}"
                if len(item) > settings.max_response_bytes:
                    return (
                        f"protocol error: a {len(item)}-byte datagram, more than"
                        f" max_response_bytes {settings.max_response_bytes}"
                    )
                try:
                    response = parse_response(item)
                except SipError as exc:
                    return f"protocol error: {exc}"
                if not _ours(response, request):
                    state.stray += 1
                    ctx.log("sip_stray_answer", call_id=sanitise(response.call_id, 60))
                    continue
                if response.code < 200:
                    state.provisional = response.code
                    continue  # provisional: retransmissions go on (RFC 3261 17.1.2.2)
                return self._judge(settings, response, time.monotonic() - start, ctx, state)
        finally:
            transport.close()

    async def _tcp(
        self,
        check: Check[SipSettings],
        settings: SipSettings,
        ctx: ProbeContext,
        state: _Progress,
    ) -> str | None:
        """Connect, send over TCP, read responses (bounded) until a final one."""
        samples, phases = state.samples, state.phases
        host, port = split_host_port(check.target)
        state.transport = "TCP"
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except socket.gaierror as exc:
            return f"DNS: cannot resolve {host!r}: {exc.strerror}"
        except OSError as exc:
            return f"connect to {check.target} failed: {os_error_reason(exc)}"
        phases.append(("connect", time.monotonic() - start))
        samples.append(
            _gauge(
                "probe_tcp_connect_duration_seconds",
                phases[-1][1],
                "Seconds to resolve the host and open the TCP connection.",
            )
        )
        state.connected = True
        try:
            local = writer.get_extra_info("sockname")
            request = _build_request(settings, check.target, "tcp", (local[0], local[1]))
            sent_at = time.monotonic()
            writer.write(request.data)
            await writer.drain()
            state.sent = True
            ctx.log("sip_sent", transport="tcp", call_id=request.call_id)
            buf = b""
            while True:
                head, buf = await _read_head(reader, buf, settings.max_response_bytes)
                response = parse_response(head)
                if not _ours(response, request):
                    return (
                        f"protocol error: answer {response.code} is for Call-ID"
                        f" {sanitise(response.call_id, 60)!r}, sent {request.call_id!r}"
                    )
                if response.code < 200:
                    state.provisional = response.code
                    buf = await _skip_body(
                        reader, buf, response.content_length, settings.max_response_bytes
                    )
                    continue
                return self._judge(settings, response, time.monotonic() - sent_at, ctx, state)
        except SipError as exc:
            return f"protocol error: {exc}"
        except EOFError as exc:
            return f"protocol error: {exc}"
        except OSError as exc:
            return f"connection error: {os_error_reason(exc)}"
        finally:
            await close_writer(writer)


@dataclass(slots=True)
class _Progress:
    """What a run collected and how far it got, to say where a timeout struck."""

    samples: list[Sample] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)
    transport: str = ""
    connected: bool = False
    sent: bool = False
    retransmissions: int = 0
    stray: int = 0
    provisional: int | None = None

    def timeout_detail(self, target: str) -> str:
        """Return what the probe was waiting for when the deadline struck."""
        if self.transport == "TCP" and not self.connected:
            return f"connecting to {target}"
        if not self.sent:
            return f"sending to {target}"
        parts = [f"no final answer from {target} ({self.transport}"]
        if self.retransmissions:
            parts.append(f", {self.retransmissions} retransmissions")
        if self.provisional is not None:
            parts.append(f", last provisional {self.provisional}")
        if self.stray:
            parts.append(f", {self.stray} answers to other requests ignored")
        return "".join(parts) + ")"


async def _read_head(reader: asyncio.StreamReader, buf: bytes, limit: int) -> tuple[bytes, bytes]:
    """Return (one response's head up to the blank line, what follows); bounded by limit."""
    while True:
        stripped = buf.lstrip(b"\r\n")  # RFC 5626 keep-alive CRLFs between messages
        end = stripped.find(b"\r\n\r\n")
        if end >= 0:
            return stripped[: end + 2], stripped[end + 4 :]
        if len(stripped) > limit:
            raise SipError(f"no end of headers within {limit} bytes")
        chunk = await reader.read(_CHUNK)
        if not chunk:
            if not stripped:
                raise EOFError("connection closed without an answer")
            raise EOFError(
                f"connection closed after {len(stripped)} bytes, before the end of headers:"
                f" {_shown(stripped)}"
            )
        buf = stripped + chunk


async def _skip_body(reader: asyncio.StreamReader, buf: bytes, length: int, limit: int) -> bytes:
    """Drop a body of length bytes (at most limit); return what follows it."""
    if length > limit:
        raise SipError(f"a {length}-byte body, more than max_response_bytes {limit}")
    remaining = length - len(buf)
    if remaining <= 0:
        return buf[length:]
    while remaining > 0:
        chunk = await reader.read(min(_CHUNK, remaining))
        if not chunk:
            raise EOFError(f"connection closed inside a {length}-byte body")
        remaining -= len(chunk)
    return b""
