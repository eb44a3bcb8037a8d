"""The smtp probe: banner, EHLO, STARTTLS (or implicit TLS) and its certificate, optional AUTH.

A small SMTP client on asyncio streams rather than a library, so every reply is bounded (line
and total size) and every failure names the step and what the server said. The imap probe's
mail round trip sends its message with the same client (`open_smtp`, `send_mail`).
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from vigie.core.hostport import HostPortTarget, split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.core.secrets import ConfigPath, resolve_secret_field
from vigie.probes.base import Check, ProbeContext
from vigie.probes.tcp import close_writer
from vigie.probes.tls import (
    SslContextCache,
    TlsSettings,
    cert_expiry,
    describe_ssl_error,
    os_error_reason,
    peer_cert_der,
)

__all__ = [
    "MailFailure",
    "SmtpClient",
    "SmtpProbe",
    "SmtpProbeSettings",
    "SmtpReply",
    "TlsMode",
    "open_smtp",
    "send_mail",
]

TlsMode = Literal["none", "starttls", "implicit"]
MAX_LINE_BYTES = 8192
"""Longest reply or response line read from a mail server (SMTP allows 512)."""
# The probe's own deadline, as a share of the check's timeout, so a silent server is reported
# with the step it was in rather than as the scheduler's bare timeout.
OWN_DEADLINE_SHARE = 0.9
_EHLO_NAME = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$|^\[[0-9A-Fa-f:.]+\]$"
)
_ADDRESS = re.compile(r"^[^\s<>@\x00-\x1f\x7f]+@[A-Za-z0-9.-]+$")
_SHOWN = 60


class MailFailure(Exception):
    """A mail session failed; the message is the reason, naming the step and what was seen."""


def shown(data: bytes) -> str:
    """Return the start of untrusted bytes as short printable text."""
    text = sanitise(data[:_SHOWN].decode("utf-8", errors="replace"), _SHOWN)
    return text + ("..." if len(data) > _SHOWN else "")


class SmtpProbeSettings(BaseModel):
    """Settings of an smtp check (and of the SMTP side of the imap probe's round trip)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tls: TlsMode = Field(
        "starttls",
        description="starttls: EHLO then STARTTLS, which the server must offer (ports 25, 587);"
        " implicit: TLS from the first byte (port 465); none: plain text.",
    )
    tls_config: TlsSettings = Field(
        default_factory=TlsSettings,
        description="Server verification and client certificate, with starttls or implicit.",
    )
    ehlo_name: str | None = Field(
        None, description="Name given in EHLO. Default: this machine's host name."
    )
    username: str | None = Field(None, description="Log in with AUTH PLAIN or LOGIN as this user.")
    password: SecretStr | None = Field(None, description="Password (prefer password_file).")
    password_file: ConfigPath | None = Field(
        None, description="File holding the password, read once at load."
    )
    max_reply_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest reply read (all its lines); a longer one is a protocol error.",
    )

    @field_validator("ehlo_name")
    @classmethod
    def _valid_ehlo(cls, value: str | None) -> str | None:
        """Require a domain name or an address literal in brackets."""
        if value is not None and (len(value) > 255 or not _EHLO_NAME.match(value)):
            raise ValueError(f"must be a domain name or [address], got {value!r}")
        return value

    @model_validator(mode="after")
    def _login(self) -> Self:
        """Read the password file; refuse a password without user, or a login in clear."""
        password = resolve_secret_field(self, "password")
        check_login(self.username, password, self.tls)
        return self


def check_login(username: str | None, password: SecretStr | None, tls: TlsMode) -> None:
    """Raise ValueError unless login settings are whole and would not travel in clear."""
    if username is None:
        if password is not None:
            raise ValueError("password needs username")
        return
    if password is None:
        raise ValueError("username needs password or password_file")
    if tls == "none":
        raise ValueError("a login needs tls: starttls or implicit (it would travel in clear)")
    for name, text in (("username", username), ("password", password.get_secret_value())):
        if any(c in text for c in "\r\n\x00"):
            raise ValueError(f"{name} must not contain CR, LF or NUL")


def check_address(value: str) -> str:
    """Return a mail address (local@domain, no brackets) or raise ValueError."""
    if len(value) > 254 or not _ADDRESS.match(value):
        raise ValueError(f"must be a mail address such as probe@chu.local, got {value!r}")
    return value


class SmtpReply(NamedTuple):
    """One SMTP reply: its code and the text of its lines."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """Return the reply as one bounded line: code and the first line's text."""
        first = self.lines[0] if self.lines else ""
        return sanitise(f"{self.code} {first}".strip(), 200)


@dataclass(slots=True)
class Session:
    """What one run observed, filled as it goes: the failure reason names `step` on timeout."""

    step: str = "connecting"
    samples: list[Sample] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)


def gauge(name: str, value: float, help: str, labels: tuple[tuple[str, str], ...] = ()) -> Sample:
    """Return a gauge sample."""
    return Sample(name, value, labels, "gauge", help)


async def read_line(reader: asyncio.StreamReader, what: str, started: bool = False) -> bytes:
    """Read one CRLF- (or LF-) ended line of at most MAX_LINE_BYTES; raise MailFailure.

    started says that lines of the same answer came already: a close then cuts it short.
    """
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise MailFailure(
            f"protocol error: {what} line longer than {MAX_LINE_BYTES} bytes"
        ) from None
    except asyncio.IncompleteReadError as exc:
        if exc.partial or started:
            seen = f": {shown(exc.partial)!r}" if exc.partial else ""
            raise MailFailure(
                f"protocol error: connection closed in the middle of {what}{seen}"
            ) from None
        raise MailFailure(f"connection closed by the server while waiting for {what}") from None


async def open_stream(
    host: str,
    port: int,
    *,
    tls: TlsMode,
    tls_config: TlsSettings,
    ssl_contexts: SslContextCache,
    session: Session,
    ctx: ProbeContext,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ssl.SSLContext | None]:
    """Connect (and do the implicit TLS handshake); return the streams and the SSL context."""
    sslctx: ssl.SSLContext | None = None
    if tls != "none":
        try:
            sslctx = ssl_contexts.get(tls_config)
        except ValueError as exc:
            raise MailFailure(f"TLS: {exc}") from None
    session.step = "connecting"
    ctx.log("mail_connect", host=host, port=port, tls=tls)
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE_BYTES)
    except socket.gaierror as exc:
        raise MailFailure(f"DNS: cannot resolve {host!r}: {exc.strerror}") from None
    except OSError as exc:
        raise MailFailure(f"connect to {host}:{port} failed: {os_error_reason(exc)}") from None
    took = time.monotonic() - start
    session.phases.append(("connect", took))
    session.samples.append(
        gauge(
            "probe_tcp_connect_duration_seconds",
            took,
            "Seconds to resolve the host and open the TCP connection (TLS excluded).",
        )
    )
    if tls == "implicit" and sslctx is not None:
        try:
            await start_tls(
                writer, sslctx, tls_config=tls_config, host=host, session=session, phase="tls"
            )
        except BaseException:
            await close_writer(writer)
            raise
    return reader, writer, sslctx


async def start_tls(
    writer: asyncio.StreamWriter,
    sslctx: ssl.SSLContext,
    *,
    tls_config: TlsSettings,
    host: str,
    session: Session,
    phase: str,
) -> None:
    """Do the TLS handshake on the connection and note the certificate's expiry."""
    session.step = "the TLS handshake"
    start = time.monotonic()
    try:
        await writer.start_tls(sslctx, server_hostname=tls_config.server_name or host)
    except ssl.SSLError as exc:
        raise MailFailure(describe_ssl_error(exc)) from None
    except OSError as exc:
        raise MailFailure(f"TLS handshake failed: {os_error_reason(exc)}") from None
    session.phases.append((phase, time.monotonic() - start))
    der = peer_cert_der(writer.get_extra_info("ssl_object"))
    expiry = cert_expiry(der) if der is not None else None
    if expiry is not None:
        session.samples.append(
            gauge(
                "probe_tls_cert_expiry_timestamp_seconds",
                expiry,
                "Unix time at which the server's leaf certificate expires (notAfter).",
            )
        )


class SmtpClient:
    """One SMTP connection: commands and bounded replies; failures raise MailFailure."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_reply_bytes: int,
        session: Session,
        ctx: ProbeContext,
    ) -> None:
        """Wrap connected streams."""
        self.reader = reader
        self.writer = writer
        self.max_reply_bytes = max_reply_bytes
        self.session = session
        self.ctx = ctx
        self.extensions: dict[str, str] = {}

    async def reply(self, what: str) -> SmtpReply:
        """Read one (possibly multi-line) reply; raise MailFailure if it is not SMTP."""
        self.session.step = f"the {what}"
        lines: list[str] = []
        size = 0
        code: int | None = None
        while True:
            raw = await read_line(self.reader, f"the {what}", bool(lines))
            size += len(raw)
            if size > self.max_reply_bytes:
                raise MailFailure(
                    f"protocol error: {what} longer than {self.max_reply_bytes} bytes"
                )
            line = raw.rstrip(b"\r\n")
            head = line[:3]
            sep = line[3:4]
            if not (len(head) == 3 and head.isdigit() and sep in (b"", b" ", b"-")):
                raise MailFailure(f"protocol error: {what} is not an SMTP reply: {shown(line)!r}")
            this = int(head)
            if code is not None and this != code:
                raise MailFailure(f"protocol error: {what} mixes codes {code} and {this}")
            code = this
            lines.append(line[4:].decode("utf-8", errors="replace"))
            if sep != b"-":
                return SmtpReply(code, tuple(lines))

    async def command(self, line: str, what: str, *, secret: bool = False) -> SmtpReply:
        """Send one command line and return its reply (the line is not logged if secret)."""
        self.session.step = f"the {what}"
        if not secret:
            self.ctx.log("smtp_command", command=sanitise(line, 80))
        try:
            self.writer.write(line.encode() + b"\r\n")
            await self.writer.drain()
        except OSError as exc:
            raise MailFailure(f"connection error sending {what}: {os_error_reason(exc)}") from None
        reply = await self.reply(f"{what} reply")
        self.ctx.log("smtp_reply", reply=reply.text)
        return reply

    async def ehlo(self, name: str, allow_helo: bool) -> None:
        """Greet with EHLO and keep its extensions; fall back to HELO when allowed."""
        reply = await self.command(f"EHLO {name}", "EHLO")
        if reply.code == 250:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.upper()] = params
            return
        if allow_helo and 500 <= reply.code < 600:
            helo = await self.command(f"HELO {name}", "HELO")
            if helo.code == 250:
                self.extensions = {}
                return
            raise MailFailure(f"HELO refused: {helo.text}")
        raise MailFailure(f"EHLO refused: {reply.text}")

    def listed_extensions(self) -> str:
        """Return the EHLO extensions as a short text for reasons."""
        if not self.extensions:
            return "none"
        return sanitise(", ".join(self.extensions), 200)

    async def login(self, username: str, password: str) -> None:
        """Authenticate with AUTH PLAIN or LOGIN, as the server offers; raise MailFailure."""
        offered = set(
            (self.extensions.get("AUTH") or self.extensions.get("AUTH=") or "").upper().split()
        )
        if "PLAIN" in offered:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            self.ctx.log("smtp_command", command="AUTH PLAIN ***")
            reply = await self.command(f"AUTH PLAIN {token}", "AUTH", secret=True)
        elif "LOGIN" in offered:
            reply = await self.command("AUTH LOGIN", "AUTH")
            for value in (username, password):
                if reply.code != 334:
                    break
                encoded = base64.b64encode(value.encode()).decode()
                reply = await self.command(encoded, "AUTH", secret=True)
        elif "AUTH" not in self.extensions and "AUTH=" not in self.extensions:
            raise MailFailure("login: the server offers no AUTH after EHLO")
        else:
            raise MailFailure(
                f"login: the server offers AUTH {sanitise(' '.join(sorted(offered)), 80)},"
                " none of PLAIN, LOGIN"
            )
        if reply.code != 235:
            raise MailFailure(f"login failed: {reply.text}")

    async def quit(self) -> None:
        """Say QUIT politely and ignore what happens then."""
        try:
            async with asyncio.timeout(1.0):
                self.writer.write(b"QUIT\r\n")
                await self.writer.drain()
                await self.reader.readuntil(b"\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass


async def open_smtp(
    host: str,
    port: int,
    settings: SmtpProbeSettings,
    *,
    ssl_contexts: SslContextCache,
    session: Session,
    ctx: ProbeContext,
) -> SmtpClient:
    """Connect, read the banner, EHLO, STARTTLS and log in as set; return the ready client.

    The caller closes client.writer (close_writer) whatever happens; on failure the streams
    are closed here.
    """
    reader, writer, sslctx = await open_stream(
        host,
        port,
        tls=settings.tls,
        tls_config=settings.tls_config,
        ssl_contexts=ssl_contexts,
        session=session,
        ctx=ctx,
    )
    client = SmtpClient(reader, writer, settings.max_reply_bytes, session, ctx)
    try:
        await _greet(client, host, settings, sslctx, session)
    except BaseException:
        await close_writer(writer)
        raise
    return client


async def _greet(
    client: SmtpClient,
    host: str,
    settings: SmtpProbeSettings,
    sslctx: ssl.SSLContext | None,
    session: Session,
) -> None:
    """Banner, EHLO, STARTTLS and EHLO again, login: the session setup steps."""
    start = time.monotonic()
    banner = await client.reply("banner")
    session.phases.append(("banner", time.monotonic() - start))
    session.samples.append(
        gauge(
            "smtp_banner_code", banner.code, "Reply code of the server's greeting (220 is ready)."
        )
    )
    client.ctx.log("smtp_banner", banner=banner.text)
    if banner.code != 220:
        raise MailFailure(f"banner {banner.text}")
    name = settings.ehlo_name or socket.gethostname() or "localhost"
    start = time.monotonic()
    await client.ehlo(name, allow_helo=settings.tls == "none" and settings.username is None)
    session.phases.append(("ehlo", time.monotonic() - start))
    if settings.tls == "starttls" and sslctx is not None:
        if "STARTTLS" not in client.extensions:
            raise MailFailure(
                "the server does not offer STARTTLS"
                f" (EHLO extensions: {client.listed_extensions()})"
            )
        start = time.monotonic()
        reply = await client.command("STARTTLS", "STARTTLS")
        if reply.code != 220:
            raise MailFailure(f"STARTTLS refused: {reply.text}")
        await start_tls(
            client.writer,
            sslctx,
            tls_config=settings.tls_config,
            host=host,
            session=session,
            phase="starttls",
        )
        session.phases[-1] = ("starttls", time.monotonic() - start)
        await client.ehlo(name, allow_helo=False)
    session.samples.append(
        gauge(
            "smtp_tls",
            1.0 if sslctx is not None else 0.0,
            "1 when the session runs over TLS (STARTTLS or implicit), else 0.",
        )
    )
    size = client.extensions.get("SIZE", "").strip()
    if size.isdigit():
        session.samples.append(
            gauge(
                "smtp_max_message_bytes",
                int(size),
                "Largest message the server accepts, from its EHLO SIZE extension (0: no limit).",
            )
        )
    if settings.username is not None and settings.password is not None:
        start = time.monotonic()
        try:
            await client.login(settings.username, settings.password.get_secret_value())
        except MailFailure:
            session.samples.append(_login_sample(0.0))
            raise
        session.phases.append(("auth", time.monotonic() - start))
        session.samples.append(_login_sample(1.0))


def _login_sample(value: float) -> Sample:
    """Return the smtp_login_success sample."""
    return gauge("smtp_login_success", value, "1 when the login was accepted, 0 when refused.")


def _dot_stuffed(message: bytes) -> bytes:
    """Return a message with CRLF line ends and leading dots doubled, ended by CRLF.CRLF."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    return body + b"\r\n.\r\n"


async def send_mail(client: SmtpClient, mail_from: str, rcpt_to: str, message: bytes) -> SmtpReply:
    """Send one message (MAIL, RCPT, DATA); return the final reply; raise MailFailure."""
    reply = await client.command(f"MAIL FROM:<{mail_from}>", "MAIL FROM")
    if reply.code != 250:
        raise MailFailure(f"MAIL FROM refused: {reply.text}")
    reply = await client.command(f"RCPT TO:<{rcpt_to}>", "RCPT TO")
    if reply.code not in (250, 251):
        raise MailFailure(f"RCPT TO refused: {reply.text}")
    reply = await client.command("DATA", "DATA")
    if reply.code != 354:
        raise MailFailure(f"DATA refused: {reply.text}")
    client.session.step = "the message sending"
    try:
        client.writer.write(_dot_stuffed(message))
        await client.writer.drain()
    except OSError as exc:
        raise MailFailure(f"connection error sending the message: {os_error_reason(exc)}") from None
    reply = await client.reply("reply to the message")
    if reply.code != 250:
        raise MailFailure(f"message refused: {reply.text}")
    return reply


def timeout_reason(session: Session, budget: float) -> str:
    """Return the failure reason of a run that hit its own deadline."""
    return f"timeout after {budget:.3g}s waiting for {session.step}"


class SmtpProbe(HostPortTarget):
    """Probe kind "smtp": banner, EHLO, STARTTLS and certificate, optional login, then QUIT."""

    kind: ClassVar[str] = "smtp"
    Settings: ClassVar[type[BaseModel]] = SmtpProbeSettings

    def __init__(self) -> None:
        """Start with an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()

    async def __call__(self, check: Check[SmtpProbeSettings], ctx: ProbeContext) -> ProbeResult:
        """Open the session as set, QUIT, report."""
        settings = check.settings
        host, port = split_host_port(check.target)
        session = Session()
        budget = check.timeout * OWN_DEADLINE_SHARE
        error: str | None = None
        try:
            async with asyncio.timeout(budget):
                client = await open_smtp(
                    host, port, settings, ssl_contexts=self._ssl_contexts, session=session, ctx=ctx
                )
                try:
                    await client.quit()
                finally:
                    await close_writer(client.writer)
        except TimeoutError:
            error = timeout_reason(session, budget)
        except MailFailure as exc:
            error = str(exc)
        except OSError as exc:  # a read or write failing outside the steps that name theirs
            error = f"connection error waiting for {session.step}: {os_error_reason(exc)}"
        if error is not None:
            error = bound_text(error)
            ctx.log("smtp_failed", error=error)
        return ProbeResult(
            success=error is None,
            error=error,
            samples=tuple(session.samples),
            phases=tuple(session.phases),
        )
