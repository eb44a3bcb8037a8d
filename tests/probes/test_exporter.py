"""The exporter probe against Debian's prometheus-node-exporter and loopback aiohttp servers."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from tests.conftest import free_port, require_binary
from tests.probes.conftest import make_check, refused_port, sample, serve_http
from tests.waiting import wait_for_sync
from vigie.core.expr import parse_condition
from vigie.monitor.config import load_config
from vigie.probes.base import ProbeContext, ProbeRegistry
from vigie.probes.exporter import ExporterProbe, ExporterSettings

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


@pytest.fixture
def probe() -> ExporterProbe:
    """A fresh exporter probe."""
    return ExporterProbe()


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until something accepts connections on 127.0.0.1:port, or fail."""

    def listening() -> bool:
        """True once the port accepts; fail at once if the exporter exited."""
        if proc.poll() is not None:
            pytest.fail(f"node exporter exited with {proc.returncode}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for_sync(listening, f"node exporter listening on {port}")


@pytest.fixture(scope="module")
def node_exporter() -> Iterator[str]:
    """A real node_exporter on a free loopback port with a few light collectors; its URL."""
    binary = require_binary(NODE_EXPORTER, "prometheus-node-exporter")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.loadavg",
            "--collector.meminfo",
            "--collector.filesystem",
            "--collector.uname",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.terminate()
        proc.wait(10)


def text_app(body: bytes | str, status: int = 200) -> web.Application:
    """An app answering /metrics with a fixed body and status."""

    async def handler(_: web.Request) -> web.Response:
        """Return the fixed body."""
        data = body.encode() if isinstance(body, str) else body
        return web.Response(body=data, status=status, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app


# --------------------------------------------------------------------------- node_exporter


async def test_node_exporter_selected_series(
    probe: ExporterProbe, ctx: ProbeContext, node_exporter: str
) -> None:
    """Only the selected node_exporter series are kept, with their labels and values."""
    check = make_check(
        probe,
        node_exporter,
        metrics=[
            "node_load1",
            "node_memory_MemTotal_bytes",
            {"name": "node_filesystem_(size|avail)_bytes", "labels": {"mountpoint": "/"}},
            {"name": "promhttp_metric_handler_requests_total", "labels": {"code": "200"}},
        ],
    )
    result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "probe_http_status_code") == 200
    assert sample(result, "node_load1") >= 0
    assert sample(result, "node_memory_MemTotal_bytes") > 1024**2
    fs = [s for s in result.samples if s.name.startswith("node_filesystem_")]
    assert {s.name for s in fs} == {"node_filesystem_size_bytes", "node_filesystem_avail_bytes"}
    assert all(dict(s.labels)["mountpoint"] == "/" for s in fs)
    (requests,) = [s for s in result.samples if s.name.startswith("promhttp_")]
    assert requests.type == "counter" and requests.labels == (("code", "200"),)
    kept = sample(result, "probe_exporter_samples_kept")
    assert kept == len(fs) + 3
    assert sample(result, "probe_exporter_samples_scraped") > kept
    assert all(s.type == "gauge" for s in result.samples if s.name.startswith("node_"))


async def test_prefix_and_health_rule(
    probe: ExporterProbe, ctx: ProbeContext, node_exporter: str
) -> None:
    """With a prefix the kept names are prefixed, and health rules evaluate them."""
    check = make_check(probe, node_exporter, metrics=["node_load.*"], prefix="srv_")
    result = await probe(check, ctx)
    assert result.success, result.error
    names = {s.name for s in result.samples if s.name.startswith("srv_")}
    assert names == {"srv_node_load1", "srv_node_load5", "srv_node_load15"}
    holds, seen = parse_condition("srv_node_load1 >= 0").evaluate(result.samples)
    assert holds is True and seen.startswith("srv_node_load1 (")


# --------------------------------------------------------------------------- bad exporters


async def test_clashing_labels_and_names_are_renamed(
    probe: ExporterProbe, ctx: ProbeContext
) -> None:
    """Clashing labels and Vigie-like names get an exported_ prefix; duplicates are dropped."""
    body = (
        "# HELP probe_success Displays whether or not the probe was a success\n"
        "# TYPE probe_success gauge\n"
        'probe_success{target="x"} 1\n'
        "probe_http_status_code 200\n"
        'hba_port_up{host="host1",site="ignored"} 0\n'
        'hba_port_up{host="host1",site="ignored"} 1\n'
    )
    async with serve_http(text_app(body)) as base:
        check = dataclasses.replace(
            make_check(probe, f"{base}/metrics", metrics=["probe_.*", "hba_.*"]),
            labels=(("site", "nord"),),
        )
        result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "exported_probe_success", exported_target="x") == 1
    assert sample(result, "hba_port_up", host="host1", exported_site="ignored") == 0
    assert sample(result, "exported_probe_http_status_code") == 200
    assert sample(result, "probe_http_status_code") == 200  # Vigie's own, once


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html>Service Unavailable</html>\n", "invalid exposition: "),
        ('node_load1{a="x" 1\n', "invalid exposition: "),
        ("node_load1 one\n", "invalid exposition: "),
    ],
)
async def test_garbage_body(
    probe: ExporterProbe, ctx: ProbeContext, body: str, reason: str
) -> None:
    """A body that is not the text format fails with 'invalid exposition' and the parser's word."""
    async with serve_http(text_app(body)) as base:
        result = await probe(make_check(probe, f"{base}/metrics", metrics=["node_.*"]), ctx)
    assert not result.success
    assert result.error is not None and result.error.startswith(reason)
    assert len(result.error) <= 512


async def test_huge_body_is_refused(probe: ExporterProbe, ctx: ProbeContext) -> None:
    """A body over max_body_bytes fails without being parsed whole."""
    body = "".join(f'x_total{{i="{i}"}} {i}\n' for i in range(200_000))
    async with serve_http(text_app(body)) as base:
        check = make_check(probe, f"{base}/metrics", metrics=["x.*"], max_body_bytes=65536)
        result = await probe(check, ctx)
    assert result.error == "body larger than max_body_bytes (65536)"
    assert sample(result, "probe_http_status_code") == 200


async def test_large_body_parsed_off_the_loop(probe: ExporterProbe, ctx: ProbeContext) -> None:
    """A large valid body (parsed in a thread) keeps the selected series exactly."""
    lines = ["# TYPE big_total counter\n"]
    lines += [f'big_total{{i="{i}"}} {i}\n' for i in range(20_000)]
    lines.append("wanted_celsius 21.5\n")
    async with serve_http(text_app("".join(lines))) as base:
        result = await probe(make_check(probe, f"{base}/metrics", metrics=["wanted_.*"]), ctx)
    assert result.success, result.error
    assert sample(result, "wanted_celsius") == 21.5
    assert sample(result, "probe_exporter_samples_scraped") == 20_001


async def test_too_many_selected_series(probe: ExporterProbe, ctx: ProbeContext) -> None:
    """Selecting more series than max_samples fails and says so."""
    body = "".join(f'x{{i="{i}"}} 1\n' for i in range(50))
    async with serve_http(text_app(body)) as base:
        check = make_check(probe, f"{base}/metrics", metrics=["x"], max_samples=10)
        result = await probe(check, ctx)
    assert result.error == "more than max_samples (10) series selected"


async def test_status_500(probe: ExporterProbe, ctx: ProbeContext) -> None:
    """An exporter answering 500 fails with the status code."""
    async with serve_http(text_app("oops", status=500)) as base:
        result = await probe(make_check(probe, f"{base}/metrics", metrics=["x"]), ctx)
    assert result.error == "status code 500 not in 2xx"
    assert sample(result, "probe_http_status_code") == 500


async def test_nothing_selected(probe: ExporterProbe, ctx: ProbeContext) -> None:
    """A scrape where no series matches fails: the selectors no longer fit the exporter."""
    async with serve_http(text_app("other_metric 1\n")) as base:
        result = await probe(make_check(probe, f"{base}/metrics", metrics=["node_load1"]), ctx)
    assert result.error == "no series matched metrics"
    assert sample(result, "probe_exporter_samples_scraped") == 1


async def test_connection_refused(probe: ExporterProbe, ctx: ProbeContext) -> None:
    """A closed port fails naming the address and 'Connection refused'."""
    port = refused_port()
    check = make_check(probe, f"http://127.0.0.1:{port}/metrics", metrics=["x"])
    result = await probe(check, ctx)
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


async def test_hung_exporter_is_left_to_the_timeout(
    probe: ExporterProbe, ctx: ProbeContext
) -> None:
    """An exporter that never answers is cut by the scheduler's timeout, not waited on."""

    async def hang(_: web.Request) -> web.Response:
        """Never answer in time."""
        await asyncio.sleep(30)
        return web.Response(text="late 1\n")

    app = web.Application()
    app.router.add_get("/metrics", hang)
    async with serve_http(app) as base:
        check = make_check(probe, f"{base}/metrics", metrics=["late"])
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await probe(check, ctx)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "metrics"),
        ({"metrics": []}, "at least 1 item"),
        ({"metrics": ["node_(load"]}, "invalid regex|regular expression|missing"),
        ({"metrics": ["x"], "prefix": "9bad"}, "not a valid metric name start"),
        ({"metrics": [{"name": "x", "labelz": {}}]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings(settings: dict[str, object], message: str) -> None:
    """Bad settings are rejected with a reason."""
    with pytest.raises(ValidationError, match=message):
        ExporterSettings.model_validate(settings)


@pytest.mark.parametrize("target", ["ftp://h/metrics", "127.0.0.1:9100", "http://u:p@h/metrics"])
def test_invalid_targets(probe: ExporterProbe, target: str) -> None:
    """Only http(s) URLs with a host and no credentials are accepted."""
    with pytest.raises(ValueError, match="must"):
        probe.parse_target(target)


def test_config_loads_an_exporter_check(tmp_path: Path) -> None:
    """A config with an exporter check loads through the registry, host taken from the URL."""
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "checks:\n"
        "  - id: srv-dpi-1-node\n"
        "    kind: exporter\n"
        "    target: http://srv-dpi-1.chu.local:9100/metrics\n"
        "    exporter:\n"
        "      metrics: [node_load1, {name: node_filesystem_avail_bytes,"
        " labels: {mountpoint: /}}]\n"
    )
    loaded = load_config(config, ProbeRegistry([ExporterProbe()]))
    check = loaded.plan["srv-dpi-1-node"]
    assert isinstance(check.settings, ExporterSettings)
    assert len(check.settings.selectors()) == 2
    assert check.host == "srv-dpi-1.chu.local"


def test_same_config_gives_equal_settings() -> None:
    """Two loads of the same settings compare equal, so a reload does not restart the check."""
    opts = {"metrics": ["node_load1", {"name": "x", "labels": {"a": "b"}}], "prefix": "p_"}
    assert ExporterSettings.model_validate(opts) == ExporterSettings.model_validate(opts)
