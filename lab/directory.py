"""The lab's directory (Active Directory style): its DNS zone and its LDAP service.

Both run on the domain controllers, as AD-integrated DNS does. The DNS responder answers A
records of the lab's names in the `chu.lab` zone over UDP and TCP (dnspython's message API),
NXDOMAIN for an unknown name of the zone and REFUSED outside it (no recursion). The LDAP
responder speaks the few BER messages a check needs (RFC 4511): a simple or anonymous bind,
one search over a handful of entries, unbind. Faults come from the lab: a fault string per
protocol ("" when healthy): SERVFAIL, REFUSED or silent for DNS; unavailable, busy or closed
for LDAP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from vigie.probes.ldap import BerError, LdapMessage, read_message

__all__ = [
    "ADDRESSES",
    "DNS_FAULTS",
    "LDAP_ENTRIES",
    "LDAP_FAULTS",
    "SERVICE_DN",
    "ZONE",
    "DnsResponder",
    "LdapResponder",
    "dns_answer",
]

ZONE = dns.name.from_text("chu.lab.")
ADDRESSES = {  # the lab's names (in ZONE) -> their IPv4 address in the hospital's plan
    "srv-dpi": "10.20.1.11",
    "srv-labo": "10.20.2.12",
    "srv-rdv": "10.20.1.13",
    "srv-pacs": "10.20.2.14",
    "srv-mail-1": "10.20.2.15",
    "srv-ad-1": "10.20.1.16",
    "srv-mail-2": "10.30.1.21",
    "srv-intranet": "10.30.1.22",
    "srv-ad-2": "10.30.1.23",
    "dpi": "10.20.1.11",
    "labo": "10.20.2.12",
    "rdv": "10.20.1.13",
    "pacs": "10.20.2.14",
    "mail": "10.20.2.15",
    "intranet": "10.30.1.22",
    "ad": "10.20.1.16",
    "ldap": "10.20.1.16",
}
TTL = 300
DNS_FAULTS = ("SERVFAIL", "REFUSED", "silent")
"""What the DNS does when faulted: answer SERVFAIL or REFUSED to everything, or nothing."""
LDAP_RESULTS = {"unavailable": 52, "busy": 51}
LDAP_FAULTS = (*LDAP_RESULTS, "closed")
"""What the LDAP service does when faulted: a bind answered with that result code, or the
connection closed before any answer (closed)."""
MAX_TCP_DNS = 4096
"""Bytes of a DNS query over TCP read before the connection is dropped (a query is small)."""
MAX_LDAP_MESSAGE = 64 * 1024
IDLE_SECONDS = 30.0

State = Callable[[], str]
"""Returns the protocol's fault, "" when healthy."""


# --------------------------------------------------------------------------- DNS


def dns_answer(wire: bytes, fault: str) -> bytes | None:
    """Return the wire answer to a query, or None to stay silent (garbage, or faulted so)."""
    if fault == "silent":
        return None
    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return None  # not a DNS message: a real server drops it too
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.flags &= ~dns.flags.RA
    if fault:
        response.flags &= ~dns.flags.AA
        response.set_rcode(dns.rcode.from_text(fault))
        return response.to_wire()
    for question in query.question[:1]:
        name = question.name.canonicalize()
        if not name.is_subdomain(ZONE):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            break
        address = ADDRESSES.get(name.relativize(ZONE).to_text().lower())
        if address is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A and question.rdclass == dns.rdataclass.IN:
            response.answer.append(
                dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, address)
            )
        # any other type of a known name: NOERROR, no answer (NODATA)
    return response.to_wire()


class _DnsDatagram(asyncio.DatagramProtocol):
    """The UDP side: one answer per datagram."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer on."""
        self._transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """Answer the query unless faulted silent."""
        answer = dns_answer(data, self._state())
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)


class DnsResponder:
    """The zone served over UDP and TCP on one port number."""

    def __init__(self, state: State, host: str = "127.0.0.1") -> None:
        """Prepare the responder; start() binds it."""
        self.host = host
        self.port = 0
        self._state = state
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self, port: int = 0) -> None:
        """Bind UDP (a free port unless given), then TCP on the same number (retrying)."""
        loop = asyncio.get_running_loop()
        for _ in range(20):  # the free UDP port may be taken for TCP: pick another
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _DnsDatagram(self._state), local_addr=(self.host, port)
            )
            bound = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._tcp_session, self.host, bound)
            except OSError:
                udp.close()
                if port:
                    raise
                continue
            self._udp, self.port = udp, bound
            return
        raise OSError("no port free for both UDP and TCP")

    async def stop(self) -> None:
        """Close both sockets."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _tcp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer length-prefixed queries until the client closes (RFC 7766)."""
        try:
            while True:
                async with asyncio.timeout(IDLE_SECONDS):
                    head = await reader.readexactly(2)
                    size = int.from_bytes(head, "big")
                    if size > MAX_TCP_DNS:
                        break
                    query = await reader.readexactly(size)
                answer = dns_answer(query, self._state())
                if answer is None:
                    continue  # silent: the client times out
                writer.write(len(answer).to_bytes(2, "big") + answer)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


# --------------------------------------------------------------------------- LDAP

SERVICE_DN = "cn=vigie,ou=services,dc=chu,dc=lab"
"""The monitoring service account the demo's ldap check binds as."""
LDAP_ENTRIES: dict[str, dict[str, tuple[str, ...]]] = {
    "dc=chu,dc=lab": {"objectClass": ("top", "domain"), "dc": ("chu",)},
    "ou=services,dc=chu,dc=lab": {"objectClass": ("organizationalUnit",), "ou": ("services",)},
    SERVICE_DN: {"objectClass": ("person", "user"), "cn": ("vigie",)},
    "ou=utilisateurs,dc=chu,dc=lab": {
        "objectClass": ("organizationalUnit",),
        "ou": ("utilisateurs",),
    },
    "cn=Claire Martin,ou=utilisateurs,dc=chu,dc=lab": {
        "objectClass": ("person", "user"),
        "cn": ("Claire Martin",),
        "sAMAccountName": ("cmartin",),
    },
    "cn=Hugo Durand,ou=utilisateurs,dc=chu,dc=lab": {
        "objectClass": ("person", "user"),
        "cn": ("Hugo Durand",),
        "sAMAccountName": ("hdurand",),
    },
}

_BIND_REQUEST, _BIND_RESPONSE = 0x60, 0x61
_UNBIND_REQUEST = 0x42
_SEARCH_REQUEST, _SEARCH_ENTRY, _SEARCH_DONE = 0x63, 0x64, 0x65
_EXTENDED_REQUEST, _EXTENDED_RESPONSE = 0x77, 0x78


def _tlv(tag: int, content: bytes) -> bytes:
    """Return one BER element (definite length)."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(body)]) + body + content


def _int(value: int, tag: int = 0x02) -> bytes:
    """Return a BER INTEGER (ENUMERATED with tag 0x0a)."""
    return _tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def _result(message_id: int, op: int, code: int, diagnostic: str = "") -> bytes:
    """Return an LDAPMessage carrying an LDAPResult."""
    body = _int(code, 0x0A) + _tlv(0x04, b"") + _tlv(0x04, diagnostic.encode())
    return _tlv(0x30, _int(message_id) + _tlv(op, body))


def _split(data: bytes) -> list[tuple[int, bytes]]:
    """Split BER elements (tag, content); raise BerError if one overruns."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise BerError("truncated element")
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length >= 0x80:
            count = length & 0x7F
            if not 0 < count <= 4 or pos + count > len(data):
                raise BerError("bad length")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise BerError("element overruns its container")
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def _norm(dn: str) -> str:
    """Return a DN compared loosely: lower case, no spaces around separators."""
    return ",".join("=".join(p.strip() for p in rdn.split("=")) for rdn in dn.lower().split(","))


def _matches(attributes: dict[str, tuple[str, ...]], tag: int, content: bytes) -> bool:
    """Whether an entry matches a filter: equality and presence are honoured, others match."""
    if tag == 0x87:  # present
        return content.decode(errors="replace").lower() in {a.lower() for a in attributes}
    if tag == 0xA3:  # equalityMatch
        parts = _split(content)
        if len(parts) != 2:
            raise BerError("bad equality filter")
        attr, value = parts[0][1].decode(errors="replace"), parts[1][1].decode(errors="replace")
        values = next((v for a, v in attributes.items() if a.lower() == attr.lower()), ())
        return value.lower() in {v.lower() for v in values}
    return True  # the lab does not evaluate and/or/not/substrings: it answers what it has


def _search_scope(base: str, scope: int) -> list[str]:
    """Return the DNs the search covers: the base, its children, or its subtree."""
    base = _norm(base)
    covered: Callable[[str], bool] = {
        0: lambda norm: norm == base,
        1: lambda norm: norm.partition(",")[2] == base,
        2: lambda norm: norm == base or norm.endswith("," + base),
    }.get(scope, lambda _: False)
    found = [dn for dn in LDAP_ENTRIES if covered(_norm(dn))]
    return found


@dataclass
class _Session:
    """One client's connection: whether it bound as the service account."""

    bound: bool = False


class LdapResponder:
    """The directory's LDAP port: bind, search, unbind, with the lab's faults."""

    def __init__(self, state: State, password: str, host: str = "127.0.0.1") -> None:
        """Prepare the responder (password: the service account's); start() binds it."""
        self.host = host
        self.port = 0
        self._state = state
        self._password = password.encode()
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> None:
        """Listen on a free port unless one is given."""
        self._server = await asyncio.start_server(self._session, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one client's requests until it unbinds, errs or goes quiet."""
        session = _Session()
        try:
            while self._state() != "closed":
                async with asyncio.timeout(IDLE_SECONDS):
                    message = await read_message(reader, MAX_LDAP_MESSAGE)
                if message.op == _UNBIND_REQUEST:
                    break
                answer = self._answer(message, session)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (OSError, TimeoutError, EOFError, BerError, UnicodeDecodeError):
            pass  # the client went away, stalled or sent what is not LDAP
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _answer(self, message: LdapMessage, session: _Session) -> bytes | None:
        """Return the response to one request (None: drop the connection)."""
        mid, parts = message.message_id, message.parts
        if message.op == _BIND_REQUEST:
            fault = self._state()
            if fault == "closed":
                return None
            if fault in LDAP_RESULTS:
                return _result(mid, _BIND_RESPONSE, LDAP_RESULTS[fault], f"directory {fault}")
            if len(parts) < 3 or parts[2].tag != 0x80:
                return _result(mid, _BIND_RESPONSE, 7, "only simple binds in the lab")
            dn, password = parts[1].content.decode(), parts[2].content
            if not dn and not password:
                session.bound = False
                return _result(mid, _BIND_RESPONSE, 0)
            if _norm(dn) == _norm(SERVICE_DN) and hmac.compare_digest(password, self._password):
                session.bound = True
                return _result(mid, _BIND_RESPONSE, 0)
            return _result(mid, _BIND_RESPONSE, 49, "80090308: LdapErr: DSID-0C09044E")
        if message.op == _SEARCH_REQUEST:
            return self._search(mid, message, session)
        if message.op == _EXTENDED_REQUEST:
            return _result(mid, _EXTENDED_RESPONSE, 2, "no extended operation in the lab")
        return None

    def _search(self, mid: int, message: LdapMessage, session: _Session) -> bytes:
        """Answer a search with the matching entries (DNs only) and its done message."""
        parts = message.parts
        if len(parts) < 7:
            return _result(mid, _SEARCH_DONE, 2, "malformed search request")
        if not session.bound:
            return _result(mid, _SEARCH_DONE, 1, "000004DC: a successful bind must be completed")
        base = parts[0].content.decode()
        scope = int.from_bytes(parts[1].content, "big")
        found = [
            dn
            for dn in _search_scope(base, scope)
            if _matches(LDAP_ENTRIES[dn], parts[6].tag, parts[6].content)
        ]
        if not found and _norm(base) not in {_norm(dn) for dn in LDAP_ENTRIES}:
            return _result(mid, _SEARCH_DONE, 32, "0000208D: NameErr: no such object")
        entries = b"".join(
            _tlv(0x30, _int(mid) + _tlv(_SEARCH_ENTRY, _tlv(0x04, dn.encode()) + _tlv(0x30, b"")))
            for dn in found
        )
        return entries + _result(mid, _SEARCH_DONE, 0)
