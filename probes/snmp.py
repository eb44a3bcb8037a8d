"""The snmp probe: GET scalars and GETBULK-walk tables with gufo-snmp, then apply device profiles.

Credentials (`snmp.auths`) are kept apart from what to collect (`snmp` profiles, YAML files
under config/profiles/ and the config's `snmp.profile_dirs`), as in snmp_exporter. A check
names one auth and a list of profiles; `bind` resolves them when the plan is built.

gufo-snmp hides USM reports behind one SnmpAuthError and drops error-status, so on a failure
the probe asks the agent once more with a small hand-built message (`_usm_check`) to say *why*:
unknown user, wrong digest, decryption error, not in time window, or an agent that answers
SNMP but not this community.

A v3 auth with a `context_name` polls through pysnmp instead (probes/snmp_context.py: gufo-snmp
0.13 cannot send a context); both paths share the plan, walk grouping and walk_cap (WalkRows).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

import structlog
from gufo.snmp import (
    Aes128Key,
    Aes192Key,
    Aes256Key,
    BaseAuthKey,
    BasePrivKey,
    DesKey,
    KeyExpansion,
    Md5Key,
    NoSuchInstance,
    Sha1Key,
    Sha224Key,
    Sha256Key,
    Sha384Key,
    Sha512Key,
    SnmpAuthError,
    SnmpDecodeError,
    SnmpEncodeError,
    SnmpError,
    User,
)
from gufo.snmp._fast import (
    GetIter,
    SnmpV1ClientSocket,
    SnmpV2cClientSocket,
    SnmpV3ClientSocket,
)
from gufo.snmp.user import KeyType
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from vigie.core.durations import Duration
from vigie.core.expr import parse_condition
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.rules import Rule, Severity
from vigie.core.secrets import ConfigPath, resolve_secret
from vigie.core.yamlpos import ConfigErrors
from vigie.probes.base import Check, ProbeContext
from vigie.probes.derive import DeriveState, labels_of
from vigie.probes.snmp_profiles import (
    SHIPPED_PROFILE_DIR,
    Collected,
    PollPlan,
    Profile,
    Value,
    evaluate,
    family_names,
    load_profile_dirs,
    poll_plan,
)

if TYPE_CHECKING:
    from vigie.probes.snmp_context import ContextPoller

__all__ = [
    "BUILTIN_AUTHS",
    "SnmpAuth",
    "SnmpCheckSettings",
    "SnmpProbe",
    "SnmpSection",
    "SnmpSettings",
    "parse_target",
    "run_profile_probe",
]

T = TypeVar("T")
Socket = SnmpV1ClientSocket | SnmpV2cClientSocket | SnmpV3ClientSocket

# --------------------------------------------------------------------------- settings

AuthProtocol = Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
PrivProtocol = Literal["DES", "AES", "AES192", "AES256", "AES192C", "AES256C"]
SecurityLevel = Literal["noAuthNoPriv", "authNoPriv", "authPriv"]

# Same names as snmp_exporter; the C variants are the Cisco/Reeder AES-192/256 key extension.
AUTH_KEYS: dict[str, type[BaseAuthKey]] = {
    "MD5": Md5Key,
    "SHA": Sha1Key,
    "SHA224": Sha224Key,
    "SHA256": Sha256Key,
    "SHA384": Sha384Key,
    "SHA512": Sha512Key,
}
PRIV_KEYS: dict[str, tuple[type[BasePrivKey], KeyExpansion]] = {
    "DES": (DesKey, KeyExpansion.Blumenthal),
    "AES": (Aes128Key, KeyExpansion.Blumenthal),
    "AES192": (Aes192Key, KeyExpansion.Blumenthal),
    "AES256": (Aes256Key, KeyExpansion.Blumenthal),
    "AES192C": (Aes192Key, KeyExpansion.Cisco),
    "AES256C": (Aes256Key, KeyExpansion.Cisco),
}
MAX_CONTEXT_OCTETS = 32
"""An SNMPv3 contextName is an SnmpAdminString: at most 32 octets of UTF-8 (RFC 3411)."""

# HMAC digest and truncated MAC length per auth protocol (RFC 3414, RFC 7860).
_AUTH_MACS: dict[str, tuple[str, int]] = {
    "MD5": ("md5", 12),
    "SHA": ("sha1", 12),
    "SHA224": ("sha224", 16),
    "SHA256": ("sha256", 24),
    "SHA384": ("sha384", 32),
    "SHA512": ("sha512", 48),
}


def _set_resolved(model: BaseModel, name: str, value: SecretStr | None) -> None:
    """Store a secret read from `<name>_file` in `name` of a frozen model; clear the file field."""
    object.__setattr__(model, name, value)
    object.__setattr__(model, f"{name}_file", None)
    model.__pydantic_fields_set__.discard(f"{name}_file")
    if value is not None:
        model.__pydantic_fields_set__.add(name)


class SnmpAuth(BaseModel):
    """Credentials for one kind of device: a v1/v2c community or a v3 user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1, 2, 3] = Field(2, description="SNMP version: 1, 2 (v2c) or 3.")
    community: SecretStr | None = Field(None, description="v1/v2c community (prefer _file).")
    community_file: ConfigPath | None = Field(None, description="File holding the community.")
    username: str | None = Field(None, description="v3 user name.")
    security_level: SecurityLevel | None = Field(
        None, description="v3: noAuthNoPriv, authNoPriv or authPriv (default from passwords)."
    )
    auth_protocol: AuthProtocol = Field("SHA", description="v3 authentication protocol.")
    auth_password: SecretStr | None = Field(None, description="v3 auth password (prefer _file).")
    auth_password_file: ConfigPath | None = Field(None, description="File with the password.")
    priv_protocol: PrivProtocol = Field("AES", description="v3 privacy protocol.")
    priv_password: SecretStr | None = Field(None, description="v3 privacy password.")
    priv_password_file: ConfigPath | None = Field(None, description="File with the password.")
    context_name: str = Field(
        "",
        description="v3 context name (at most 32 octets) for agents serving several MIB "
        "instances (proxy agents, virtual fabrics, per-VLAN bridge MIB); such checks poll "
        "through pysnmp, whose table walks cost about 4x the CPU of the default path.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Read secret files, then check that the fields fit the version and security level."""
        for name in ("community", "auth_password", "priv_password"):
            inline, file = getattr(self, name), getattr(self, f"{name}_file")
            if inline is not None or file is not None:
                _set_resolved(self, name, resolve_secret(inline, file, name))
        v3_fields = [
            n
            for n in ("username", "security_level", "auth_password", "priv_password")
            if getattr(self, n) is not None
        ]
        if self.version in (1, 2):
            if v3_fields:
                raise ValueError(f"{v3_fields[0]} is only for version 3")
            if self.context_name:
                raise ValueError("context_name is only for version 3")
            if self.community is None:
                raise ValueError(f"version {self.version} needs community or community_file")
            return self
        if self.community is not None:
            raise ValueError("community is only for versions 1 and 2")
        if not self.username:
            raise ValueError("version 3 needs username")
        size = len(self.context_name.encode())
        if size > MAX_CONTEXT_OCTETS:
            raise ValueError(
                f"context_name must be at most {MAX_CONTEXT_OCTETS} octets "
                f"(SnmpAdminString), got {size}"
            )
        level = self.security_level or (
            "authPriv"
            if self.priv_password
            else "authNoPriv"
            if self.auth_password
            else "noAuthNoPriv"
        )
        object.__setattr__(self, "security_level", level)
        needs = {
            "noAuthNoPriv": (),
            "authNoPriv": ("auth_password",),
            "authPriv": ("auth_password", "priv_password"),
        }[level]
        for name in ("auth_password", "priv_password"):
            secret: SecretStr | None = getattr(self, name)
            if name in needs and secret is None:
                raise ValueError(f"security_level {level} needs {name} or {name}_file")
            if name not in needs and secret is not None:
                raise ValueError(f"{name} is set but security_level is {level}")
            if secret is not None and len(secret.get_secret_value()) < 8:
                raise ValueError(f"{name} must be at least 8 characters (RFC 3414)")
        return self

    def user(self) -> User:
        """Return the gufo-snmp v3 user with master keys: gufo-snmp localises them per agent.

        RFC 3414's password-to-key hashes a megabyte per password (0.7 ms with SHA-1): the
        probe keeps the user of each auth (SnmpProbe._user) instead of paying it every poll.
        """
        auth_key = priv_key = None
        expansion = KeyExpansion.Blumenthal
        auth_cls = AUTH_KEYS[self.auth_protocol]
        if self.auth_password is not None:
            master = auth_cls.get_master_key(self.auth_password.get_secret_value().encode())
            auth_key = auth_cls(master, key_type=KeyType.Master)
        if self.priv_password is not None:
            priv_cls, expansion = PRIV_KEYS[self.priv_protocol]
            # The privacy master key comes from the auth protocol's hash (RFC 3414 8.1.1.1).
            master = auth_cls.get_master_key(self.priv_password.get_secret_value().encode())
            priv_key = priv_cls(master, key_type=KeyType.Master)
        return User(
            self.username or "", auth_key=auth_key, priv_key=priv_key, key_expansion=expansion
        )

    def describe(self) -> str:
        """Return a secret-free description, e.g. `v3 user ops authPriv SHA256/AES`."""
        if self.version != 3:
            return f"v{'2c' if self.version == 2 else '1'} community"
        protos = {
            "authPriv": f" {self.auth_protocol}/{self.priv_protocol}",
            "authNoPriv": f" {self.auth_protocol}",
        }.get(self.security_level or "", "")
        context = f" context {self.context_name!r}" if self.context_name else ""
        return f"v3 user {self.username!r} {self.security_level}{protos}{context}"


BUILTIN_AUTHS: dict[str, SnmpAuth] = {
    "public_v2": SnmpAuth(version=2, community=SecretStr("public")),
}
"""Auths every config has unless it defines the same name: v2c community `public`."""


class SnmpSection(BaseModel):
    """The top-level `snmp:` block: named credentials and extra profile directories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auths: dict[str, SnmpAuth] = Field(
        default_factory=dict, description="Credentials by name; checks refer to them by `auth`."
    )
    profile_dirs: list[ConfigPath] = Field(
        default_factory=list,
        description="Extra directories of profile YAML files (the shipped ones always load).",
    )
    _profiles: dict[str, Profile] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _load_profiles(self) -> Self:
        """Load the shipped profiles and those of profile_dirs; report every error."""
        try:
            self._profiles = load_profile_dirs([SHIPPED_PROFILE_DIR, *self.profile_dirs])
        except ConfigErrors as exc:
            raise ValueError("invalid profiles:\n" + str(exc)) from None
        return self

    def profiles(self) -> dict[str, Profile]:
        """Return every loaded profile by name."""
        return self._profiles

    def all_auths(self) -> dict[str, SnmpAuth]:
        """Return the built-in auths overridden by the config's own."""
        return {**BUILTIN_AUTHS, **self.auths}


class SnmpSettings(BaseModel):
    """Settings of an snmp check: which credentials, which profiles, and polling limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auth: str = Field("public_v2", description="Name of an entry of snmp.auths.")
    profiles: list[str] = Field(
        default_factory=lambda: ["system"], min_length=1, description="Profiles to collect."
    )
    max_varbinds: int = Field(32, ge=1, le=256, description="Varbinds per GET PDU.")
    max_repetitions: int = Field(25, ge=1, le=1000, description="GETBULK max-repetitions.")
    walk_cap: int = Field(
        10000, ge=1, le=1_000_000, description="Most varbinds one walk may return."
    )
    retries: int = Field(1, ge=0, le=10, description="Resends of a request that gets no answer.")
    request_timeout: Duration | None = Field(
        None,
        description="Wait for one answer; default: the check's timeout / (retries + 2), "
        "leaving time to diagnose a failure.",
    )


class SnmpCheckSettings(SnmpSettings):
    """An snmp check's settings with its auth and profiles resolved (built by `bind`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    resolved_auth: SnmpAuth
    resolved_profiles: tuple[Profile, ...]
    plan: PollPlan

    def health_rules(self) -> list[Rule]:
        """Return the rules the check's profiles carry, for the health engine (first name wins).

        Profile severities map to component states: info is shown nowhere, warning stays
        warning, degraded is degraded, critical puts the device DOWN.
        """
        rules: dict[str, Rule] = {}
        for profile in self.resolved_profiles:
            for spec in profile.rules:
                severity = PROFILE_SEVERITIES[spec.severity]
                if severity is None or spec.name in rules:
                    continue
                rules[spec.name] = Rule(
                    name=spec.name,
                    condition=parse_condition(spec.expr),
                    clear=None,
                    severity=severity,
                    for_=spec.for_ or 0.0,
                    clear_for=0.0,
                )
        return list(rules.values())


PROFILE_SEVERITIES: dict[str, Severity | None] = {
    "info": None,
    "warning": "warning",
    "degraded": "degraded",
    "critical": "down",
}
"""Profile rule severity -> component state severity of the health engine."""


# --------------------------------------------------------------------------- targets

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


def _format_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- failures


class SnmpFailure(Exception):
    """A poll failed for a reason that fits in ProbeResult.error."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class _NoAnswer(Exception):
    """No answer within the request timeout and retries (or the poll's deadline)."""

    def __init__(self, tries: int, refused: bool = False) -> None:
        super().__init__(tries)
        self.tries = tries
        self.refused = refused


# usmStats / MPD / target counters an agent names in a Report PDU, and what they mean.
REPORT_REASONS: dict[str, tuple[str, str]] = {
    "1.3.6.1.6.3.15.1.1.1.0": (
        "unsupported_sec_level",
        "SNMPv3 unsupported security level: the agent does not accept user {user} at {level}",
    ),
    "1.3.6.1.6.3.15.1.1.2.0": (
        "not_in_time_window",
        "SNMPv3 not in time window: engine boots/time out of sync (agent restarted or its "
        "clock jumped); resynchronises on the next poll",
    ),
    "1.3.6.1.6.3.15.1.1.3.0": (
        "unknown_user",
        "SNMPv3 unknown user {user}: the agent has no such user",
    ),
    "1.3.6.1.6.3.15.1.1.4.0": ("unknown_engine_id", "SNMPv3 unknown engine ID"),
    "1.3.6.1.6.3.15.1.1.5.0": (
        "wrong_digest",
        "SNMPv3 wrong digest: auth password or auth protocol ({auth}) does not match the agent's",
    ),
    "1.3.6.1.6.3.15.1.1.6.0": (
        "decryption_error",
        "SNMPv3 decryption error: privacy password or protocol ({priv}) does not match the agent's",
    ),
    "1.3.6.1.6.3.11.2.1.1.0": ("unknown_security_model", "agent does not support SNMPv3 USM"),
    "1.3.6.1.6.3.11.2.1.2.0": ("invalid_message", "agent found the SNMPv3 message invalid"),
    "1.3.6.1.6.3.12.1.4.0": ("unavailable_context", "SNMPv3 context unavailable"),
    "1.3.6.1.6.3.12.1.5.0": ("unknown_context", "SNMPv3 unknown context"),
}


# --------------------------------------------------------------------------- minimal BER


def ber_tlv(tag: int, body: bytes) -> bytes:
    """Encode one BER tag-length-value."""
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def ber_int(value: int, tag: int = 0x02) -> bytes:
    """Encode an INTEGER (or an application integer type with `tag`)."""
    return ber_tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def ber_oid(oid: str) -> bytes:
    """Encode an OBJECT IDENTIFIER."""
    parts = [int(p) for p in oid.split(".")]
    out = bytearray()
    for sub in [parts[0] * 40 + parts[1], *parts[2:]]:
        chunk = [sub & 0x7F]
        rest = sub >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return ber_tlv(0x06, bytes(out))


def ber_seq(*items: bytes, tag: int = 0x30) -> bytes:
    """Encode a SEQUENCE (or a PDU with `tag`) of already encoded items."""
    return ber_tlv(tag, b"".join(items))


def ber_items(data: bytes) -> list[tuple[int, bytes]]:
    """Decode the consecutive TLVs of a constructed value's body as (tag, body) pairs."""
    items, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError("truncated BER")
        tag, size = data[pos], data[pos + 1]
        pos += 2
        if size & 0x80:
            count = size & 0x7F
            size = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + size > len(data):
            raise ValueError("truncated BER")
        items.append((tag, data[pos : pos + size]))
        pos += size
    return items


def ber_decode_int(body: bytes) -> int:
    """Decode an INTEGER body."""
    return int.from_bytes(body, "big", signed=True)


def ber_decode_oid(body: bytes) -> str:
    """Decode an OBJECT IDENTIFIER body."""
    parts, n = [], 0
    for byte in body:
        n = (n << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(n)
            n = 0
    if not parts:
        return ""
    first = parts[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(map(str, [*head, *parts[1:]]))


# --------------------------------------------------------------------------- USM check


@dataclass(frozen=True, slots=True)
class UsmCheck:
    """What the agent said to a plain SNMPv3 discovery and (with a user) one request."""

    discovered: bool
    report: str | None = None
    accepted: bool = False


_SYS_UPTIME = "1.3.6.1.2.1.1.3.0"


def _v3_message(
    msg_id: int,
    flags: int,
    engine: tuple[bytes, int, int],
    user: bytes,
    auth_params: bytes,
    *,
    context: bytes = b"",
) -> bytes:
    """Return an SNMPv3 GET of sysUpTime.0 in context, in plaintext (noAuth or auth, never priv)."""
    engine_id, boots, time_ = engine
    usm = ber_seq(
        ber_tlv(0x04, engine_id),
        ber_int(boots),
        ber_int(time_),
        ber_tlv(0x04, user),
        ber_tlv(0x04, auth_params),
        ber_tlv(0x04, b""),
    )
    pdu = ber_seq(
        ber_int(msg_id),
        ber_int(0),
        ber_int(0),
        ber_seq(ber_seq(ber_oid(_SYS_UPTIME), b"\x05\x00")) if user else ber_seq(),
        tag=0xA0,
    )
    return ber_seq(
        ber_int(3),
        ber_seq(ber_int(msg_id), ber_int(65507), ber_tlv(0x04, bytes([flags])), ber_int(3)),
        ber_tlv(0x04, usm),
        ber_seq(ber_tlv(0x04, engine_id), ber_tlv(0x04, context), pdu),
    )


@dataclass(frozen=True, slots=True)
class _V3Reply:
    """The parts of an SNMPv3 reply the USM check reads."""

    msg_id: int
    engine: tuple[bytes, int, int]
    pdu_tag: int | None
    first_oid: str | None


def _parse_v3(data: bytes) -> _V3Reply:
    """Decode the parts of an SNMPv3 reply the USM check needs; raise ValueError if malformed."""
    (tag, body), *_ = ber_items(data)
    top = ber_items(body)
    if tag != 0x30 or len(top) < 4 or ber_decode_int(top[0][1]) != 3:
        raise ValueError("not an SNMPv3 message")
    header = ber_items(top[1][1])
    msg_id, flags = ber_decode_int(header[0][1]), header[2][1][:1]
    usm = ber_items(ber_items(top[2][1])[0][1])
    engine = (usm[0][1], ber_decode_int(usm[1][1]), ber_decode_int(usm[2][1]))
    if not flags or flags[0] & 0x02 or top[3][0] != 0x30:
        return _V3Reply(msg_id, engine, None, None)  # encrypted: nothing more to read
    pdu_tag, pdu_body = ber_items(top[3][1])[2]
    varbinds = ber_items(ber_items(pdu_body)[3][1])
    oid = ber_decode_oid(ber_items(varbinds[0][1])[0][1]) if varbinds else None
    return _V3Reply(msg_id, engine, pdu_tag, oid)


def v3_sender(data: bytes) -> tuple[str, str] | None:
    """Return (authoritative engine ID in hex, user name) of an SNMPv3 message, or None.

    For a trap that failed authentication: the receiver says which engine and user to add.
    Both are device-sent: the caller bounds them.
    """
    try:
        (tag, body), *_ = ber_items(data)
        top = ber_items(body)
        if tag != 0x30 or len(top) < 3 or ber_decode_int(top[0][1]) != 3:
            return None
        usm = ber_items(ber_items(top[2][1])[0][1])
        return usm[0][1].hex(), usm[3][1].decode(errors="replace")
    except (ValueError, IndexError):
        return None


async def _udp_exchange(
    host: str, port: int, message: bytes, msg_id: int, wait: float
) -> _V3Reply | None:
    """Send one datagram and return the matching SNMPv3 reply, or None on silence."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, message)
            async with asyncio.timeout(wait):
                while True:
                    data = await loop.sock_recv(sock, 65535)
                    with contextlib.suppress(ValueError, IndexError):
                        reply = _parse_v3(data)
                        if reply.msg_id == msg_id:
                            return reply
        except (TimeoutError, OSError):
            return None


async def _usm_check(
    host: str, port: int, auth: SnmpAuth | None, wait: float, context: bytes = b""
) -> UsmCheck:
    """Discover the agent's engine; with a v3 auth, send one plaintext request and read the answer.

    Privacy is never used here, so an authPriv user is checked at authNoPriv: a Response (even
    authorizationError) or an unsupported-level report proves the user and auth key are right.
    The request names `context`, so an agent that knows no such context says so (or drops it).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    msg_id = int.from_bytes(os.urandom(3), "big")
    found = await _udp_exchange(
        host, port, _v3_message(msg_id, 0x04, (b"", 0, 0), b"", b""), msg_id, wait
    )
    if found is None:
        return UsmCheck(discovered=False)
    if auth is None or auth.version != 3:
        return UsmCheck(discovered=True)
    user = (auth.username or "").encode()
    engine = found.engine
    flags, auth_params = 0x04, b""
    key = b""
    digest, mac_len = _AUTH_MACS[auth.auth_protocol]
    if auth.auth_password is not None:
        flags, auth_params = 0x05, os.urandom(mac_len)
        key_cls = AUTH_KEYS[auth.auth_protocol]
        master = key_cls.get_master_key(auth.auth_password.get_secret_value().encode())
        key = key_cls.get_localized_key(master, engine[0])
    msg_id += 1
    message = _v3_message(msg_id, flags, engine, user, auth_params, context=context)
    if flags & 0x01:
        # auth_params is a random marker: zero it to compute the MAC, then put the MAC there.
        mac = hmac.new(key, message.replace(auth_params, b"\x00" * mac_len), digest).digest()
        message = message.replace(auth_params, mac[:mac_len])
    reply = await _udp_exchange(host, port, message, msg_id, max(0.05, end - loop.time()))
    if reply is None:
        return UsmCheck(discovered=True)
    if reply.pdu_tag == 0xA8:
        return UsmCheck(discovered=True, report=reply.first_oid)
    return UsmCheck(discovered=True, accepted=reply.pdu_tag == 0xA2)


def _report_reason(oid: str | None, auth: SnmpAuth) -> tuple[str, str]:
    """Return (kind, reason) for a report OID, with the auth's secret-free details."""
    kind, text = REPORT_REASONS.get(
        oid or "", ("auth_failed", f"SNMPv3 authentication failed (agent report {oid})")
    )
    return kind, text.format(
        user=repr(auth.username),
        level=auth.security_level,
        auth=auth.auth_protocol,
        priv=auth.priv_protocol,
    )


# --------------------------------------------------------------------------- client


class _Client:
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
        """Send a request and await its answer, resending on silence; raise _NoAnswer."""
        loop = asyncio.get_running_loop()
        for attempt in range(self.retries + 1):
            if loop.time() >= self.deadline:
                raise _NoAnswer(attempt)
            try:
                await self._send(send)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED or "refused" in str(exc).lower():
                    raise _NoAnswer(attempt + 1, refused=True) from None
                raise
            self.pdus += 1
            end = min(loop.time() + self.request_timeout, self.deadline)
            try:
                result = await self._receive(recv, end)
            except TimeoutError as exc:
                if "refused" in str(exc):
                    raise _NoAnswer(attempt + 1, refused=True) from None
                continue
            self.answered += 1
            return result
        raise _NoAnswer(self.retries + 1)

    async def _send(self, send: Callable[[], None]) -> None:
        """Send now, or when the socket's buffer has room."""
        try:
            send()
            return
        except BlockingIOError:
            pass
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(self.fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_writer(self.fd)
        send()

    async def _receive(self, recv: Callable[[], T], end: float) -> T:
        """Read the answer when the socket becomes readable, until `end` (loop time)."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                raise TimeoutError
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.fd, _wake, ready)
            try:
                async with asyncio.timeout(remaining):
                    await ready
            finally:
                loop.remove_reader(self.fd)
            try:
                return recv()
            except BlockingIOError:
                continue  # a stale or foreign datagram was dropped: keep waiting


def _wake(future: asyncio.Future[None]) -> None:
    """Resolve a readiness future once."""
    if not future.done():
        future.set_result(None)


def _socket(auth: SnmpAuth, addr: str) -> Socket:
    """Return a non-blocking gufo-snmp socket for the auth's version (v3 before discovery)."""
    if auth.version == 3:
        return SnmpV3ClientSocket(addr, b"", "", 0, b"", 0, b"", 0, 0, 0, 0)
    community = auth.community.get_secret_value() if auth.community is not None else ""
    cls = SnmpV1ClientSocket if auth.version == 1 else SnmpV2cClientSocket
    return cls(addr, community, 0, 0, 0, 0)


# --------------------------------------------------------------------------- polling


@dataclass(slots=True)
class PollStats:
    """What a poll cost: seconds spent walking, varbinds received (PDUs sent, context path)."""

    walk_seconds: float = 0.0
    varbinds: int = 0
    pdus: int = 0


async def _poll(
    client: _Client,
    settings: SnmpCheckSettings,
    plan: PollPlan,
    stats: PollStats,
    log: Callable[..., None],
) -> Collected:
    """Run the plan: GET the scalars in as few PDUs as allowed, then walk each column."""
    loop = asyncio.get_running_loop()
    sock = client.sock
    data = Collected()
    gets = list(plan.gets)
    step = settings.max_varbinds

    async def get(oids: list[str]) -> dict[str, Value]:
        """GET oids in one PDU; absent ones (noSuchObject, noSuchInstance) are left out."""

        def send() -> None:
            sock.send_get_many(oids)

        return await client.exchange(send, sock.recv_get_many)

    async def get_readable(oids: list[str]) -> dict[str, Value]:
        """GET oids; an answer too large to read is asked again OID by OID.

        An OID whose own answer is too large (a 10 KB string) is left out, as unreadable.
        """
        try:
            return await get(oids)
        except SnmpDecodeError as exc:
            if str(exc) != "incomplete":
                raise
        if len(oids) == 1:
            data.unreadable.add(oids[0])
            log("snmp_answer_too_large", oid=oids[0])
            return {}
        values: dict[str, Value] = {}
        for oid in oids:
            values.update(await get_readable([oid]))
        return values

    for start in range(0, len(gets), step):
        chunk = gets[start : start + step]
        values = await get_readable(chunk)
        if settings.resolved_auth.version == 1 and len(chunk) > 1 and len(values) < len(chunk):
            # v1 answers noSuchName for the whole PDU: ask the missing ones one by one.
            for oid in chunk:
                if oid not in values:
                    values.update(await get([oid]))
        stats.varbinds += len(values)
        data.scalars.update(values)
        log("snmp_get", oids=len(chunk), values=len(values))
    for subtree, columns in walk_groups(plan.walks):
        repetitions = settings.max_repetitions
        while True:
            began = loop.time()
            try:
                walked = await _walk(
                    client, subtree, columns, settings, stats, max_repetitions=repetitions
                )
                break
            except SnmpDecodeError as exc:
                # A GETBULK answer over gufo-snmp's 4 KiB (long strings): ask fewer rows.
                v1 = settings.resolved_auth.version == 1  # GETNEXT: one row is all it asks
                if str(exc) != "incomplete" or repetitions == 1 or v1:
                    raise
                repetitions = max(1, repetitions // 2)
                log("snmp_walk_answer_too_large", oid=subtree, max_repetitions=repetitions)
            finally:
                stats.walk_seconds += loop.time() - began
        data.walks.update(walked)
        for column in columns:
            log("snmp_walk", oid=column, rows=len(walked[column]))
    return data


def walk_groups(walks: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Return (subtree, columns) walks: dense columns of one table entry share one walk.

    A walk of the table entry returns every column from the first, in order; when the wanted
    columns fill at least half of the columns up to the last wanted one, one walk of the entry
    (stopped after that column) costs far fewer PDUs than a walk per column: 4 instead of 22
    for ifTable. Sparse columns of wide tables keep a walk of their own.
    """
    by_entry: dict[str, list[str]] = {}
    for column in walks:
        by_entry.setdefault(column.rpartition(".")[0], []).append(column)
    groups: list[tuple[str, list[str]]] = []
    for entry, columns in by_entry.items():
        last = max(int(c.rpartition(".")[2]) for c in columns)
        if len(columns) > 1 and 2 * len(columns) >= last:
            groups.append((entry, columns))
        else:
            groups.extend((c, [c]) for c in columns)
    return groups


def stopped_mid_walk(
    subtree: str, received: int, tries: int, request_timeout: float
) -> SnmpFailure:
    """Return the failure of a walk the agent stopped answering after it had answered."""
    return SnmpFailure(
        "stopped_mid_walk",
        f"agent stopped answering mid-walk of {subtree} after {received} varbinds "
        f"({tries} tries of {request_timeout:.3g}s)",
    )


class WalkRows:
    """The rows of one walk by column, fed batch by batch by either SNMP engine.

    Stops at the subtree's end or after the last wanted column, and at walk_cap varbinds per
    column so a runaway agent cannot exhaust memory.
    """

    __slots__ = ("by_arc", "cap", "grouped", "last_arc", "out", "prefix", "received", "subtree")

    def __init__(self, subtree: str, columns: Sequence[str], walk_cap: int) -> None:
        self.subtree = subtree
        self.out: dict[str, dict[str, Value]] = {c: {} for c in columns}
        # column number -> rows
        self.by_arc = {c.rpartition(".")[2]: rows for c, rows in self.out.items()}
        self.grouped = subtree not in columns
        self.last_arc = max(int(c.rpartition(".")[2]) for c in columns)
        self.cap = walk_cap * (self.last_arc if self.grouped else 1)
        self.received = 0
        self.prefix = subtree + "."

    def take(self, batch: Sequence[tuple[str, Value] | None], stats: PollStats) -> bool:
        """Store a batch of (oid, value) (None: left the subtree); return True when done."""
        # Locals: this loop runs once per varbind.
        out, by_arc, grouped, last_arc = self.out, self.by_arc, self.grouped, self.last_arc
        prefix, subtree, cap = self.prefix, self.subtree, self.cap
        received = start = self.received
        try:
            for item in batch:
                if item is None:
                    return True  # left the subtree: the table's end
                oid, value = item
                if not oid.startswith(prefix):
                    return True
                if received >= cap:
                    raise SnmpFailure(
                        "walk_cap",
                        f"walk cap reached: {subtree} has more than {cap} varbinds "
                        "(raise walk_cap if the table is really that large)",
                    )
                received += 1
                if not grouped:
                    out[subtree][oid[len(prefix) :]] = value
                    continue
                arc, _, suffix = oid[len(prefix) :].partition(".")
                rows = by_arc.get(arc)
                if rows is not None:
                    rows[suffix] = value
                elif not arc.isdigit() or int(arc) > last_arc:
                    return True  # past the last wanted column: the rest is not needed
            return False
        finally:
            self.received = received
            stats.varbinds += received - start


async def _walk(
    client: _Client,
    subtree: str,
    columns: Sequence[str],
    settings: SnmpCheckSettings,
    stats: PollStats,
    *,
    max_repetitions: int,
) -> dict[str, dict[str, Value]]:
    """Walk a column, or the entry holding columns, with GETBULK (GETNEXT for v1).

    Returns rows by column (see WalkRows for where the walk stops).
    """
    sock = client.sock
    rows = WalkRows(subtree, columns, settings.walk_cap)
    bulk = settings.resolved_auth.version != 1
    it = GetIter(subtree, max_repetitions) if bulk else GetIter(subtree)
    while True:
        try:
            if bulk:
                batch = await client.exchange(
                    lambda: sock.send_get_bulk(it), lambda: sock.recv_get_bulk(it)
                )
            else:
                batch = [
                    await client.exchange(
                        lambda: sock.send_get_next(it), lambda: sock.recv_get_next(it)
                    )
                ]
        except StopAsyncIteration:
            return rows.out  # endOfMibView or nothing more in the subtree
        except _NoAnswer as exc:
            if rows.received or client.answered:
                raise stopped_mid_walk(
                    subtree, rows.received, exc.tries, client.request_timeout
                ) from None
            raise
        if rows.take(batch, stats):
            return rows.out


# --------------------------------------------------------------------------- the probe


_SELF_HELP = {
    "snmp_scrape_pdus_sent": "SNMP request PDUs the last poll sent (retries, v3 discovery "
    "included).",
    "snmp_scrape_varbinds_received": "Varbinds the last poll received.",
    "snmp_scrape_walk_duration_seconds": "Seconds the last poll spent walking tables.",
}


# gufo-snmp reads at most 4 KiB of a datagram: a larger response ends mid-message.
_INCOMPLETE_HINT = (
    "a response larger than the 4 KiB gufo-snmp reads even for one row, e.g. a table value "
    "that long, or a truncated datagram"
)

_MISSING_HELP = (
    "Objects of the check's profiles the agent did not serve in the last poll (noSuchObject, "
    "noSuchInstance, endOfMibView, an empty table): their metrics are absent."
)


def _objects_text(objects: Sequence[tuple[str, str]], shown: int = 8) -> str:
    """Name objects as `oid (metric)`, the first few of a long list then how many more."""
    text = ", ".join(f"{oid} ({name})" for oid, name in objects[:shown])
    return text + (f" and {len(objects) - shown} more" if len(objects) > shown else "")


def _self_samples(client: _Client | None, stats: PollStats) -> list[Sample]:
    """Return the poll's own cost metrics."""
    values = {
        "snmp_scrape_pdus_sent": float(client.pdus if client else stats.pdus),
        "snmp_scrape_varbinds_received": float(stats.varbinds),
        "snmp_scrape_walk_duration_seconds": stats.walk_seconds,
    }
    return [Sample(name, value, (), "gauge", _SELF_HELP[name]) for name, value in values.items()]


class SnmpProbe:
    """Poll a device's SNMP agent and turn its answers into metrics with device profiles."""

    kind: ClassVar[str] = "snmp"
    Settings: ClassVar[type[BaseModel]] = SnmpSettings
    Section: ClassVar[type[BaseModel]] = SnmpSection

    def __init__(self, clock: Callable[[], float] = time.time, logger: Any = None) -> None:
        # Where lasting conditions of a device are told (objects it lacks), once, not per poll.
        self._log = logger if logger is not None else structlog.get_logger()
        # The objects each check's agent lacked when last told, by check id.
        self._missing_told: dict[str, tuple[str, ...]] = {}
        # Last values for resets (e.g. sysUpTime going down = reboot), by check id.
        self._previous: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        # Forecast points and EWMA baselines of the profiles' `derive:`, by check id.
        self._derived: dict[str, DeriveState] = {}
        self._saved_derived: dict[str, dict[str, Any]] = {}  # from before a restart (load_state)
        self._clock = clock
        # v3 users with their master keys, by auth: password-to-key once, not every poll.
        self._users: dict[SnmpAuth, User] = {}
        # pysnmp engines for the checks with a v3 context name: built on first use only.
        self._context: ContextPoller | None = None
        self._context_auths: dict[str, SnmpAuth] = {}  # by check id, to prune on reload

    def _user(self, auth: SnmpAuth) -> User | None:
        """Return the v3 user of auth (None for v1/v2c), its keys derived on first use."""
        if auth.version != 3:
            return None
        user = self._users.get(auth)
        if user is None:
            if len(self._users) >= 256:  # auths replaced by reloads: start afresh
                self._users.clear()
            user = self._users[auth] = auth.user()
        return user

    def _context_poller(self) -> ContextPoller:
        """Return the context poller, importing pysnmp and building it on first use."""
        if self._context is None:
            from vigie.probes.snmp_context import ContextPoller

            self._context = ContextPoller()
        return self._context

    async def close(self) -> None:
        """Release the pysnmp engines of context polls (their sockets and timers)."""
        if self._context is not None:
            self._context.close()
            self._context = None

    def parse_target(self, target: str) -> str:
        """Return `host:port` (`[v6]:port`) with the default port 161 filled in."""
        return _format_target(*parse_target(target))

    def host_of(self, target: str) -> str:
        """Return the target's host."""
        return parse_target(target)[0]

    def bind(self, settings: BaseModel, section: BaseModel, config_dir: Path) -> BaseModel:
        """Resolve the check's auth and profile names; raise ValueError naming the known ones."""
        assert isinstance(settings, SnmpSettings) and isinstance(section, SnmpSection)
        auths = section.all_auths()
        auth = auths.get(settings.auth)
        if auth is None:
            raise ValueError(
                f"unknown auth {settings.auth!r}; known auths: {', '.join(sorted(auths))}"
            )
        known = section.profiles()
        chosen: list[Profile] = []
        owner: dict[str, str] = {}
        for name in settings.profiles:
            profile = known.get(name)
            if profile is None:
                raise ValueError(
                    f"unknown profile {name!r}; known profiles: {', '.join(sorted(known))}"
                )
            for family in family_names(profile):
                if family in owner:
                    raise ValueError(
                        f"profiles {owner[family]!r} and {name!r} both define {family!r}: "
                        "use one of them"
                    )
                owner[family] = name
            chosen.append(profile)
        return SnmpCheckSettings(
            **settings.model_dump(),
            resolved_auth=auth,
            resolved_profiles=tuple(chosen),
            plan=poll_plan(chosen),
        )

    async def __call__(self, check: Check, ctx: ProbeContext) -> ProbeResult:
        """Poll the target once with the check's profiles."""
        settings = check.settings
        if not isinstance(settings, SnmpCheckSettings):
            raise TypeError("snmp check settings are not bound: build the plan with bind()")
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + check.timeout * 0.95
        request_timeout = settings.request_timeout or check.timeout / (settings.retries + 2)
        auth = settings.resolved_auth
        host, port = parse_target(check.target)
        stats = PollStats()
        client: _Client | None = None
        ctx.log(
            "snmp_poll",
            target=check.target,
            auth=auth.describe(),
            profiles=",".join(settings.profiles),
        )
        try:
            if auth.context_name:
                poller = self._context_poller()
                if self._context_auths.get(check.id, auth) != auth:  # changed by a reload
                    self._context_auths[check.id] = auth
                    poller.retain(self._context_auths.values())
                self._context_auths[check.id] = auth
                data = await poller.poll(
                    check.target,
                    settings,
                    stats,
                    ctx.log,
                    request_timeout=request_timeout,
                    deadline=deadline,
                )
            else:
                address = await _resolve(host, port)
                client = _Client(
                    _socket(auth, address), request_timeout, settings.retries, deadline
                )
                await _open(client, self._user(auth))
                data = await _poll(client, settings, settings.plan, stats, ctx.log)
            lacking = settings.plan.missing_required(data)
            too_large = [(oid, name) for oid, name in lacking if oid in data.unreadable]
            if too_large:
                raise SnmpFailure(
                    "malformed",
                    f"{check.target} answered required {_objects_text(too_large)} with more "
                    "than the 4 KiB gufo-snmp reads of one datagram (a very long string)",
                )
            if lacking:
                raise SnmpFailure(
                    "no_such_object",
                    f"{check.target} does not serve required "
                    f"{_objects_text(lacking)} (noSuchObject, noSuchInstance, endOfMibView or "
                    "an empty table)",
                )
        except _NoAnswer as exc:
            failure = await _explain_silence(
                exc,
                check=check,
                host=host,
                port=port,
                auth=auth,
                request_timeout=request_timeout,
                deadline=deadline,
            )
            return self._failed(failure, client, stats, ctx)
        except SnmpFailure as exc:
            return self._failed(exc, client, stats, ctx)
        except SnmpAuthError:
            failure = await _explain_auth(host, port, auth, deadline)
            return self._failed(failure, client, stats, ctx)
        except NoSuchInstance:
            failure = SnmpFailure("no_such_object", "noSuchObject/noSuchInstance")
            return self._failed(failure, client, stats, ctx)
        except (SnmpDecodeError, SnmpEncodeError, SnmpError) as exc:
            reason = f"malformed SNMP message: {exc}"
            if str(exc) == "incomplete":
                reason += f" ({_INCOMPLETE_HINT})"
            return self._failed(SnmpFailure("malformed", reason), client, stats, ctx)
        except OSError as exc:
            failure = SnmpFailure("socket", f"socket error talking to {check.target}: {exc}")
            return self._failed(failure, client, stats, ctx)
        previous = self._previous.get(check.id, {})
        samples, remember = evaluate(settings.resolved_profiles, data, previous, ctx.log)
        self._previous[check.id] = remember
        samples.extend(self._derive(check.id, settings, samples, ctx))
        samples.extend(_self_samples(client, stats))
        missing = settings.plan.missing(data)
        self._tell_missing(check, missing, data.unreadable, ctx)
        samples.append(
            Sample("snmp_objects_missing", float(len(missing)), (), "gauge", _MISSING_HELP)
        )
        ctx.log(
            "snmp_done",
            pdus=client.pdus if client else stats.pdus,
            varbinds=stats.varbinds,
            samples=len(samples),
        )
        return ProbeResult(success=True, samples=tuple(samples))

    def _derive(
        self, check_id: str, settings: SnmpCheckSettings, samples: list[Sample], ctx: ProbeContext
    ) -> list[Sample]:
        """Return the derived samples of the check's profiles, keeping their state per check."""
        defs = tuple(d for p in settings.resolved_profiles for d in p.derive)
        state = self._derived.get(check_id)
        if not defs:
            self._derived.pop(check_id, None)
            return []
        if state is None:
            state = self._derived[check_id] = DeriveState(defs)
            saved = self._saved_derived.pop(check_id, None)
            if saved is not None:  # state saved before a restart
                state.restore(saved)
        elif state.defs != defs:
            state.retain(defs)  # the check's profiles changed on a reload
        return state.apply(samples, self._clock(), ctx.log)

    def save_state(self) -> dict[str, Any]:
        """Return what should survive a restart, by check id: derive state and last values.

        Without it a restart during a slow SAN degradation would learn the degraded latency as
        the new baseline, and a reboot while Vigie was down would go unseen.
        """
        return {
            "derived": {cid: state.dump() for cid, state in self._derived.items()},
            "previous": {
                cid: [
                    [name, [list(pair) for pair in labels], value]
                    for (name, labels), value in last.items()
                ]
                for cid, last in self._previous.items()
            },
        }

    def load_state(self, data: dict[str, Any]) -> None:
        """Take back saved state; each check's part is applied when it next polls."""
        derived, previous = data.get("derived"), data.get("previous")
        if isinstance(derived, dict):
            self._saved_derived = {k: v for k, v in derived.items() if isinstance(v, dict)}
        if isinstance(previous, dict):
            for cid, entries in previous.items():
                last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
                for entry in entries if isinstance(entries, list) else ():
                    with contextlib.suppress(TypeError, ValueError, IndexError):
                        last[(str(entry[0]), labels_of(entry[1]))] = float(entry[2])
                self._previous.setdefault(cid, last)

    def retain(self, check_ids: set[str]) -> None:
        """Keep the state of check_ids only: the others left the plan.

        That is reset and derive state, and the pysnmp engines of context polls: an engine
        whose credentials no remaining check uses (a password rotated by a reload) is closed,
        so the old secret does not stay in memory.
        """
        stores = (
            self._previous,
            self._derived,
            self._saved_derived,
            self._context_auths,
            self._missing_told,
        )
        for store in stores:
            for gone in [c for c in store if c not in check_ids]:
                del store[gone]
        if self._context is not None:
            self._context.retain(self._context_auths.values())

    def _tell_missing(
        self,
        check: Check,
        missing: list[tuple[str, str]],
        unreadable: set[str],
        ctx: ProbeContext,
    ) -> None:
        """Log the objects the agent lacks when they change, not on every poll."""
        oids = tuple(oid for oid, _ in missing)
        too_large = [(oid, name) for oid, name in missing if oid in unreadable]
        extra = {"too_large": _objects_text(too_large)} if too_large else {}
        if missing:
            ctx.log("snmp_objects_missing", count=len(missing), objects=_objects_text(missing))
        if self._missing_told.get(check.id, ()) == oids:
            return
        self._missing_told[check.id] = oids
        if missing:
            self._log.warning(
                "snmp_objects_missing",
                check=check.id,
                target=check.target,
                count=len(missing),
                objects=_objects_text(missing),
                **extra,
                hint="their metrics are absent; mark an object `required: true` in its "
                "profile to fail the poll instead",
            )
        else:
            self._log.info("snmp_objects_all_served", check=check.id, target=check.target)

    @staticmethod
    def _failed(
        failure: SnmpFailure, client: _Client | None, stats: PollStats, ctx: ProbeContext
    ) -> ProbeResult:
        """Return a failed result: the reason and the poll's own metrics, no device metrics."""
        reason = bound_text(failure.reason)
        ctx.log("snmp_failed", kind=failure.kind, reason=reason)
        return ProbeResult(success=False, error=reason, samples=tuple(_self_samples(client, stats)))


async def _resolve(host: str, port: int) -> str:
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
    return _format_target(str(ip), port)


async def _open(client: _Client, user: User | None) -> None:
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


async def _explain_silence(
    exc: _NoAnswer,
    *,
    check: Check,
    host: str,
    port: int,
    auth: SnmpAuth,
    request_timeout: float,
    deadline: float,
) -> SnmpFailure:
    """Classify a poll that got no answer, asking the agent for v3 discovery if time allows."""
    target = check.target
    if exc.refused:
        return SnmpFailure(
            "refused",
            f"agent down: {target} refused (ICMP port unreachable: nothing listens "
            "on that UDP port)",
        )
    tries = (
        f"after {exc.tries} tries of {request_timeout:.3g}s"
        if exc.tries
        else "within the check's timeout"
    )
    loop = asyncio.get_running_loop()
    remaining = deadline - loop.time()
    probe_auth = auth if auth.version == 3 and auth.security_level == "authPriv" else None
    if remaining < 0.05 or (auth.version == 3 and probe_auth is None):
        usm = None
    else:
        usm = await _usm_check(host, port, probe_auth, min(remaining, request_timeout))
    if auth.version != 3:
        if usm is not None and usm.discovered:
            return SnmpFailure(
                "wrong_community",
                f"timeout: no answer to community requests from {target} {tries}, but "
                "the agent answers SNMPv3 discovery: wrong community, or v1/v2c not allowed "
                "from this address (a wrong community looks like a timeout)",
            )
        return SnmpFailure(
            "timeout",
            f"timeout: no answer from {target} {tries} (agent down or unreachable; "
            "with SNMPv1/v2c a wrong community looks like a timeout too)",
        )
    if usm is not None and usm.report is not None:
        return SnmpFailure(*_report_reason(usm.report, auth))
    if usm is not None and usm.accepted:
        return SnmpFailure(
            "decryption_error",
            "SNMPv3 decryption error: the user authenticates but encrypted requests get no "
            f"answer: privacy password or protocol ({auth.priv_protocol}) does not match",
        )
    return SnmpFailure("timeout", f"timeout: no answer from {target} {tries}")


async def _explain_auth(host: str, port: int, auth: SnmpAuth, deadline: float) -> SnmpFailure:
    """Classify an SNMPv3 report by repeating the request in plaintext and reading the report."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining >= 0.05:
        usm = await _usm_check(host, port, auth, min(remaining, 2.0))
        if usm.report is not None:
            return SnmpFailure(*_report_reason(usm.report, auth))
        if usm.accepted and auth.security_level == "authPriv":
            return SnmpFailure(*_report_reason("1.3.6.1.6.3.15.1.1.6.0", auth))
        if usm.accepted:
            return SnmpFailure(*_report_reason("1.3.6.1.6.3.15.1.1.2.0", auth))
    return SnmpFailure("auth_failed", "SNMPv3 authentication failed (the agent sent a report)")


# --------------------------------------------------------------------------- CLI helper


async def run_profile_probe(
    target: str,
    profiles: Sequence[str],
    config: Path | None,
    auth: str,
    check_timeout: float,
) -> str:
    """Poll a target once with the named profiles; return the rendered metrics and debug log.

    Raise ValueError or ConfigErrors on bad arguments, RuntimeError when the poll fails.
    """
    from prometheus_client import CollectorRegistry

    from vigie.monitor.config import load_config
    from vigie.monitor.exposition import Exposition, check_labels, label_text, result_samples
    from vigie.probes import ProbeRegistry, default_registry
    from vigie.probes.base import ProbeLog
    from vigie.probes.http import make_session

    probe = SnmpProbe()
    section = SnmpSection()
    config_dir = Path(".")
    if config is not None:
        registry = default_registry()
        if "snmp" not in registry.kinds():
            registry = ProbeRegistry([*registry, probe])
        loaded = load_config(config, registry)
        section = getattr(loaded.config, "snmp")  # noqa: B009 - a field of the dynamic model
        config_dir = config.parent
    settings = probe.bind(SnmpSettings(auth=auth, profiles=list(profiles)), section, config_dir)
    parsed = probe.parse_target(target)
    check = Check(
        id="profile-probe",
        kind="snmp",
        target=parsed,
        interval=check_timeout,
        timeout=check_timeout,
        settings=settings,
        host=probe.host_of(parsed),
    )
    log = ProbeLog(structlog.get_logger())
    async with make_session() as session:
        result = await probe(check, ProbeContext(session=session, log=log))
    exp = Exposition(CollectorRegistry())
    lines = [f"# log: {line}" for line in log.lines]
    text = exp.render_text(
        exp.render_samples(label_text(check_labels(check)), result_samples(result))
    )
    if not result.success:
        raise RuntimeError(f"{result.error}\n" + "\n".join(lines))
    return "\n".join(lines) + ("\n" if lines else "") + text
