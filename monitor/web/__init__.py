"""HTTP endpoints: /metrics, health and readiness, reload, and the probe debug page."""

from __future__ import annotations

from aiohttp import web

from vigie.core.results import bound_text
from vigie.monitor.exposition import CONTENT_TYPE, metrics_response
from vigie.monitor.web import api, archive, availability, operators, pages, report
from vigie.monitor.web.keys import SOURCE_KEY
from vigie.monitor.web.readmodel import StatusSource


def build_app(source: StatusSource) -> web.Application:
    """Build the aiohttp application serving a read model (the daemon's: DaemonReadModel)."""
    app = web.Application()
    app[SOURCE_KEY] = source
    pages.add_routes(app)  # "/" is the status page; the plain checks list moved to /checks
    archive.add_routes(app)  # closed incidents: /archive, /archive/<id>, /api/v1/archive
    availability.add_routes(app)  # /availability, /api/v1/availability
    report.add_routes(app)  # /incident/<id>/report and report.md
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_get("/-/replica", replica)
    app.router.add_get("/-/replica/updates", replica_updates)  # incident updates, for peers
    app.router.add_get("/-/workers", workers)
    app.router.add_post("/-/reload", reload)
    app.router.add_get("/probe", probe)
    api.add_routes(app)
    operators.add_routes(app)  # roles on every change, /audit, incident updates
    return app


async def metrics(request: web.Request) -> web.StreamResponse:
    """Serve every check's series and the daemon's own metrics: gzip when asked, `?shard=i&of=n`."""
    return await metrics_response(request, request.app[SOURCE_KEY].metrics())


def _degraded(request: web.Request) -> str:
    """Return the lines naming why the daemon runs degraded (state kept in memory), or ''."""
    problem = request.app[SOURCE_KEY].state_dir_problem()
    return "" if problem is None else f"Degraded: state_dir: {problem}\n"


async def healthy(request: web.Request) -> web.Response:
    """Answer 200 while the process serves requests; the body names what runs degraded.

    Still 200 when state cannot be written: the daemon detects and pages all the same, and a
    restart (what a failed liveness check leads to) would lose what it holds in memory.
    """
    return web.Response(text="Healthy.\n" + _degraded(request))


async def ready(request: web.Request) -> web.Response:
    """Answer 200 once every check has run once, 503 before."""
    if request.app[SOURCE_KEY].ready():
        return web.Response(text="Ready.\n" + _degraded(request))
    return web.Response(status=503, text="Not ready: the first round of checks is running.\n")


async def replica(request: web.Request) -> web.Response:
    """Answer which replica this is, its heartbeat and its peers (404 when Vigie runs alone)."""
    status = request.app[SOURCE_KEY].replica()
    if status is None:
        return web.Response(status=404, text="Not a replica: no `replicas:` in the config.\n")
    return web.json_response(status.to_json())


async def replica_updates(request: web.Request) -> web.Response:
    """Answer the incident updates posted on this replica since `?since=` (epoch seconds),
    oldest first, for its peers to pull (404 when Vigie runs alone)."""
    import math

    from vigie.monitor.replicas import updates_answer

    source = request.app[SOURCE_KEY]
    if source.replica() is None:
        return web.Response(status=404, text="Not a replica: no `replicas:` in the config.\n")
    try:
        since = float(request.query.get("since", "0")[:40])
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        return web.Response(status=400, text="since: epoch seconds\n")
    keys = {i.id: i.key for i in source.snapshot().incidents.values()}
    return web.json_response(updates_answer(request.app[operators.OPS_KEY].audit, since, keys))


async def workers(request: web.Request) -> web.Response:
    """Answer each probe worker's health and share (404 when Vigie runs its checks itself)."""
    status = request.app[SOURCE_KEY].workers()
    if status is None:
        return web.Response(status=404, text="No workers: no `bus:` in the config.\n")
    return web.json_response(status.to_json())


async def reload(request: web.Request) -> web.Response:
    """Reload the config file; on error keep the old config and list every error."""
    errors = await request.app[SOURCE_KEY].reload()
    operators.record(request, "reload", "config", "failed" if errors else "applied")
    if errors:
        return web.Response(status=500, text="Reload failed:\n" + "\n".join(errors) + "\n")
    return web.Response(text="Reloaded.\n")


async def probe(request: web.Request) -> web.Response:
    """Run one check now and return its samples; with debug=true, its log lines too."""
    check_id = request.query.get("check", "")
    run = await request.app[SOURCE_KEY].run_check(check_id)
    if run is None:
        return web.Response(status=404, text=f"unknown check {bound_text(check_id, 100)!r}\n")
    check, result, text = run.check, run.result, run.metrics
    if request.query.get("debug", "").lower() not in ("1", "true", "yes"):
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})
    verdict = (
        f"failed: {result.error}"
        if not result.success
        else "succeeded"
        if result.error is None
        else f"succeeded with a {result.error}"
    )
    debug = (
        f"Logs for the probe of check {check.id} ({check.kind} {check.target}):\n"
        + "".join(f"{line}\n" for line in result.logs)
        + f"Probe {verdict} in {result.duration:.6f}s\n\n"
        + "Metrics that would have been returned:\n"
        + text
    )
    return web.Response(text=debug, content_type="text/plain")
