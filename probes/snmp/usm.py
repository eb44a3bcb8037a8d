"""The USM check: ask an agent in plaintext, by hand, what gufo-snmp and pysnmp do not say.

gufo-snmp hides USM reports behind one SnmpAuthError and drops error-status, so on a failure
the probe asks the agent once more with a small hand-built message (`usm_check`) to say *why*:
unknown user, wrong digest, decryption error, not in time window, or an agent that answers
SNMP but not this community. Privacy is never used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
import time
from dataclasses import dataclass

from vigie.probes.snmp.auth import AUTH_KEYS, AUTH_MACS, SnmpAuth
from vigie.probes.snmp.ber import (
    ber_decode_int,
    ber_decode_oid,
    ber_int,
    ber_items,
    ber_oid,
    ber_seq,
    ber_tlv,
)

__all__ = ["UsmCheck", "V3Reply", "parse_v3", "usm_check", "v3_sender"]


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
class V3Reply:
    """The parts of an SNMPv3 reply the USM check reads."""

    msg_id: int
    engine: tuple[bytes, int, int]
    pdu_tag: int | None
    first_oid: str | None


def parse_v3(data: bytes) -> V3Reply:
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
        return V3Reply(msg_id, engine, None, None)  # encrypted: nothing more to read
    pdu_tag, pdu_body = ber_items(top[3][1])[2]
    varbinds = ber_items(ber_items(pdu_body)[3][1])
    oid = ber_decode_oid(ber_items(varbinds[0][1])[0][1]) if varbinds else None
    return V3Reply(msg_id, engine, pdu_tag, oid)


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
) -> V3Reply | None:
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
                        reply = parse_v3(data)
                        if reply.msg_id == msg_id:
                            return reply
        except (TimeoutError, OSError):
            return None


async def usm_check(
    host: str, port: int, auth: SnmpAuth | None, wait: float, context: bytes = b""
) -> UsmCheck:
    """Discover the agent's engine; with a v3 auth, send one plaintext request and read the answer.

    Privacy is never used here, so an authPriv user is checked at authNoPriv: a Response (even
    authorizationError) or an unsupported-level report proves the user and auth key are right.
    The request names `context`, so an agent that knows no such context says so (or drops it).
    """
    end = time.monotonic() + wait
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
    digest, mac_len = AUTH_MACS[auth.auth_protocol]
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
    reply = await _udp_exchange(host, port, message, msg_id, max(0.05, end - time.monotonic()))
    if reply is None:
        return UsmCheck(discovered=True)
    if reply.pdu_tag == 0xA8:
        return UsmCheck(discovered=True, report=reply.first_oid)
    return UsmCheck(discovered=True, accepted=reply.pdu_tag == 0xA2)
