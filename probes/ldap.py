"""The ldap probe: bind (anonymous or simple), optional LDAPS or StartTLS, one search.

LDAP v3 (RFC 4511) is spoken here in asyncio with the few BER messages a check needs (bind,
StartTLS, search, unbind), rather than through a synchronous library in a thread: the TLS
is the house's (`probes/tls.py`), the deadline is the check's, and every length read from the
server is bounded before anything is allocated.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from vigie.core.hostport import HostPortTarget, split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.core.secrets import ConfigPath, resolve_secret_field
from vigie.probes.base import Check, ProbeContext
from vigie.probes.tcp import close_writer
from vigie.probes.tls import (
    SslContextCache,
    TlsSettings,
    cert_expiry,
    describe_ssl_error,
    os_error_reason,
    peer_cert_der,
)

__all__ = [
    "RESULT_CODES",
    "BerError",
    "LdapProbe",
    "LdapSettings",
    "encode_filter",
    "read_message",
]

# The probe's own deadline, as a share of the check's timeout, so a silent server is reported
# as such rather than as the scheduler's bare timeout.
_OWN_DEADLINE_SHARE = 0.9
_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
_HEX = b"0123456789abcdefABCDEF"
RESULT_CODES = {
    0: "success",
    1: "operationsError",
    2: "protocolError",
    3: "timeLimitExceeded",
    4: "sizeLimitExceeded",
    7: "authMethodNotSupported",
    8: "strongerAuthRequired",
    10: "referral",
    11: "adminLimitExceeded",
    13: "confidentialityRequired",
    32: "noSuchObject",
    34: "invalidDNSyntax",
    48: "inappropriateAuthentication",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    51: "busy",
    52: "unavailable",
    53: "unwillingToPerform",
    80: "other",
}
_SCOPES = {"base": 0, "one": 1, "sub": 2}
# protocolOp tags (RFC 4511 section 4.2 to 4.14)
_BIND_REQUEST = 0x60
_BIND_RESPONSE = 0x61
_UNBIND_REQUEST = 0x42
_SEARCH_REQUEST = 0x63
_SEARCH_ENTRY = 0x64
_SEARCH_DONE = 0x65
_SEARCH_REFERENCE = 0x73
_EXTENDED_REQUEST = 0x77
_EXTENDED_RESPONSE = 0x78


class BerError(Exception):
    """The server's bytes are not the LDAP message expected (the message says what was seen)."""


# --- BER encoding ----------------------------------------------------------------------------


def _length(n: int) -> bytes:
    """Return a BER definite length."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    """Return one BER element."""
    return bytes([tag]) + _length(len(content)) + content


def _int(value: int, tag: int = 0x02) -> bytes:
    """Return a BER INTEGER (or ENUMERATED with tag 0x0a)."""
    return _tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def _octets(value: bytes, tag: int = 0x04) -> bytes:
    """Return a BER OCTET STRING (or a primitive context tag)."""
    return _tlv(tag, value)


def _message(message_id: int, op: bytes) -> bytes:
    """Return an LDAPMessage."""
    return _tlv(0x30, _int(message_id) + op)


# --- RFC 4515 string filters -----------------------------------------------------------------


def _unescape(text: str) -> bytes:
    """Return an assertion value with its \\XX escapes decoded; raise ValueError if bad."""
    out = bytearray()
    raw = text.encode()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C:  # backslash
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in _HEX for c in pair):
                shown = raw[i : i + 3].decode(errors="replace")
                raise ValueError(f"bad escape {shown!r}: \\ must be followed by two hex digits")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _parse_item(text: str) -> bytes:
    """Encode one simple filter item: attr=value, attr=*, substrings, >=, <=, ~=."""
    eq = text.find("=")
    if eq < 0:
        raise ValueError(f"filter item {text!r} has no '='")
    attr, value = text[:eq], text[eq + 1 :]
    tag = {"~": 0xA8, ">": 0xA5, "<": 0xA6}.get(attr[-1:], 0xA3)
    if tag != 0xA3:
        attr = attr[:-1]
    if not attr or not all(c.isalnum() or c in "-.;" for c in attr):
        if ":" in attr:
            raise ValueError("extensible match filters (attr:rule:=value) are not supported")
        raise ValueError(f"bad attribute description {attr!r} in filter")
    if tag != 0xA3 or "*" not in value:
        return _tlv(tag, _octets(attr.encode()) + _octets(_unescape(value)))
    if value == "*":
        return _octets(attr.encode(), 0x87)
    parts = value.split("*")
    subs = b""
    if parts[0]:
        subs += _octets(_unescape(parts[0]), 0x80)
    for middle in parts[1:-1]:
        if middle:
            subs += _octets(_unescape(middle), 0x81)
    if parts[-1]:
        subs += _octets(_unescape(parts[-1]), 0x82)
    return _tlv(0xA4, _octets(attr.encode()) + _tlv(0x30, subs))


def _parse_filter(text: str, pos: int, depth: int) -> tuple[bytes, int]:
    """Encode the parenthesised filter starting at text[pos]; return it and the end position."""
    if depth > 20:
        raise ValueError("filter nested more than 20 levels")
    if pos >= len(text) or text[pos] != "(":
        raise ValueError(f"expected '(' at position {pos}")
    pos += 1
    if pos < len(text) and text[pos] in "&|!":
        op = text[pos]
        pos += 1
        parts: list[bytes] = []
        while pos < len(text) and text[pos] == "(":
            part, pos = _parse_filter(text, pos, depth + 1)
            parts.append(part)
        if pos >= len(text) or text[pos] != ")":
            raise ValueError(f"expected ')' at position {pos}")
        if op == "!":
            if len(parts) != 1:
                raise ValueError("'!' takes exactly one filter")
            return _tlv(0xA2, parts[0]), pos + 1
        if not parts:
            raise ValueError(f"'{op}' needs at least one filter")
        return _tlv(0xA0 if op == "&" else 0xA1, b"".join(parts)), pos + 1
    end = text.find(")", pos)
    if end < 0:
        raise ValueError("unbalanced parentheses")
    item = text[pos:end]
    if "(" in item:
        raise ValueError(f"unexpected '(' in filter item {item!r}")
    return _parse_item(item), end + 1


def encode_filter(text: str) -> bytes:
    """Return the BER encoding of an RFC 4515 filter; raise ValueError saying what is wrong.

    Outer parentheses may be left out ("uid=vigie"); extensible matches are not supported.
    """
    text = text.strip()
    if not text.startswith("("):
        text = f"({text})"
    encoded, end = _parse_filter(text, 0, 0)
    if end != len(text):
        raise ValueError(f"unexpected text after the filter at position {end}")
    return encoded


# --- BER decoding of the server's answers ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Element:
    """One decoded BER element: its tag and content bytes."""

    tag: int
    content: bytes


def _elements(data: bytes) -> list[_Element]:
    """Split data into its consecutive BER elements; raise BerError if one overruns."""
    out: list[_Element] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise BerError("truncated element")
        tag, first = data[pos], data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + count > len(data):
                raise BerError(f"bad length octet 0x{first:02x}")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise BerError(f"element of {length} bytes overruns its container")
        out.append(_Element(tag, data[pos : pos + length]))
        pos += length
    return out


def _decode_int(element: _Element) -> int:
    """Return the value of an INTEGER or ENUMERATED element."""
    if element.tag not in (0x02, 0x0A) or not 1 <= len(element.content) <= 8:
        raise BerError(f"expected an integer, got tag 0x{element.tag:02x}")
    return int.from_bytes(element.content, "big", signed=True)


@dataclass(frozen=True, slots=True)
class LdapMessage:
    """One LDAPMessage from the server: its id, protocolOp tag and the op's elements."""

    message_id: int
    op: int
    parts: list[_Element]


@dataclass(frozen=True, slots=True)
class LdapResult:
    """The LDAPResult of a response: code, matched DN and diagnostic message (sanitised)."""

    code: int
    matched: str
    message: str

    def describe(self) -> str:
        """Return "49 invalidCredentials: <diagnostic>"."""
        name = RESULT_CODES.get(self.code, "unknown")
        detail = f": {self.message}" if self.message else ""
        return f"{self.code} {name}{detail}"


def _result(message: LdapMessage) -> LdapResult:
    """Return the LDAPResult components of a response message."""
    parts = message.parts
    if len(parts) < 3 or parts[1].tag != 0x04 or parts[2].tag != 0x04:
        raise BerError(f"response 0x{message.op:02x} has no valid LDAPResult")
    return LdapResult(
        code=_decode_int(parts[0]),
        matched=sanitise(parts[1].content.decode("utf-8", errors="replace"), 120),
        message=sanitise(parts[2].content.decode("utf-8", errors="replace"), 200),
    )


async def read_message(reader: asyncio.StreamReader, limit: int) -> LdapMessage:
    """Read one LDAPMessage of at most limit bytes; raise BerError or EOFError saying why."""
    try:
        head = await reader.readexactly(2)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("connection closed without an answer") from None
        raise EOFError("connection closed inside a message") from None
    if head[0] != 0x30:
        raise BerError(f"answer is not LDAP: starts with {head!r}")
    if head[1] < 0x80:
        length = head[1]
    else:
        count = head[1] & 0x7F
        if count == 0 or count > 4:
            raise BerError(f"bad message length octet 0x{head[1]:02x}")
        try:
            length = int.from_bytes(await reader.readexactly(count), "big")
        except asyncio.IncompleteReadError:
            raise EOFError("connection closed inside a message") from None
    if length > limit:
        raise BerError(f"a {length}-byte message, more than max_message_bytes {limit}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise EOFError(
            f"connection closed after {len(exc.partial)} of a {length}-byte message"
        ) from None
    parts = _elements(body)
    if len(parts) < 2:
        raise BerError("message without a protocolOp")
    return LdapMessage(_decode_int(parts[0]), parts[1].tag, _elements(parts[1].content))


# --- the probe -------------------------------------------------------------------------------


class LdapSettings(BaseModel):
    """Settings of an ldap check; the target is the server's host[:port] (389 by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bind_dn: str = Field(
        "", description="DN to bind as with a simple bind; empty: an anonymous bind."
    )
    password: SecretStr | None = Field(
        None, description="Password of bind_dn (prefer password_file)."
    )
    password_file: ConfigPath | None = Field(
        None, description="File holding the password of bind_dn, read once at load."
    )
    tls: Literal["none", "starttls", "ldaps"] = Field(
        "none",
        description="none (clear text), starttls (upgrade with the StartTLS extended operation"
        " before binding) or ldaps (TLS from the first byte).",
    )
    tls_config: TlsSettings = Field(
        default_factory=TlsSettings,
        description="Server verification and client certificate, when tls is not none.",
    )
    search_base: str = Field(
        "", description="Base DN of the search; empty with scope base reads the root DSE."
    )
    search_scope: Literal["base", "one", "sub"] = Field("base", description="Search scope.")
    search_filter: str = Field(
        "(objectClass=*)", description="RFC 4515 filter the entries must match."
    )
    min_entries: int = Field(
        1, ge=0, le=1000, description="Fewest entries the search must return (0: any)."
    )
    max_message_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest LDAP message accepted from the server.",
    )

    @field_validator("search_filter")
    @classmethod
    def _valid_filter(cls, value: str) -> str:
        """Reject a filter that cannot be encoded, saying why."""
        encode_filter(value)
        return value

    @model_validator(mode="after")
    def _resolve_password(self) -> Self:
        """Read password_file once; a password needs a bind_dn (else it is not sent)."""
        password = resolve_secret_field(self, "password")
        if password is not None and not self.bind_dn:
            raise ValueError("a password needs bind_dn (an anonymous bind sends none)")
        if self.bind_dn and password is None:
            raise ValueError("bind_dn needs password or password_file")
        return self


def _gauge(name: str, value: float, help: str) -> Sample:
    """Return a gauge sample."""
    return Sample(name=name, value=value, type="gauge", help=help)


@dataclass(slots=True)
class _Run:
    """What a run collected and where it was, to say where a timeout struck."""

    samples: list[Sample] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)
    step: str = "connecting"
    next_id: int = 1

    def message_id(self) -> int:
        """Return a fresh message id."""
        self.next_id += 1
        return self.next_id - 1


class LdapProbe(HostPortTarget):
    """Probe kind "ldap": bind, optionally over TLS, then a search that must find entries."""

    kind: ClassVar[str] = "ldap"
    Settings: ClassVar[type[BaseModel]] = LdapSettings
    default_port: ClassVar[int | None] = 389  # LDAPS (636) is always written out

    def __init__(self) -> None:
        """Start with an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()

    async def __call__(self, check: Check[LdapSettings], ctx: ProbeContext) -> ProbeResult:
        """Connect, (StartTLS,) bind, search, unbind; report per phase."""
        settings = check.settings
        run = _Run()
        deadline = check.timeout * _OWN_DEADLINE_SHARE
        try:
            async with asyncio.timeout(deadline):
                error = await self._run(check, settings, ctx, run)
        except TimeoutError:
            error = f"timeout after {deadline:.3g}s {run.step}"
        if error is not None:
            error = bound_text(error)
            ctx.log("ldap_failed", error=error)
            return ProbeResult(
                success=False, error=error, samples=tuple(run.samples), phases=tuple(run.phases)
            )
        return ProbeResult(success=True, samples=tuple(run.samples), phases=tuple(run.phases))

    async def _run(
        self, check: Check[LdapSettings], settings: LdapSettings, ctx: ProbeContext, run: _Run
    ) -> str | None:
        """Do the exchange; return the failure reason or None."""
        host, port = split_host_port(check.target)
        sslctx: ssl.SSLContext | None = None
        if settings.tls != "none":
            try:
                sslctx = self._ssl_contexts.get(settings.tls_config)
            except ValueError as exc:
                return f"TLS: {exc}"
        server_name = settings.tls_config.server_name or host
        ctx.log("ldap_connect", host=host, port=port, tls=settings.tls)
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except socket.gaierror as exc:
            return f"DNS: cannot resolve {host!r}: {exc.strerror}"
        except OSError as exc:
            return f"connect to {check.target} failed: {os_error_reason(exc)}"
        run.phases.append(("connect", time.monotonic() - start))
        run.samples.append(
            _gauge(
                "probe_tcp_connect_duration_seconds",
                run.phases[-1][1],
                "Seconds to resolve the host and open the TCP connection (TLS excluded).",
            )
        )
        try:
            if sslctx is not None:
                error = await _start_tls(
                    settings, sslctx, server_name, reader=reader, writer=writer, run=run
                )
                if error is not None:
                    return error
            error = await _bind(settings, reader, writer, run)
            if error is None:
                error = await _search(check, settings, reader, writer, run)
            if error is None:
                run.step = "unbinding"
                writer.write(_message(run.message_id(), bytes([_UNBIND_REQUEST, 0])))
            return error
        except ssl.SSLError as exc:
            return describe_ssl_error(exc)
        except (BerError, EOFError) as exc:
            return f"protocol error {run.step}: {exc}"
        except OSError as exc:
            return f"connection error {run.step}: {os_error_reason(exc)}"
        finally:
            await close_writer(writer)


async def _exchange(
    request: bytes,
    expect: int,
    *,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    run: _Run,
    limit: int,
) -> LdapMessage:
    """Send one request and return its response of op tag expect (id checked)."""
    message_id = run.next_id
    writer.write(_message(run.message_id(), request))
    await writer.drain()
    message = await read_message(reader, limit)
    _check_answer(message, message_id, expect)
    return message


def _check_answer(message: LdapMessage, message_id: int, expect: int) -> None:
    """Raise BerError unless message answers message_id with op expect."""
    if message.message_id == 0 and message.op == _EXTENDED_RESPONSE:
        raise BerError(f"the server disconnected us: {_result(message).describe()}")
    if message.message_id != message_id:
        raise BerError(f"answer to message {message.message_id}, expected {message_id}")
    if message.op != expect:
        raise BerError(f"answer 0x{message.op:02x}, expected 0x{expect:02x}")


async def _start_tls(
    settings: LdapSettings,
    sslctx: ssl.SSLContext,
    server_name: str,
    *,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    run: _Run,
) -> str | None:
    """Ask for StartTLS if configured, then do the TLS handshake; return why it failed."""
    start = time.monotonic()
    if settings.tls == "starttls":
        run.step = "waiting for the StartTLS answer"
        answer = await _exchange(
            _tlv(_EXTENDED_REQUEST, _octets(_STARTTLS_OID, 0x80)),
            _EXTENDED_RESPONSE,
            reader=reader,
            writer=writer,
            run=run,
            limit=settings.max_message_bytes,
        )
        result = _result(answer)
        if result.code != 0:
            return f"StartTLS refused: {result.describe()}"
    run.step = "in the TLS handshake"
    try:
        await writer.start_tls(sslctx, server_hostname=server_name)
    except ssl.SSLError as exc:
        return describe_ssl_error(exc)
    except OSError as exc:
        return f"TLS handshake failed: {os_error_reason(exc)}"
    run.phases.append(("tls", time.monotonic() - start))
    der = peer_cert_der(writer.get_extra_info("ssl_object"))
    expiry = cert_expiry(der) if der is not None else None
    if expiry is not None:
        run.samples.append(
            _gauge(
                "probe_tls_cert_expiry_timestamp_seconds",
                expiry,
                "Unix time at which the server's leaf certificate expires (notAfter).",
            )
        )
    return None


async def _bind(
    settings: LdapSettings,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    run: _Run,
) -> str | None:
    """Do the simple (or anonymous) bind; return why it failed."""
    password = settings.password.get_secret_value().encode() if settings.password else b""
    request = _tlv(
        _BIND_REQUEST, _int(3) + _octets(settings.bind_dn.encode()) + _octets(password, 0x80)
    )
    run.step = "waiting for the bind answer"
    start = time.monotonic()
    answer = await _exchange(
        request,
        _BIND_RESPONSE,
        reader=reader,
        writer=writer,
        run=run,
        limit=settings.max_message_bytes,
    )
    run.phases.append(("bind", time.monotonic() - start))
    run.samples.append(
        _gauge("ldap_bind_seconds", run.phases[-1][1], "Seconds from bind request to answer.")
    )
    result = _result(answer)
    if result.code != 0:
        who = f"as {sanitise(settings.bind_dn, 120)!r}" if settings.bind_dn else "anonymously"
        return f"bind {who} failed: {result.describe()}"
    return None


async def _search(
    check: Check[LdapSettings],
    settings: LdapSettings,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    run: _Run,
) -> str | None:
    """Run the search, counting entries up to its done message; return why it failed."""
    size_limit = max(settings.min_entries, 1)
    request = _tlv(
        _SEARCH_REQUEST,
        _octets(settings.search_base.encode())
        + _int(_SCOPES[settings.search_scope], 0x0A)
        + _int(0, 0x0A)  # derefAliases: never
        + _int(size_limit)
        + _int(max(1, math.ceil(check.timeout)))
        + _tlv(0x01, b"\x00")  # typesOnly: false
        + encode_filter(settings.search_filter)
        + _tlv(0x30, _octets(b"1.1")),  # no attributes: the DNs are enough
    )
    run.step = "waiting for the search answer"
    start = time.monotonic()
    message_id = run.next_id
    writer.write(_message(run.message_id(), request))
    await writer.drain()
    entries = 0
    while True:
        message = await read_message(reader, settings.max_message_bytes)
        if message.op in (_SEARCH_ENTRY, _SEARCH_REFERENCE):
            _check_answer(message, message_id, message.op)
            entries += message.op == _SEARCH_ENTRY
            continue
        _check_answer(message, message_id, _SEARCH_DONE)
        break
    run.phases.append(("search", time.monotonic() - start))
    run.samples += [
        _gauge("ldap_search_seconds", run.phases[-1][1], "Seconds from search request to done."),
        _gauge("ldap_search_entries", entries, "Entries the search returned (up to its limit)."),
    ]
    result = _result(message)
    where = f"{settings.search_filter} under {settings.search_base or 'the root DSE'!r}"
    if result.code not in (0, 4):  # sizeLimitExceeded: more entries than asked, fine
        return f"search {where} failed: {result.describe()}"
    if entries < settings.min_entries:
        return (
            f"search {where} returned {entries} entries, expected at least {settings.min_entries}"
        )
    return None
