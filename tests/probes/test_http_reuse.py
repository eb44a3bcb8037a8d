"""The http probe's reuse_connections option: kept-alive connections only when a check asks."""

from __future__ import annotations

from aiohttp import web

from tests.probes.conftest import make_check, sample, serve_http
from vigie.probes.base import ProbeContext
from vigie.probes.http import HttpProbe, make_session


def _peer_counting_app(peers: list[str]) -> web.Application:
    """Return an app answering 200 that notes the client's address:port of each request."""

    async def ok(request: web.Request) -> web.Response:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peers.append(f"{peername[0]}:{peername[1]}" if peername else "?")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    return app


async def _run_three(reuse: bool) -> tuple[list[str], list[float]]:
    """Run one check three times on one probe session; return the peers and connect phases."""
    peers: list[str] = []
    probe = HttpProbe()
    connects: list[float] = []
    async with serve_http(_peer_counting_app(peers)) as base, make_session() as session:
        check = make_check(probe, f"{base}/", reuse_connections=reuse)
        for _ in range(3):
            result = await probe(check, ProbeContext(session=session))
            assert result.success, result.error
            connects.append(sample(result, "probe_http_duration_seconds", phase="connect"))
    return peers, connects


async def test_default_opens_a_fresh_connection_for_every_run() -> None:
    """Without the option each run connects anew, as blackbox_exporter does."""
    peers, connects = await _run_three(reuse=False)
    assert len(peers) == 3
    assert len(set(peers)) == 3
    assert all(c > 0 for c in connects)


async def test_reuse_connections_keeps_one_connection_across_runs() -> None:
    """With reuse_connections the runs share one connection (opened by the first)."""
    peers, connects = await _run_three(reuse=True)
    assert len(peers) == 3
    assert len(set(peers)) == 1
    assert connects[0] > 0


async def test_the_kept_alive_session_closes_with_the_probe_session() -> None:
    """Closing the shared session closes the kept-alive one: no connection left open."""
    peers: list[str] = []
    probe = HttpProbe()
    async with serve_http(_peer_counting_app(peers)) as base:
        session = make_session()
        check = make_check(probe, f"{base}/", reuse_connections=True)
        assert (await probe(check, ProbeContext(session=session))).success
        connector = session.connector
        assert connector is not None
        kept = getattr(connector, "keepalive", None)
        assert kept is not None and not kept.closed
        await session.close()
        assert kept.closed
