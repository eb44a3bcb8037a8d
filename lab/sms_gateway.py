"""The demo hospital's SMS gateway: takes the pages Vigie sends and shows them on a web page.

A stand-in for the operator's SMS API or the GSM modem in the rack: `POST /send` with
`{"to": ..., "text": ...}` (the body of the demo's `http_sinks` template), `GET /sms` lists what
it received, newest first, as the on-call's phone would show it; `GET /sms.json` the same as
JSON. Messages come from monitored targets through Vigie: they are bounded and escaped.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

MAX_BODY = 4096
MAX_KEPT = 500


@dataclass(frozen=True)
class Sms:
    """One message the gateway accepted."""

    at: float
    to: str
    text: str


@dataclass
class SmsGateway:
    """An aiohttp SMS gateway on a free loopback port."""

    host: str = "127.0.0.1"
    port: int = 0
    received: list[Sms] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of the gateway."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen on a free port."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/send", self._send)
        app.router.add_get("/sms", self._page)
        app.router.add_get("/sms.json", self._json)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _send(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            to, text = str(body["to"])[:32], str(body["text"])[:1600]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"status": "error", "reason": "bad request"}, status=400)
        self.received.append(Sms(time.time(), to, text))
        del self.received[:-MAX_KEPT]
        return web.json_response({"status": "queued", "id": len(self.received)})

    async def _json(self, _: web.Request) -> web.Response:
        return web.json_response(
            [{"at": s.at, "to": s.to, "text": s.text} for s in reversed(self.received)]
        )

    async def _page(self, _: web.Request) -> web.Response:
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                datetime.fromtimestamp(s.at, UTC).strftime("%H:%M:%S UTC"),
                html.escape(s.to),
                _linked(s.text),
            )
            for s in reversed(self.received)
        )
        page = (
            "<!doctype html><html lang='fr'><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='5'><title>SMS reçus</title>"
            "<style>body{font-family:sans-serif;margin:1em}td{padding:.3em .6em;"
            "border-bottom:1px solid #ccc;vertical-align:top}</style></head><body>"
            "<h1>Passerelle SMS du laboratoire</h1>"
            "<p>Les SMS que Vigie a envoyés à l'astreinte (les plus récents en haut).</p>"
            f"<table><tr><th>Heure</th><th>Destinataire</th><th>Message</th></tr>{rows}</table>"
            + ("" if rows else "<p>Aucun SMS pour l'instant.</p>")
            + "</body></html>"
        )
        return web.Response(text=page, content_type="text/html")


def _linked(text: str) -> str:
    """Escape a message and make its acknowledgement link clickable."""
    out = []
    for word in text.split(" "):
        safe = html.escape(word)
        if word.startswith(("http://", "https://")):
            safe = f"<a href='{safe}'>{safe}</a>"
        out.append(safe)
    return " ".join(out)
