"""Templated HTTP sinks: one request per page to an SMS or voice gateway, response checked.

The URL, headers and body are jinja2 templates rendered in a sandboxed environment (the
incident's fields come from monitored targets). Secrets are read from files at load and only
reach the templates as `secrets.<name>`; errors never quote them nor the rendered URL.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from yarl import URL

from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.sink import (
    MAX_BODY_IN_ERROR,
    Delivery,
    DeliveryError,
    redact,
    transport_error,
)

if TYPE_CHECKING:
    from vigie.monitor.alerting.settings import HttpSinkSettings

MAX_RESPONSE = 64 * 1024
"""How much of a gateway's answer is read to check it."""

SMS_GSM_SINGLE, SMS_GSM_PART = 160, 153
SMS_UCS2_SINGLE, SMS_UCS2_PART = 70, 67

# GSM 03.38 default alphabet, and its extension table (each costs two septets).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = frozenset("^{}\\[~]|€\f")

_ENV = ImmutableSandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)

# Annotations an escalation page carries (set by vigie.monitor.alerting.escalation).
PAGE_MESSAGE = "vigie_message"
PAGE_ACK_URL = "vigie_ack_url"
PAGE_LEVEL = "vigie_level"
PAGE_TEAM = "vigie_team"
PAGE_CONTACT = "vigie_contact"
PAGE_PHONE = "vigie_phone"
PAGE_MAIL = "vigie_mail"


def gsm_septets(text: str) -> int | None:
    """Return the septets text takes in the GSM 7-bit alphabet, None if it needs UCS-2."""
    count = 0
    for char in text:
        if char in _GSM_BASIC:
            count += 1
        elif char in _GSM_EXT:
            count += 2
        else:
            return None
    return count


def sms_parts(text: str) -> int:
    """Return how many SMS parts text takes (GSM 7-bit if it can, else UCS-2)."""
    septets = gsm_septets(text)
    if septets is not None:
        return 1 if septets <= SMS_GSM_SINGLE else -(-septets // SMS_GSM_PART)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= SMS_UCS2_SINGLE else -(-units // SMS_UCS2_PART)


def to_gsm(text: str) -> str:
    """Return text in the GSM alphabet: accents the alphabet lacks dropped (ê -> e), else '?'."""
    out = []
    for char in text:
        if char in _GSM_BASIC or char in _GSM_EXT:
            out.append(char)
            continue
        if char in "\t\u00a0\u2009\u202f":
            out.append(" ")
            continue
        if char in "\u2018\u2019":
            out.append("'")
            continue
        if char in "\u201c\u201d\u00ab\u00bb":
            out.append('"')
            continue
        if char in "\u2013\u2014":
            out.append("-")
            continue
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        out.append(base if base and gsm_septets(base) is not None else "?")
    return "".join(out)


def _cut(text: str, septets: int) -> str:
    """Return the longest prefix of a GSM text within septets, with an ellipsis if cut."""
    if (gsm_septets(text) or 0) <= septets:
        return text
    out = ""
    for char in text:
        if (gsm_septets(out + char + "...") or 0) > septets:
            break
        out += char
    return out.rstrip() + "..."


def compose_sms(
    summary: str,
    tier1: Sequence[str],
    ack_url: str = "",
    *,
    resolved: bool = False,
    limit: int = SMS_GSM_SINGLE,
) -> str:
    """Return a page that fits one GSM SMS when it can: root cause, tier-1 apps, the ack link.

    The link is never cut (a cut link is useless); the summary and the list of applications
    are shortened to make room. Only a link longer than the SMS itself makes a second part.
    """
    head = "Vigie RESOLU: " if resolved else "Vigie: "
    summary = to_gsm(" ".join(summary.split()))
    link = "" if resolved or not ack_url else f" ACK {ack_url}"
    apps = ""
    if tier1 and not resolved:
        names = [to_gsm(n) for n in tier1]
        apps = " T1: " + ", ".join(names)
        room = limit - len(head) - len(link) - 20
        while len(names) > 1 and (gsm_septets(apps) or 0) > max(room, 20):
            names.pop()
            apps = " T1: " + ", ".join(names) + f" +{len(tier1) - len(names)}"
    fixed = (gsm_septets(head + apps + link) or 0) + 1
    text = head + _cut(summary, max(limit - fixed, 12)) + "." + apps + link
    if (gsm_septets(text) or 0) > limit and apps:
        text = head + _cut(summary, max(limit - (gsm_septets(head + link) or 0) - 1, 12)) + "."
        text += link
    return text


def compile_templates(url: str, body: str, headers: Mapping[str, str]) -> None:
    """Compile every template of an HTTP sink, raising ValueError on a syntax error."""
    for where, source in [("url", url), ("body", body)] + [
        (f"headers.{k}", v) for k, v in headers.items()
    ]:
        try:
            _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"{where}: template error line {exc.lineno}: {exc.message}") from None


def page_context(alert: Alert, secrets: Mapping[str, str], *, sms: bool) -> dict[str, Any]:
    """Return the fields a template sees for one alert (an escalation page or a state change)."""
    notes = alert.annotations
    resolved = alert.ends_at is not None
    message = notes.get(PAGE_MESSAGE) or compose_sms(
        alert.annotations.get("summary", alert.name), [], resolved=resolved
    )
    if sms:
        message = to_gsm(message)
    return {
        "message": message,
        "sms_parts": sms_parts(message),
        "status": alert.state,
        "page": {
            "level": int(notes.get(PAGE_LEVEL, "0")),
            "team": notes.get(PAGE_TEAM, ""),
            "ack_url": notes.get(PAGE_ACK_URL, ""),
        },
        "contact": {
            "name": notes.get(PAGE_CONTACT, ""),
            "phone": notes.get(PAGE_PHONE, ""),
            "mail": notes.get(PAGE_MAIL, ""),
        },
        "incident": {
            "key": alert.key,
            "labels": dict(alert.labels),
            "annotations": {k: v for k, v in notes.items() if not k.startswith("vigie_")},
            "summary": notes.get("summary", ""),
            "root_cause": alert.labels.get("root_cause", ""),
            "site": alert.labels.get("site", ""),
            "severity": alert.labels.get("severity", ""),
            "starts_at": alert.starts_at.isoformat(),
        },
        "secrets": dict(secrets),
    }


class HttpTemplateSink:
    """Sends one templated HTTP request per alert or page and checks the answer."""

    delivery = Delivery.EACH
    refresh = False
    batch_size = 1

    def __init__(self, settings: HttpSinkSettings) -> None:
        self.name = settings.sink_name
        self.routed = not settings.every_change
        """Only escalation pages reach it, unless every_change is set."""
        self.site = settings.site
        self._settings = settings
        self._secrets = {k: v.get_secret_value() for k, v in settings.secrets.items()}
        self._url = _ENV.from_string(settings.url)
        self._body = _ENV.from_string(settings.body)
        self._headers = {k: _ENV.from_string(v) for k, v in settings.headers.items()}
        self._expect = re.compile(settings.expect_body) if settings.expect_body else None
        self.where = f"http sink {settings.name}"

    def render(self, alert: Alert) -> tuple[str, dict[str, str], str]:
        """Return the URL, headers and body of the request for an alert."""
        ctx = page_context(alert, self._secrets, sms=self._settings.sms)
        try:
            url = self._url.render(ctx)
            headers = {k: t.render(ctx) for k, t in self._headers.items()}
            body = self._body.render(ctx)
        except jinja2.TemplateError as exc:  # an undefined field, a sandbox refusal
            text = redact(str(exc), list(self._secrets.values()))
            raise DeliveryError(f"{self.where}: template: {type(exc).__name__}: {text}") from None
        headers.setdefault("Content-Type", self._settings.content_type)
        return url, headers, body

    async def send(self, alerts: Sequence[Alert], session: aiohttp.ClientSession) -> None:
        """Send one request per alert; raise DeliveryError unless every answer is accepted."""
        for alert in alerts:
            await self._send_one(alert, session)

    async def _send_one(self, alert: Alert, session: aiohttp.ClientSession) -> None:
        url, headers, body = self.render(alert)
        parsed = URL(url)
        hide = [
            url,
            parsed.raw_path_qs,
            parsed.path_qs,
            parsed.raw_query_string,
            parsed.query_string,
            *self._secrets.values(),
        ]
        hide = [h for h in hide if len(h) > 1]
        timeout = self._settings.timeout
        try:
            async with session.request(
                self._settings.method,
                url,
                data=body.encode() if body else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                text = (await response.content.read(MAX_RESPONSE)).decode("utf-8", "replace")
                accepted = (
                    response.status in self._settings.expect_status
                    if self._settings.expect_status
                    else response.status // 100 == 2
                )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise transport_error(exc, self.where, timeout, hide) from None
        shown = redact(text.strip()[:MAX_BODY_IN_ERROR], hide)
        if not accepted:
            raise DeliveryError(
                f"{self.where}: HTTP {response.status}" + (f": {shown}" if shown else "")
            )
        if self._expect is not None and not self._expect.search(text):
            raise DeliveryError(f"{self.where}: answer does not match expect_body: {shown}")
