"""The daemon's own cost in /metrics: process metrics, probes by kind and outcome, health
evaluations counted and timed, and scheduler lag buckets fine below 25 ms."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, require_binary
from tests.test_scheduler import ExplodingProbe, make_scheduler
from tests.waiting import wait_for
from vigie.monitor.config import load_config
from vigie.monitor.health.engine import Snapshot, build_engine
from vigie.monitor.health.runner import EVALUATION_BUCKETS, HealthRunner, HealthRunnerMetrics
from vigie.monitor.scheduler import LAG_BUCKETS
from vigie.probes import default_registry
from vigie.probes.base import Check, ProbeRegistry
from vigie.probes.http import HttpProbe, make_session

OUTCOMES = ("success", "failure", "timeout", "error")
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "vigie-overview.json"


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """A loopback web app: a healthy page, a failing page and a page that hangs."""
    release = asyncio.Event()

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="status: OK")

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500, text="down")

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/broken", broken)
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    release.set()  # hung handlers answer, so cleanup does not wait on them
    await runner.cleanup()


def values(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of an exposition page keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    """Return one sample's value, or None when the page does not have it."""
    return samples.get((name, frozenset(labels.items())))


def probes(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], outcome: str) -> float:
    """Return vigie_probes_total of the http kind for one outcome (-1 when absent)."""
    value = sample(samples, "vigie_probes_total", kind="http", outcome=outcome)
    return -1.0 if value is None else value


async def promtool_check(promtool: str, page: str) -> None:
    """Fail unless `promtool check metrics` accepts the page without a word."""
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(page.encode()), 30)
    assert proc.returncode == 0 and out.strip() == b"" and err.strip() == b"", out + err


@pytest.fixture
async def vigie(tmp_path: Path, target: str) -> AsyncIterator[str]:
    """`vigie run` in a process with a passing, a failing and a hanging check; yields its URL."""
    port = free_port()
    config = tmp_path / "vigie.yaml"
    config.write_text(
        f"web: {{listen: '127.0.0.1:{port}'}}\n"
        "sites: [{id: nord, name: Nord}]\n"
        "checks:\n"
        f"  - {{id: up, kind: http, target: '{target}/ok', interval: 1s, timeout: 1s}}\n"
        f"  - {{id: down, kind: http, target: '{target}/broken', interval: 1s, timeout: 1s}}\n"
        f"  - {{id: hung, kind: http, target: '{target}/hang', interval: 1s, timeout: 300ms}}\n"
        "components:\n"
        "  - {id: portal, kind: application, site: nord, checks: [up, down]}\n"
    )
    with (tmp_path / "stdout.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vigie.monitor.cli",
            "run",
            "--config",
            str(config),
            stdout=log,
            stderr=log,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def test_running_daemon_shows_its_own_cost(vigie: str) -> None:
    """`vigie run` against a web app exposes process CPU/memory/fds, probes by outcome (a
    passing, a failing and a hanging check), a rising health evaluation count with its timing,
    and lag observations in buckets below 25 ms; promtool accepts the page."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    page = ""

    async with aiohttp.ClientSession() as client:

        async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            """Fetch /metrics (empty when the daemon is not listening yet) and parse it."""
            nonlocal page
            try:
                async with client.get(f"{vigie}/metrics") as resp:
                    page = await resp.text() if resp.status == 200 else ""
            except aiohttp.ClientError:
                page = ""
            return values(page)

        async def every_outcome_seen() -> bool:
            """Return whether a success, a failure and a timeout have been counted."""
            samples = await scrape()
            return all(probes(samples, o) >= 1 for o in ("success", "failure", "timeout"))

        async def health_evaluated(more_than: float) -> bool:
            """Return whether the daemon has counted more than `more_than` health evaluations."""
            got = sample(await scrape(), "vigie_health_evaluations_total")
            return got is not None and got > more_than

        async def fast_lag_seen() -> bool:
            """Return whether a lag observation landed at or below 20 ms."""
            got = sample(await scrape(), "vigie_scheduler_lag_seconds_bucket", le="0.02")
            return got is not None and got >= 1

        await wait_for(every_outcome_seen, "a success, a failure and a timeout counted")
        await wait_for(lambda: health_evaluated(0), "a first health evaluation")
        first = sample(await scrape(), "vigie_health_evaluations_total")
        assert first is not None
        await wait_for(lambda: health_evaluated(first), "the health evaluation count rising")
        await wait_for(fast_lag_seen, "a scheduler lag observation at or below 20 ms")
        samples = await scrape()

    cpu = sample(samples, "process_cpu_seconds_total")
    rss = sample(samples, "process_resident_memory_bytes")
    fds = sample(samples, "process_open_fds")
    assert cpu is not None and cpu > 0, page
    assert rss is not None and rss > 10 * 2**20, rss  # a Python daemon is tens of MiB
    assert fds is not None and fds >= 3, fds  # at least the listener and stdio
    assert probes(samples, "error") == 0  # nothing raised; every outcome is exposed
    seconds = sample(samples, "vigie_health_evaluation_seconds_count")
    assert seconds is not None and seconds >= 2
    lag = {
        float(dict(labels)["le"]): value
        for (name, labels), value in samples.items()
        if name == "vigie_scheduler_lag_seconds_bucket"
    }
    assert {0.002, 0.02} <= set(lag), sorted(lag)  # 2 ms and 20 ms are told apart
    assert lag[0.02] >= 1
    await promtool_check(promtool, page)


def dashboard_query(title: str, instance: str) -> str:
    """Return the first query of the shipped Grafana dashboard's panel with that title, its
    `$instance` variable set as Grafana sets it when that Vigie is selected."""
    board = json.loads(DASHBOARD.read_text())
    panel = next(p for p in board["panels"] if p["title"] == title)
    query: str = panel["targets"][0]["expr"]
    return query.replace("$instance", instance)


async def test_prometheus_computes_cpu_per_probe_from_the_dashboard(
    vigie: str, tmp_path: Path
) -> None:
    """Debian's Prometheus scraping `vigie run` answers the dashboard's CPU-per-probe and
    probes-per-second queries as written: one positive, finite series each (labels match)."""
    prometheus = require_binary("/usr/bin/prometheus", "prometheus")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: vigie\n"
        f"    static_configs: [{{targets: ['{vigie.removeprefix('http://')}']}}]\n"
    )
    proc = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    instance = vigie.removeprefix("http://")
    per_probe = dashboard_query("CPU seconds per probe", instance)
    per_second = dashboard_query("Probes per second", instance)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        async with aiohttp.ClientSession() as client:

            async def ready() -> bool:
                """Return whether Prometheus answers /-/ready with 200."""
                try:
                    async with client.get(f"{base}/-/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            async def positive(query: str) -> bool:
                """Return whether the query gives one series, positive and finite."""
                async with client.get(f"{base}/api/v1/query", params={"query": query}) as resp:
                    assert resp.status == 200, await resp.text()
                    results[query] = (await resp.json())["data"]["result"]
                got = results[query]
                return len(got) == 1 and 0 < float(got[0]["value"][1]) < math.inf

            await wait_for(ready, "Prometheus to be ready", within=60)
            await wait_for(lambda: positive(per_probe), f"a CPU per probe from {per_probe}", 60)
            await wait_for(lambda: positive(f"sum({per_second})"), "probes per second", 60)
            async with client.get(f"{base}/api/v1/query", params={"query": per_second}) as resp:
                outcomes = {r["metric"]["outcome"] for r in (await resp.json())["data"]["result"]}
    finally:
        proc.terminate()
        await proc.wait()
    assert outcomes == set(OUTCOMES), outcomes
    # A loopback HTTP probe costs about a millisecond of CPU, the daemon's idle work included.
    assert float(results[per_probe][0]["value"][1]) < 1.0, results[per_probe]


async def test_every_run_is_counted_by_kind_and_outcome(target: str) -> None:
    """Runs outside the grid (/probe, on demand) are counted like scheduled ones, one outcome
    each, without a lag observation; a planned kind shows all four outcomes at 0 before a run."""
    registry = ProbeRegistry([ExplodingProbe(), HttpProbe()])
    async with make_session() as session:
        sched, _, own = make_scheduler(session, registry)

        def http(cid: str, path: str, timeout: float = 1.0) -> Check:
            """Return an http check of the target's page."""
            return Check(
                cid,
                "http",
                f"{target}{path}",
                3600.0,
                timeout,
                HttpProbe.Settings(),
                host="127.0.0.1",
            )

        def count(kind: str, outcome: str) -> float | None:
            """Return vigie_probes_total for a kind and an outcome (None when not exposed)."""
            return own.get_sample_value("vigie_probes_total", {"kind": kind, "outcome": outcome})

        boom = Check("boom", "explode", "x", 3600.0, 1.0, ExplodingProbe.Settings(), host="x")
        assert count("explode", "error") is None
        sched.apply({"boom": boom})
        try:
            assert [count("explode", o) for o in OUTCOMES] == [0.0, 0.0, 0.0, 0.0]
            for check in (
                http("ok", "/ok"),
                http("ok", "/ok"),
                http("bad", "/broken"),
                http("slow", "/hang", timeout=0.2),
                boom,
            ):
                await sched.run(check)
        finally:
            await sched.stop(0.1)
    assert [count("http", o) for o in OUTCOMES] == [2.0, 1.0, 1.0, 0.0]
    assert count("explode", "error") == 1.0
    assert own.get_sample_value("vigie_scheduler_lag_seconds_count") in (None, 0.0)


def test_buckets_tell_2ms_from_20ms() -> None:
    """Lag and health evaluation buckets have several bounds below 25 ms, sorted and distinct."""
    for buckets in (LAG_BUCKETS, EVALUATION_BUCKETS):
        assert list(buckets) == sorted(set(buckets))
        below = [b for b in buckets if b < 0.025]
        assert len(below) >= 5, below
    assert {0.002, 0.005, 0.01, 0.02} <= set(LAG_BUCKETS)


def test_health_passes_are_counted_and_timed_failed_ones_included(tmp_path: Path) -> None:
    """Each HealthRunner pass adds one to vigie_health_evaluations_total and one observation
    of its duration, a pass that fails (here its publisher raises) included."""
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "sites: [{id: nord, name: Nord}]\n"
        "checks:\n  - {id: up, kind: http, target: 'http://127.0.0.1:9/ok'}\n"
        "components:\n  - {id: portal, kind: application, site: nord, checks: [up]}\n"
    )
    loaded = load_config(config, default_registry(), env={})
    published: list[Snapshot] = []

    def publish(snapshot: Snapshot) -> None:
        """Keep the first snapshot; fail on the next, as a broken alerting side would."""
        if published:
            raise RuntimeError("alerting side broken")
        published.append(snapshot)

    own = CollectorRegistry()
    runner = HealthRunner(
        build_engine(loaded.config, loaded.plan),
        asyncio.Event(),
        publish=publish,
        metrics=HealthRunnerMetrics(own),
    )
    assert own.get_sample_value("vigie_health_evaluations_total") == 0.0
    runner.evaluate()
    with pytest.raises(RuntimeError, match="alerting side broken"):
        runner.evaluate()
    assert own.get_sample_value("vigie_health_evaluations_total") == 2.0
    assert own.get_sample_value("vigie_health_evaluation_seconds_count") == 2.0
    spent = own.get_sample_value("vigie_health_evaluation_seconds_sum")
    assert spent is not None and spent > 0
    assert len(published) == 1  # the second pass failed, and was still counted
