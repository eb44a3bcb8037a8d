"""/metrics at scale: gzip when asked, shards that partition the page, a loop that stays free.

Served by a real aiohttp server on a free loopback port and read by a real aiohttp client;
the exposition is fed with results made here (no probe runs: what is measured is the page).
"""

from __future__ import annotations

import asyncio
import gzip
import random
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from tests.conftest import free_port
from vigie.core.results import ProbeResult, Sample
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.monitor.exposition import (
    DEFLATE_END,
    Exposition,
    Shard,
    accepts_gzip,
    metrics_response,
    parse_shard,
    render_registry,
)
from vigie.probes import default_registry
from vigie.probes.http import make_session

PHASES = ("dns", "connect", "tls", "processing", "transfer", "total")


class Components(Collector):
    """A health-like family: one gauge per component (as vigie_component_state)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def collect(self) -> Iterator[Metric]:
        """Yield the components' family."""
        family = GaugeMetricFamily(
            "test_component_state", "State code.", labels=["component", "site"]
        )
        for i in range(self.count):
            family.add_metric([f"comp-{i}", f"site-{i % 7}"], float(i % 6))
        yield family


def http_result(i: int, rows: int = 0) -> ProbeResult:
    """Return a result shaped like an HTTP probe's (phases, status code, content length).

    rows adds a table's samples (one per interface), as an SNMP check has.
    """
    samples = [
        Sample("probe_http_duration_seconds", 0.001 * (n + 1), (("phase", p),), "gauge", "Phase.")
        for n, p in enumerate(PHASES)
    ]
    samples.append(Sample("probe_http_status_code", 200.0 if i % 9 else 503.0))
    samples.append(Sample("probe_http_content_length", float(1000 + i)))
    samples += [Sample("if_in_octets", float(i * r), (("ifname", f"eth{r}"),)) for r in range(rows)]
    return ProbeResult(i % 9 != 0, 0.01 + i * 1e-6, tuple(samples))


def filled(checks: int, components: int, rows: int = 0) -> Exposition:
    """Return an exposition with `checks` checks' results and a registry of its own."""
    own = CollectorRegistry()
    Gauge("test_daemon_up", "Daemon up.", registry=own).set(1)
    own.register(Components(components))
    exp = Exposition(own)
    exp.set_labels(
        {
            f"chk-{i}": [
                ("check", f"chk-{i}"),
                ("kind", "http"),
                ("target", f"http://10.0.{i // 250}.{i % 250}/health"),
                ("component", f"comp-{i // 4}"),
            ]
            for i in range(checks)
        }
    )
    for i in range(checks):
        exp.update(f"chk-{i}", http_result(i, rows))
    return exp


@dataclass
class Served:
    """An exposition behind a real /metrics endpoint."""

    exposition: Exposition
    url: str


async def serve(exp: Exposition) -> AsyncIterator[Served]:
    """Serve exp's /metrics through metrics_response on a free loopback port."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await metrics_response(request, exp)

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Served(exp, f"http://127.0.0.1:{port}/metrics")
    finally:
        await runner.cleanup()


@pytest.fixture
async def small() -> AsyncIterator[Served]:
    """300 checks and 80 components."""
    async for served in serve(filled(300, 80)):
        yield served


async def fetch(url: str, encoding: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET a URL without decompressing; return status, headers and the body as sent."""
    headers = {} if encoding is None else {"Accept-Encoding": encoding}
    async with (
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as s,
        s.get(url, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Return every series of a page, as parsed by prometheus_client."""
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_gzip_when_asked_and_identity_otherwise(small: Served) -> None:
    """Accept-Encoding: gzip gets a gzip body that decompresses to the plain page."""
    status, headers, plain = await fetch(small.url)
    assert status == 200 and "Content-Encoding" not in headers
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    status, headers, packed = await fetch(small.url, "gzip")
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in headers["Vary"]
    assert len(packed) * 5 < len(plain)
    assert gzip.decompress(packed) == plain
    found = series(plain.decode())
    assert len(found) == 300 * 10 + 80 + 1  # 10 series a check, the components, the daemon
    assert ("probe_success", (("check", "chk-9"), ("component", "comp-2"), ("kind", "http"),
            ("target", "http://10.0.0.9/health"))) in found  # fmt: skip
    _, headers, _ = await fetch(small.url, "gzip;q=0, identity")
    assert "Content-Encoding" not in headers


def test_accept_encoding_is_read_as_http_says() -> None:
    """gzip, x-gzip or * with q above 0 allow gzip; q=0 refuses it; an explicit gzip wins."""
    assert accepts_gzip("gzip")
    assert accepts_gzip("deflate, GZIP;q=0.5")
    assert accepts_gzip("x-gzip")
    assert accepts_gzip("*")
    assert not accepts_gzip("")
    assert not accepts_gzip("identity, deflate")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip;q=0, *")
    assert not accepts_gzip("*;q=0")
    assert not accepts_gzip("gzip;q=nonsense")


async def test_shards_partition_the_page(small: Served) -> None:
    """Shards 0..n-1 hold every series of the page once; the daemon's own go with shard 0."""
    _, _, whole = await fetch(small.url)
    everything = series(whole.decode())
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for index in range(3):
        status, _, body = await fetch(f"{small.url}?shard={index}&of=3", "gzip")
        assert status == 200
        part = series(gzip.decompress(body).decode())
        assert part and not part & seen, f"shard {index} repeats series"
        seen |= part
        own = {s for s in part if not s[0].startswith("probe_")}
        assert bool(own) == (index == 0)
        for name, labels in part:
            check = dict(labels).get("check")
            assert check is None or Shard(index, 3).holds(check), (name, check)
    assert seen == everything
    _, _, one = await fetch(f"{small.url}?shard=0&of=1")
    assert one == whole


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("shard=3&of=3", "'shard'"),
        ("shard=-1&of=3", "'shard'"),
        ("shard=a&of=3", "'shard'"),
        ("shard=1e0&of=3", "'shard'"),
        ("of=3", "'shard'"),
        ("shard=0", "'of'"),
        ("shard=0&of=0", "'of'"),
        ("shard=0&of=1000001", "'of'"),
        ("shard=0&of=" + "9" * 5000, "'of'"),
    ],
)
async def test_bad_shard_parameter_is_a_400_naming_it(
    small: Served, query: str, named: str
) -> None:
    """A shard request Vigie cannot serve is refused, the text naming the parameter."""
    status, _, body = await fetch(f"{small.url}?{query}")
    assert status == 400
    text = body.decode()
    assert named in text and len(text) < 200


def test_parse_shard_reads_both_parameters() -> None:
    """No parameter is the whole page; both give the shard."""
    assert parse_shard({}) is None
    assert parse_shard({"shard": "2", "of": "5"}) == Shard(2, 5)


def test_registry_rendered_as_client_python_renders_it() -> None:
    """render_registry gives generate_latest's bytes: gauges by the fast path, others as is."""
    registry = CollectorRegistry()
    gauge = Gauge("test_gauge", "Help with \\ and\nnewline.", ["a", "b"], registry=registry)
    gauge.labels('quote " back \\ nl \n', "é中😀").set(1.5)
    gauge.labels("big", "x").set(1.2345678e20)
    gauge.labels("nan", "x").set(float("nan"))
    gauge.labels("inf", "x").set(float("-inf"))
    Gauge("test_plain", "No labels.", registry=registry).set(3)
    Counter("test_events", "Events.", ["kind"], registry=registry).labels("a").inc(2)
    Histogram("test_seconds", "Seconds.", registry=registry).observe(0.3)
    Info("test_build", "Build.", registry=registry).info({"version": "1"})
    Enum("test_mode", "Mode.", states=["a", "b"], registry=registry).state("b")
    registry.register(Components(50))
    assert render_registry(registry) == generate_latest(registry)


def test_page_stays_whole_when_results_arrive_mid_walk() -> None:
    """Checks that go or change families between two pieces break neither walk nor page.

    Each family is taken as it stood when the walk reached it: probe_success (walked before
    the change) has every check; the HTTP families (walked after) only the checks still
    reporting them.
    """
    exp = filled(3000, 0)
    pieces = exp.pieces()
    head = [next(pieces), next(pieces)]  # probe_success's header and its first 1,000 lines
    for i in range(0, 3000, 2):
        exp.update(f"chk-{i}", ProbeResult(False, 1.0))  # drops its HTTP families
    exp.update("chk-1", None)
    exp.update("chk-new", http_result(1))  # no labels set: not exposed
    text = b"".join([*head, *pieces]).decode()
    names = [name for name, _ in series(text)]
    assert names.count("probe_success") == 3000
    assert names.count("probe_http_status_code") == 1499
    assert names.count("probe_http_duration_seconds") == 1499 * 6
    assert "chk-new" not in text


def one_member(body: bytes) -> bytes:
    """Decompress a gzip body that must be exactly one member (what any HTTP client reads)."""
    reader = zlib.decompressobj(wbits=31)
    text = reader.decompress(body)
    assert reader.eof and reader.unused_data == b""
    return text


async def packed_page(exp: Exposition) -> bytes:
    """The whole page as /metrics sends it gzipped, decompressed."""
    return one_member(b"".join([chunk async for chunk in exp.gzip_stream()]))


async def test_gzip_page_keeps_the_blocks_that_did_not_change() -> None:
    """Random results, checks dropped and added, families that come and go: every gzipped page
    is one member holding the plain page's series; a block is compressed again only when one
    of its lines changed."""
    rng = random.Random(5)
    exp = filled(3000, 40)
    for step in range(12):
        for i in rng.sample(range(3000), rng.choice((0, 1, 30, 900))):
            exp.update(f"chk-{i}", rng.choice((http_result(i + step), ProbeResult(False, 0.5))))
        if step == 6:  # a reload: 100 checks go, 50 come
            exp.set_labels({f"chk-{i}": [("check", f"chk-{i}")] for i in range(100, 3050)})
            for i in range(3000, 3050):
                exp.update(f"chk-{i}", http_result(i))
        plain = b"".join([chunk async for chunk in exp.stream()]).decode()
        page = (await packed_page(exp)).decode()
        assert series(page) == series(plain), step
        assert sorted(page.splitlines()) == sorted(plain.splitlines()), step
    before = list(exp.packed_pieces())
    assert [id(r) for r in exp.packed_pieces()] == [id(r) for r in before]  # nothing changed
    exp.update("chk-2000", http_result(7))  # new values in its HTTP families, same success
    after = list(exp.packed_pieces())
    redone = [b for a, b in zip(before, after, strict=True) if a is not b]
    assert 1 <= len(redone) <= len(PHASES) + 3  # its block of each family that changed
    raw = zlib.decompressobj(wbits=-15)  # the kept runs and the end make one deflate stream
    text = raw.decompress(b"".join(r.data for r in after) + DEFLATE_END)
    assert raw.eof and len(text) == sum(r.size for r in after)


CLIENT = (
    "import sys, urllib.request as u; "
    "r = u.urlopen(u.Request(sys.argv[1], headers={'Accept-Encoding': sys.argv[2]})); "
    "print(r.status, len(r.read()))"
)


async def worst_gap_while(url: str, encoding: str) -> float:
    """Scrape from another process while a task ticks every millisecond; return its worst gap.

    The client runs in its own process, as Prometheus does: only the server's work is in the loop.
    """
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    task = asyncio.create_task(ticker())
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, url, encoding, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(client.communicate(), 60)
    done.set()
    await task
    status, size = out.split()
    assert status == b"200" and int(size) > 0
    return worst


async def test_loop_stays_free_during_a_large_scrape() -> None:
    """10,000 checks of 30 series, 2,500 components: the loop keeps turning during a scrape.

    A page built in one go holds the loop as long as building it takes; this one hands it back
    every few milliseconds. Judged against that time measured here (a busy machine slows both),
    on the best of three scrapes: the strict 10 ms figure is the benchmark's.
    """
    exp = filled(10_000, 2500, rows=20)
    at_once = []
    for _ in range(3):
        started = time.perf_counter()
        exp.render()
        at_once.append(time.perf_counter() - started)
    async for served in serve(exp):
        for encoding in ("identity", "gzip"):
            gaps = [await worst_gap_while(served.url, encoding) for _ in range(3)]
            assert min(gaps) < min(at_once) / 3, (encoding, gaps, at_once)


async def test_daemon_serves_gzip_and_shards(tmp_path: Path) -> None:
    """The daemon's own /metrics negotiates gzip and serves shards (and refuses a bad one)."""
    port = free_port()
    config = tmp_path / "vigie.yaml"
    config.write_text(
        f"web: {{listen: '127.0.0.1:{port}'}}\nchecks:\n"
        + "".join(
            f"  - {{id: c{i}, kind: tcp, target: '127.0.0.1:9', interval: 1h, timeout: 1s}}\n"
            for i in range(20)
        )
    )
    registry = default_registry()
    async with make_session() as session:
        daemon = Daemon(load_config(config, registry, env={}), registry, session)
        await daemon.start()
        try:
            for i in range(20):
                daemon.store.update(f"c{i}", ProbeResult(True, 0.01))
            url = f"http://127.0.0.1:{daemon.listen_port}/metrics"
            _, headers, packed = await fetch(url, "gzip")
            assert headers["Content-Encoding"] == "gzip"
            page = series(gzip.decompress(packed).decode())
            assert ("probe_success", (("check", "c7"), ("kind", "tcp"),
                    ("target", "127.0.0.1:9"))) in page  # fmt: skip
            parts = [series((await fetch(f"{url}?shard={i}&of=2"))[2].decode()) for i in (0, 1)]
            checks = {dict(labels)["check"] for part in parts for _, labels in part
                      if "check" in dict(labels)}  # fmt: skip
            assert checks == {f"c{i}" for i in range(20)} and not parts[0] & parts[1]
            assert (await fetch(f"{url}?shard=2&of=2"))[0] == 400
        finally:
            await daemon.stop()
