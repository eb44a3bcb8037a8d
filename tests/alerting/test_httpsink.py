"""Templated HTTP sinks against a local SMS gateway, and the SMS length rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from tests.alerting.conftest import make_alert
from tests.alerting.oncall_fixtures import SMS_BODY, Gateway, gateway_server
from vigie.monitor.alerting.httpsink import (
    PAGE_ACK_URL,
    PAGE_CONTACT,
    PAGE_LEVEL,
    PAGE_MESSAGE,
    PAGE_PHONE,
    HttpTemplateSink,
    compose_sms,
    gsm_septets,
    sms_parts,
    to_gsm,
)
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.settings import HttpSinkSettings
from vigie.monitor.alerting.sink import DeliveryError

SECRET = "s3cr3t-api-key-0123456789"


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A local SMS gateway."""
    async with gateway_server() as gw:
        yield gw


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file holding the gateway's API key."""
    path = tmp_path / "sms.key"
    path.write_text(SECRET + "\n")
    return path


def page(message: str = "Vigie: Power lost. ACK http://v/ack/x") -> Alert:
    """Return an escalation page for alice."""
    alert = make_alert()
    return Alert(
        key="page:1:L1:http:sms:alice",
        labels=alert.labels,
        annotations={
            **alert.annotations,
            PAGE_MESSAGE: message,
            PAGE_ACK_URL: "http://v/ack/x",
            PAGE_LEVEL: "1",
            PAGE_CONTACT: "alice",
            PAGE_PHONE: "+33600000001",
        },
        starts_at=alert.starts_at,
    )


def sink(gateway: Gateway, secret_file: Path, **extra: Any) -> HttpTemplateSink:
    """Return a JSON SMS sink with a bearer secret."""
    settings = HttpSinkSettings.model_validate(
        {
            "name": "sms",
            "url": f"{gateway.url}/v1/sms",
            "headers": {"Authorization": "Bearer {{ secrets.key }}"},
            "secret_files": {"key": str(secret_file)},
            "body": SMS_BODY,
            **extra,
        }
    )
    return HttpTemplateSink(settings)


async def test_json_sms_with_secret_header(
    gateway: Gateway, secret_file: Path, session: aiohttp.ClientSession
) -> None:
    """The body carries the contact's phone and the message; the secret goes in a header."""
    await sink(gateway, secret_file).send([page()], session)
    [request] = gateway.requests
    assert request.method == "POST" and request.path == "/v1/sms"
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "to": "+33600000001",
        "text": "Vigie: Power lost. ACK http://v/ack/x",
        "level": 1,
    }


async def test_form_get_with_query_template(
    gateway: Gateway, secret_file: Path, session: aiohttp.ClientSession
) -> None:
    """A GET gateway (key and text in the query), as many French SMS APIs are."""
    s = sink(
        gateway,
        secret_file,
        method="GET",
        url=f"{gateway.url}/send?key={{{{ secrets.key | urlencode }}}}"
        "&to={{ contact.phone | urlencode }}&msg={{ message | urlencode }}",
        body="",
        headers={},
    )
    await s.send([page()], session)
    [request] = gateway.requests
    assert request.method == "GET"
    assert request.query == {
        "key": SECRET,
        "to": "+33600000001",
        "msg": "Vigie: Power lost. ACK http://v/ack/x",
    }


async def test_refused_answer_names_status_without_secret(
    gateway: Gateway, secret_file: Path, session: aiohttp.ClientSession
) -> None:
    """A non-2xx answer fails the delivery; the reason never quotes the key."""
    gateway.status = 401
    gateway.reply = f"bad key {SECRET}"
    with pytest.raises(DeliveryError) as caught:
        await sink(gateway, secret_file).send([page()], session)
    assert "HTTP 401" in caught.value.reason
    assert SECRET not in caught.value.reason
    assert "<redacted>" in caught.value.reason


async def test_expect_body_catches_errors_in_a_200(
    gateway: Gateway, secret_file: Path, session: aiohttp.ClientSession
) -> None:
    """An API answering 200 with an error inside fails when expect_body does not match."""
    s = sink(gateway, secret_file, expect_body='"status": "queued"')
    await s.send([page()], session)
    gateway.reply = '{"status": "error", "reason": "no credit"}'
    with pytest.raises(DeliveryError, match="expect_body"):
        await s.send([page()], session)


async def test_unreachable_gateway(secret_file: Path, session: aiohttp.ClientSession) -> None:
    """A closed port is a delivery error, not an exception for the dispatcher."""
    from tests.conftest import free_port

    gw = Gateway(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DeliveryError, match="http sink sms"):
        await sink(gw, secret_file).send([page()], session)


def test_template_syntax_error_fails_at_load(secret_file: Path) -> None:
    """A broken template is a config error naming the field."""
    with pytest.raises(ValidationError, match="body: template error"):
        HttpSinkSettings.model_validate({"name": "x", "url": "http://h/", "body": "{{ oops"})


async def test_sandbox_refuses_unsafe_access(
    gateway: Gateway, secret_file: Path, session: aiohttp.ClientSession
) -> None:
    """Templates run sandboxed: reaching Python internals fails the delivery."""
    s = sink(gateway, secret_file, body="{{ message.__class__.__mro__ }}")
    with pytest.raises(DeliveryError, match="template"):
        await s.send([page()], session)
    assert gateway.requests == []


def test_gsm_counts() -> None:
    """GSM basic characters count one, extension ones two, others need UCS-2."""
    assert gsm_septets("Réseau à l'arrêt") is None  # ê is not in GSM 03.38
    assert gsm_septets("Réseau à l'arret") == 16
    assert gsm_septets("[x]") == 5
    assert sms_parts("a" * 160) == 1
    assert sms_parts("a" * 161) == 2
    assert sms_parts("ê" * 70) == 1
    assert sms_parts("ê" * 71) == 2
    assert to_gsm("Arrêt électrique — «pompe»") == 'Arret électrique - "pompe"'


def test_compose_fits_one_sms_and_keeps_the_link() -> None:
    """A long summary and many apps are cut, never the acknowledgement link."""
    link = "https://vigie.chu.example.fr/ack/" + "x" * 55
    text = compose_sms(
        "Coupure secteur au datacenter Nord: onduleur sur batterie " * 3,
        ["DPI", "Pharmacie", "Laboratoire", "Imagerie PACS", "Urgences"],
        link,
    )
    assert (gsm_septets(text) or 999) <= 160
    assert text.endswith(f"ACK {link}")
    assert text.startswith("Vigie: Coupure secteur")
    assert "T1: DPI" in text
    assert sms_parts(text) == 1
    resolved = compose_sms("Coupure secteur", ["DPI"], link, resolved=True)
    assert resolved == "Vigie RESOLU: Coupure secteur."


async def test_mail_page_goes_to_the_contact_with_the_link(
    session: aiohttp.ClientSession,
) -> None:
    """The mail relay sends a page to its contact's address, with the acknowledgement link."""
    from tests.alerting.test_smtp import MailRelay, serve
    from vigie.monitor.alerting.httpsink import PAGE_MAIL
    from vigie.monitor.alerting.settings import SmtpSettings
    from vigie.monitor.alerting.smtp import SmtpSink

    box = MailRelay(tls=False)
    server = await serve(box, None)
    try:
        settings = SmtpSettings.model_validate(
            {
                "host": "127.0.0.1",
                "port": box.port,
                "starttls": False,
                "from": "vigie@chu.example.fr",
                "to": ["dsi@chu.example.fr"],
            }
        )
        mail_page = page()
        mail_page = Alert(
            key=mail_page.key,
            labels=mail_page.labels,
            annotations={**mail_page.annotations, PAGE_MAIL: "rsi@chu.example.fr"},
            starts_at=mail_page.starts_at,
        )
        await SmtpSink(settings, vigie_instance="v").send([mail_page, make_alert()], session)
    finally:
        server.close()
        await server.wait_closed()
    assert [rcpt for _, rcpt, _, _ in box.envelopes] == [
        ["rsi@chu.example.fr"],
        ["dsi@chu.example.fr"],
    ]
    body = box.messages[0].get_content()
    assert "Acknowledge:    http://v/ack/x" in body
    assert "Acknowledge" not in box.messages[1].get_content()
