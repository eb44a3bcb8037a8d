"""The hl7 probe against real MLLP listeners: the `hl7` library's asyncio server, and raw ones."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import hl7
import pytest
from hl7.mllp import start_hl7_server
from pydantic import ValidationError

from tests.probes.conftest import Pki, StreamHandler, make_check, refused_port, sample, serve_tcp
from tests.waiting import wait_for
from vigie.probes.base import ProbeContext
from vigie.probes.hl7 import ACK_CODES, Hl7Probe, Hl7Settings, read_frame

ADT = (
    "MSH|^~\\&|VIGIE|CHU|LAB|CHU|20250101120000||ADT^A01|PLACEHOLDER|T|2.5\n"
    "EVN|A01|20250101120000\n"
    "PID|1||123456^^^CHU^PI||TEST^VIGIE\n"
)


@pytest.fixture
def probe() -> Hl7Probe:
    """A fresh hl7 probe."""
    return Hl7Probe()


@dataclasses.dataclass
class Listener:
    """What an MLLP listener from the hl7 library received and how its connections ended."""

    port: int = 0
    messages: list[Any] = dataclasses.field(default_factory=list)
    closed_by_client: int = 0


@asynccontextmanager
async def mllp_listener(
    answer: Callable[[Any], Any], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Listener]:
    """Serve the hl7 library's MLLP server; answer each message, keep the connection open.

    Like Mirth Connect, the listener never closes after its ACK: it waits for the next message
    and only ends when the client closes (counted in closed_by_client).
    """
    state = Listener()

    async def handle(reader: Any, writer: Any) -> None:
        """Answer every message until the client closes."""
        try:
            while True:
                try:
                    message = await reader.readmessage()
                except asyncio.IncompleteReadError:
                    state.closed_by_client += 1
                    return
                state.messages.append(message)
                writer.writemessage(answer(message))
                await writer.drain()
        finally:
            writer.close()

    server = await start_hl7_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def ack(code: str, text: str = "") -> Callable[[Any], Any]:
    """Return an answer function acknowledging with code (and MSA-3 text)."""

    def answer(message: Any) -> Any:
        """Build the library's ACK for message."""
        reply = message.create_ack(ack_code=code, application="LAB", facility="CHU")
        if text:
            reply = hl7.parse(str(reply).rstrip("\r") + "|" + text)
        return reply

    return answer


def raw_server(payload: bytes, close: bool) -> tuple[StreamHandler, asyncio.Event]:
    """Return a handler that reads the request's end block, sends payload, closes if asked."""
    answered = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wait for the framed message, answer with payload."""
        try:
            await reader.readuntil(b"\x1c\r")
            if payload:
                writer.write(payload)
                await writer.drain()
            answered.set()
            if not close:
                await reader.read()  # until the probe closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return handler, answered


def acks(result: Any) -> dict[str, float]:
    """Return the hl7_ack state set of a result."""
    return {code: sample(result, "hl7_ack", code=code) for code in ACK_CODES}


async def test_default_query_acked_on_open_connection(probe: Hl7Probe, ctx: ProbeContext) -> None:
    """A listener that keeps the connection open: the framed AA is read, no close awaited."""
    async with mllp_listener(ack("AA")) as listener:
        check = make_check(probe, f"127.0.0.1:{listener.port}", receiving_application="LAB")
        result = await probe(check, ctx)
        await wait_for(lambda: listener.closed_by_client == 1, "the probe to close its side")
    assert result.success, result.error
    assert acks(result) == {"AA": 1, "AE": 0, "AR": 0, "CA": 0, "CE": 0, "CR": 0}
    roundtrip = sample(result, "hl7_roundtrip_seconds")
    assert 0 < roundtrip < 5
    assert [name for name, _ in result.phases] == ["connect", "roundtrip"]
    (message,) = listener.messages
    assert str(message.segment("MSH")[9]) == "QRY^A19"
    assert str(message.segment("MSH")[5]) == "LAB"
    control_id = str(message.segment("MSH")[10])
    assert control_id.startswith("VIGIE") and len(control_id) == 20
    assert str(message.segment("QRD")[4]) == control_id


async def test_configured_message_gets_fresh_control_id(probe: Hl7Probe, ctx: ProbeContext) -> None:
    """A configured message is sent as written except MSH-10, fresh on every run."""
    async with mllp_listener(ack("CA")) as listener:
        check = make_check(probe, f"127.0.0.1:{listener.port}", message=ADT)
        first = await probe(check, ctx)
        second = await probe(check, ctx)
    assert first.success and second.success, (first.error, second.error)
    assert sample(first, "hl7_ack", code="CA") == 1
    ids = [str(m.segment("MSH")[10]) for m in listener.messages]
    assert len(set(ids)) == 2 and "PLACEHOLDER" not in ids
    assert str(listener.messages[0].segment("MSH")[9]) == "ADT^A01"
    assert str(listener.messages[0].segment("PID")[5]) == "TEST^VIGIE"


@pytest.mark.parametrize(
    ("code", "words"), [("AE", "application error"), ("AR", "application reject")]
)
async def test_nack_names_code_and_text(
    probe: Hl7Probe, ctx: ProbeContext, code: str, words: str
) -> None:
    """An AE or AR answer fails naming the code, its meaning and the peer's MSA-3 text."""
    async with mllp_listener(ack(code, "Unknown\x07 message type")) as listener:
        result = await probe(make_check(probe, f"127.0.0.1:{listener.port}"), ctx)
    assert result.error == f"NACK {code} ({words}): Unknown  message type"
    assert acks(result)[code] == 1 and sum(acks(result).values()) == 1


async def test_accept_setting_widens_success(probe: Hl7Probe, ctx: ProbeContext) -> None:
    """accept lists the codes counted as success: AE can be accepted on purpose."""
    async with mllp_listener(ack("AE")) as listener:
        check = make_check(probe, f"127.0.0.1:{listener.port}", accept=["AA", "AE"])
        result = await probe(check, ctx)
    assert result.success and sample(result, "hl7_ack", code="AE") == 1


@pytest.mark.parametrize(
    ("payload", "close", "reason"),
    [
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            False,
            "protocol error: expected the MLLP start block 0x0b, got b'HTTP/1.1 400 Bad"
            " Request\\r\\n\\r\\n'",
        ),
        (b"\x0bMSH|^~\\&|LAB", True, "connection closed after 12 bytes, before the MLLP end"),
        (b"", True, "protocol error: connection closed without an answer"),
        (b"\x0bMSH|^~\\&|LAB\x1cX", False, "MLLP end block 0x1c followed by b'X', not CR"),
        (b"\x0bnot hl7\x1c\r", False, "protocol error: answer is not HL7: starts with 'not hl7'"),
        (b"\x0bMSH|^~\\&|LAB\rPID|1\x1c\r", False, "protocol error: answer has no MSA segment"),
        (
            b"\x0bMSH|^~\\&|LAB\rMSA|ZZ|X\x1c\r",
            False,
            "protocol error: MSA-1 'ZZ' is not an HL7 ACK code",
        ),
        (
            b"\x0bMSH|^~\\&|LAB\rMSA|AA|SOMEONE-ELSE\x1c\r",
            False,
            "ACK AA is for control id 'SOMEONE-ELSE', sent 'VIGIE",
        ),
        (
            b"\x0b" + b"A" * 1_000_000,
            False,
            "protocol error: no MLLP end block within 65536 bytes",
        ),
    ],
)
async def test_bad_answers_are_named(
    probe: Hl7Probe, ctx: ProbeContext, payload: bytes, close: bool, reason: str
) -> None:
    """Garbage, truncated frames, bad end blocks, no MSA, a wrong control id, a huge answer."""
    handler, answered = raw_server(payload, close)
    async with serve_tcp(handler) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
        await wait_for(answered.is_set, "the server to answer")
    assert not result.success and result.error is not None
    assert reason in result.error, result.error
    assert len(result.error) <= 300
    if "control id" in reason:
        assert sample(result, "hl7_ack", code="AA") == 1
    else:
        assert sum(acks(result).values()) == 0


async def test_ack_in_one_byte_pieces(probe: Hl7Probe, ctx: ProbeContext) -> None:
    """An ACK written a byte at a time after a stray CR LF (as split as TCP allows) is read."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer AA for the control id received, one byte per write, then wait for the close."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            request = await reader.readuntil(b"\x1c\r")
            control_id = request.split(b"\r")[0].split(b"|")[9]
            ack = b"\r\n\x0bMSH|^~\\&|LAB|CHU\rMSA|AA|" + control_id + b"\x1c\r"
            for byte in ack:
                writer.write(bytes([byte]))
                await writer.drain()
            await reader.read()
        writer.close()

    async with serve_tcp(trickle) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.success, result.error
    assert sample(result, "hl7_ack", code="AA") == 1


@pytest.mark.parametrize(
    "chunks",
    [
        [b"\x0bMSH|A\x1c", b"\r"],
        [b"\r\n", b"\x0b", b"MSH|A", b"\x1c", b"\r", b"\x0bnext frame\x1c\r"],
        [b"\x0bMSH|A\x1c\r"],
    ],
    ids=["end-block-split", "every-part-alone", "one-read"],
)
async def test_read_frame_across_reads(chunks: list[bytes]) -> None:
    """read_frame returns the payload however the reads split the frame, and stops at its end.

    The bytes come from a list, one chunk per read: TCP cannot be made to split them so.
    """

    class Chunks:
        """Returns one chunk per read, then b""."""

        async def read(self, n: int = -1) -> bytes:
            """Return the next chunk."""
            return chunks.pop(0) if chunks else b""

    assert await read_frame(Chunks(), 1024) == b"MSH|A"


async def test_silent_listener_times_out_naming_the_wait(
    probe: Hl7Probe, ctx: ProbeContext
) -> None:
    """A listener that reads but never answers fails on the probe's own deadline, saying so."""
    got = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read everything, answer nothing."""
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\x1c\r")
            got.set()
            await reader.read()
        writer.close()

    async with serve_tcp(silent) as port:
        check = dataclasses.replace(make_check(probe, f"127.0.0.1:{port}"), timeout=1.0)
        result = await probe(check, ctx)
    assert got.is_set()
    assert result.error == (
        "timeout after 0.9s waiting for the ACK (connection open, no complete MLLP frame received)"
    )
    assert sum(acks(result).values()) == 0


async def test_refused(probe: Hl7Probe, ctx: ProbeContext) -> None:
    """A closed port fails with 'Connection refused' and an all-zero ACK state set."""
    port = refused_port()
    result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"
    assert sum(acks(result).values()) == 0


async def test_tls(probe: Hl7Probe, ctx: ProbeContext, pki: Pki) -> None:
    """MLLP over TLS: verified with the CA file it succeeds; without it, the reason says TLS."""
    async with mllp_listener(ack("AA"), pki.server_context()) as listener:
        target = f"127.0.0.1:{listener.port}"
        good = await probe(
            make_check(probe, target, tls=True, tls_config={"ca_file": str(pki.ca_file)}), ctx
        )
        bad = await probe(make_check(probe, target, tls=True), ctx)
    assert good.success, good.error
    assert [name for name, _ in good.phases] == ["connect", "tls", "roundtrip"]
    assert sample(good, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()
    assert bad.error is not None and bad.error.startswith("TLS: certificate verify failed")


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"message": "PID|1"}, "must start with an MSH segment"),
        ({"message": "MSH|^~\\&|A|B"}, "MSH has 4 fields, needs at least 12"),
        ({"sending_application": "A|B"}, "must not contain HL7 delimiters"),
        ({"accept": ["OK"]}, "Input should be 'AA'"),
        ({"accept": []}, "at least 1 item"),
        ({"max_ack_bytes": 1}, "greater than or equal to 64"),
    ],
)
def test_settings_rejected(settings: dict[str, Any], error: str) -> None:
    """Bad settings are refused at load time naming what is wrong."""
    with pytest.raises(ValidationError, match=error):
        Hl7Settings.model_validate(settings)
