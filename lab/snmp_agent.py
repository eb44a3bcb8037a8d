"""A small SNMP v1/v2c agent on one UDP port serving many simulated devices, one per community.

As snmpsim does, the community picks the device. Each device starts from a recorded
`.snmprec` file (OID|TYPE|VALUE) and scenarios override values at run time. GET, GETNEXT and
GETBULK are served; SET and SNMPv3 are not (the lab needs none). A request is untrusted input:
anything undecodable is dropped and counted, never raised.
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from vigie.probes.snmp.ber import (
    ber_decode_int,
    ber_decode_oid,
    ber_int,
    ber_items,
    ber_oid,
    ber_seq,
    ber_tlv,
)

Oid = tuple[int, ...]
Value = int | str | bytes
"""An SNMP value: integers (all integer types), text, raw octets, or an OID as text."""

# snmprec type tags (also the BER tags) the agent serves.
INTEGER, OCTET_STRING, NULL, OBJECT_ID = 0x02, 0x04, 0x05, 0x06
IP_ADDRESS, COUNTER32, GAUGE32, TIMETICKS, COUNTER64 = 0x40, 0x41, 0x42, 0x43, 0x46
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 0x80, 0x81, 0x82
GET, GETNEXT, RESPONSE, GETBULK = 0xA0, 0xA1, 0xA2, 0xA5
SNMP_V1, SNMP_V2C = 0, 1
NO_SUCH_NAME, GEN_ERR = 2, 5

MAX_VARBINDS = 512
"""Most varbinds one response carries: bounds the work a GETBULK can ask for."""
MAX_REQUEST = 4096
"""Larger datagrams are dropped unread."""


def parse_oid(text: str) -> Oid:
    """Parse a dotted OID ('.1.3.6' or '1.3.6') into a tuple; ValueError when malformed."""
    parts = text.strip().strip(".").split(".")
    if len(parts) < 2:
        raise ValueError(f"OID too short: {text!r}")
    return tuple(int(p) for p in parts)


def dotted(oid: Oid) -> str:
    """Return an OID as dotted text."""
    return ".".join(map(str, oid))


def read_snmprec(path: Path) -> dict[Oid, tuple[int, Value]]:
    """Read an snmpsim recording: OID|TYPE|VALUE lines ('4x' is hex-encoded octets)."""
    values: dict[Oid, tuple[int, Value]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            oid_text, tag_text, raw = line.split("|", 2)
            hexed = tag_text.endswith("x")
            tag = int(tag_text.rstrip("x"))
            value: Value
            if tag == OCTET_STRING:
                value = bytes.fromhex(raw) if hexed else raw
            elif tag in (OBJECT_ID, IP_ADDRESS):
                value = raw
            else:
                value = int(raw)
            values[parse_oid(oid_text)] = (tag, value)
        except ValueError as exc:
            raise ValueError(f"{path.name}:{number}: {exc}") from None
    return values


def encode_value(tag: int, value: Value) -> bytes:
    """Encode one value with its BER tag."""
    if tag == OCTET_STRING:
        return ber_tlv(tag, value.encode() if isinstance(value, str) else bytes(value))
    if tag == OBJECT_ID:
        return ber_oid(str(value))
    if tag == IP_ADDRESS:
        return ber_tlv(tag, ipaddress.IPv4Address(str(value)).packed)
    if tag == NULL:
        return ber_tlv(tag, b"")
    return ber_int(int(value), tag=tag)


@dataclass
class Device:
    """One simulated device: its recorded values, with overrides set by scenarios."""

    name: str
    community: str
    base: dict[Oid, tuple[int, Value]]
    answering: bool = True
    overrides: dict[Oid, tuple[int, Value]] = field(default_factory=dict)
    _keys: list[Oid] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        self._keys = sorted({*self.base, *self.overrides})

    def set(self, oid: str, value: Value, tag: int | None = None) -> None:
        """Override one OID's value (its recorded type is kept unless tag is given)."""
        key = parse_oid(oid)
        known = self.overrides.get(key) or self.base.get(key)
        if tag is None:
            if known is None:
                raise KeyError(f"{self.name}: {oid} has no recorded type; give tag=")
            tag = known[0]
        new = key not in self.base and key not in self.overrides
        self.overrides[key] = (tag, value)
        if new:
            self._reindex()

    def update(self, values: Mapping[str, Value]) -> None:
        """Override several OIDs at once."""
        for oid, value in values.items():
            self.set(oid, value)

    def reset(self) -> None:
        """Drop every override: back to the recording, answering."""
        self.overrides.clear()
        self.answering = True
        self._reindex()

    def get(self, oid: Oid) -> tuple[int, Value] | None:
        """Return the value at exactly this OID."""
        return self.overrides.get(oid) or self.base.get(oid)

    def value(self, oid: str) -> Value | None:
        """Return the current value at a dotted OID, if any."""
        found = self.get(parse_oid(oid))
        return None if found is None else found[1]

    def next_after(self, oid: Oid) -> Oid | None:
        """Return the first OID strictly after this one (GETNEXT order)."""
        pos = bisect.bisect_right(self._keys, oid)
        return self._keys[pos] if pos < len(self._keys) else None

    def has_prefix(self, oid: Oid) -> bool:
        """Return whether some OID lies under this one's parent (noSuchInstance vs Object)."""
        parent = oid[:-1]
        nxt = self.next_after(parent)
        return nxt is not None and nxt[: len(parent)] == parent


@dataclass
class AgentStats:
    """What the agent saw: requests served, datagrams dropped and why."""

    requests: int = 0
    dropped_malformed: int = 0
    dropped_unknown_community: int = 0
    dropped_silent: int = 0


class SnmpAgent(asyncio.DatagramProtocol):
    """Answers v1/v2c GET, GETNEXT and GETBULK for the device named by the community."""

    def __init__(self, devices: Iterable[Device]) -> None:
        self.devices: dict[bytes, Device] = {d.community.encode(): d for d in devices}
        self.stats = AgentStats()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer with."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Answer one request; drop what cannot be decoded."""
        if len(data) > MAX_REQUEST:
            self.stats.dropped_malformed += 1
            return
        try:
            reply = self.answer(data)
        except (ValueError, IndexError, UnicodeError):
            self.stats.dropped_malformed += 1
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def answer(self, data: bytes) -> bytes | None:
        """Return the response to one request message, or None to stay silent."""
        (outer_tag, outer), *_ = ber_items(data)
        if outer_tag != 0x30:
            raise ValueError("not a SEQUENCE")
        (_, version_raw), (community_tag, community), (pdu_tag, pdu) = ber_items(outer)[:3]
        version = ber_decode_int(version_raw)
        if version not in (SNMP_V1, SNMP_V2C) or community_tag != OCTET_STRING:
            raise ValueError("unsupported version")
        device = self.devices.get(community)
        if device is None:
            self.stats.dropped_unknown_community += 1
            return None  # as real agents: a wrong community gets silence
        if not device.answering:
            self.stats.dropped_silent += 1
            return None
        (_, request_id), (_, field1), (_, field2), (_, binds_raw) = ber_items(pdu)[:4]
        oids = [parse_oid(ber_decode_oid(ber_items(b)[0][1])) for _, b in ber_items(binds_raw)]
        if pdu_tag == GET:
            binds, error = self._get(device, oids, version)
        elif pdu_tag == GETNEXT:
            binds, error = self._getnext(device, oids, version)
        elif pdu_tag == GETBULK and version == SNMP_V2C:
            binds = self._getbulk(device, oids, ber_decode_int(field1), ber_decode_int(field2))
            error = (0, 0)
        else:
            return None
        self.stats.requests += 1
        return ber_seq(
            ber_int(version),
            ber_tlv(OCTET_STRING, community),
            ber_seq(
                ber_tlv(INTEGER, request_id),
                ber_int(error[0]),
                ber_int(error[1]),
                ber_seq(*binds) if not error[0] else binds_raw_echo(binds_raw),
                tag=RESPONSE,
            ),
        )

    def _get(
        self, device: Device, oids: list[Oid], version: int
    ) -> tuple[list[bytes], tuple[int, int]]:
        binds = []
        for index, oid in enumerate(oids[:MAX_VARBINDS], 1):
            found = device.get(oid)
            if found is None:
                if version == SNMP_V1:
                    return [], (NO_SUCH_NAME, index)
                tag = NO_SUCH_INSTANCE if device.has_prefix(oid) else NO_SUCH_OBJECT
                binds.append(ber_seq(ber_oid(dotted(oid)), ber_tlv(tag, b"")))
            else:
                binds.append(ber_seq(ber_oid(dotted(oid)), encode_value(*found)))
        return binds, (0, 0)

    def _getnext(
        self, device: Device, oids: list[Oid], version: int
    ) -> tuple[list[bytes], tuple[int, int]]:
        binds = []
        for index, oid in enumerate(oids[:MAX_VARBINDS], 1):
            bind = self._next_bind(device, oid)
            if bind is None:
                if version == SNMP_V1:
                    return [], (NO_SUCH_NAME, index)
                bind = ber_seq(ber_oid(dotted(oid)), ber_tlv(END_OF_MIB_VIEW, b""))
            binds.append(bind)
        return binds, (0, 0)

    def _next_bind(self, device: Device, oid: Oid) -> bytes | None:
        nxt = device.next_after(oid)
        if nxt is None:
            return None
        found = device.get(nxt)
        assert found is not None
        return ber_seq(ber_oid(dotted(nxt)), encode_value(*found))

    def _getbulk(
        self, device: Device, oids: list[Oid], non_repeaters: int, max_repetitions: int
    ) -> list[bytes]:
        """RFC 3416 GETBULK: one GETNEXT for the first N, then rows of the others."""
        non_repeaters = max(0, min(non_repeaters, len(oids)))
        max_repetitions = max(0, max_repetitions)
        binds: list[bytes] = []

        def end(oid: Oid) -> bytes:
            return ber_seq(ber_oid(dotted(oid)), ber_tlv(END_OF_MIB_VIEW, b""))

        for oid in oids[:non_repeaters]:
            binds.append(self._next_bind(device, oid) or end(oid))
        cursors = list(oids[non_repeaters:])
        for _ in range(max_repetitions):
            if not cursors or len(binds) + len(cursors) > MAX_VARBINDS:
                break
            done = True
            for i, oid in enumerate(cursors):
                nxt = device.next_after(oid)
                if nxt is None:
                    binds.append(end(oid))
                    continue
                done = False
                found = device.get(nxt)
                assert found is not None
                binds.append(ber_seq(ber_oid(dotted(nxt)), encode_value(*found)))
                cursors[i] = nxt
            if done:
                break
        return binds


def binds_raw_echo(binds_raw: bytes) -> bytes:
    """Return the request's varbind list unchanged (an SNMPv1 error response echoes it)."""
    return ber_tlv(0x30, binds_raw)


async def start_agent(
    devices: Iterable[Device], host: str = "127.0.0.1", port: int = 0
) -> tuple[asyncio.DatagramTransport, SnmpAgent]:
    """Bind the agent on host:port (0: a free port) and return its transport and protocol."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: SnmpAgent(devices), local_addr=(host, port)
    )
    return transport, protocol
