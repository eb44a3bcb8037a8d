"""The tcp probe against real loopback servers (plain and TLS), and its settings validation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from pydantic import ValidationError

from tests.probes.conftest import Pki, StreamHandler, make_check, refused_port, sample, serve_tcp
from vigie.probes.base import ProbeContext
from vigie.probes.tcp import TcpProbe, TcpSettings


@pytest.fixture
def probe() -> TcpProbe:
    """A fresh tcp probe."""
    return TcpProbe()


def tracked(
    body: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[StreamHandler, asyncio.Event]:
    """Wrap a connection handler so it always closes its side and signals when done."""
    done = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run body, then close and signal."""
        try:
            await body(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            done.set()

    return handler, done


def smtp_like(received: list[bytes]) -> StreamHandler:
    """Return a handler sending a 220 banner, recording one command and answering 221."""

    async def body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Greet, read one command, answer it."""
        writer.write(b"220-mail.test ESMTP\r\n220 ready\r\n")
        await writer.drain()
        line = await reader.readline()
        received.append(line)
        writer.write(b"221 bye\r\n" if line == b"QUIT\r\n" else b"500 what?\r\n")
        await writer.drain()

    return tracked(body)[0]


async def test_connect_ok(probe: TcpProbe, ctx: ProbeContext) -> None:
    """A listening port succeeds and reports the connect duration."""
    handler, done = tracked(lambda r, w: asyncio.sleep(0))
    async with serve_tcp(handler) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
        await asyncio.wait_for(done.wait(), 5)
    assert result.success and result.error is None
    assert sample(result, "probe_tcp_connect_duration_seconds") > 0
    assert sample(result, "probe_failed_due_to_regex") == 0
    assert all(s.type == "gauge" and s.help for s in result.samples)


async def test_connection_refused(probe: TcpProbe, ctx: ProbeContext) -> None:
    """A closed port fails with 'Connection refused'."""
    port = refused_port()
    result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


async def test_send_and_expect_conversation(probe: TcpProbe, ctx: ProbeContext) -> None:
    """expect waits for the matching banner line, send adds CR LF, the answer is checked."""
    received: list[bytes] = []
    async with serve_tcp(smtp_like(received)) as port:
        steps = [{"expect": "^220 ", "send": "QUIT"}, {"expect": "^221 "}]
        result = await probe(make_check(probe, f"127.0.0.1:{port}", query_response=steps), ctx)
    assert result.success, result.error
    assert received == [b"QUIT\r\n"]
    assert sample(result, "probe_failed_due_to_regex") == 0
    assert [name for name, _ in result.phases] == ["connect", "query"]


async def test_send_ending_in_newline_is_sent_as_is(probe: TcpProbe, ctx: ProbeContext) -> None:
    """A send that already ends with a newline gets no extra line ending."""
    received: list[bytes] = []
    async with serve_tcp(smtp_like(received)) as port:
        steps = [{"expect": "^220 "}, {"send": "QUIT\r\n"}, {"expect": "^221 "}]
        result = await probe(make_check(probe, f"127.0.0.1:{port}", query_response=steps), ctx)
    assert result.success, result.error
    assert received == [b"QUIT\r\n"]


async def test_expect_mismatch_fails_with_reason(probe: TcpProbe, ctx: ProbeContext) -> None:
    """A peer that closes without the expected line fails naming the regex and the last line."""

    async def refuse(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send a refusal banner and hang up."""
        writer.write(b"554 no service here\r\n")
        await writer.drain()

    handler, done = tracked(refuse)
    async with serve_tcp(handler) as port:
        check = make_check(probe, f"127.0.0.1:{port}", query_response=[{"expect": "^220"}])
        result = await probe(check, ctx)
        await asyncio.wait_for(done.wait(), 5)
    assert result.error == (
        "step 1: connection closed before expect '^220' matched; last line '554 no service here'"
    )
    assert sample(result, "probe_failed_due_to_regex") == 1


async def test_expect_reads_at_most_max_read_bytes(probe: TcpProbe, ctx: ProbeContext) -> None:
    """A peer sending endless non-matching data is cut off at max_read_bytes."""

    async def chatter(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send noise lines until the client goes away."""
        while True:
            writer.write(b"noise " * 100 + b"\r\n")
            await writer.drain()

    handler, done = tracked(chatter)
    async with serve_tcp(handler) as port:
        check = make_check(
            probe, f"127.0.0.1:{port}", query_response=[{"expect": "^220"}], max_read_bytes=1000
        )
        result = await probe(check, ctx)
        await asyncio.wait_for(done.wait(), 5)
    assert result.error is not None
    assert result.error.startswith("step 1: expect '^220' not matched in 1000 bytes read")
    assert sample(result, "probe_failed_due_to_regex") == 1


async def test_tls_with_ca_file(probe: TcpProbe, ctx: ProbeContext, pki: Pki) -> None:
    """TLS verified with ca_file succeeds, reports notAfter and runs steps over TLS."""
    received: list[bytes] = []
    async with serve_tcp(smtp_like(received), pki.server_context()) as port:
        check = make_check(
            probe,
            f"127.0.0.1:{port}",
            tls=True,
            tls_config={"ca_file": str(pki.ca_file)},
            query_response=[{"expect": "^220 ", "send": "QUIT"}, {"expect": "^221 "}],
        )
        result = await probe(check, ctx)
    assert result.success, result.error
    assert received == [b"QUIT\r\n"]
    assert sample(result, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()
    assert [name for name, _ in result.phases] == ["connect", "tls", "query"]


async def test_tls_unknown_ca_fails(probe: TcpProbe, ctx: ProbeContext, pki: Pki) -> None:
    """Without the test CA the handshake fails with a certificate verify reason."""
    handler, _ = tracked(lambda r, w: asyncio.sleep(0))
    async with serve_tcp(handler, pki.server_context()) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}", tls=True), ctx)
    assert result.error is not None
    assert result.error.startswith("TLS: certificate verify failed: ")
    assert sample(result, "probe_tcp_connect_duration_seconds") > 0


async def test_tls_client_certificate(probe: TcpProbe, ctx: ProbeContext, pki: Pki) -> None:
    """A server requiring a client certificate accepts cert_file/key_file."""

    async def whoami(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Greet a client that presented a certificate."""
        peer = writer.get_extra_info("peercert")
        writer.write(b"hello client\r\n" if peer else b"anonymous\r\n")
        await writer.drain()

    handler, done = tracked(whoami)
    async with serve_tcp(handler, pki.server_context(require_client_cert=True)) as port:
        tls = {
            "ca_file": str(pki.ca_file),
            "cert_file": str(pki.client_cert_file),
            "key_file": str(pki.client_key_file),
        }
        check = make_check(
            probe,
            f"127.0.0.1:{port}",
            tls=True,
            tls_config=tls,
            query_response=[{"expect": "^hello client$"}],
        )
        result = await probe(check, ctx)
        await asyncio.wait_for(done.wait(), 5)
    assert result.success, result.error


# --------------------------------------------------------------------------- settings


def test_default_settings_are_valid() -> None:
    """Settings() is valid and its JSON schema builds."""
    assert TcpSettings().query_response == []
    assert "query_response" in TcpSettings.model_json_schema()["properties"]


def test_bad_expect_regex_rejected() -> None:
    """An expect regex that does not compile is rejected with the reason."""
    with pytest.raises(ValidationError, match="invalid regular expression '220\\[': "):
        TcpSettings.model_validate({"query_response": [{"expect": "220["}]})


def test_empty_step_rejected() -> None:
    """A step with neither expect nor send is rejected."""
    with pytest.raises(ValidationError, match="needs expect or send"):
        TcpSettings.model_validate({"query_response": [{}]})


def test_expect_dumps_as_text() -> None:
    """A compiled expect dumps back to its pattern text."""
    settings = TcpSettings.model_validate({"query_response": [{"expect": "^220 "}]})
    assert settings.model_dump()["query_response"][0]["expect"] == "^220 "
    assert TcpSettings.model_validate(settings.model_dump()) == settings


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("foo", "must be host:port, got 'foo'"),
        ("mail.local", "must be host:port, got 'mail.local'"),
        (":25", "must be host:port, got ':25'"),
        ("host:70000", "port must be between 1 and 65535, got 70000"),
        ("host:0", "port must be between 1 and 65535, got 0"),
        ("host:smtp", "port must be a number, got 'smtp'"),
        ("::1:25", "IPv6 host in brackets"),
        ("[nothost]:25", "'nothost' in brackets is not an IPv6 address"),
        ("[::1]25", r"must be \[ipv6\]:port"),
        ("bad host:25", "'bad host' is not a valid host name or address"),
    ],
)
def test_parse_target_rejects(target: str, message: str) -> None:
    """parse_target explains why a target is not host:port."""
    with pytest.raises(ValueError, match=message):
        TcpProbe().parse_target(target)


def test_parse_target_and_host_of() -> None:
    """host:port and [v6]:port are normalised and their host extracted."""
    probe = TcpProbe()
    assert probe.parse_target("Mail.CHU.local:25") == "mail.chu.local:25"
    assert probe.parse_target("[0:0::1]:104") == "[::1]:104"
    assert probe.host_of("[::1]:104") == "::1"
    assert probe.host_of("pacs.chu.local:104") == "pacs.chu.local"
