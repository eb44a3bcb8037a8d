"""The smtp probe against a real SMTP server (aiosmtpd) with STARTTLS, implicit TLS and AUTH,
and against raw servers sending what no SMTP server should."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from tests.probes.conftest import Pki, StreamHandler, make_check, refused_port, sample, serve_tcp
from vigie.probes.base import ProbeContext
from vigie.probes.smtp import SmtpProbe, SmtpProbeSettings

USER = "vigie"
PASSWORD = "correct-horse-battery"


@dataclasses.dataclass
class Relay:
    """What the aiosmtpd server saw: EHLO names and login attempts."""

    port: int = 0
    logins: list[tuple[str, bool]] = dataclasses.field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Accept any message (aiosmtpd handler hook)."""
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept USER with PASSWORD only."""
        assert isinstance(data, LoginPassword)
        ok = data.login.decode() == USER and data.password.decode() == PASSWORD
        self.logins.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)


@asynccontextmanager
async def relay(
    tls_context: ssl.SSLContext | None = None,
    implicit: ssl.SSLContext | None = None,
    auth_exclude: tuple[str, ...] = (),
) -> AsyncIterator[Relay]:
    """Serve aiosmtpd on a free loopback port: STARTTLS with tls_context, TLS with implicit."""
    loop = asyncio.get_running_loop()
    box = Relay()

    def factory() -> SMTP:
        return SMTP(
            box,
            hostname="relay.chu.test",
            ident="Vigie test relay",
            tls_context=tls_context,
            authenticator=box.authenticate,
            auth_require_tls=True,
            auth_exclude_mechanism=auth_exclude,
            loop=loop,
        )

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=implicit)
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def probe() -> SmtpProbe:
    """A fresh smtp probe."""
    return SmtpProbe()


def tls_to(pki: Pki, **more: Any) -> dict[str, Any]:
    """Return settings verifying the server with the test CA."""
    return {"tls_config": {"ca_file": str(pki.ca_file)}, **more}


async def test_starttls_reports_the_certificate(
    probe: SmtpProbe, ctx: ProbeContext, pki: Pki
) -> None:
    """Banner, EHLO, STARTTLS and EHLO again succeed; the certificate's expiry is a sample."""
    async with relay(pki.server_context()) as box:
        result = await probe(make_check(probe, f"127.0.0.1:{box.port}", **tls_to(pki)), ctx)
    assert result.success, result.error
    assert sample(result, "smtp_banner_code") == 220
    assert sample(result, "smtp_tls") == 1
    assert sample(result, "smtp_max_message_bytes") == 33554432
    assert sample(result, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()
    assert [name for name, _ in result.phases] == ["connect", "banner", "ehlo", "starttls"]


async def test_plain_session(probe: SmtpProbe, ctx: ProbeContext) -> None:
    """tls: none stops after EHLO, without TLS."""
    async with relay() as box:
        result = await probe(make_check(probe, f"127.0.0.1:{box.port}", tls="none"), ctx)
    assert result.success, result.error
    assert sample(result, "smtp_tls") == 0
    assert not [s for s in result.samples if s.name == "probe_tls_cert_expiry_timestamp_seconds"]


async def test_missing_starttls_is_named(probe: SmtpProbe, ctx: ProbeContext, pki: Pki) -> None:
    """A server without STARTTLS fails the default tls: starttls, listing what it offers."""
    async with relay() as box:
        result = await probe(make_check(probe, f"127.0.0.1:{box.port}", **tls_to(pki)), ctx)
    assert result.error == (
        "the server does not offer STARTTLS (EHLO extensions: SIZE, 8BITMIME, HELP)"
    )


async def test_implicit_tls(probe: SmtpProbe, ctx: ProbeContext, pki: Pki) -> None:
    """tls: implicit does the handshake before the banner (port 465 style)."""
    async with relay(implicit=pki.server_context()) as box:
        check = make_check(probe, f"127.0.0.1:{box.port}", **tls_to(pki, tls="implicit"))
        result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "smtp_tls") == 1
    assert [name for name, _ in result.phases] == ["connect", "tls", "banner", "ehlo"]


async def test_unknown_ca_fails_verification(probe: SmtpProbe, ctx: ProbeContext, pki: Pki) -> None:
    """A certificate from a CA not trusted fails with the verification reason."""
    async with relay(pki.server_context()) as box:
        result = await probe(make_check(probe, f"127.0.0.1:{box.port}"), ctx)
    assert result.error is not None
    assert result.error.startswith("TLS: certificate verify failed"), result.error


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_login_from_password_file(
    probe: SmtpProbe, ctx: ProbeContext, pki: Pki, tmp_path: Path, mechanism: str
) -> None:
    """The login uses the password read from its file, by AUTH PLAIN or LOGIN."""
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
    async with relay(pki.server_context(), auth_exclude=(other,)) as box:
        check = make_check(
            probe,
            f"127.0.0.1:{box.port}",
            **tls_to(pki, username=USER, password_file=str(password_file)),
        )
        result = await probe(check, ctx)
    assert result.success, result.error
    assert box.logins == [(USER, True)]
    assert sample(result, "smtp_login_success") == 1
    assert [name for name, _ in result.phases][-1] == "auth"


async def test_wrong_password_fails_without_leaking_it(
    probe: SmtpProbe, ctx: ProbeContext, pki: Pki
) -> None:
    """A refused login names the server's reply; the password is in no reason nor log."""
    async with relay(pki.server_context()) as box:
        check = make_check(
            probe, f"127.0.0.1:{box.port}", **tls_to(pki, username=USER, password="guess-me")
        )
        result = await probe(check, ctx)
    assert result.error == "login failed: 535 5.7.8 Authentication credentials invalid"
    assert sample(result, "smtp_login_success") == 0
    logs = " ".join(ctx.log.lines)
    assert "guess-me" not in logs
    assert "Z3Vlc3MtbWU" not in logs  # nor base64-encoded


async def test_connection_refused(probe: SmtpProbe, ctx: ProbeContext) -> None:
    """A closed port fails naming the address."""
    port = refused_port()
    result = await probe(make_check(probe, f"127.0.0.1:{port}", tls="none"), ctx)
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


def raw(*chunks: bytes, then_wait: bool = False) -> StreamHandler:
    """Return a server handler that sends chunks, reads a little, then closes (or waits)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send what a broken server would."""
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                await asyncio.wait_for(reader.read(1024), 0.5)
        except (TimeoutError, OSError):
            pass
        if then_wait:
            await reader.read()
        writer.close()

    return handle


@pytest.mark.parametrize(
    ("chunks", "reason"),
    [
        ((b"554 5.3.2 No service here\r\n",), "banner 554 5.3.2 No service here"),
        (
            (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",),
            "protocol error: banner is not an SMTP reply: 'HTTP/1.1 400 Bad Request'",
        ),
        ((b"220-relay ready\r\n",), "protocol error: connection closed"),
        ((b"220 relay\r\n", b"250-relay\r\n300 SIZE\r\n"), "protocol error: EHLO reply mixes"),
        ((b"220 ok\r\n" + b"\x1b[31m" * 5000,), "protocol error: the EHLO reply line longer"),
        ((b"A" * 100_000,), "protocol error: the banner line longer than 8192 bytes"),
        ((b"220-x\r\n" * 20_000,), "protocol error: banner longer than 65536 bytes"),
        ((), "connection closed by the server while waiting for the banner"),
    ],
)
async def test_bad_servers_are_bounded_protocol_errors(
    probe: SmtpProbe, ctx: ProbeContext, chunks: tuple[bytes, ...], reason: str
) -> None:
    """Refusals, HTTP, truncated, mixed, huge and empty answers fail with a bounded reason."""
    async with serve_tcp(raw(*chunks)) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}", tls="none"), ctx)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith(reason), result.error
    assert len(result.error) <= 512
    assert result.error.isprintable()


async def test_silent_server_times_out_naming_the_step(probe: SmtpProbe, ctx: ProbeContext) -> None:
    """A server that accepts and says nothing fails within the timeout, waiting for the banner."""
    async with serve_tcp(raw(then_wait=True)) as port:
        check = dataclasses.replace(make_check(probe, f"127.0.0.1:{port}", tls="none"), timeout=0.5)
        result = await asyncio.wait_for(probe(check, ctx), 5)
    assert result.error == "timeout after 0.45s waiting for the banner"


async def test_connection_reset_is_a_clear_failure(probe: SmtpProbe, ctx: ProbeContext) -> None:
    """A server resetting the connection after the banner fails naming the step, no crash."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Greet, wait for EHLO, then reset (SO_LINGER 0 makes close send RST)."""
        writer.write(b"220 ok\r\n")
        await writer.drain()
        await reader.readline()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with serve_tcp(handle) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}", tls="none"), ctx)
    assert result.error == "connection error waiting for the EHLO reply: Connection reset by peer"


async def test_starttls_refused(probe: SmtpProbe, ctx: ProbeContext, pki: Pki) -> None:
    """A STARTTLS offered then refused names the reply."""
    script = raw(b"220 ok\r\n", b"250-x\r\n250 STARTTLS\r\n", b"454 4.7.0 TLS not available\r\n")
    async with serve_tcp(script) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}", **tls_to(pki)), ctx)
    assert result.error == "STARTTLS refused: 454 4.7.0 TLS not available"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"username": "u", "password": "p", "tls": "none"}, "would travel in clear"),
        ({"password": "p"}, "password needs username"),
        ({"username": "u"}, "username needs password"),
        ({"username": "u\r\nRSET", "password": "p"}, "must not contain CR"),
        ({"ehlo_name": "bad name"}, "must be a domain name"),
        ({"tls": "ssl"}, "Input should be 'none', 'starttls' or 'implicit'"),
    ],
)
def test_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    """Bad settings are refused at load, saying why."""
    with pytest.raises(ValidationError, match=message):
        SmtpProbeSettings.model_validate(settings)


def test_password_file_is_read_at_load(tmp_path: Path) -> None:
    """The file is read once and the dumped settings validate again to the same."""
    (tmp_path / "pw").write_text("s3cret\n")
    settings = SmtpProbeSettings.model_validate(
        {"username": "u", "password_file": str(tmp_path / "pw")}
    )
    assert settings.password is not None
    assert settings.password.get_secret_value() == "s3cret"
    assert SmtpProbeSettings.model_validate(settings.model_dump()) == settings
