"""HTTP endpoints: /metrics passes promtool and is scraped by a real Prometheus; health, ready,
reload and the probe debug page behave as operators expect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import free_port, require_binary
from tests.waiting import wait_for
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.monitor.scheduler import start_offset
from vigie.probes import default_registry
from vigie.probes.http import make_session


def late_id(prefix: str, interval: float, minimum: float) -> str:
    """Return a check id whose start offset is at least `minimum` seconds into its interval."""
    for i in range(1000):
        cid = f"{prefix}-{i}"
        if start_offset(cid, interval) >= minimum:
            return cid
    raise AssertionError("no id found")


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """A loopback web app with a healthy and a failing page."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="status: OK")

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500, text="<script>alert(1)</script>")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def write_config(path: Path, base: str, checks: list[tuple[str, str, str]]) -> None:
    """Write a config with http checks (id, path, interval) listening on a free port."""
    lines = ["defaults: {labels: {site: nord}}", "web: {listen: '127.0.0.1:0'}", "checks:"]
    for cid, page, interval in checks:
        lines.append(
            f"  - {{id: {cid}, kind: http, target: '{base}{page}', interval: {interval},"
            " timeout: 1s}"
        )
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
async def daemon(tmp_path: Path, target: str) -> AsyncIterator[Daemon]:
    """A running daemon with one healthy, one failing and one not-yet-run check."""
    config = tmp_path / "vigie.yaml"
    late = late_id("late", 30.0, 15.0)
    write_config(
        config, target, [("up", "/ok", "1s"), ("down", "/broken", "1s"), (late, "/ok", "30s")]
    )
    registry = default_registry()
    async with make_session() as session:
        d = Daemon(load_config(config, registry, env={}), registry, session)
        await d.start()
        yield d
        await d.stop()


def url(d: Daemon, path: str) -> str:
    """Return the URL of a daemon endpoint."""
    return f"http://127.0.0.1:{d.listen_port}{path}"


async def get(d: Daemon, path: str, method: str = "GET") -> tuple[int, str]:
    """Fetch an endpoint of the daemon."""
    async with aiohttp.ClientSession() as s, s.request(method, url(d, path)) as resp:
        return resp.status, await resp.text()


async def test_metrics_pass_promtool_and_carry_labels(daemon: Daemon) -> None:
    """/metrics has per-check series with check, kind, target and config labels; promtool agrees."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    await wait_for(lambda: daemon.store.latest("up") and daemon.store.latest("down"), "runs")
    status, text = await get(daemon, "/metrics")
    assert status == 200
    base = 'kind="http",target="http://127.0.0.1:'
    assert f'probe_success{{check="up",{base}' in text
    up_line = next(x for x in text.splitlines() if x.startswith('probe_success{check="up"'))
    down_line = next(x for x in text.splitlines() if x.startswith('probe_success{check="down"'))
    assert up_line.endswith('site="nord"} 1') and down_line.endswith('site="nord"} 0')
    assert "vigie_scheduler_lag_seconds_bucket" in text
    assert "vigie_config_last_reload_successful 1.0" in text
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(text.encode()), 30)
    assert proc.returncode == 0, out + err
    assert out.strip() == b"" and err.strip() == b"", out + err


async def test_healthy_and_ready_after_first_round(daemon: Daemon) -> None:
    """/-/healthy answers at once; /-/ready only once every check has run once."""
    assert (await get(daemon, "/-/healthy"))[0] == 200
    assert (await get(daemon, "/-/ready"))[0] == 503
    late = next(cid for cid in daemon.scheduler.plan if cid.startswith("late"))
    await wait_for(lambda: daemon.store.latest("up") and daemon.store.latest("down"), "runs")
    assert daemon.scheduler.trigger(late)
    await wait_for(daemon.scheduler.first_round_done.is_set, "first round")
    assert (await get(daemon, "/-/ready"))[0] == 200


async def test_probe_debug_shows_logs_and_samples(daemon: Daemon) -> None:
    """/probe?check=ID&debug=true runs the check now and shows its log lines and samples."""
    status, text = await get(daemon, "/probe?check=down&debug=true")
    assert status == 200
    assert text.startswith("Logs for the probe of check down (http ")
    assert "Probe failed: status code 500" in text
    assert 'probe_success{check="down"' in text
    status, text = await get(daemon, "/probe?check=up")
    assert status == 200 and text.startswith("# HELP")
    status, _ = await get(daemon, "/probe?check=nope")
    assert status == 404


async def test_index_escapes_target_text(daemon: Daemon) -> None:
    """The landing page lists checks; text from targets is escaped."""
    await wait_for(lambda: daemon.store.latest("down"), "down check result")
    status, text = await get(daemon, "/")
    assert status == 200 and "<script>alert" not in text
    assert ">down<" in text


async def test_reload_applies_good_config_and_keeps_old_on_error(
    daemon: Daemon, tmp_path: Path, target: str
) -> None:
    """POST /-/reload applies a valid config; an invalid one is refused and the old one runs."""
    config = daemon.loaded.path
    write_config(config, target, [("up", "/ok", "1s"), ("new", "/ok", "1s")])
    status, body = await get(daemon, "/-/reload", "POST")
    assert status == 200, body
    assert set(daemon.scheduler.plan) == {"up", "new"}
    await wait_for(lambda: daemon.store.latest("new"), "new check to run")
    _, text = await get(daemon, "/metrics")
    assert 'check="down"' not in text and 'check="new"' in text
    config.write_text("checks:\n  - {id: bad, kind: http, target: 'ftp://x'}\n")
    status, body = await get(daemon, "/-/reload", "POST")
    assert status == 500
    assert "vigie.yaml:2:27: checks[0].target: must be an http or https URL" in body
    _, text = await get(daemon, "/metrics")
    assert "vigie_config_last_reload_successful 0.0" in text
    assert set(daemon.scheduler.plan) == {"up", "new"}


async def test_real_prometheus_scrapes_probe_success(daemon: Daemon, tmp_path: Path) -> None:
    """Debian's Prometheus scrapes /metrics and answers a query for probe_success."""
    prometheus = require_binary("/usr/bin/prometheus", "prometheus")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: vigie\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{daemon.listen_port}']}}]\n"
    )
    proc = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        found: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as s:

            async def answers(path: str) -> bool:
                """True once Prometheus answers path with 200 (it is up and not starting)."""
                try:
                    async with s.get(base + path) as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            async def both_scraped() -> bool:
                """True once the query returns a probe_success series for each check."""
                nonlocal found
                async with s.get(f"{base}/api/v1/query?query=probe_success") as resp:
                    assert resp.status == 200, await resp.text()
                    found = (await resp.json())["data"]["result"]
                return len(found) >= 2

            await wait_for(lambda: answers("/-/ready"), "Prometheus to be ready", within=60)
            await wait_for(both_scraped, "Prometheus to scrape both checks", within=60)
        values = {r["metric"]["check"]: r["value"][1] for r in found}
        assert values.get("up") == "1" and values.get("down") == "0", found
    finally:
        proc.terminate()
        await proc.wait()
