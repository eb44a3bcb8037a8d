"""SNMP's side of the trap receiver: screen a datagram by its BER header, decode it with pysnmp.

The daemon's receiver (vigie.monitor.traps) reads datagrams, bounds their size and rate,
and hands each to this decoder (a TrapDecoder of vigie.probes.traps). `screen` parses the
BER header only (version, community or msgUserName, PDU type), at a cost that does not
depend on the content, and refuses unknown credentials. What passes is decoded by pysnmp 7
on the receiver's decoding thread: community and USM checks, v1 -> v2 conversion
(RFC 3584), INFORM acknowledgements. pysnmp's own counters (snmpInASNParseErrs,
snmpInBadCommunityNames, usmStats*) are read around each datagram to say why it dropped one.

v3 TRAPs are authenticated with the sender's engine ID (`traps.engine_ids`), INFORMs with
the receiver's own (`traps.engine_id`, generated when not set).
"""

from __future__ import annotations

import contextlib
import hmac
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pysnmp.carrier.asyncio.dgram import udp, udp6  # type: ignore[import-untyped]
from pysnmp.entity import config as snmp_config  # type: ignore[import-untyped]
from pysnmp.entity import engine as snmp_engine
from pysnmp.entity.rfc3413 import ntfrcv  # type: ignore[import-untyped]
from pysnmp.proto import rfc1902  # type: ignore[import-untyped]

from vigie.core.results import bound_text
from vigie.probes.base import Check
from vigie.probes.snmp.auth import SnmpAuth, pysnmp_usm
from vigie.probes.snmp.settings import SnmpCheckSettings, SnmpSection
from vigie.probes.traps import (
    TrapNotification,
    TrapOptions,
    TrapRefusal,
    normalise_ip,
)

__all__ = [
    "DISCOVERY_MAX_BYTES",
    "SNMP_TRAP_ADDRESS",
    "SNMP_TRAP_OID",
    "SnmpTrapDecoder",
    "TrapHeader",
    "peek_header",
]

SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
SNMP_TRAP_ADDRESS = "1.3.6.1.6.3.18.1.3.0"
DISCOVERY_MAX_BYTES = 512
"""An SNMPv3 message with an empty user is an engine ID discovery: small, or it is dropped."""
# The PDU types a notification receiver accepts: v1 Trap; v2 SNMPv2-Trap and InformRequest.
_NOTIFICATION_PDUS = {0: frozenset({0xA4}), 1: frozenset({0xA6, 0xA7})}

# pysnmp's own counters, read around each datagram to say why it was dropped.
_MALFORMED_COUNTERS = (
    ("__SNMPv2-MIB", "snmpInASNParseErrs"),
    ("__SNMPv2-MIB", "snmpInBadVersions"),
    ("__SNMP-MPD-MIB", "snmpInvalidMsgs"),
    ("__SNMP-MPD-MIB", "snmpUnknownSecurityModels"),
)
_AUTH_COUNTERS = (
    ("__SNMPv2-MIB", "snmpInBadCommunityNames"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsUnknownUserNames"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsWrongDigests"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsDecryptionErrors"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsNotInTimeWindows"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsUnsupportedSecLevels"),
)


@dataclass(slots=True)
class _Registered:
    """USM and community entries added to the engine, to remove them on reload."""

    communities: list[str] = field(default_factory=list)
    users: list[tuple[str, Any]] = field(default_factory=list)


def _engine_id(text: str) -> Any:
    """Return a pysnmp OctetString of a hex engine ID (validated by the config)."""
    return rfc1902.OctetString(hexValue=text.lower().removeprefix("0x"))


# --------------------------------------------------------------------------- BER header


@dataclass(frozen=True, slots=True)
class TrapHeader:
    """What an SNMP message says before its varbinds: enough to refuse it cheaply."""

    version: int
    """0 for SNMPv1, 1 for SNMPv2c, 3 for SNMPv3."""
    community: bytes = b""
    pdu: int = 0
    """v1/v2c: the PDU's tag (0xA4 Trap, 0xA6 InformRequest, 0xA7 SNMPv2-Trap...)."""
    engine_id: bytes = b""
    """v3: msgAuthoritativeEngineID."""
    user: bytes = b""
    """v3: msgUserName."""


def _tlv(data: bytes | memoryview, pos: int, end: int, want: int, what: str) -> tuple[int, int]:
    """Return the (start, stop) of the body of the TLV at pos, which must have tag `want`."""
    if pos + 2 > end:
        raise ValueError(f"truncated before {what}")
    tag, size = data[pos], data[pos + 1]
    if tag != want:
        raise ValueError(f"{what}: tag 0x{tag:02x}, expected 0x{want:02x}")
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4 or pos + count > end:  # indefinite length is not SNMP's BER
            raise ValueError(f"{what}: bad length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + size > end:
        raise ValueError(f"{what}: longer than the datagram")
    return pos, pos + size


def _small_int(data: bytes | memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """Return an INTEGER of at most 4 octets at pos, and the position after it."""
    start, stop = _tlv(data, pos, end, 0x02, what)
    if not 1 <= stop - start <= 4:
        raise ValueError(f"{what}: bad integer")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def peek_header(data: bytes | memoryview) -> TrapHeader:
    """Parse an SNMP message's header only: version, then community and PDU type (v1/v2c) or
    authoritative engine ID and user name (v3). Costs the same whatever the varbinds hold.

    Raises ValueError, naming the field, for anything that is not one SNMP message.
    """
    start, stop = _tlv(data, 0, len(data), 0x30, "message")
    if stop != len(data):
        raise ValueError("trailing bytes after the message")
    version, pos = _small_int(data, start, stop, "version")
    if version in (0, 1):
        cstart, pos = _tlv(data, pos, stop, 0x04, "community")
        if pos >= stop:
            raise ValueError("truncated before the PDU")
        return TrapHeader(version, community=bytes(data[cstart:pos]), pdu=data[pos])
    if version != 3:
        raise ValueError(f"SNMP version {version}")
    _, pos = _tlv(data, pos, stop, 0x30, "msgGlobalData")
    sstart, sstop = _tlv(data, pos, stop, 0x04, "msgSecurityParameters")
    ustart, ustop = _tlv(data, sstart, sstop, 0x30, "UsmSecurityParameters")
    estart, estop = _tlv(data, ustart, ustop, 0x04, "msgAuthoritativeEngineID")
    _, pos = _small_int(data, estop, ustop, "msgAuthoritativeEngineBoots")
    _, pos = _small_int(data, pos, ustop, "msgAuthoritativeEngineTime")
    nstart, nstop = _tlv(data, pos, ustop, 0x04, "msgUserName")
    return TrapHeader(3, engine_id=bytes(data[estart:estop]), user=bytes(data[nstart:nstop]))


class _Transport(udp.UdpAsyncioTransport):  # type: ignore[misc]
    """pysnmp's UDP transport over the receiver's socket: the receiver reads, pysnmp only
    sends (INFORM acknowledgements), straight on the non-blocking socket."""

    sock: socket.socket

    def open_server_mode(self, iface: Any = None, sock: Any = None) -> _Transport:
        """Use the receiver's socket; no asyncio endpoint (the receiver reads it)."""
        self.sock = sock
        return self

    def send_message(self, outgoingMessage: bytes, transportAddress: Any) -> None:
        """Send one message; a full socket buffer loses it (an INFORM sender retries)."""
        with contextlib.suppress(OSError):
            self.sock.sendto(outgoingMessage, tuple(transportAddress))


class _Transport6(_Transport):
    """The same over UDP/IPv6."""

    SOCK_FAMILY = socket.AF_INET6
    ADDRESS_TYPE = udp6.Udp6TransportAddress


class SnmpTrapDecoder:
    """Screen SNMP notifications by their header, decode and authenticate them with pysnmp.

    pysnmp is not thread-safe: everything touching its engine (open, configure, decode,
    close) runs on the receiver's decoding thread; `screen` reads only what configure set.
    """

    def __init__(self) -> None:
        self.engine_id = ""
        self._options: TrapOptions | None = None
        self._communities: tuple[bytes, ...] = ()
        self._users: frozenset[bytes] = frozenset()
        # Touched on the decoding thread only:
        self._engine: Any = None
        self._receiver: Any = None
        self._transport: Any = None
        self._registered = _Registered()
        self._source: str | None = None
        self._outcome: TrapNotification | TrapRefusal | None = None

    # ------------------------------------------------------------------ screening (loop)

    def screen(self, data: memoryview) -> TrapRefusal | None:
        """Refuse a datagram that is no SNMP notification or comes with unknown credentials."""
        try:
            header = peek_header(data)
        except ValueError as exc:
            return TrapRefusal("malformed", {"error": bound_text(str(exc))})
        if header.version == 3:
            if header.user not in self._users and (header.user or len(data) > DISCOVERY_MAX_BYTES):
                return TrapRefusal("user", self._v3_fields(header))
        elif not any(hmac.compare_digest(header.community, c) for c in self._communities):
            return TrapRefusal("community")
        elif header.pdu not in _NOTIFICATION_PDUS[header.version]:
            return TrapRefusal(
                "malformed", {"error": f"not a notification PDU (0x{header.pdu:02x})"}
            )
        return None

    def _v3_fields(self, header: TrapHeader) -> dict[str, str]:
        """Say which engine ID and user a refused SNMPv3 notification came with.

        A v3 TRAP is authenticated with its sender's engine ID, which the receiver must know:
        the commonest cause of a refused v3 trap is an engine ID missing from traps.engine_ids.
        """
        engine_id = bound_text(header.engine_id.hex(), 64)
        user = bound_text(header.user.decode(errors="replace"), 64)
        fields = {"engine_id": engine_id, "user": user}
        engine_ids = self._options.engine_ids if self._options is not None else ()
        known = {e.lower().removeprefix("0x") for e in engine_ids}
        if engine_id and engine_id not in known and engine_id != self.engine_id:
            fields["hint"] = (
                f"engine ID {engine_id} is not in traps.engine_ids: add it if this sender "
                "is trusted (or have it send INFORMs)"
            )
        return fields

    # ------------------------------------------------------------------ engine (thread)

    def open(self, sock: socket.socket, family: int, options: TrapOptions) -> str:
        """Create pysnmp's engine over the receiver's socket; return its engine ID in hex."""
        self._options = options
        engine_id = _engine_id(options.engine_id) if options.engine_id is not None else None
        self._engine = snmp_engine.SnmpEngine(snmpEngineID=engine_id)
        transport = _Transport6() if family == socket.AF_INET6 else _Transport()
        domain = udp6.DOMAIN_NAME if family == socket.AF_INET6 else udp.DOMAIN_NAME
        snmp_config.add_transport(self._engine, domain, transport.open_server_mode(sock=sock))
        self._transport = transport
        self._receiver = ntfrcv.NotificationReceiver(self._engine, self._on_notification)
        self.engine_id = str(self._engine.snmpEngineID.asOctets().hex())
        return self.engine_id

    def configure(
        self, plan: Mapping[str, Check], section: BaseModel | None, options: TrapOptions
    ) -> None:
        """Register the credentials accepted on traps: those of traps.auths, else the checks'."""
        self._options = options
        auths = section.all_auths() if isinstance(section, SnmpSection) else {}
        accepted: dict[str, SnmpAuth] = {}
        if options.auths:
            accepted = {name: auths[name] for name in options.auths if name in auths}
        else:
            for check in plan.values():
                if isinstance(check.settings, SnmpCheckSettings):
                    accepted[check.settings.auth] = check.settings.resolved_auth
        if self._engine is not None:
            self._register(accepted)
        self._communities = tuple(
            a.community.get_secret_value().encode()
            for a in accepted.values()
            if a.version != 3 and a.community is not None
        )
        self._users = frozenset(
            (a.username or "").encode() for a in accepted.values() if a.version == 3
        )

    def _register(self, auths: Mapping[str, SnmpAuth]) -> None:
        """Replace the engine's communities and USM users."""
        engine = self._engine
        for index in self._registered.communities:
            snmp_config.delete_v1_system(engine, index)
        for user, engine_id in self._registered.users:
            snmp_config.delete_v3_user(engine, user, securityEngineId=engine_id)
        registered = _Registered()
        # v3 traps are authenticated with the sender's engine ID; INFORMs with ours.
        engine_ids = self._options.engine_ids if self._options is not None else ()
        for name, auth in sorted(auths.items()):
            if auth.version != 3:
                assert auth.community is not None  # checked by SnmpAuth
                index = f"vigie-{name}"
                snmp_config.add_v1_system(engine, index, auth.community.get_secret_value())
                registered.communities.append(index)
                continue
            auth_proto, auth_key, priv_proto, priv_key = pysnmp_usm(auth)
            for engine_id in [None, *(_engine_id(e) for e in engine_ids)]:
                snmp_config.add_v3_user(
                    engine,
                    auth.username,
                    auth_proto,
                    auth_key,
                    priv_proto,
                    priv_key,
                    securityEngineId=engine_id,
                )
                registered.users.append((auth.username or "", engine_id))
        self._registered = registered

    def close(self) -> None:
        """Close pysnmp's receiver and dispatcher."""
        if self._receiver is not None:
            self._receiver.close(self._engine)
            self._receiver = None
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None
        self._transport = None

    def _counters(self, names: Iterable[tuple[str, str]]) -> int:
        """Return the sum of some of pysnmp's own counters."""
        builder = self._engine.get_mib_builder()
        total = 0
        for module, name in names:
            with contextlib.suppress(Exception):  # a counter missing from this pysnmp
                (symbol,) = builder.import_symbols(module, name)
                total += int(symbol.syntax)
        return total

    # ------------------------------------------------------------------ decoding (thread)

    def decode(
        self, address: tuple[Any, ...], data: bytes
    ) -> TrapNotification | TrapRefusal | None:
        """Let pysnmp process one screened datagram; say what it held or why it was dropped."""
        if self._engine is None or self._transport is None:
            return None
        header = peek_header(data)  # screened: it parses
        self._source, self._outcome = normalise_ip(str(address[0])), None
        malformed = self._counters(_MALFORMED_COUNTERS)
        auth_failed = self._counters(_AUTH_COUNTERS)
        try:
            self._transport._callback_function(self._transport, address, data)
        except Exception as exc:  # anything a datagram triggers in pysnmp: drop, never raise
            return TrapRefusal("malformed", {"error": bound_text(type(exc).__name__)})
        finally:
            self._source = None
        outcome, self._outcome = self._outcome, None
        if outcome is not None:
            return outcome
        if self._counters(_MALFORMED_COUNTERS) > malformed:
            return TrapRefusal("malformed")
        if self._counters(_AUTH_COUNTERS) > auth_failed:
            if header.version == 3:
                return TrapRefusal("user", self._v3_fields(header))
            return TrapRefusal("community")
        if header.version != 3 or header.user:  # not an engine ID discovery
            # pysnmp dropped it without a word: still counted, so every datagram is.
            return TrapRefusal("malformed", {"error": "dropped by the SNMP engine"})
        return None

    def _on_notification(self, *args: Any) -> None:
        """Take one authenticated notification (an INFORM is acked already): its trap OID
        and the addresses to match it by (a v1 agent-addr first, then the source).

        pysnmp calls it with (engine, state reference, context engine ID, context name,
        varbinds, callback context).
        """
        varbinds = args[4]
        source = self._source or "?"
        try:
            values = {str(oid): value for oid, value in varbinds}
            trap_oid = str(values.get(SNMP_TRAP_OID, "")).removeprefix(".")
            candidates = []
            agent = values.get(SNMP_TRAP_ADDRESS)
            if agent is not None:
                with contextlib.suppress(Exception):  # a malformed agent-addr: use the source
                    candidates.append(normalise_ip(agent.prettyPrint()))
            candidates.append(source)
        except Exception as exc:  # a device's notification never crashes the daemon
            error = bound_text(f"{type(exc).__name__}: {exc}")
            self._outcome = TrapRefusal("malformed", {"error": error})
            return
        self._outcome = TrapNotification(trap_oid, tuple(candidates))
