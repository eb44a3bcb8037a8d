"""`vigie demo`: the daemon against a few loopback services it starts itself, until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import structlog
from aiohttp import web

from monitor.app import Daemon
from monitor.config import load_config
from probes import default_registry
from probes.http import make_session


def _demo_app(started: float) -> web.Application:
    """Build the demo web services: a healthy app, a slow one and one that fails now and then."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="status: OK\n")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="status: OK (slow)\n")

    async def flaky(_: web.Request) -> web.Response:
        if int((time.monotonic() - started) // 40) % 2:
            return web.Response(status=503, text="status: ERROR database unreachable\n")
        return web.Response(text="status: OK\n")

    app = web.Application()
    app.router.add_get("/dpi/health", ok)
    app.router.add_get("/labo/health", slow)
    app.router.add_get("/rdv/health", flaky)
    app.router.add_get("/intranet/", ok)
    return app


async def _smtp_banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer like a mail server: banner, then 221 on QUIT."""
    writer.write(b"220 mail.demo.local ESMTP ready\r\n")
    await writer.drain()
    await reader.readline()
    writer.write(b"221 bye\r\n")
    await writer.drain()
    writer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_config(http_port: int, smtp_port: int, closed_port: int, listen: str) -> str:
    """Return the demo's config text."""
    base = f"http://127.0.0.1:{http_port}"
    return f"""\
defaults:
  interval: 10s
  timeout: 3s
  labels: {{site: nord}}
modules:
  health_ok:
    kind: http
    http:
      valid_status_codes: [200]
      fail_if_body_not_matches_regexp: ["status: OK"]
checks:
  - {{id: dossier-patient, module: health_ok, target: "{base}/dpi/health",
     labels: {{component: dpi}}}}
  - {{id: resultats-labo, module: health_ok, target: "{base}/labo/health",
     labels: {{component: labo}}}}
  - {{id: prise-rdv, module: health_ok, target: "{base}/rdv/health", interval: 5s,
     labels: {{component: rdv, site: bellevue}}}}
  - {{id: intranet, kind: http, target: "{base}/intranet/", labels: {{component: intranet}}}}
  - id: messagerie-smtp
    kind: tcp
    target: 127.0.0.1:{smtp_port}
    labels: {{component: messagerie}}
    tcp:
      query_response:
        - expect: "^220 "
        - send: "QUIT\\r\\n"
        - expect: "^221 "
  - {{id: pacs-dicom, kind: tcp, target: "127.0.0.1:{closed_port}", labels: {{component: pacs}}}}
web:
  listen: "{listen}"
"""


async def run_demo(listen: str) -> int:
    """Start the demo services and the daemon, print the URLs, and stop all on Ctrl-C."""
    log = structlog.get_logger()
    started = time.monotonic()
    runner = web.AppRunner(_demo_app(started), access_log=None)
    await runner.setup()
    http_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    smtp = await asyncio.start_server(_smtp_banner, "127.0.0.1", 0)
    smtp_port = smtp.sockets[0].getsockname()[1]
    host, _, port = listen.rpartition(":")
    with socket.socket() as probe_sock:
        try:
            probe_sock.bind((host, int(port)))
        except OSError:
            listen = f"{host}:{_free_port()}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with tempfile.TemporaryDirectory(prefix="vigie-demo-") as tmp:
        path = Path(tmp) / "demo.yaml"
        path.write_text(demo_config(http_port, smtp_port, _free_port(), listen))
        registry = default_registry()
        async with make_session() as session:
            daemon = Daemon(load_config(path, registry), registry, session, logger=log)
            await daemon.start()
            url = f"http://{host}:{daemon.listen_port}"
            print(
                f"\nVigie demo running. Demo services on http://127.0.0.1:{http_port} "
                f"and smtp 127.0.0.1:{smtp_port}.\n"
                f"  Checks:  {url}/\n  Metrics: {url}/metrics\n"
                f"  Debug:   {url}/probe?check=dossier-patient&debug=true\n"
                f"  Config:  {path}\nPress Ctrl-C to stop.\n",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
            await daemon.stop()
    smtp.close()
    await smtp.wait_closed()
    await runner.cleanup()
    print("Vigie demo stopped.", file=sys.stderr)
    return 0
