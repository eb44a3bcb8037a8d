"""Redfish benchmark: CPU per full probe of a server, and memory held for a 5,000-volume array.

Part 1 probes the rackmount mockup (tests/fixtures/redfish/rackmount: system, storage,
chassis power and thermal; 13 requests a probe) served by sushy-static in a child process,
and counts the probing process's CPU (time.process_time), so the server's is not included.
Part 2 serves a generated Swordfish array (one pool, N volumes) from an aiohttp server in a
child process (`python -m tests.bench.redfish serve-array`) and measures, with tracemalloc,
the memory the probe's result holds, read with `$expand` (one collection response) and by
crawling (one GET per volume). There is no Debian Redfish exporter to compare with.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.bench.common import ROOT, free_port, log, stop_process, wait_port
from vigie.probes.base import Check, ProbeContext
from vigie.probes.http import make_session
from vigie.probes.redfish import RedfishProbe, RedfishSettings

MOCKUP = ROOT / "tests" / "fixtures" / "redfish" / "rackmount"
SUSHY = Path(sys.executable).parent / "sushy-static"
R = "/redfish/v1"
GIB = 1024**3


@contextmanager
def _child(cmd: list[str], port: int) -> Iterator[None]:
    """Run a loopback server in a child process until the block ends."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, 20)
        yield
    finally:
        stop_process(proc)


def _check(probe: RedfishProbe, url: str, **settings: object) -> Check[RedfishSettings]:
    """Return a redfish check on url without credentials."""
    target = probe.parse_target(url)
    return Check(
        id="bench",
        kind="redfish",
        target=target,
        interval=60.0,
        timeout=60.0,
        settings=RedfishSettings.model_validate({"auth": "none", **settings}),
        host=probe.host_of(target),
    )


@dataclass
class CpuResult:
    """CPU of n sequential full probes of one server."""

    n: int
    cpu: float
    wall: float
    requests: float
    samples: int
    failures: int


async def _probe_many(url: str, n: int) -> CpuResult:
    """Probe url n times in a row; CPU from time.process_time of this process."""
    probe = RedfishProbe()
    check = _check(probe, url)
    async with make_session() as session:
        ctx = ProbeContext(session=session)
        for _ in range(5):  # warm up imports, SSL-less connector, caches
            await probe(check, ctx)
        failures, requests, samples = 0, 0.0, 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            result = await probe(check, ctx)
            failures += not result.success
            samples = len(result.samples)
            requests = next(s.value for s in result.samples if s.name == "redfish_probe_requests")
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return CpuResult(n, cpu, wall, requests, samples, failures)


def bench_cpu(n: int) -> CpuResult:
    """Run part 1 against sushy-static on the rackmount mockup."""
    port = free_port()
    cmd = [str(SUSHY), "-i", "127.0.0.1", "-p", str(port), "-m", str(MOCKUP)]
    with _child(cmd, port):
        return asyncio.run(_probe_many(f"http://127.0.0.1:{port}", n))


# --------------------------------------------------------------------------- the array


def array_docs(volumes: int, expand: bool) -> dict[str, bytes]:
    """Return the encoded resources of a Swordfish array with one pool and `volumes` volumes."""
    s = f"{R}/Storage/Array1"
    docs: dict[str, object] = {
        R: {
            "@odata.id": R,
            "Id": "RootService",
            "Storage": {"@odata.id": f"{R}/Storage"},
            "ProtocolFeaturesSupported": {"ExpandQuery": {"Levels": expand, "NoLinks": expand}},
        },
        f"{R}/Storage": {"@odata.id": f"{R}/Storage", "Members": [{"@odata.id": s}]},
        s: {
            "@odata.id": s,
            "Id": "Array1",
            "Status": {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"},
            "StoragePools": {"@odata.id": f"{s}/StoragePools"},
            "Volumes": {"@odata.id": f"{s}/Volumes"},
        },
        f"{s}/StoragePools": {
            "@odata.id": f"{s}/StoragePools",
            "Members": [{"@odata.id": f"{s}/StoragePools/P0"}],
        },
        f"{s}/StoragePools/P0": {
            "@odata.id": f"{s}/StoragePools/P0",
            "Id": "P0",
            "Capacity": {"Data": {"AllocatedBytes": volumes * 100 * GIB, "ConsumedBytes": 1}},
            "Status": {"State": "Enabled", "Health": "OK"},
        },
    }
    members = []
    for i in range(volumes):
        path = f"{s}/Volumes/LUN-{i:05d}"
        vol = {
            "@odata.id": path,
            "@odata.type": "#Volume.v1_9_0.Volume",
            "Id": f"LUN-{i:05d}",
            "Name": f"LUN {i}",
            "CapacityBytes": 100 * GIB,
            "Capacity": {"Data": {"AllocatedBytes": 100 * GIB, "ConsumedBytes": (i % 100) * GIB}},
            "Status": {"State": "Enabled", "Health": "OK"},
        }
        docs[path] = vol
        members.append(vol)
    docs[f"{s}/Volumes"] = {"@odata.id": f"{s}/Volumes", "Members": members}
    out = {k: json.dumps(v).encode() for k, v in docs.items()}
    # Without $expand a collection lists links only.
    out[f"{s}/Volumes"] = json.dumps(
        {"@odata.id": f"{s}/Volumes", "Members": [{"@odata.id": m["@odata.id"]} for m in members]}
    ).encode()
    out[f"{s}/Volumes?expanded"] = json.dumps(docs[f"{s}/Volumes"]).encode()
    return out


def serve_array(port: int, volumes: int, expand: bool) -> None:
    """Serve the generated array on 127.0.0.1:port until killed (the child process's main)."""
    docs = array_docs(volumes, expand)

    async def handler(request: web.Request) -> web.Response:
        path = request.path.rstrip("/")
        if "$expand" in request.query and f"{path}?expanded" in docs:
            path += "?expanded"
        body = docs.get(path)
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@dataclass
class MemResult:
    """One probe of the array: what it cost and what its result holds."""

    mode: str
    volumes: int
    wall: float
    cpu: float
    requests: float
    bytes_read: float
    samples: int
    held: int
    peak: int
    success: bool


async def _probe_array(url: str, mode: str, volumes: int) -> MemResult:
    """Probe the array once; tracemalloc gives the result's retained size and the peak."""
    probe = RedfishProbe()
    check = _check(
        probe,
        url,
        expand=mode == "expand",
        max_requests=volumes + 100,
        max_concurrency=4,
        max_bytes=256 * 1024 * 1024,
    )
    async with make_session() as session:
        ctx = ProbeContext(session=session)
        await probe(_check(probe, url, collect=["systems"]), ctx)  # warm the connector
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = await probe(check, ctx)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        ctx.log.lines.clear()
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    def value(name: str) -> float:
        return next(s.value for s in result.samples if s.name == name)

    return MemResult(
        mode,
        volumes,
        wall,
        cpu,
        value("redfish_probe_requests"),
        value("redfish_probe_response_bytes"),
        len(result.samples),
        held - base,
        peak - base,
        result.success and value("storage_volume_capacity_bytes") > 0,
    )


def bench_array(volumes: int, mode: str) -> MemResult:
    """Run part 2 in one mode against a child aiohttp server."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.bench.redfish", "serve-array", "--port", str(port)]
    cmd += ["--volumes", str(volumes)] + (["--expand"] if mode == "expand" else [])
    with _child(cmd, port):
        return asyncio.run(_probe_array(f"http://127.0.0.1:{port}", mode, volumes))


# --------------------------------------------------------------------------- report


def run(quick: bool) -> str:
    """Run both parts and return the Markdown section."""
    n = 100 if quick else 1000
    log(f"redfish: {n} probes of the rackmount mockup (sushy-static)")
    cpu = bench_cpu(n)
    arrays = []
    for mode, volumes in (("expand", 5000), ("crawl", 1000 if quick else 5000)):
        log(f"redfish: array of {volumes} volumes, {mode}")
        arrays.append(bench_array(volumes, mode))
    per_probe = cpu.cpu / cpu.n
    lines = [
        "## Redfish",
        "",
        "Part 1: full probes (system, storage controller, drives, volume, chassis Power and "
        "Thermal) of the rackmount mockup served by sushy-static on loopback, one after "
        "another; CPU is `time.process_time()` of the probing process only.",
        "",
        "| probes | requests/probe | samples/probe | failures | CPU ms/probe | "
        "CPU µs/request | wall ms/probe |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {cpu.n} | {cpu.requests:.0f} | {cpu.samples} | {cpu.failures} | "
        f"{per_probe * 1e3:.2f} | {per_probe / max(cpu.requests, 1) * 1e6:.0f} | "
        f"{cpu.wall / cpu.n * 1e3:.2f} |",
        "",
        "Part 2: one probe of a generated Swordfish array (one pool, N volumes) served by an "
        "aiohttp server in a child process. Held: memory still allocated (tracemalloc) once "
        "the result is built and the responses are freed, i.e. what the result costs while it "
        "is the check's latest; peak: during the probe. CPU and wall include tracemalloc's "
        "overhead.",
        "",
        "| mode | volumes | requests | MB read | samples | held MB | peak MB | CPU s | "
        "wall s | ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for a in arrays:
        lines.append(
            f"| {a.mode} | {a.volumes} | {a.requests:.0f} | {a.bytes_read / 1e6:.1f} | "
            f"{a.samples} | {a.held / 1e6:.1f} | {a.peak / 1e6:.1f} | {a.cpu:.2f} | "
            f"{a.wall:.2f} | {'yes' if a.success else 'NO'} |"
        )
    lines += [
        "",
        "No comparison: there is no Debian-packaged Redfish exporter.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child server: `python -m tests.bench.redfish serve-array ...`."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.redfish")
    parser.add_argument("command", choices=["serve-array"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--volumes", type=int, default=5000)
    parser.add_argument("--expand", action="store_true")
    args = parser.parse_args(argv)
    serve_array(args.port, args.volumes, args.expand)
    return 0


if __name__ == "__main__":
    sys.exit(main())
