"""The hl7 probe: send an HL7 v2 message over MLLP (optionally TLS) and check the framed ACK.

Interface engines (Mirth Connect, Rhapsody...) keep the connection open after their ACK, so
the ACK is read up to the MLLP end block (0x1c 0x0d), never up to a close.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import uuid
from datetime import datetime
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vigie.core.hostport import HostPortTarget, split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.probes.base import Check, ProbeContext
from vigie.probes.tcp import (
    close_writer,
)
from vigie.probes.tls import (
    SslContextCache,
    TlsSettings,
    cert_expiry,
    describe_ssl_error,
    os_error_reason,
    peer_cert_der,
)

__all__ = ["ACK_CODES", "ByteSource", "Hl7Probe", "Hl7Settings", "MllpError", "read_frame"]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
AckCode = Literal["AA", "AE", "AR", "CA", "CE", "CR"]
ACK_CODES: tuple[AckCode, ...] = ("AA", "AE", "AR", "CA", "CE", "CR")
_ACK_WORDS = {
    "AA": "application accept",
    "AE": "application error",
    "AR": "application reject",
    "CA": "commit accept",
    "CE": "commit error",
    "CR": "commit reject",
}
_CHUNK = 4096
# The probe's own deadline, as a share of the check's timeout, so a silent peer is reported
# as such ("no ACK within ...") rather than as the scheduler's bare timeout.
_OWN_DEADLINE_SHARE = 0.9
_SHOWN_BYTES = 32


class MllpError(Exception):
    """The peer's answer is not a well-formed MLLP frame (the message says what was seen)."""


def _shown(data: bytes) -> str:
    """Return the first bytes of untrusted data as a short printable repr."""
    head = repr(data[:_SHOWN_BYTES])
    return head + ("..." if len(data) > _SHOWN_BYTES else "")


class ByteSource(Protocol):
    """What read_frame reads from: an asyncio.StreamReader, or anything with its read()."""

    async def read(self, n: int = -1) -> bytes:
        """Return up to n bytes, b"" at the end."""
        ...


async def read_frame(reader: ByteSource, limit: int) -> bytes:
    """Read one MLLP frame and return its payload; raise MllpError or EOFError saying why.

    Leading CR/LF between frames is tolerated; any other byte before the start block, a 0x1c
    not followed by CR, or more than limit bytes without an end block is a protocol error.
    """
    buf = b""
    started = False
    while True:
        if not started:
            stripped = buf.lstrip(b"\r\n")
            if stripped:
                if stripped[:1] != START_BLOCK:
                    raise MllpError(f"expected the MLLP start block 0x0b, got {_shown(stripped)}")
                buf, started = stripped[1:], True
            else:
                buf = b""
        if started:
            end = buf.find(b"\x1c")
            if end >= 0 and end + 1 < len(buf):
                if buf[end + 1 : end + 2] != b"\x0d":
                    raise MllpError(
                        f"MLLP end block 0x1c followed by {buf[end + 1 : end + 2]!r}, not CR"
                    )
                return buf[:end]
        if len(buf) > limit:
            raise MllpError(f"no MLLP end block within {limit} bytes")
        chunk = await reader.read(_CHUNK)
        if not chunk:
            if not started and not buf:
                raise EOFError("connection closed without an answer")
            raise EOFError(f"connection closed after {len(buf)} bytes, before the MLLP end block")
        buf += chunk


def _control_id() -> str:
    """Return a fresh message control id (MSH-10 is at most 20 characters)."""
    return "VIGIE" + uuid.uuid4().hex[:15].upper()


def _hl7_now() -> str:
    """Return the local time as an HL7 TS with its UTC offset."""
    return datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")


class Hl7Settings(BaseModel):
    """Settings of an hl7 check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str | None = Field(
        None,
        description="The HL7 v2 message to send, segments separated by newlines or CR; MSH-10"
        " (control id) is replaced by a fresh one on every run, an empty MSH-7 by the current"
        " time. Default: a QRY^A19 patient query built from the fields below (read-only).",
    )
    sending_application: str = Field("VIGIE", description="MSH-3 of the default message.")
    sending_facility: str = Field("VIGIE", description="MSH-4 of the default message.")
    receiving_application: str = Field("", description="MSH-5 of the default message.")
    receiving_facility: str = Field("", description="MSH-6 of the default message.")
    processing_id: Literal["P", "T", "D"] = Field(
        "P", description="MSH-11 of the default message: production, training or debugging."
    )
    version: str = Field("2.3", description="MSH-12 of the default message.")
    accept: list[AckCode] = Field(
        default_factory=lambda: list[AckCode](["AA", "CA"]),
        min_length=1,
        description="MSA-1 acknowledgment codes counted as success.",
    )
    tls: bool = Field(False, description="Do a TLS handshake once connected.")
    tls_config: TlsSettings = Field(
        default_factory=TlsSettings,
        description="Server verification and client certificate, when tls is true.",
    )
    max_ack_bytes: int = Field(
        64 * 1024,
        ge=64,
        le=16 * 1024 * 1024,
        description="Read at most this many bytes while waiting for the ACK's end block.",
    )

    @field_validator(
        "sending_application",
        "sending_facility",
        "receiving_application",
        "receiving_facility",
        "version",
    )
    @classmethod
    def _plain_field(cls, value: str) -> str:
        """Reject HL7 delimiters and control characters in a field of the default message."""
        bad = set(value) & set("|^~\\&\r\n\x0b\x1c")
        if bad:
            raise ValueError(f"must not contain HL7 delimiters or CR/LF, found {sorted(bad)}")
        return value

    @field_validator("message")
    @classmethod
    def _valid_message(cls, value: str | None) -> str | None:
        """Require a message that starts with an MSH segment holding at least MSH-12."""
        if value is None:
            return None
        segments = _segments(value)
        if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
            raise ValueError("must start with an MSH segment (MSH|^~\\&|...)")
        fields = segments[0].split(segments[0][3])
        if len(fields) < 12:
            raise ValueError(f"MSH has {len(fields)} fields, needs at least 12 (up to MSH-12)")
        if "\x0b" in value or "\x1c" in value:
            raise ValueError("must not contain the MLLP block characters 0x0b or 0x1c")
        return value

    def build(self, control_id: str) -> bytes:
        """Return the message to send with this control id, segments ended by CR."""
        now = _hl7_now()
        if self.message is None:
            segments = [
                "|".join(
                    [
                        "MSH",
                        "^~\\&",
                        self.sending_application,
                        self.sending_facility,
                        self.receiving_application,
                        self.receiving_facility,
                        now,
                        "",
                        "QRY^A19",
                        control_id,
                        self.processing_id,
                        self.version,
                    ]
                ),
                f"QRD|{now}|R|I|{control_id}|||1^RD|VIGIE-PROBE|DEM",
            ]
        else:
            segments = _segments(self.message)
            sep = segments[0][3]
            fields = segments[0].split(sep)
            fields[9] = control_id
            if not fields[6]:
                fields[6] = now
            segments[0] = sep.join(fields)
        return ("\r".join(segments) + "\r").encode()


def _segments(text: str) -> list[str]:
    """Split HL7 text into non-empty segments (CR, LF or CR LF separated)."""
    return [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]


def parse_ack(payload: bytes) -> tuple[str, str, str]:
    """Return (MSA-1, MSA-2, MSA-3) of an ACK payload; raise MllpError saying what is wrong."""
    text = payload.decode("utf-8", errors="replace")
    segments = _segments(text)
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        first = segments[0] if segments else ""
        raise MllpError(f"answer is not HL7: starts with {sanitise(first, 40)!r}")
    sep = segments[0][3]
    for segment in segments[1:]:
        fields = segment.split(sep)
        if fields[0] == "MSA":
            fields += [""] * (4 - len(fields))
            return fields[1], fields[2], fields[3]
    raise MllpError("answer has no MSA segment")


def _gauge(name: str, value: float, help: str, labels: tuple[tuple[str, str], ...] = ()) -> Sample:
    """Return a gauge sample."""
    return Sample(name=name, value=value, labels=labels, type="gauge", help=help)


def _ack_samples(code: str | None) -> list[Sample]:
    """Return the hl7_ack state set: 1 for the code received, 0 for the others."""
    return [
        _gauge(
            "hl7_ack",
            1.0 if c == code else 0.0,
            "1 for the MSA-1 acknowledgment code of the last answer, 0 for the others.",
            (("code", c),),
        )
        for c in ACK_CODES
    ]


class Hl7Probe(HostPortTarget):
    """Probe kind "hl7": send one message over MLLP and check the ACK's code and control id."""

    kind: ClassVar[str] = "hl7"
    Settings: ClassVar[type[BaseModel]] = Hl7Settings

    def __init__(self) -> None:
        """Start with an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()

    async def __call__(self, check: Check[Hl7Settings], ctx: ProbeContext) -> ProbeResult:
        """Connect, send the message, read the framed ACK and report."""
        settings = check.settings
        samples: list[Sample] = []
        phases: list[tuple[str, float]] = []
        try:
            async with asyncio.timeout(check.timeout * _OWN_DEADLINE_SHARE):
                error, code = await self._run(check, settings, ctx, samples, phases)
        except TimeoutError:
            names = [name for name, _ in phases]
            if not names:
                where = "connecting"
            elif settings.tls and names == ["connect"]:
                where = "in the TLS handshake"
            else:
                where = "waiting for the ACK (connection open, no complete MLLP frame received)"
            error = f"timeout after {check.timeout * _OWN_DEADLINE_SHARE:.3g}s {where}"
            code = None
        samples.extend(_ack_samples(code))
        if error is not None:
            error = bound_text(error)
            ctx.log("hl7_failed", error=error)
            return ProbeResult(
                success=False, error=error, samples=tuple(samples), phases=tuple(phases)
            )
        return ProbeResult(success=True, samples=tuple(samples), phases=tuple(phases))

    async def _run(
        self,
        check: Check,
        settings: Hl7Settings,
        ctx: ProbeContext,
        samples: list[Sample],
        phases: list[tuple[str, float]],
    ) -> tuple[str | None, str | None]:
        """Do the exchange; return (failure reason or None, MSA-1 code or None)."""
        host, port = split_host_port(check.target)
        sslctx: ssl.SSLContext | None = None
        if settings.tls:
            try:
                sslctx = self._ssl_contexts.get(settings.tls_config)
            except ValueError as exc:
                return f"TLS: {exc}", None
        ctx.log("hl7_connect", host=host, port=port, tls=settings.tls)
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except socket.gaierror as exc:
            return f"DNS: cannot resolve {host!r}: {exc.strerror}", None
        except OSError as exc:
            return f"connect to {check.target} failed: {os_error_reason(exc)}", None
        phases.append(("connect", time.monotonic() - start))
        samples.append(
            _gauge(
                "probe_tcp_connect_duration_seconds",
                phases[-1][1],
                "Seconds to resolve the host and open the TCP connection (TLS excluded).",
            )
        )
        try:
            if sslctx is not None:
                tls_start = time.monotonic()
                try:
                    await writer.start_tls(
                        sslctx, server_hostname=settings.tls_config.server_name or host
                    )
                except ssl.SSLError as exc:
                    return describe_ssl_error(exc), None
                except OSError as exc:
                    return f"TLS handshake failed: {os_error_reason(exc)}", None
                phases.append(("tls", time.monotonic() - tls_start))
                der = peer_cert_der(writer.get_extra_info("ssl_object"))
                expiry = cert_expiry(der) if der is not None else None
                if expiry is not None:
                    samples.append(
                        _gauge(
                            "probe_tls_cert_expiry_timestamp_seconds",
                            expiry,
                            "Unix time at which the server's leaf certificate expires (notAfter).",
                        )
                    )
            return await self._exchange(
                settings, reader=reader, writer=writer, ctx=ctx, samples=samples, phases=phases
            )
        finally:
            await close_writer(writer)

    @staticmethod
    async def _exchange(
        settings: Hl7Settings,
        *,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ctx: ProbeContext,
        samples: list[Sample],
        phases: list[tuple[str, float]],
    ) -> tuple[str | None, str | None]:
        """Send the framed message, read the framed answer, check MSA-1 and MSA-2."""
        control_id = _control_id()
        message = settings.build(control_id)
        sent_at = time.monotonic()
        try:
            writer.write(START_BLOCK + message + END_BLOCK)
            await writer.drain()
            ctx.log("hl7_sent", bytes=len(message), control_id=control_id)
            payload = await read_frame(reader, settings.max_ack_bytes)
        except ssl.SSLError as exc:
            return describe_ssl_error(exc), None
        except OSError as exc:
            return f"connection error: {os_error_reason(exc)}", None
        except (MllpError, EOFError) as exc:
            return f"protocol error: {exc}", None
        roundtrip = time.monotonic() - sent_at
        phases.append(("roundtrip", roundtrip))
        samples.append(
            _gauge(
                "hl7_roundtrip_seconds",
                roundtrip,
                "Seconds from sending the message to receiving the whole framed ACK.",
            )
        )
        try:
            code, acked_id, text = parse_ack(payload)
        except MllpError as exc:
            return f"protocol error: {exc}", None
        ctx.log("hl7_ack", code=sanitise(code, 8), control_id=sanitise(acked_id, 40))
        if code not in ACK_CODES:
            return f"protocol error: MSA-1 {sanitise(code, 20)!r} is not an HL7 ACK code", None
        if acked_id != control_id:
            return (
                f"ACK {code} is for control id {sanitise(acked_id, 40)!r}, sent {control_id!r}",
                code,
            )
        if code not in settings.accept:
            detail = f": {sanitise(text, 200)}" if text else ""
            return f"NACK {code} ({_ACK_WORDS[code]}){detail}", code
        return None, code
