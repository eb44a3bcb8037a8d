"""The imap probe: greeting, CAPABILITY, STARTTLS (or implicit TLS) and its certificate, optional
login and mailbox, and an optional end-to-end mail round trip.

The round trip sends a message with a unique Message-ID through an SMTP server (the smtp
probe's client), waits for it in the IMAP mailbox, then deletes it: the one check that says
mail is delivered, not only that both servers answer. A small IMAP client on asyncio streams:
responses are bounded (line length, literal sizes, total size) and failures name the step.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from vigie.core.hostport import HostPortTarget, format_host_port, split_host_port
from vigie.core.results import ProbeResult, bound_text
from vigie.core.sanitise import sanitise
from vigie.core.secrets import ConfigPath, resolve_secret_field
from vigie.probes.base import Check, ProbeContext
from vigie.probes.smtp import (
    OWN_DEADLINE_SHARE,
    MailFailure,
    Session,
    SmtpProbeSettings,
    TlsMode,
    check_address,
    check_login,
    gauge,
    open_smtp,
    open_stream,
    read_line,
    send_mail,
    shown,
    start_tls,
)
from vigie.probes.tcp import close_writer
from vigie.probes.tls import SslContextCache, TlsSettings, os_error_reason

__all__ = ["ImapClient", "ImapProbe", "ImapSettings", "RoundtripSettings", "quoted"]

_LITERAL = re.compile(rb"\{([0-9]{1,10})\+?\}\r?\n$")
_TAGGED = re.compile(r"^(V[0-9]{4}) (OK|NO|BAD)(?: (.*))?$", re.IGNORECASE | re.DOTALL)
_CODE = re.compile(r"^\[([^\]]*)\]")
_EXISTS = re.compile(r"^\* ([0-9]{1,10}) EXISTS$", re.IGNORECASE)
PROBE_HEADER = "X-Vigie-Probe"


def quoted(text: str) -> str:
    """Return text as an IMAP quoted string; raise ValueError if it cannot be one."""
    if not text.isascii() or any(c in text for c in "\r\n\x00"):
        raise ValueError("must be ASCII without CR, LF or NUL to be sent as an IMAP string")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RoundtripSettings(BaseModel):
    """The mail round trip of an imap check: send through SMTP, find in IMAP, delete."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    smtp_target: str = Field(description="The SMTP server to send through, host:port.")
    smtp: SmtpProbeSettings = Field(
        default_factory=SmtpProbeSettings,
        description="How to talk to it: the smtp probe's settings (tls, login...).",
    )
    mail_from: str = Field(description="Envelope and From: address of the test message.")
    rcpt_to: str = Field(description="Recipient: an address delivered to the probed mailbox.")
    poll_interval: float = Field(
        0.5, ge=0.05, le=10.0, description="Seconds between searches for the message."
    )
    cleanup_after: float = Field(
        3600.0,
        ge=60.0,
        description="Probe messages of this check older than this (seconds; from runs that gave"
        " up before they arrived) are deleted too, when the server offers WITHIN.",
    )

    @field_validator("smtp_target")
    @classmethod
    def _valid_target(cls, value: str) -> str:
        """Return the normalised host:port."""
        return format_host_port(*split_host_port(value))

    @field_validator("mail_from", "rcpt_to")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        """Require a plain mail address."""
        return check_address(value)


class ImapSettings(BaseModel):
    """Settings of an imap check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tls: TlsMode = Field(
        "starttls",
        description="starttls: STARTTLS, which the server must offer (port 143); implicit: TLS"
        " from the first byte (port 993); none: plain text.",
    )
    tls_config: TlsSettings = Field(
        default_factory=TlsSettings,
        description="Server verification and client certificate, with starttls or implicit.",
    )
    username: str | None = Field(None, description="Log in as this user.")
    password: SecretStr | None = Field(None, description="Password (prefer password_file).")
    password_file: ConfigPath | None = Field(
        None, description="File holding the password, read once at load."
    )
    mailbox: str = Field(
        "INBOX", description="Mailbox opened after the login (read-only unless round trip)."
    )
    roundtrip: RoundtripSettings | None = Field(
        None, description="Send a message through SMTP, find it in the mailbox, delete it."
    )
    max_response_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Largest response read (all its lines and literals); more is a protocol error.",
    )

    @field_validator("mailbox")
    @classmethod
    def _valid_mailbox(cls, value: str) -> str:
        """Require a mailbox name that can be sent as a quoted string."""
        if not value or not value.isprintable():
            raise ValueError("must be a non-empty printable name")
        quoted(value)
        return value

    @model_validator(mode="after")
    def _login(self) -> Self:
        """Read the password file; check the login; the round trip needs one."""
        password = resolve_secret_field(self, "password")
        check_login(self.username, password, self.tls)
        if self.roundtrip is not None and self.username is None:
            raise ValueError("roundtrip needs username and password to open the mailbox")
        return self


@dataclass(slots=True)
class ImapResponse:
    """A tagged response and the untagged lines before it."""

    status: str
    text: str
    untagged: list[str] = field(default_factory=list)

    @property
    def shown(self) -> str:
        """Return the status and text as one bounded line."""
        return sanitise(f"{self.status} {self.text}".strip(), 200)


class ImapClient:
    """One IMAP connection: tagged commands and bounded responses; failures raise MailFailure."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_bytes: int,
        session: Session,
        ctx: ProbeContext,
    ) -> None:
        """Wrap connected streams."""
        self.reader = reader
        self.writer = writer
        self.max_bytes = max_bytes
        self.session = session
        self.ctx = ctx
        self.capabilities: set[str] = set()
        self._tag = 0
        self._bye = ""

    async def line(self, what: str) -> str:
        """Read one response line with its literals, bounded; return it decoded."""
        parts: list[bytes] = []
        size = 0
        while True:
            raw = await read_line(self.reader, what, bool(parts))
            size += len(raw)
            if size > self.max_bytes:
                raise MailFailure(f"protocol error: {what} longer than {self.max_bytes} bytes")
            match = _LITERAL.search(raw)
            if match is None:
                parts.append(raw.rstrip(b"\r\n"))
                text = b"".join(parts).decode("utf-8", errors="replace")
                if text.upper().startswith("* BYE"):
                    self._bye = sanitise(text[2:], 200)
                return text
            count = int(match.group(1))
            if size + count > self.max_bytes:
                raise MailFailure(
                    f"protocol error: a literal of {count} bytes in {what}"
                    f" exceeds max_response_bytes ({self.max_bytes})"
                )
            try:
                literal = await self.reader.readexactly(count)
            except asyncio.IncompleteReadError:
                raise MailFailure(
                    f"protocol error: connection closed in the middle of a literal in {what}"
                ) from None
            size += count
            parts.append(raw[: match.start()] + literal)

    def closed_reason(self, exc: MailFailure) -> MailFailure:
        """Return the failure to raise for a closed connection, with the server's BYE if any."""
        if self._bye and "connection closed" in str(exc):
            return MailFailure(f"the server closed the connection: {self._bye}")
        return exc

    async def greeting(self) -> str:
        """Read the greeting; return OK or PREAUTH; raise MailFailure on BYE or garbage."""
        self.session.step = "the greeting"
        line = await self.line("the greeting")
        self.ctx.log("imap_greeting", greeting=sanitise(line, 200))
        head, _, rest = line[2:].partition(" ") if line.startswith("* ") else ("", "", "")
        kind = head.upper()
        if kind == "BYE":
            raise MailFailure(f"the server refused the session: {sanitise(line[2:], 200)}")
        if kind not in ("OK", "PREAUTH"):
            raise MailFailure(f"protocol error: greeting is not IMAP: {shown(line.encode())!r}")
        self._note_code(rest)
        return kind

    def _note_code(self, text: str) -> None:
        """Keep the capabilities given in a [CAPABILITY ...] response code."""
        match = _CODE.match(text)
        if match and match.group(1).upper().startswith("CAPABILITY "):
            self.capabilities = set(match.group(1).upper().split()[1:])

    async def command(self, command: str, what: str, *, secret: bool = False) -> ImapResponse:
        """Send a tagged command; return the tagged response (OK, NO or BAD) and untagged lines."""
        self._tag += 1
        tag = f"V{self._tag:04d}"
        self.session.step = f"the {what} response"
        self.ctx.log("imap_command", command=f"{what} ***" if secret else sanitise(command, 120))
        try:
            self.writer.write(f"{tag} {command}\r\n".encode())
            await self.writer.drain()
        except OSError as exc:
            raise MailFailure(f"connection error sending {what}: {os_error_reason(exc)}") from None
        return await self._response(tag, what)

    async def _response(self, tag: str, what: str) -> ImapResponse:
        """Read untagged lines up to the tagged response of tag."""
        untagged: list[str] = []
        size = 0
        while True:
            try:
                line = await self.line(f"the {what} response")
            except MailFailure as exc:
                raise self.closed_reason(exc) from None
            size += len(line)
            if size > self.max_bytes:
                raise MailFailure(
                    f"protocol error: the {what} response longer than {self.max_bytes} bytes"
                )
            if line.startswith("* "):
                untagged.append(line[2:])
                if line[2:].upper().startswith("CAPABILITY "):
                    self.capabilities = set(line[2:].upper().split()[1:])
                continue
            if line.startswith("+"):
                return ImapResponse("+", line[1:].strip(), untagged)
            match = _TAGGED.match(line)
            if match is None or match.group(1) != tag:
                raise MailFailure(
                    f"protocol error: unexpected {what} response: {shown(line.encode())!r}"
                )
            text = match.group(3) or ""
            self._note_code(text)
            response = ImapResponse(match.group(2).upper(), text, untagged)
            self.ctx.log("imap_response", response=response.shown)
            return response

    async def ok(self, command: str, what: str) -> ImapResponse:
        """Run a command that must answer OK; raise MailFailure naming the answer otherwise."""
        response = await self.command(command, what)
        if response.status != "OK":
            raise MailFailure(f"{what} failed: {response.shown}")
        return response

    async def login(self, username: str, password: str) -> None:
        """Log in with AUTHENTICATE PLAIN when offered, else LOGIN; raise MailFailure."""
        if "AUTH=PLAIN" in self.capabilities:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            if "SASL-IR" in self.capabilities:
                response = await self.command(
                    f"AUTHENTICATE PLAIN {token}", "AUTHENTICATE", secret=True
                )
            else:
                response = await self.command("AUTHENTICATE PLAIN", "AUTHENTICATE")
                if response.status == "+":
                    self.writer.write(token.encode() + b"\r\n")
                    await self.writer.drain()
                    response = await self._response(f"V{self._tag:04d}", "AUTHENTICATE")
        elif "LOGINDISABLED" in self.capabilities:
            raise MailFailure("login: the server disables LOGIN and offers no AUTH=PLAIN")
        else:
            try:
                command = f"LOGIN {quoted(username)} {quoted(password)}"
            except ValueError:
                raise MailFailure(
                    "login: the credentials are not ASCII and the server offers no AUTH=PLAIN"
                ) from None
            response = await self.command(command, "LOGIN", secret=True)
        if response.status != "OK":
            raise MailFailure(f"login failed: {response.shown}")

    async def logout(self) -> None:
        """Say LOGOUT politely and ignore what happens then."""
        try:
            async with asyncio.timeout(1.0):
                await self.command("LOGOUT", "LOGOUT")
        except (MailFailure, OSError, TimeoutError):
            pass

    async def search(self, criteria: str) -> list[int]:
        """Return the UIDs matching a UID SEARCH."""
        response = await self.ok(f"UID SEARCH {criteria}", "SEARCH")
        uids: list[int] = []
        for line in response.untagged:
            words = line.split()
            if words and words[0].upper() == "SEARCH":
                uids.extend(int(w) for w in words[1:] if w.isdigit())
        return uids


@dataclass(slots=True)
class _Trip:
    """Where the round trip is, for the timeout reason."""

    message_id: str = ""
    accepted: str = ""
    sent_at: float | None = None
    waiting_since: float | None = None
    smtp: Session | None = None


def _message(rt: RoundtripSettings, message_id: str, tag: str) -> bytes:
    """Return the test message, CRLF line ends."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = rt.mail_from
    msg["To"] = rt.rcpt_to
    msg["Subject"] = "Vigie mail round trip"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    msg[PROBE_HEADER] = tag
    msg.set_content("Vigie mail round-trip test message: it is deleted once found.\n")
    return msg.as_bytes()


def _probe_tag(check_id: str) -> str:
    """Return the X-Vigie-Probe value of a check: its id, as plain ASCII."""
    text = "".join(c if (c.isascii() and c.isalnum()) or c in "-_.:" else "_" for c in check_id)
    return text[:64] or "check"


class ImapProbe(HostPortTarget):
    """Probe kind "imap": greeting, STARTTLS and certificate, login, mailbox, mail round trip."""

    kind: ClassVar[str] = "imap"
    Settings: ClassVar[type[BaseModel]] = ImapSettings

    def __init__(self) -> None:
        """Start with an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()

    async def __call__(self, check: Check[ImapSettings], ctx: ProbeContext) -> ProbeResult:
        """Run the session (and the round trip) as set; report."""
        settings = check.settings
        session = Session()
        trip = _Trip()
        budget = check.timeout * OWN_DEADLINE_SHARE
        error: str | None = None
        try:
            async with asyncio.timeout(budget):
                await self._run(check, settings, ctx, session, trip)
        except TimeoutError:
            error = self._timeout_reason(settings, session, trip, budget)
        except MailFailure as exc:
            error = str(exc)
        except OSError as exc:  # a read or write failing outside the steps that name theirs
            error = f"connection error waiting for {session.step}: {os_error_reason(exc)}"
        if error is not None:
            error = bound_text(error)
            ctx.log("imap_failed", error=error)
        return ProbeResult(
            success=error is None,
            error=error,
            samples=tuple(session.samples),
            phases=tuple(session.phases),
        )

    @staticmethod
    def _timeout_reason(
        settings: ImapSettings, session: Session, trip: _Trip, budget: float
    ) -> str:
        """Return why the run ran out of time, naming the step (or the missing message)."""
        if trip.waiting_since is not None:
            assert trip.sent_at is not None
            return (
                f"round trip: message {trip.message_id} not in {settings.mailbox}"
                f" {time.monotonic() - trip.sent_at:.3g}s after sending"
                f" (SMTP accepted it: {trip.accepted})"
            )
        if trip.smtp is not None:
            return (
                f"round trip: timeout after {budget:.3g}s waiting for {trip.smtp.step}"
                f" of SMTP {settings.roundtrip.smtp_target if settings.roundtrip else ''}"
            )
        return f"timeout after {budget:.3g}s waiting for {session.step}"

    async def _run(
        self,
        check: Check[ImapSettings],
        settings: ImapSettings,
        ctx: ProbeContext,
        session: Session,
        trip: _Trip,
    ) -> None:
        """Open the session, log in, open the mailbox, do the round trip, log out."""
        host, port = split_host_port(check.target)
        reader, writer, sslctx = await open_stream(
            host,
            port,
            tls=settings.tls,
            tls_config=settings.tls_config,
            ssl_contexts=self._ssl_contexts,
            session=session,
            ctx=ctx,
        )
        client = ImapClient(reader, writer, settings.max_response_bytes, session, ctx)
        try:
            start = time.monotonic()
            kind = await client.greeting()
            session.phases.append(("greeting", time.monotonic() - start))
            if not client.capabilities:
                await client.ok("CAPABILITY", "CAPABILITY")
            if settings.tls == "starttls" and sslctx is not None:
                if "STARTTLS" not in client.capabilities:
                    offered = sanitise(" ".join(sorted(client.capabilities)), 200) or "none"
                    raise MailFailure(
                        f"the server does not offer STARTTLS (capabilities: {offered})"
                    )
                start = time.monotonic()
                await client.ok("STARTTLS", "STARTTLS")
                await start_tls(
                    writer,
                    sslctx,
                    tls_config=settings.tls_config,
                    host=host,
                    session=session,
                    phase="starttls",
                )
                session.phases[-1] = ("starttls", time.monotonic() - start)
                client.capabilities = set()
                await client.ok("CAPABILITY", "CAPABILITY")
            session.samples.append(
                gauge(
                    "imap_tls",
                    1.0 if sslctx is not None else 0.0,
                    "1 when the session runs over TLS (STARTTLS or implicit), else 0.",
                )
            )
            if settings.username is not None and settings.password is not None:
                if kind != "PREAUTH":
                    await self._login(client, settings.username, settings.password, session)
                await self._open_mailbox(client, settings, session)
                if settings.roundtrip is not None:
                    await self._roundtrip(
                        check,
                        rt=settings.roundtrip,
                        client=client,
                        ctx=ctx,
                        trip=trip,
                    )
            await client.logout()
        finally:
            await close_writer(writer)

    @staticmethod
    async def _login(
        client: ImapClient, username: str, password: SecretStr, session: Session
    ) -> None:
        """Log in; note the outcome and refresh the capabilities, which change after login."""
        start = time.monotonic()
        help_text = "1 when the login was accepted, 0 when refused."
        before = set(client.capabilities)
        try:
            await client.login(username, password.get_secret_value())
        except MailFailure:
            session.samples.append(gauge("imap_login_success", 0.0, help_text))
            raise
        session.phases.append(("auth", time.monotonic() - start))
        session.samples.append(gauge("imap_login_success", 1.0, help_text))
        if client.capabilities == before:
            await client.ok("CAPABILITY", "CAPABILITY")

    @staticmethod
    async def _open_mailbox(client: ImapClient, settings: ImapSettings, session: Session) -> None:
        """SELECT (round trip) or EXAMINE the mailbox and count its messages."""
        start = time.monotonic()
        verb = "SELECT" if settings.roundtrip is not None else "EXAMINE"
        response = await client.ok(f"{verb} {quoted(settings.mailbox)}", verb)
        session.phases.append(("mailbox", time.monotonic() - start))
        for line in response.untagged:
            match = _EXISTS.match(f"* {line}")
            if match:
                session.samples.append(
                    gauge(
                        "imap_mailbox_messages",
                        int(match.group(1)),
                        "Messages in the mailbox when it was opened.",
                    )
                )
                break

    async def _roundtrip(
        self,
        check: Check[ImapSettings],
        *,
        rt: RoundtripSettings,
        client: ImapClient,
        ctx: ProbeContext,
        trip: _Trip,
    ) -> None:
        """Send the message through SMTP, wait for it in the mailbox, delete it (and stale ones)."""
        session = client.session
        tag = _probe_tag(check.id)
        domain = rt.mail_from.rpartition("@")[2]
        trip.message_id = f"<vigie.{uuid.uuid4().hex}@{domain}>"
        host, port = split_host_port(rt.smtp_target)
        trip.smtp = Session()
        trip.sent_at = time.monotonic()
        try:
            smtp = await open_smtp(
                host, port, rt.smtp, ssl_contexts=self._ssl_contexts, session=trip.smtp, ctx=ctx
            )
            try:
                reply = await send_mail(
                    smtp, rt.mail_from, rt.rcpt_to, _message(rt, trip.message_id, tag)
                )
                await smtp.quit()
            finally:
                await close_writer(smtp.writer)
        except MailFailure as exc:
            raise MailFailure(f"round trip: SMTP {rt.smtp_target}: {exc}") from None
        trip.smtp = None
        trip.accepted = reply.text
        session.phases.append(("send", time.monotonic() - trip.sent_at))
        ctx.log("roundtrip_sent", message_id=trip.message_id, reply=reply.text)
        trip.waiting_since = time.monotonic()
        criteria = f"HEADER Message-ID {quoted(trip.message_id)}"
        while True:
            await client.ok("NOOP", "NOOP")
            found = await client.search(criteria)
            if found:
                break
            await asyncio.sleep(rt.poll_interval)
        session.phases.append(("delivery", time.monotonic() - trip.waiting_since))
        trip.waiting_since = None
        took = time.monotonic() - trip.sent_at
        session.samples.append(
            gauge(
                "mail_roundtrip_seconds",
                took,
                "Seconds from sending the test message through SMTP to finding it in IMAP.",
            )
        )
        start = time.monotonic()
        stale: list[int] = []
        if "WITHIN" in client.capabilities:
            stale = await client.search(
                f"HEADER {PROBE_HEADER} {quoted(tag)} OLDER {int(rt.cleanup_after)}"
            )
        uids = ",".join(str(uid) for uid in sorted(set(found + stale)))
        await client.ok(f"UID STORE {uids} +FLAGS.SILENT (\\Deleted)", "STORE")
        if "UIDPLUS" in client.capabilities:
            await client.ok(f"UID EXPUNGE {uids}", "EXPUNGE")
        else:
            await client.ok("EXPUNGE", "EXPUNGE")
        session.phases.append(("cleanup", time.monotonic() - start))
        session.samples.append(
            gauge(
                "mail_roundtrip_stale_deleted",
                len(set(stale) - set(found)),
                "Earlier test messages of this check (arrived after their run gave up) deleted.",
            )
        )
