"""Shared pieces of the on-call tests: a local SMS gateway and the escalation stack."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from vigie.monitor.alerting import build_sinks
from vigie.monitor.alerting.dispatcher import AlertDispatcher
from vigie.monitor.alerting.escalation import Escalations
from vigie.monitor.alerting.outbox import Outbox
from vigie.monitor.alerting.settings import AlertingSettings
from vigie.monitor.web import ack

SMS_BODY = (
    '{"to": "{{ contact.phone }}", "text": {{ message | tojson }}, "level": {{ page.level }}}'
)


@dataclass
class Request:
    """One request the gateway got."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class Gateway:
    """A local SMS gateway: records every request, answers `status` with `reply`."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    status: int = 200
    reply: str = '{"status": "queued"}'

    def sms(self) -> list[dict[str, Any]]:
        """Return the JSON bodies received."""
        return [r.json() for r in self.requests if r.method == "POST"]

    def to(self, phone: str) -> list[str]:
        """Return the texts sent to a phone number."""
        return [b["text"] for b in self.sms() if b["to"] == phone]


@asynccontextmanager
async def gateway_server() -> AsyncIterator[Gateway]:
    """Run a Gateway on a free loopback port."""
    gw = Gateway()

    async def handle(request: web.Request) -> web.Response:
        gw.requests.append(
            Request(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                await request.text(),
            )
        )
        return web.Response(status=gw.status, text=gw.reply, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    gw.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield gw
    finally:
        await runner.cleanup()


class Clock:
    """A wall clock the test moves forward (escalation delays are minutes)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward."""
        self.now += seconds


@dataclass
class Stack:
    """A dispatcher, an escalation engine and the web's ack routes, on one outbox file."""

    settings: AlertingSettings
    outbox: Outbox
    dispatcher: AlertDispatcher
    escalations: Escalations
    registry: CollectorRegistry
    web_url: str


@asynccontextmanager
async def stack(
    settings_for: Callable[[str], AlertingSettings],
    path: Path,
    session: aiohttp.ClientSession,
    clock: Clock,
    web_port: int,
) -> AsyncIterator[Stack]:
    """Run the escalation stack over path; settings_for gets the web's URL (external_url)."""
    web_url = f"http://127.0.0.1:{web_port}"
    settings = settings_for(web_url)
    registry = CollectorRegistry()
    outbox = Outbox(path)
    assert settings.oncall is not None
    esc = Escalations(settings, settings.oncall, outbox, session, registry, clock=clock)
    dispatcher = AlertDispatcher(
        settings, outbox, esc.wrap_sinks(build_sinks(settings)), session, registry
    )
    esc.attach(dispatcher)
    app = web.Application()
    ack.add_routes(app, esc)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", web_port).start()
    tasks = [asyncio.create_task(dispatcher.run()), asyncio.create_task(esc.run())]
    try:
        yield Stack(settings, outbox, dispatcher, esc, registry, web_url)
    finally:
        esc.stop()
        await dispatcher.stop()
        await asyncio.gather(*tasks)
        await runner.cleanup()
        outbox.close()
