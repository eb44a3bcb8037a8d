"""The imap probe against a real dovecot on loopback (STARTTLS, implicit TLS, login, mailbox),
its mail round trip through a real SMTP server (aiosmtpd delivering into dovecot's Maildir),
and raw servers sending what no IMAP server should."""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import ValidationError

from tests.conftest import free_port, require_binary
from tests.probes.conftest import Pki, StreamHandler, make_check, refused_port, sample, serve_tcp
from tests.waiting import wait_for_sync
from vigie.probes.base import ProbeContext
from vigie.probes.imap import ImapProbe, ImapSettings, quoted

USER = "probe"
PASSWORD = "s3cret-Imap"


@dataclasses.dataclass(frozen=True)
class Dovecot:
    """A running dovecot: its STARTTLS and implicit-TLS ports and the probe user's Maildir."""

    port: int
    tls_port: int
    maildir: Path
    uid: int
    gid: int

    def deliver(self, message: bytes, mtime: float | None = None) -> Path:
        """Put a message into the Maildir as a local delivery agent does (tmp/, then new/)."""
        name = f"{time.time():.6f}.{uuid.uuid4().hex}.vigie-test"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(message)
        if os.geteuid() == 0:
            os.chown(tmp, self.uid, self.gid)
        tmp.chmod(0o600)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        final = self.maildir / "new" / name
        tmp.rename(final)
        return final


def _mail_user() -> tuple[str, str, int, int]:
    """Return the users dovecot runs as and the mail uid/gid: its own when root, else ours."""
    if os.geteuid() == 0:
        # dovecot refuses mail access as root and login processes as root: use its own users.
        entry = pwd.getpwnam("dovecot")
        return "dovecot", "dovenull", entry.pw_uid, entry.pw_gid
    name = pwd.getpwuid(os.geteuid()).pw_name
    return name, name, os.geteuid(), os.getegid()


def _banner(port: int) -> bool:
    """Return whether an IMAP greeting comes on port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(64).startswith(b"* OK")
    except OSError:
        return False


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Dovecot]:
    """A real dovecot with a passwd-file user, STARTTLS on one port and implicit TLS on another."""
    binary = require_binary("/usr/sbin/dovecot", "dovecot-imapd")
    root = tmp_path_factory.mktemp("dovecot")
    internal, login, uid, gid = _mail_user()
    # Mail lives where the mail user can reach it: pytest's tmp dirs are private to us.
    mail_root = Path(tempfile.mkdtemp(prefix="vigie-dovecot-mail-"))
    home = mail_root / USER
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    if os.geteuid() == 0:
        for path in (mail_root, home, maildir, *(maildir / s for s in ("cur", "new", "tmp"))):
            os.chown(path, uid, gid)
    cert, key = root / "cert.pem", root / "key.pem"
    cert.write_bytes(b"".join(p.bytes() for p in pki.server_cert.cert_chain_pems))
    pki.server_cert.private_key_pem.write_to_path(str(key))
    users = root / "users"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}\n")
    port, tls_port = free_port(), free_port()
    auth_user = "root" if os.geteuid() == 0 else "$default_internal_user"
    log = root / "dovecot.log"
    conf = root / "dovecot.conf"
    conf.write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {log}
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name}
default_login_user = {login}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service auth {{
  user = {auth_user}
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:

        def ready() -> bool:
            """Return whether dovecot greets (fail at once if it exited)."""
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                logged = log.read_text() if log.exists() else ""
                pytest.fail(f"dovecot exited {proc.returncode}: {out}{logged}")
            return _banner(port)

        wait_for_sync(ready, "dovecot to greet")
        yield Dovecot(port, tls_port, maildir, uid, gid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(mail_root, ignore_errors=True)


@dataclasses.dataclass
class Relay:
    """An aiosmtpd server delivering into dovecot's Maildir (or dropping, when told to)."""

    dovecot: Dovecot
    port: int = 0
    drop: bool = False
    received: list[bytes] = dataclasses.field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        """Accept only the probe user's address (aiosmtpd handler hook)."""
        if address != f"{USER}@chu.test":
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Deliver the message to the Maildir, as the MTA's local delivery would."""
        assert isinstance(envelope.content, bytes)
        self.received.append(envelope.content)
        if not self.drop:
            self.dovecot.deliver(envelope.content)
        return "250 2.0.0 Ok: queued as VIGIE42"


@asynccontextmanager
async def relay(dovecot: Dovecot, drop: bool = False) -> AsyncIterator[Relay]:
    """Serve the delivering relay on a free loopback port."""
    loop = asyncio.get_running_loop()
    box = Relay(dovecot, drop=drop)
    server = await loop.create_server(
        lambda: SMTP(box, hostname="relay.chu.test", loop=loop), "127.0.0.1", 0
    )
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def probe() -> ImapProbe:
    """A fresh imap probe."""
    return ImapProbe()


def login(pki: Pki, **more: Any) -> dict[str, Any]:
    """Return settings logging in as the probe user, verifying with the test CA."""
    return {
        "tls_config": {"ca_file": str(pki.ca_file)},
        "username": USER,
        "password": PASSWORD,
        **more,
    }


def roundtrip(port: int, **more: Any) -> dict[str, Any]:
    """Return round-trip settings through the relay on port (plain SMTP on loopback)."""
    return {
        "smtp_target": f"127.0.0.1:{port}",
        "smtp": {"tls": "none"},
        "mail_from": "vigie@chu.test",
        "rcpt_to": f"{USER}@chu.test",
        "poll_interval": 0.1,
        **more,
    }


async def test_starttls_login_and_mailbox(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """STARTTLS, the certificate, the login and the mailbox count, against dovecot."""
    check = make_check(probe, f"127.0.0.1:{dovecot.port}", **login(pki))
    result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "imap_tls") == 1
    assert sample(result, "imap_login_success") == 1
    assert sample(result, "imap_mailbox_messages") >= 0
    assert sample(result, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()
    assert [name for name, _ in result.phases] == [
        "connect",
        "greeting",
        "starttls",
        "auth",
        "mailbox",
    ]
    assert PASSWORD not in " ".join(ctx.log.lines)


async def test_implicit_tls_without_login(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """Implicit TLS (port 993 style) with no login stops after the capabilities."""
    check = make_check(
        probe,
        f"127.0.0.1:{dovecot.tls_port}",
        tls="implicit",
        tls_config={"ca_file": str(pki.ca_file)},
    )
    result = await probe(check, ctx)
    assert result.success, result.error
    assert [name for name, _ in result.phases] == ["connect", "tls", "greeting"]
    assert not [s for s in result.samples if s.name == "imap_login_success"]


async def test_wrong_password(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """A refused login names dovecot's answer; the password is nowhere."""
    check = make_check(probe, f"127.0.0.1:{dovecot.port}", **login(pki, password="nope-nope"))
    result = await probe(check, ctx)
    assert result.error == "login failed: NO [AUTHENTICATIONFAILED] Authentication failed."
    assert sample(result, "imap_login_success") == 0
    assert "nope-nope" not in " ".join(ctx.log.lines)


async def test_missing_mailbox(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """A mailbox that does not exist fails naming it."""
    check = make_check(probe, f"127.0.0.1:{dovecot.port}", **login(pki, mailbox="Labo"))
    result = await probe(check, ctx)
    assert result.error is not None
    assert result.error.startswith("EXAMINE failed: NO"), result.error
    assert "Labo" in result.error


async def test_unknown_ca(probe: ImapProbe, ctx: ProbeContext, dovecot: Dovecot) -> None:
    """dovecot's certificate from a CA not trusted fails verification after STARTTLS."""
    result = await probe(make_check(probe, f"127.0.0.1:{dovecot.port}"), ctx)
    assert result.error is not None
    assert result.error.startswith("TLS: certificate verify failed"), result.error


def _count(result: Any) -> float:
    """Return the mailbox count of a result."""
    return sample(result, "imap_mailbox_messages")


async def test_mail_roundtrip_finds_and_deletes(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """A message sent through SMTP is found by its Message-ID in IMAP, then deleted."""
    target = f"127.0.0.1:{dovecot.port}"
    before = _count(await probe(make_check(probe, target, **login(pki)), ctx))
    async with relay(dovecot) as box:
        check = make_check(probe, target, **login(pki, roundtrip=roundtrip(box.port)))
        result = await probe(check, ctx)
    assert result.success, result.error
    assert len(box.received) == 1
    assert b"X-Vigie-Probe: test" in box.received[0]
    assert 0 < sample(result, "mail_roundtrip_seconds") < 10
    assert sample(result, "mail_roundtrip_stale_deleted") == 0
    phases = [name for name, _ in result.phases]
    assert phases[-3:] == ["send", "delivery", "cleanup"]
    after = _count(await probe(make_check(probe, target, **login(pki)), ctx))
    assert after == before


async def test_roundtrip_deletes_stale_probe_messages_only(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """Old test messages of this check go; a recent one and other mail stay."""
    target = f"127.0.0.1:{dovecot.port}"
    old = time.time() - 7200
    dovecot.deliver(b"Subject: stale\r\nX-Vigie-Probe: test\r\n\r\nlate\r\n", mtime=old)
    dovecot.deliver(b"Subject: recent\r\nX-Vigie-Probe: test\r\n\r\nin flight\r\n")
    dovecot.deliver(b"Subject: real mail\r\n\r\nkeep me\r\n", mtime=old)
    before = _count(await probe(make_check(probe, target, **login(pki)), ctx))
    async with relay(dovecot) as box:
        check = make_check(probe, target, **login(pki, roundtrip=roundtrip(box.port)))
        result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "mail_roundtrip_stale_deleted") == 1
    after = _count(await probe(make_check(probe, target, **login(pki)), ctx))
    assert after == before - 1


async def test_roundtrip_message_never_arrives(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """SMTP accepts but nothing is delivered: the run fails naming the message and the queue id."""
    async with relay(dovecot, drop=True) as box:
        check = make_check(
            probe, f"127.0.0.1:{dovecot.port}", **login(pki, roundtrip=roundtrip(box.port))
        )
        check = dataclasses.replace(check, timeout=2.0)
        result = await asyncio.wait_for(probe(check, ctx), 10)
    assert result.error is not None
    assert result.error.startswith("round trip: message <vigie."), result.error
    assert result.error.endswith(
        "after sending (SMTP accepted it: 250 2.0.0 Ok: queued as VIGIE42)"
    )


async def test_roundtrip_smtp_refusal(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """An SMTP refusal of the recipient fails the round trip with the SMTP reply."""
    async with relay(dovecot) as box:
        settings = login(pki, roundtrip=roundtrip(box.port, rcpt_to="nobody@chu.test"))
        result = await probe(make_check(probe, f"127.0.0.1:{dovecot.port}", **settings), ctx)
    assert result.error == (
        f"round trip: SMTP 127.0.0.1:{box.port}: RCPT TO refused: 550 5.1.1 No such user here"
    )


async def test_roundtrip_smtp_down(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """A closed SMTP port fails the round trip naming it."""
    port = refused_port()
    settings = login(pki, roundtrip=roundtrip(port))
    result = await probe(make_check(probe, f"127.0.0.1:{dovecot.port}", **settings), ctx)
    assert result.error == (
        f"round trip: SMTP 127.0.0.1:{port}: connect to 127.0.0.1:{port} failed: Connection refused"
    )


async def test_roundtrip_silent_smtp_times_out_naming_it(
    probe: ImapProbe, ctx: ProbeContext, pki: Pki, dovecot: Dovecot
) -> None:
    """An SMTP server that never greets fails the round trip naming the SMTP step and server."""
    async with serve_tcp(raw(then_wait=True)) as port:
        settings = login(pki, roundtrip=roundtrip(port))
        check = make_check(probe, f"127.0.0.1:{dovecot.port}", **settings)
        result = await asyncio.wait_for(probe(dataclasses.replace(check, timeout=2.0), ctx), 10)
    assert result.error == (
        f"round trip: timeout after 1.8s waiting for the banner of SMTP 127.0.0.1:{port}"
    )


async def test_connection_refused(probe: ImapProbe, ctx: ProbeContext) -> None:
    """A closed IMAP port fails naming the address."""
    port = refused_port()
    result = await probe(make_check(probe, f"127.0.0.1:{port}", tls="none"), ctx)
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


def raw(*chunks: bytes, then_wait: bool = False) -> StreamHandler:
    """Return a server handler that sends chunks, reading a little after each, then closes."""

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
        ((b"* BYE Too many connections\r\n",), "the server refused the session: BYE Too many"),
        ((b"220 smtp.chu.test ESMTP\r\n",), "protocol error: greeting is not IMAP: '220 smtp"),
        ((b"* OK hi\r\n", b"* BYE going down\r\n"), "the server closed the connection: BYE going"),
        ((b"A" * 100_000,), "protocol error: the greeting line longer than 8192 bytes"),
        ((b"* OK {99999999}\r\nabc",), "protocol error: a literal of 99999999 bytes"),
        ((b"* OK {10}\r\nabc",), "protocol error: connection closed in the middle of a literal"),
        ((b"* OK hi\r\n", b"X0001 OK what\r\n"), "protocol error: unexpected CAPABILITY"),
        ((b"* OK hi\r\n", b"* x\r\n" * 400_000), "protocol error: the CAPABILITY response"),
        ((), "connection closed by the server while waiting for the greeting"),
    ],
)
async def test_bad_servers_are_bounded_protocol_errors(
    probe: ImapProbe, ctx: ProbeContext, chunks: tuple[bytes, ...], reason: str
) -> None:
    """BYE, SMTP, huge lines and literals, truncation and stray tags fail with a bounded reason."""
    async with serve_tcp(raw(*chunks)) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}", tls="none"), ctx)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith(reason), result.error
    assert len(result.error) <= 512
    assert result.error.isprintable()


async def test_silent_server_times_out_naming_the_step(probe: ImapProbe, ctx: ProbeContext) -> None:
    """A server that accepts and says nothing fails within the timeout, on the greeting."""
    async with serve_tcp(raw(then_wait=True)) as port:
        check = dataclasses.replace(make_check(probe, f"127.0.0.1:{port}", tls="none"), timeout=0.5)
        result = await asyncio.wait_for(probe(check, ctx), 5)
    assert result.error == "timeout after 0.45s waiting for the greeting"


async def test_missing_starttls(probe: ImapProbe, ctx: ProbeContext, pki: Pki) -> None:
    """A server without STARTTLS fails the default tls: starttls, listing its capabilities."""
    script = raw(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n", then_wait=True)
    async with serve_tcp(script) as port:
        check = make_check(probe, f"127.0.0.1:{port}", tls_config={"ca_file": str(pki.ca_file)})
        result = await probe(check, ctx)
    assert result.error == (
        "the server does not offer STARTTLS (capabilities: AUTH=PLAIN IMAP4REV1)"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"username": "u", "password": "p", "tls": "none"}, "would travel in clear"),
        ({"roundtrip": roundtrip(25)}, "roundtrip needs username"),
        ({"mailbox": "Boîte"}, "must be ASCII"),
        ({"mailbox": ""}, "non-empty"),
        (
            {"username": "u", "password": "p", "roundtrip": roundtrip(25, rcpt_to="<x@y>")},
            "must be a mail address",
        ),
        (
            {"username": "u", "password": "p", "roundtrip": roundtrip(25, smtp_target="mail")},
            "must be host:port",
        ),
    ],
)
def test_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    """Bad settings are refused at load, saying why."""
    with pytest.raises(ValidationError, match=message):
        ImapSettings.model_validate(settings)


def test_quoted_strings() -> None:
    """Quotes and backslashes are escaped; CR/LF and non-ASCII cannot be quoted."""
    assert quoted('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(ValueError, match="ASCII"):
        quoted("a\r\nV0001 LOGOUT")
