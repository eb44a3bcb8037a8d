"""SMTP sink: one plain-text mail per state change, straight to a relay, bypassing Alertmanager."""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import aiohttp
import aiosmtplib

from vigie.monitor.alerting.httpsink import PAGE_ACK_URL, PAGE_MAIL
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.settings import SmtpSettings
from vigie.monitor.alerting.sink import Delivery, DeliveryError


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _lasted(alert: Alert) -> str:
    assert alert.ends_at is not None
    seconds = int((alert.ends_at - alert.starts_at).total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def message_id(alert: Alert, state: str, domain: str) -> str:
    """Return a stable Message-ID for one state of one alert episode (a retry reuses it)."""
    digest = hashlib.sha256(
        f"{alert.key}\0{alert.starts_at.isoformat()}\0{state}".encode()
    ).hexdigest()[:32]
    return f"<{state}.{digest}@{domain}>"


def _domain(instance: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9.-]", "-", instance).strip(".-")
    return cleaned or "vigie.invalid"


def render_mail(
    alert: Alert, *, sender: str, recipients: Sequence[str], instance: str, now: datetime
) -> EmailMessage:
    """Return the plain-text mail telling one state change of an alert."""
    labels, notes = alert.labels, alert.annotations
    state = alert.state.upper()
    severity = labels.get("severity", "none")
    summary = notes.get("summary") or alert.name
    where = f" [{labels['site']}]" if "site" in labels else ""
    msg = EmailMessage()
    msg["Subject"] = f"[{state}:{severity}]{where} {summary}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(now)
    domain = _domain(instance)
    msg["Message-ID"] = message_id(alert, alert.state, domain)
    if alert.ends_at is not None:
        # Threads the resolve under its page in mail clients.
        first = message_id(alert, "firing", domain)
        msg["In-Reply-To"] = first
        msg["References"] = first
    msg["X-Vigie-Alert-Key"] = alert.key
    lines = [f"{state}: {summary}", ""]
    if alert.ends_at is None:
        lines.append(f"Since:          {_stamp(alert.starts_at)}")
    else:
        lines.append(f"Started:        {_stamp(alert.starts_at)}")
        lines.append(f"Resolved:       {_stamp(alert.ends_at)} (lasted {_lasted(alert)})")
    lines.append(f"Severity:       {severity}")
    for label, title in (("site", "Site"), ("component", "Component"),
                         ("root_cause", "Root cause")):
        if label in labels:
            lines.append(f"{title + ':':<16}{labels[label]}")
    lines.append("")
    if notes.get("description"):
        lines += ["Description:", *(f"  {line}" for line in notes["description"].splitlines()), ""]
    lines.append(f"Degraded mode:  {notes.get('degraded_mode') or '(none given)'}")
    lines.append(f"Runbook:        {notes.get('runbook_url') or '(none given)'}")
    if alert.generator_url:
        lines.append(f"Source:         {alert.generator_url}")
    if notes.get(PAGE_ACK_URL):  # an escalation page: the link that stops the next level
        lines.append(f"Acknowledge:    {notes[PAGE_ACK_URL]}")
    lines += ["", "Labels:", *(f"  {k}={v}" for k, v in sorted(labels.items()))]
    lines += ["", f"-- Vigie {instance}, alert key {alert.key}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class SmtpSink:
    """Mails each state change; one mail per send so a retry never repeats a delivered mail."""

    delivery = Delivery.EACH
    refresh = False
    batch_size = 1

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        vigie_instance: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = settings.sink_name
        self.where = f"smtp {settings.host}:{settings.port}"
        self._settings = settings
        self._instance = vigie_instance
        self._clock = clock
        self._tls: ssl.SSLContext | None = None
        if settings.starttls:
            cafile = str(settings.ca_file) if settings.ca_file is not None else None
            self._tls = ssl.create_default_context(cafile=cafile)

    async def send(self, alerts: Sequence[Alert], session: aiohttp.ClientSession) -> None:
        """Mail each alert over one connection (the session is unused: SMTP is not HTTP)."""
        del session
        s = self._settings
        password = s.password.get_secret_value() if s.password is not None else None
        now = datetime.fromtimestamp(self._clock(), UTC)
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            start_tls=s.starttls,
            tls_context=self._tls,
            username=s.username,
            password=password,
        )
        try:
            async with client:
                for alert in alerts:
                    # An escalation page goes to its contact's address, other alerts to `to`.
                    contact = alert.annotations.get(PAGE_MAIL)
                    mail = render_mail(
                        alert,
                        sender=s.from_,
                        recipients=[contact] if contact else s.to,
                        instance=self._instance,
                        now=now,
                    )
                    await client.send_message(mail)
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            text = str(exc) or type(exc).__name__
            if password:
                text = text.replace(password, "<redacted>")  # never trust a server's echo
            raise DeliveryError(f"{self.where}: {type(exc).__name__}: {text}") from None
