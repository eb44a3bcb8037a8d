"""The peer watch's cost: `python -m tests.bench.peer_watch [--runs N]`.

One replica's daemon runs in this process on loopback with a `replicas:` block (itself and a
peer) and a thousand tcp checks, so it is a daemon at work, not an empty one. The bench runs
the `vigie` probe against that daemon N times in a row and reads the process's CPU time: both
sides of a peer-watch round (the probe's two requests, the daemon answering /-/healthy and
/-/replica) are in it. A replica does one round per peer every `replicas.interval` (10 s by
default), so its share of a core is the round's CPU time over the interval. It also times the
sender rule (`ReplicaSet.is_sender`, called by each direct sink's delivery loop per batch).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path

import structlog
import yaml

from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.probes import default_registry
from vigie.probes.base import Check, ProbeContext
from vigie.probes.http import make_session
from vigie.probes.vigie_peer import VigiePeerProbe, VigiePeerSettings

CHECKS = 1000
INTERVAL = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(workdir: Path, port: int, target: int) -> Path:
    """A replica (nord) of a pair, with a thousand tcp checks of a listening socket."""
    config = {
        "web": {"listen": f"127.0.0.1:{port}"},
        "sites": [{"id": "nord"}, {"id": "bellevue"}],
        "checks": [
            {"id": f"c{i}", "kind": "tcp", "target": f"127.0.0.1:{target}", "interval": "30s"}
            for i in range(CHECKS)
        ],
        "replicas": {
            "instance": "nord",
            "members": [
                {"name": "nord", "url": f"http://127.0.0.1:{port}", "site": "nord"},
                {"name": "bellevue", "url": "http://127.0.0.1:9", "site": "bellevue"},
            ],
        },
    }
    path = workdir / "vigie.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def measure(runs: int) -> dict[str, float]:
    """Run the probe `runs` times against a live daemon; return the cost figures."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        registry = default_registry()
        loaded = load_config(_config(Path(tmp), port, target), registry, env={})
        async with make_session() as session:
            daemon = Daemon(loaded, registry, session, logger=structlog.get_logger())
            await daemon.start()
            try:
                await asyncio.wait_for(daemon.scheduler.first_round_done.wait(), 60)
                probe = VigiePeerProbe()
                check: Check[VigiePeerSettings] = Check(
                    id="vigie-nord",
                    kind="vigie",
                    target=f"http://127.0.0.1:{port}",
                    interval=INTERVAL,
                    timeout=5.0,
                    settings=VigiePeerSettings(instance="nord", startup_grace=0),
                )
                ctx = ProbeContext(session)
                for _ in range(20):  # warm up
                    assert (await probe(check, ctx)).success
                walls: list[float] = []
                cpu0 = time.process_time()
                for _ in range(runs):
                    t0 = time.perf_counter()
                    result = await probe(check, ctx)
                    walls.append(time.perf_counter() - t0)
                    assert result.success, result.error
                cpu = (time.process_time() - cpu0) / runs
                replicas = daemon.replicas
                assert replicas is not None
                t0 = time.perf_counter()
                for _ in range(10_000):
                    replicas.is_sender()
                sender = (time.perf_counter() - t0) / 10_000
            finally:
                await daemon.stop()
    server.close()
    return {
        "round_cpu_ms": cpu * 1e3,
        "round_wall_p50_ms": statistics.median(walls) * 1e3,
        "share_of_core_at_10s": cpu / INTERVAL,
        "is_sender_us": sender * 1e6,
    }


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.peer_watch", description=__doc__)
    parser.add_argument("--runs", type=int, default=500, help="probe runs measured")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.runs))
    print(f"peer-watch round (probe + both answers), CPU: {figures['round_cpu_ms']:.2f} ms")
    print(f"peer-watch round, wall p50: {figures['round_wall_p50_ms']:.2f} ms")
    print(f"share of a core, one peer every {INTERVAL:g} s: {figures['share_of_core_at_10s']:.5%}")
    print(f"sender rule (is_sender), per call: {figures['is_sender_us']:.2f} us")


if __name__ == "__main__":
    main()
