"""The sip probe against a real kamailio on loopback, and against raw peers that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import free_port, require_binary
from tests.probes.conftest import StreamHandler, make_check, refused_port, sample, serve_tcp
from tests.waiting import wait_for_sync
from vigie.probes.base import Check, ProbeContext
from vigie.probes.sip import SipError, SipProbe, SipSettings, parse_response

KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
mpath="{modules}"
loadmodule "sl.so"
loadmodule "pv.so"
request_route {{
    if (method=="OPTIONS") {{
        if ($rU=="busy") {{
            sl_send_reply("486", "Busy Here");
            exit;
        }}
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("501", "Not Implemented");
}}
"""
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"


def _options_answered(port: int) -> bool:
    """Return whether something answers a bare OPTIONS on UDP port (kamailio may be starting)."""
    request = (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKw;rport\r\n"
        "To: <sip:x@127.0.0.1>\r\nFrom: <sip:w@127.0.0.1>;tag=w\r\nCall-ID: wait\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        try:
            sock.sendto(request, ("127.0.0.1", port))
            return sock.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real kamailio on 127.0.0.1 (UDP and TCP) answering OPTIONS; yields its port."""
    binary = require_binary("/usr/sbin/kamailio", "kamailio")
    require_binary(f"{MODULES}/sl.so", "kamailio")  # the modules this config loads
    root = tmp_path_factory.mktemp("kamailio")
    port = free_port()
    cfg = root / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=port, modules=MODULES))
    argv = [binary, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "4"]
    argv += ["-Y", str(root), "-P", str(root / "kamailio.pid")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            """Return whether kamailio answers (fail at once if it exited)."""
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"kamailio exited {proc.returncode}: {out[-2000:]}")
            return _options_answered(port)

        wait_for_sync(ready, "kamailio to answer OPTIONS")
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
def probe() -> SipProbe:
    """A fresh sip probe."""
    return SipProbe()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_options_ping(
    probe: SipProbe, ctx: ProbeContext, kamailio: int, transport: str
) -> None:
    """kamailio answers 200 to OPTIONS over UDP and TCP: success with status and latency."""
    check = make_check(probe, f"127.0.0.1:{kamailio}", transport=transport)
    result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "sip_status_code") == 200
    assert 0 < sample(result, "sip_response_seconds") < 5
    names = [name for name, _ in result.phases]
    assert names == (["connect", "response"] if transport == "tcp" else ["response"])
    if transport == "udp":
        assert sample(result, "sip_udp_retransmissions") == 0


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_unexpected_code(
    probe: SipProbe, ctx: ProbeContext, kamailio: int, transport: str
) -> None:
    """A 486 fails naming code and reason; listed in expect_codes, the same answer succeeds."""
    target = f"127.0.0.1:{kamailio}"
    uri = f"sip:busy@127.0.0.1:{kamailio}"
    bad = await probe(make_check(probe, target, transport=transport, request_uri=uri), ctx)
    good = await probe(
        make_check(probe, target, transport=transport, request_uri=uri, expect_codes=[486]), ctx
    )
    assert bad.error == "status 486 Busy Here, expected 200"
    assert sample(bad, "sip_status_code") == 486
    assert good.success, good.error


@asynccontextmanager
async def udp_peer(
    answer: Callable[[bytes], list[bytes]],
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Serve UDP on a free loopback port, sending answer(request) back; yield (port, received)."""
    received: list[bytes] = []

    sockets: list[asyncio.DatagramTransport] = []

    class Peer(asyncio.DatagramProtocol):
        """Answers each datagram with answer(datagram)."""

        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            """Record and answer."""
            received.append(data)
            for reply in answer(data):
                sockets[0].sendto(reply, addr)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    sockets.append(transport)
    try:
        yield transport.get_extra_info("sockname")[1], received
    finally:
        transport.close()


def reply_to(request: bytes, status: str, call_id: str | None = None) -> bytes:
    """Return a response to request with its Via, Call-ID and CSeq (Call-ID replaced if given)."""
    lines = request.decode().split("\r\n")
    keep = [ln for ln in lines if ln.split(":")[0] in ("Via", "From", "To", "CSeq", "Call-ID")]
    if call_id is not None:
        keep = [ln if not ln.startswith("Call-ID") else f"Call-ID: {call_id}" for ln in keep]
    return (f"SIP/2.0 {status}\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode()


async def test_udp_garbage(probe: SipProbe, ctx: ProbeContext) -> None:
    """A UDP peer answering garbage fails as a protocol error showing the start of it."""
    async with udp_peer(lambda _: [b"\x00\xffHELLO garbage" * 10]) as (port, _):
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.error is not None
    assert result.error.startswith("protocol error: answer is not a SIP response: starts with")
    assert "HELLO garbage" in result.error


async def test_udp_huge_datagram(probe: SipProbe, ctx: ProbeContext) -> None:
    """A datagram larger than max_response_bytes is refused, not parsed."""
    async with udp_peer(lambda _: [b"SIP/2.0 200 OK\r\n" + b"X: y\r\n" * 3000]) as (port, _):
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.error == (
        "protocol error: a 18016-byte datagram, more than max_response_bytes 16384"
    )


async def test_udp_silence_retransmits(probe: SipProbe, ctx: ProbeContext) -> None:
    """A silent UDP peer: the request is retransmitted on RFC 3261 timers, then a timeout."""
    async with udp_peer(lambda _: []) as (port, received):
        result = await probe(_with_timeout(make_check(probe, f"127.0.0.1:{port}"), 2.0), ctx)
    # 0.5 + 1 s of timer A in a 1.8 s deadline: the first send and 2 retransmissions.
    assert result.error == (
        f"timeout after 1.8s: no final answer from 127.0.0.1:{port} (UDP, 2 retransmissions)"
    )
    assert len(received) == 3 and len(set(received)) == 1
    assert sample(result, "sip_udp_retransmissions") == 2


async def test_udp_provisional_and_stray_answers(probe: SipProbe, ctx: ProbeContext) -> None:
    """An answer to another Call-ID is ignored and a 100 Trying waited past to the final 200."""

    def answer(request: bytes) -> list[bytes]:
        """Send a stray 500, a 100 Trying, then the 200."""
        return [
            reply_to(request, "500 Not Yours", call_id="other@elsewhere"),
            reply_to(request, "100 Trying"),
            reply_to(request, "200 OK"),
        ]

    async with udp_peer(answer) as (port, _):
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.success, result.error
    assert sample(result, "sip_status_code") == 200


async def test_udp_refused(probe: SipProbe, ctx: ProbeContext) -> None:
    """A UDP port nobody listens on: the ICMP port unreachable is reported as such."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.error == f"no SIP server on 127.0.0.1:{port} (UDP): Connection refused"


async def test_tcp_refused(probe: SipProbe, ctx: ProbeContext) -> None:
    """A refused TCP connection names the target and the reason."""
    port = refused_port()
    result = await probe(make_check(probe, f"127.0.0.1:{port}", transport="tcp"), ctx)
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


def _with_timeout(check: Check[Any], timeout: float) -> Check[Any]:
    """Return check with another timeout (Check is a frozen dataclass)."""
    return dataclasses.replace(check, timeout=timeout)


def tcp_server(payload: bytes | Callable[[bytes], bytes]) -> StreamHandler:
    """Return a handler that reads the request's headers, sends payload and waits for a close."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request."""
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            writer.write(payload(request) if callable(payload) else payload)
            await writer.drain()
            await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return handler


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "answer is not a SIP response: starts with"),
        (b"SIP/2.0 200 OK\r\n" + b"X: y\r\n" * 5000, "no end of headers within 16384 bytes"),
        (b"SIP/2.0 200 OK\r\nVia", "connection closed after 19 bytes, before the end of headers"),
        (b"", "connection closed without an answer"),
    ],
)
async def test_tcp_bad_answers(
    probe: SipProbe, ctx: ProbeContext, payload: bytes, error: str
) -> None:
    """Non-SIP, endless, truncated or missing answers over TCP are bounded protocol errors."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send payload then close."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(payload)
            await writer.drain()
        writer.close()

    async with serve_tcp(handler) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}", transport="tcp"), ctx)
    assert result.error is not None
    assert result.error.startswith(f"protocol error: {error}"), result.error


async def test_tcp_wrong_call_id(probe: SipProbe, ctx: ProbeContext) -> None:
    """Over TCP an answer to another request is a protocol error naming its Call-ID."""
    handler = tcp_server(lambda req: reply_to(req, "200 OK", call_id="x@y"))
    async with serve_tcp(handler) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}", transport="tcp"), ctx)
    assert result.error is not None
    assert result.error.startswith("protocol error: answer 200 is for Call-ID 'x@y', sent")


async def test_tcp_provisional_with_body(probe: SipProbe, ctx: ProbeContext) -> None:
    """A 100 with a body is skipped (body read and dropped) before the final 200."""

    def answer(request: bytes) -> bytes:
        """Send a 100 carrying a 5-byte body, then a 200."""
        trying = reply_to(request, "100 Trying").replace(
            b"Content-Length: 0\r\n\r\n", b"Content-Length: 5\r\n\r\nhello"
        )
        return trying + reply_to(request, "200 OK")

    async with serve_tcp(tcp_server(answer)) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}", transport="tcp"), ctx)
    assert result.success, result.error


async def test_tcp_silence(probe: SipProbe, ctx: ProbeContext) -> None:
    """A TCP peer that accepts and never answers: a timeout saying it was the final answer."""
    async with serve_tcp(tcp_server(b"")) as port:
        check = _with_timeout(make_check(probe, f"127.0.0.1:{port}", transport="tcp"), 1.0)
        result = await probe(check, ctx)
    assert result.error == f"timeout after 0.9s: no final answer from 127.0.0.1:{port} (TCP)"


def test_request_fields(probe: SipProbe) -> None:
    """The request carries an RFC 3261 branch, a From tag, Call-ID, CSeq and Max-Forwards."""
    from vigie.probes.sip import _build_request

    settings = SipSettings()
    one = _build_request(settings, "pbx.chu.test:5060", "udp", ("10.0.0.1", 40000))
    two = _build_request(settings, "pbx.chu.test:5060", "udp", ("10.0.0.1", 40000))
    text = one.data.decode()
    assert text.startswith("OPTIONS sip:pbx.chu.test:5060 SIP/2.0\r\n")
    assert f"Via: SIP/2.0/UDP 10.0.0.1:40000;branch={one.branch};rport\r\n" in text
    assert one.branch.startswith("z9hG4bK") and one.branch != two.branch
    assert one.call_id != two.call_id
    assert ";tag=" in text and "CSeq: 1 OPTIONS\r\n" in text and "Max-Forwards: 70\r\n" in text
    assert text.endswith("Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("head", "error"),
    [
        (b"SIP/2.0 2000 OK\r\n", "answer is not a SIP response"),
        (b"SIP/2.0 200 OK\r\nno colon here\r\n", "header line without a colon"),
        (b"SIP/2.0 200 OK\r\nContent-Length: -1\r\n", "bad Content-Length '-1'"),
        (b"SIP/2.0 200 OK\r\n" + b"X: y\r\n" * 101, "more than 100 header lines"),
    ],
)
def test_parse_rejects(head: bytes, error: str) -> None:
    """Malformed status lines and headers raise SipError saying what was wrong."""
    with pytest.raises(SipError, match=error):
        parse_response(head)


def test_parse_compact_headers() -> None:
    """Compact header names (v, i, l) are understood; the reason phrase is sanitised."""
    response = parse_response(
        b"SIP/2.0 404 Not\x1b[31m Found\r\nv: SIP/2.0/UDP h;branch=z9hG4bKx\r\ni: c@h\r\n"
        b"CSeq: 1  OPTIONS\r\nl: 0\r\n"
    )
    assert (response.code, response.call_id, response.branch) == (404, "c@h", "z9hG4bKx")
    assert response.cseq == "1 OPTIONS" and "\x1b" not in response.reason


@pytest.mark.parametrize(
    "settings",
    [
        {"expect_codes": [180]},
        {"expect_codes": []},
        {"request_uri": "http://x"},
        {"request_uri": "sip:a b"},
        {"from_user": "a@b"},
        {"transport": "tls"},
        {"bogus": 1},
    ],
)
def test_settings_rejected(settings: dict[str, object]) -> None:
    """Provisional expected codes, bad URIs and users, unknown keys are config errors."""
    with pytest.raises(ValidationError):
        SipSettings.model_validate(settings)


def test_targets(probe: SipProbe) -> None:
    """Targets are host[:port], port 5060 by default, IPv6 in brackets."""
    assert probe.parse_target("PBX.chu.local") == "pbx.chu.local:5060"
    assert probe.parse_target("[::1]") == "[::1]:5060"
    assert probe.parse_target("10.0.0.1:5080") == "10.0.0.1:5080"
    with pytest.raises(ValueError, match="port"):
        probe.parse_target("pbx:sip")
