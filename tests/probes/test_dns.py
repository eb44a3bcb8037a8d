"""The dns probe against a real dnsmasq on loopback, and against raw servers sending bad answers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import dns.exception
import dns.message
import dns.query
import pytest
from pydantic import ValidationError

from tests.conftest import free_port, require_binary
from tests.probes.conftest import make_check, refused_port, sample, serve_tcp
from tests.waiting import wait_for, wait_for_sync
from vigie.probes.base import ProbeContext
from vigie.probes.dns import RCODES, DnsProbe, DnsSettings

BIG = 60  # A records of big.chu.test: more than a 512-byte UDP answer holds


def _has_ipv6_loopback() -> bool:
    """Return whether ::1 can be bound here (some containers have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6_loopback()


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[int]:
    """A real dnsmasq on 127.0.0.1 (UDP and TCP) serving a small hospital zone; yields its port."""
    binary = require_binary("/usr/sbin/dnsmasq", "dnsmasq-base")
    port = free_port()
    argv = [
        binary,
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        f"--port={port}",
        "--listen-address=127.0.0.1,::1" if HAS_IPV6 else "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--local=/chu.test/",
        "--host-record=dpi.chu.test,10.1.2.3,fd00::3",
        "--srv-host=_hl7._tcp.chu.test,hl7.chu.test,2575,10,5",
        "--mx-host=chu.test,mail.chu.test,10",
        "--address=/wild.chu.test/10.9.9.9",
        *(f"--host-record=big.chu.test,10.0.{i}.1" for i in range(BIG)),
    ]
    if os.geteuid() == 0:
        argv.append("--user=root")  # as root dnsmasq would drop to nobody, which may not exist
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def answers() -> bool:
            """Return whether dnsmasq answers a query (it may still be starting)."""
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"dnsmasq exited {proc.returncode}: {out}")
            try:
                query = dns.message.make_query("dpi.chu.test", "A")
                dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            except (dns.exception.Timeout, OSError):
                return False
            return True

        wait_for_sync(answers, "dnsmasq to answer")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def probe() -> DnsProbe:
    """A fresh dns probe."""
    return DnsProbe()


def rcodes(result: Any) -> dict[str, float]:
    """Return the rcodes set to 1 in a result's dns_rcode state set (all must be present)."""
    values = {name: sample(result, "dns_rcode", rcode=name) for name in RCODES}
    return {name: v for name, v in values.items() if v}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    "case",
    [
        ("dpi.chu.test", "A", "10.1.2.3"),
        ("dpi.chu.test", "AAAA", "fd00::3"),
        ("_hl7._tcp.chu.test", "SRV", "10 5 2575 hl7.chu.test."),
        ("chu.test", "MX", "10 MAIL.chu.test"),
        ("10.1.2.3", "PTR", "dpi.chu.test."),
        ("pacs.wild.chu.test", "A", "10.9.9.9"),
    ],
)
async def test_expected_answers(
    probe: DnsProbe, ctx: ProbeContext, dnsmasq: int, transport: str, case: tuple[str, str, str]
) -> None:
    """A, AAAA, SRV, MX, PTR (from an address) and wildcard answers match, over UDP and TCP."""
    query_name, query_type, expected = case
    check = make_check(
        probe,
        f"127.0.0.1:{dnsmasq}",
        query_name=query_name,
        query_type=query_type,
        transport=transport,
        expect_answers=[expected],
    )
    result = await probe(check, ctx)
    assert result.success, result.error
    assert rcodes(result) == {"NOERROR": 1}
    assert sample(result, "dns_answer_rrs") == 1
    assert 0 < sample(result, "dns_lookup_seconds") < 5
    assert sample(result, "dns_used_tcp") == (1 if transport == "tcp" else 0)
    assert [name for name, _ in result.phases] == ["lookup"]


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1) here")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_ipv6_server(
    probe: DnsProbe, ctx: ProbeContext, dnsmasq: int, transport: str
) -> None:
    """A server given as [::1]:port is asked over IPv6."""
    check = make_check(
        probe,
        f"[::1]:{dnsmasq}",
        query_name="dpi.chu.test",
        query_type="AAAA",
        transport=transport,
        expect_answers=["fd00::3"],
    )
    result = await probe(check, ctx)
    assert check.target == f"[::1]:{dnsmasq}" and check.host == "::1"
    assert result.success, result.error


async def test_missing_answer_names_what_came(
    probe: DnsProbe, ctx: ProbeContext, dnsmasq: int
) -> None:
    """An expected record absent from the answer fails naming it and what was received."""
    check = make_check(
        probe, f"127.0.0.1:{dnsmasq}", query_name="dpi.chu.test", expect_answers=["10.9.9.9"]
    )
    result = await probe(check, ctx)
    assert result.error == "answer lacks 10.9.9.9; got 10.1.2.3"
    assert rcodes(result) == {"NOERROR": 1}


@pytest.mark.parametrize(
    ("query_name", "rcode"), [("nope.chu.test", "NXDOMAIN"), ("example.org", "REFUSED")]
)
async def test_rcode(
    probe: DnsProbe, ctx: ProbeContext, dnsmasq: int, query_name: str, rcode: str
) -> None:
    """An unwanted rcode fails naming it; listed in valid_rcodes, the same answer succeeds."""
    target = f"127.0.0.1:{dnsmasq}"
    bad = await probe(make_check(probe, target, query_name=query_name), ctx)
    good = await probe(make_check(probe, target, query_name=query_name, valid_rcodes=[rcode]), ctx)
    assert bad.error == f"rcode {rcode}, expected NOERROR"
    assert rcodes(bad) == {rcode: 1} and sample(bad, "dns_answer_rrs") == 0
    assert good.success, good.error
    assert rcodes(good) == {rcode: 1}


async def test_empty_answer_fails_unless_allowed(
    probe: DnsProbe, ctx: ProbeContext, dnsmasq: int
) -> None:
    """NOERROR without a record of the type asked fails by default; min_answers 0 allows it."""
    target = f"127.0.0.1:{dnsmasq}"
    empty = await probe(make_check(probe, target, query_name="dpi.chu.test", query_type="MX"), ctx)
    allowed = await probe(
        make_check(probe, target, query_name="dpi.chu.test", query_type="MX", min_answers=0), ctx
    )
    assert empty.error == "0 MX record(s) in the answer, expected at least 1"
    assert allowed.success and sample(allowed, "dns_answer_rrs") == 0


async def test_truncated_udp_answer_retried_over_tcp(
    probe: DnsProbe, ctx: ProbeContext, dnsmasq: int
) -> None:
    """An answer too big for UDP (TC set) is asked again over TCP and counted whole."""
    check = make_check(
        probe,
        f"127.0.0.1:{dnsmasq}",
        query_name="big.chu.test",
        expect_answers=["10.0.0.1", f"10.0.{BIG - 1}.1"],
    )
    result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "dns_answer_rrs") == BIG
    assert sample(result, "dns_used_tcp") == 1


@dataclasses.dataclass
class UdpPeer(asyncio.DatagramProtocol):
    """A UDP server answering each datagram with reply(datagram), or nothing for None."""

    reply: Callable[[bytes], bytes | None]
    received: int = 0
    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        """Keep the transport."""
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Answer with reply(data) unless it is None."""
        self.received += 1
        answer = self.reply(data)
        if answer is not None:
            self.transport.sendto(answer, addr)


@asynccontextmanager
async def udp_peer(reply: Callable[[bytes], bytes | None]) -> AsyncIterator[tuple[int, UdpPeer]]:
    """Serve a UdpPeer on 127.0.0.1 on a free port; yield (port, peer)."""
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(
        lambda: UdpPeer(reply), local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1], peer
    finally:
        transport.close()


def wrong_id(query: bytes) -> bytes:
    """Return a well-formed answer to query with another message id."""
    response = dns.message.make_response(dns.message.from_wire(query))
    response.id = (response.id + 1) % 65536
    return response.to_wire()


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (lambda q: b"\x00\x01\x02", "protocol error: bad answer from 127.0.0.1:"),
        (
            lambda q: q[:2] + b"\x80\x00" + os.urandom(400),
            "protocol error: bad answer from 127.0.0.1:",
        ),
        (lambda q: q[:12], "protocol error: bad answer from 127.0.0.1:"),
        (wrong_id, "protocol error: bad answer from 127.0.0.1:"),
    ],
    ids=["short", "garbage", "header-only", "wrong-id"],
)
async def test_bad_udp_answers_reported(
    probe: DnsProbe, ctx: ProbeContext, reply: Callable[[bytes], bytes], reason: str
) -> None:
    """Short, random, header-only or mismatched answers fail as protocol errors, never crash."""
    async with udp_peer(reply) as (port, peer):
        result = await probe(make_check(probe, f"127.0.0.1:{port}", query_name="dpi.chu.test"), ctx)
    assert peer.received == 1
    assert not result.success and result.error is not None
    assert result.error.startswith(reason), result.error
    assert result.error.isprintable() and len(result.error) <= 300
    assert rcodes(result) == {}


async def test_silent_server_times_out(probe: DnsProbe, ctx: ProbeContext) -> None:
    """A server that never answers fails on the probe's own deadline, naming the server."""
    async with udp_peer(lambda q: None) as (port, peer):
        check = dataclasses.replace(
            make_check(probe, f"127.0.0.1:{port}", query_name="dpi.chu.test"), timeout=1.0
        )
        result = await probe(check, ctx)
    assert peer.received == 1
    assert result.error == f"timeout after 0.9s: no answer from 127.0.0.1:{port} (UDP)"


async def test_truncated_udp_then_garbage_over_tcp(probe: DnsProbe, ctx: ProbeContext) -> None:
    """A TC answer over UDP is retried over TCP; a refused TCP retry is named as such."""
    async with udp_peer(lambda q: q[:2] + b"\x82\x00" + bytes(8)) as (port, peer):
        result = await probe(make_check(probe, f"127.0.0.1:{port}", query_name="dpi.chu.test"), ctx)
    assert peer.received == 1
    assert result.error == (
        f"query to 127.0.0.1:{port} (TCP, after a truncated UDP answer) failed: Connection refused"
    )


async def test_tcp_truncated_answer(probe: DnsProbe, ctx: ProbeContext) -> None:
    """Over TCP, a length prefix announcing more than is sent before the close is reported."""
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the query, announce 65535 bytes, send 3, close."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            size = int.from_bytes(await reader.readexactly(2), "big")
            query = await reader.readexactly(size)
            writer.write(b"\xff\xff" + query[:3])
            await writer.drain()
        writer.close()
        done.set()

    async with serve_tcp(handler) as port:
        check = make_check(probe, f"127.0.0.1:{port}", query_name="dpi.chu.test", transport="tcp")
        result = await probe(check, ctx)
        await wait_for(done.is_set, "the TCP server to answer")
    assert result.error is not None
    assert result.error.startswith(f"protocol error: bad answer from 127.0.0.1:{port}")


async def test_tcp_refused(probe: DnsProbe, ctx: ProbeContext) -> None:
    """A closed TCP port fails with 'Connection refused'."""
    port = refused_port()
    check = make_check(probe, f"127.0.0.1:{port}", query_name="dpi.chu.test", transport="tcp")
    result = await probe(check, ctx)
    assert result.error == f"query to 127.0.0.1:{port} failed: Connection refused"


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("127.0.0.1", "127.0.0.1:53"),
        ("NS1.chu.test:5353", "ns1.chu.test:5353"),
        ("::1", "[::1]:53"),
        ("[::1]", "[::1]:53"),
        ("[::1]:5353", "[::1]:5353"),
    ],
)
def test_targets(probe: DnsProbe, target: str, parsed: str) -> None:
    """The target is the server: host or address, port 53 unless given."""
    assert probe.parse_target(target) == parsed


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({}, "query_name\n  Field required"),
        ({"query_name": "a..b"}, "not a valid DNS name"),
        ({"query_name": "x", "query_type": "ANY"}, "Input should be 'A'"),
        ({"query_name": "x", "valid_rcodes": ["NOPE"]}, "Input should be 'NOERROR'"),
        (
            {"query_name": "x", "valid_rcodes": ["NXDOMAIN"], "expect_answers": ["1.2.3.4"]},
            "expect_answers needs NOERROR",
        ),
    ],
)
def test_settings_rejected(settings: dict[str, Any], error: str) -> None:
    """Bad settings are refused at load time naming what is wrong."""
    with pytest.raises(ValidationError, match=error):
        DnsSettings.model_validate(settings)
