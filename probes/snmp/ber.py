"""A minimal BER codec: enough to build and read the plain SNMPv3 messages of the USM check.

gufo-snmp and pysnmp do the real polling; this encodes a GET of sysUpTime.0 and reads the
parts of a reply that say why an agent refuses a user (probes/snmp/usm.py), and is what the
lab agent and the tests build raw datagrams with.
"""

from __future__ import annotations

__all__ = [
    "ber_decode_int",
    "ber_decode_oid",
    "ber_int",
    "ber_items",
    "ber_oid",
    "ber_seq",
    "ber_tlv",
]


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
