"""The SMTP sink against a real SMTP server (aiosmtpd) with STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from tests.alerting.conftest import T0, make_alert, metric
from tests.waiting import wait_for
from vigie.monitor.alerting.dispatcher import AlertDispatcher
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.outbox import Outbox
from vigie.monitor.alerting.settings import AlertingSettings, SmtpSettings
from vigie.monitor.alerting.sink import DeliveryError
from vigie.monitor.alerting.smtp import SmtpSink, message_id

USER = "vigie"
PASSWORD = "correct-horse-battery"


@dataclass
class MailRelay:
    """A real SMTP server on loopback recording what it accepts and how the client came."""

    port: int = 0
    tls: bool = True
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str], bool, bool]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message (aiosmtpd handler hook)."""
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append(
            (
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                session.ssl is not None,
                bool(session.authenticated),
            )
        )
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept USER with PASSWORD only."""
        assert isinstance(data, LoginPassword)
        ok = data.login.decode() == USER and data.password.decode() == PASSWORD
        self.logins.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A test CA."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """The test CA in a PEM file."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


async def serve(relay: MailRelay, tls: ssl.SSLContext | None) -> asyncio.Server:
    """Serve SMTP on a free loopback port: STARTTLS and AUTH required when tls is given."""
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        if tls is None:
            return SMTP(relay, hostname="relay.test", loop=loop)
        return SMTP(
            relay,
            hostname="relay.test",
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            authenticator=relay.authenticate,
            loop=loop,
        )

    server = await loop.create_server(factory, "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    return server


@pytest.fixture
async def relay(ca: trustme.CA) -> AsyncIterator[MailRelay]:
    """A relay requiring STARTTLS (certificate from the test CA) and AUTH."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    box = MailRelay()
    server = await serve(box, ctx)
    yield box
    server.close()
    await server.wait_closed()


@pytest.fixture
async def plain_relay() -> AsyncIterator[MailRelay]:
    """A relay without STARTTLS nor AUTH."""
    box = MailRelay(tls=False)
    server = await serve(box, None)
    yield box
    server.close()
    await server.wait_closed()


def settings(
    relay: MailRelay, tmp_path: Path, ca_file: Path | None, password: str = PASSWORD
) -> SmtpSettings:
    """SMTP settings for the relay, the password read from a file."""
    (tmp_path / "smtp-password").write_text(password + "\n")
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": relay.port,
        "username": USER,
        "password_file": "smtp-password",
        "from": "vigie@hopital.example.org",
        "to": ["astreinte@hopital.example.org", "dsi@hopital.example.org"],
        "timeout": "5s",
    }
    if ca_file is not None:
        data["ca_file"] = str(ca_file)
    return SmtpSettings.model_validate(data, context={"config_dir": tmp_path})


async def test_one_mail_per_state_with_starttls_and_auth(
    relay: MailRelay, tmp_path: Path, ca_file: Path, session: aiohttp.ClientSession
) -> None:
    """Firing then resolved: two mails, over STARTTLS, after AUTH with the password file's."""
    sink = SmtpSink(settings(relay, tmp_path, ca_file), vigie_instance="vigie-nord-1")
    alert = make_alert()
    await sink.send([alert], session)
    await sink.send([alert.resolved(T0 + timedelta(minutes=12, seconds=5))], session)
    assert relay.logins == [(USER, True), (USER, True)]
    assert (
        relay.envelopes
        == [
            (
                "vigie@hopital.example.org",
                ["astreinte@hopital.example.org", "dsi@hopital.example.org"],
                True,
                True,
            ),
        ]
        * 2
    )
    firing, resolved = relay.messages
    assert firing["Subject"] == "[FIRING:critical] [site-nord] Power lost at site-nord"
    assert resolved["Subject"] == "[RESOLVED:critical] [site-nord] Power lost at site-nord"
    assert (
        resolved["In-Reply-To"]
        == firing["Message-ID"]
        == message_id(alert, "firing", "vigie-nord-1")
    )
    body = firing.get_content()
    for text in (
        "FIRING: Power lost at site-nord",
        "Since:          2025-01-02 03:04:05 UTC",
        "UPS ups-nord-1 on battery; impacted: san-nord, dpi.",
        "Runbook:        https://wiki.example.org/runbooks/power",
        "Degraded mode:  Use paper records; ICU has its own UPS.",
        "Root cause:     power",
        "alertname=VigieIncident",
    ):
        assert text in body, text
    assert "Resolved:       2025-01-02 03:16:10 UTC (lasted 12m05s)" in resolved.get_content()


async def test_wrong_password_fails_without_showing_it(
    relay: MailRelay, tmp_path: Path, ca_file: Path, session: aiohttp.ClientSession
) -> None:
    """A refused AUTH raises DeliveryError naming the relay, never the password."""
    sink = SmtpSink(settings(relay, tmp_path, ca_file, "wrong-pw-123"), vigie_instance="v")
    with pytest.raises(DeliveryError) as info:
        await sink.send([make_alert()], session)
    reason = info.value.reason
    assert reason.startswith(f"smtp 127.0.0.1:{relay.port}: SMTPAuthenticationError")
    assert "wrong-pw-123" not in reason
    assert relay.messages == []


async def test_untrusted_certificate_is_refused(
    relay: MailRelay, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Without the relay's CA, STARTTLS fails verification and nothing is sent."""
    sink = SmtpSink(settings(relay, tmp_path, None), vigie_instance="v")
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        await sink.send([make_alert()], session)
    assert relay.logins == []


async def test_relay_without_starttls_is_refused(
    plain_relay: MailRelay, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A relay that does not offer STARTTLS gets neither the password nor the mail."""
    sink = SmtpSink(settings(plain_relay, tmp_path, None), vigie_instance="v")
    with pytest.raises(DeliveryError, match="STARTTLS"):
        await sink.send([make_alert()], session)
    assert plain_relay.messages == []


async def test_dispatcher_mails_each_state_change_and_counts_failures(
    relay: MailRelay, tmp_path: Path, ca_file: Path, session: aiohttp.ClientSession
) -> None:
    """Through the dispatcher: a mail per transition (none for an update), failures counted."""
    good = settings(relay, tmp_path, ca_file)
    bad = good.model_copy(update={"password": SecretStr("nope")})
    registry = CollectorRegistry()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    alerting = AlertingSettings(
        backoff_initial=0.05, backoff_max=0.2, watchdog=False, vigie_instance="vigie-nord-1"
    )
    dispatcher = AlertDispatcher(
        alerting,
        outbox,
        [SmtpSink(bad, vigie_instance="vigie-nord-1")],
        session,
        registry,
        logger=structlog.get_logger(),
    )
    run = asyncio.create_task(dispatcher.run())
    alert = make_alert()
    dispatcher.fire(alert)
    await wait_for(
        lambda: metric(registry, "vigie_alert_delivery_failures_total", sink=good.sink_name) >= 2,
        "two failed attempts with the wrong password",
    )
    assert relay.messages == []
    assert metric(registry, "vigie_alert_outbox_depth", sink=good.sink_name) == 1
    await dispatcher.stop()
    await run

    # Same outbox, right password: the queued mail goes, then one per transition.
    registry = CollectorRegistry()
    dispatcher = AlertDispatcher(
        alerting, outbox, [SmtpSink(good, vigie_instance="vigie-nord-1")], session, registry
    )
    run = asyncio.create_task(dispatcher.run())
    dispatcher.fire(Alert(alert.key, alert.labels, {"summary": "Power still lost"}, T0))
    dispatcher.resolve(alert.key, T0 + timedelta(minutes=5))
    refire = Alert(alert.key, alert.labels, alert.annotations, T0 + timedelta(minutes=9))
    dispatcher.fire(refire)
    await wait_for(lambda: len(relay.messages) == 3, "three mails")
    assert [m["Subject"].split("]")[0] for m in relay.messages] == [
        "[FIRING:critical",
        "[RESOLVED:critical",
        "[FIRING:critical",
    ]
    await wait_for(
        lambda: metric(registry, "vigie_alert_outbox_depth", sink=good.sink_name) == 0,
        "an empty outbox",
    )
    assert metric(registry, "vigie_alerts_sent_total", sink=good.sink_name) == 3
    assert metric(registry, "vigie_alert_delivery_failures_total", sink=good.sink_name) == 0
    await dispatcher.stop()
    await run
    outbox.close()
