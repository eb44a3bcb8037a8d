"""Fixtures for probe tests: the shared session, a test CA and real loopback servers."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import pytest
import structlog
import trustme
from aiohttp import web
from cryptography import x509
from pydantic import BaseModel

from vigie.probes.base import Check, Probe, ProbeContext, ProbeLog
from vigie.probes.http import make_session

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    ca: Any
    ca_file: Path
    server_cert: Any
    client_cert_file: Path
    client_key_file: Path

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        """Return a server SSL context; with require_client_cert, clients must present one."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(ctx)
        if require_client_cert:
            self.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def server_not_after(self) -> float:
        """Return the server certificate's notAfter as unix time."""
        pem = self.server_cert.cert_chain_pems[0].bytes()
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A trustme CA with server and client certificates written to files."""
    ca = trustme.CA()
    root = tmp_path_factory.mktemp("pki")
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("vigie-client@example.org")
    cert_file, key_file = root / "client.pem", root / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    return Pki(ca, ca_file, ca.issue_cert("127.0.0.1", "localhost"), cert_file, key_file)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The shared probe session, as the daemon makes it."""
    async with make_session() as s:
        yield s


@pytest.fixture
def ctx(session: aiohttp.ClientSession) -> ProbeContext:
    """A probe context on the shared session, with a fresh debug log."""
    return ProbeContext(session=session, log=ProbeLog(structlog.get_logger()))


S = TypeVar("S", bound=BaseModel)


def make_check(probe: Probe[S], target: str, **settings: Any) -> Check[S]:
    """Return a Check for probe with its target parsed and settings validated, as the plan does.

    The settings are validated by the probe's own `Settings` model, so they are of the type
    its call takes (what the config's union of check models guarantees in the daemon).
    """
    parsed = probe.parse_target(target)
    return Check(
        id="test",
        kind=probe.kind,
        target=parsed,
        interval=30.0,
        timeout=10.0,
        settings=cast(S, probe.Settings.model_validate(settings)),
        host=probe.host_of(parsed),
    )


def refused_port() -> int:
    """Return a loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def serve_http(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve app on 127.0.0.1 on a free port; yield its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_tcp(
    handler: StreamHandler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve handler on 127.0.0.1 on a free port; yield the port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def sample(result: Any, name: str, **labels: str) -> float:
    """Return the value of the one sample of result with this name and labels."""
    want = tuple(sorted(labels.items()))
    found = [s.value for s in result.samples if s.name == name and tuple(sorted(s.labels)) == want]
    assert len(found) == 1, f"{name}{labels}: {found} in {[s.name for s in result.samples]}"
    value: float = found[0]
    return value
