"""Workers on NATS end to end: a real nats-server, `vigie worker` processes, an in-process
daemon with a `bus:` section, a webhook receiver for the pages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client

from tests.alerting.conftest import Receiver
from tests.bus.conftest import NatsServer, Seen, Workers, scrape, value, write_config
from tests.waiting import wait_for
from vigie.core.results import ProbeResult
from vigie.monitor.app import Daemon
from vigie.monitor.bus.codec import encode
from vigie.monitor.bus.consumer import NO_WORKER_NAME, SELF_INCIDENT_NAME, UNREACHABLE_NAME
from vigie.monitor.config import load_config
from vigie.monitor.health.states import State
from vigie.probes.base import ProbeRegistry
from vigie.probes.http import HttpProbe, make_session


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[tuple[Daemon, aiohttp.ClientSession]]:
    """A daemon on config, stopped at the end; with a session to read its web server."""
    registry = ProbeRegistry([HttpProbe()])
    async with make_session() as session:
        daemon = Daemon(load_config(config, registry, env={}), registry, session)
        await daemon.start()
        try:
            yield daemon, session
        finally:
            await daemon.stop()


def firing(receiver: Receiver) -> list[dict[str, Any]]:
    """Every firing alert the webhook got, in order."""
    return [
        alert
        for body in receiver.on("/hook")
        for alert in body["alerts"]
        if alert["status"] == "firing"
    ]


async def workers_live(session: aiohttp.ClientSession, daemon: Daemon, count: int) -> bool:
    """The daemon's /metrics shows count live workers sharing every check."""
    page = await scrape(session, daemon.listen_port)
    shares = [s.value for s in page.get("vigie_bus_worker_checks", [])]
    return value(page, "vigie_bus_workers") == count and sum(shares) == len(daemon.loaded.plan)


async def test_two_workers_split_the_checks_and_a_killed_ones_are_taken_over_with_one_page(
    *,
    tmp_path: Path,
    nats_url: str,
    targets: str,
    receiver: Receiver,
    workers: Workers,
    bus_watch: tuple[Seen, Client],
) -> None:
    """Each check is run by exactly one of two workers; SIGKILL one, and the other runs its
    checks within two intervals; the loss pages once (VigieWorkerLost), no component pages."""
    interval = 3.0
    config = write_config(
        tmp_path, base=targets, nats_url=nats_url, hook=f"{receiver.url}/hook", interval="3s"
    )
    seen, _ = bus_watch
    loop = asyncio.get_running_loop()
    async with running(config) as (daemon, session):
        workers.start(config, "w1")
        workers.start(config, "w2")
        await wait_for(
            lambda: workers_live(session, daemon, 2), "two workers sharing the checks", 30
        )
        plan = set(daemon.loaded.plan)
        settled = loop.time() + 1.0  # runs begun under the old share are over

        def each_twice() -> bool:
            runs = [cid for _, cid, _ in seen.since(settled)]
            return all(runs.count(cid) >= 2 for cid in plan)

        await wait_for(each_twice, "every check run twice since the split", 4 * interval)
        by_check: dict[str, set[str]] = {}
        for _, cid, worker in seen.since(settled):
            by_check.setdefault(cid, set()).add(worker)
        assert all(len(ran) == 1 for ran in by_check.values()), by_check
        held = {cid for cid, ran in by_check.items() if ran == {"w1"}}
        assert held and held != plan, by_check  # both workers hold a share
        async with session.get(f"http://127.0.0.1:{daemon.listen_port}/-/workers") as response:
            status = await response.json()
        assert status["connected"] and status["lost"] == {}
        assert {w["name"]: w["checks"] for w in status["workers"]} == {
            "w1": len(held),
            "w2": len(plan) - len(held),
        }
        assert all(w["healthy"] and w["results"] > 0 for w in status["workers"]), status

        killed = loop.time()
        workers.kill("w1")

        def taken_over() -> bool:
            return held <= {cid for _, cid, w in seen.since(killed) if w == "w2"}

        await wait_for(taken_over, "w2 running w1's checks", 6 * interval)
        took = loop.time() - killed
        assert took <= 2 * interval, f"w1's checks came back after {took:.1f}s"

        await wait_for(
            lambda: receiver.notified("/hook", SELF_INCIDENT_NAME, "resolved") >= 1,
            "the lost-worker page resolved once w2 reports w1's checks",
        )
        page = await scrape(session, daemon.listen_port)
        assert value(page, "vigie_bus_workers") == 1
        assert value(page, "vigie_bus_worker_checks", worker="w2") == len(plan)
        assert (value(page, "vigie_bus_results_total") or 0) > 2 * len(plan)
        success = {cid: value(page, "probe_success", check=cid) for cid in plan}
        assert set(success.values()) == {1}, success
    pages = firing(receiver)
    assert [a["labels"]["alertname"] for a in pages] == [SELF_INCIDENT_NAME], pages
    assert pages[0]["labels"]["worker"] == "w1"
    assert f"{len(held)} checks unassigned" in pages[0]["annotations"]["summary"]


async def test_the_last_worker_lost_its_checks_turn_unknown_and_page_once(
    tmp_path: Path, nats_url: str, targets: str, receiver: Receiver, workers: Workers
) -> None:
    """With no survivor, the lost worker's results leave /metrics at once, its components turn
    UNKNOWN past the stale bound (never paged one by one), and the loss pages once."""
    config = write_config(
        tmp_path,
        base=targets,
        nats_url=nats_url,
        hook=f"{receiver.url}/hook",
        interval="1s",
        stale_intervals=2,
    )
    async with running(config) as (daemon, session):
        workers.start(config, "w1")
        plan = sorted(daemon.loaded.plan)
        components = [f"app-{i:02d}" for i in range(len(plan))]

        async def all_ok() -> bool:
            page = await scrape(session, daemon.listen_port)
            return all(
                value(page, "vigie_component_state", component=c) == State.OK for c in components
            )

        await wait_for(all_ok, "every component OK from w1's results", 30)
        workers.kill("w1")
        await wait_for(
            lambda: receiver.notified("/hook", SELF_INCIDENT_NAME, "firing") >= 1,
            "the lost-worker page",
        )
        page = await scrape(session, daemon.listen_port)
        assert all(value(page, "probe_success", check=cid) is None for cid in plan)

        async def all_unknown() -> bool:
            page = await scrape(session, daemon.listen_port)
            return all(
                value(page, "vigie_component_state", component=c) == State.UNKNOWN
                for c in components
            )

        await wait_for(all_unknown, "every component UNKNOWN past the stale bound", 10)
        page = await scrape(session, daemon.listen_port)
        assert value(page, "vigie_bus_unassigned_checks") == len(plan)
        assert all(s.value == 0 for s in page.get("vigie_incident_active", []))
    pages = firing(receiver)
    assert [a["labels"]["alertname"] for a in pages] == [SELF_INCIDENT_NAME], pages
    assert pages[0]["annotations"]["summary"].startswith(
        f"Vigie worker w1 lost, {len(plan)} checks unassigned"
    )


def series(page: dict[str, list[Any]]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The per-check series of a scrape (name and labels, not values or timings)."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for samples in page.values()
        for s in samples
        if "check" in s.labels and not s.name.startswith("probe_duration")
    }


async def test_results_from_the_bus_give_the_same_metrics_as_one_process(
    tmp_path: Path, nats_url: str, targets: str, receiver: Receiver, workers: Workers
) -> None:
    """The same checks run by a worker or by the daemon itself expose the same series."""
    hook = f"{receiver.url}/hook"
    bus = write_config(tmp_path, base=targets, nats_url=nats_url, hook=hook, interval="1s")
    single = write_config(tmp_path / "single", base=targets, nats_url=None, hook=hook)
    async with running(bus) as (via_bus, session), running(single) as (alone, _):
        workers.start(bus, "w1")
        plan = sorted(alone.loaded.plan)

        async def both_complete() -> bool:
            pages = [await scrape(session, d.listen_port) for d in (via_bus, alone)]
            return all(value(p, "probe_success", check=cid) == 1 for p in pages for cid in plan)

        await wait_for(both_complete, "every check's result in both daemons", 30)
        async with session.get(f"http://127.0.0.1:{alone.listen_port}/-/workers") as response:
            assert response.status == 404  # no bus: it runs its checks itself
        got = series(await scrape(session, via_bus.listen_port))
        want = series(await scrape(session, alone.listen_port))
        assert got == want and len(want) >= 2 * len(plan)


async def test_garbage_on_the_results_subject_is_counted_and_dropped(
    tmp_path: Path, nats_url: str, targets: str, receiver: Receiver, bus_watch: tuple[Seen, Any]
) -> None:
    """Hostile messages never crash the consumer: counted by reason; a good one still lands."""
    _, client = bus_watch
    config = write_config(tmp_path, base=targets, nats_url=nats_url, hook=f"{receiver.url}/hook")
    async with running(config) as (daemon, session):
        bus = daemon.bus
        assert bus is not None
        await wait_for(bus.ready.is_set, "the daemon subscribed to the bus")
        cid = sorted(daemon.loaded.plan)[0]
        good = encode(cid, "forged", ProbeResult(True, timestamp=time.time()), 1 << 20)
        hostile = [
            b"\x00\xff" * 100,
            b"[" * 50_000 + b"]" * 50_000,  # deep nesting within the NATS payload limit
            b"A" * 300_000,  # past max_result_bytes
            b'{"v": 1, "id": "nope", "w": "x", "ok": true, "d": 0, "t": 1}',
            good.replace(b'"v":1', b'"v":99'),
        ]
        for data in hostile:
            await client.publish("vigie.results.x", data)
        await client.publish(f"vigie.results.{cid}", good)
        await client.flush()

        async def counted() -> bool:
            page = await scrape(session, daemon.listen_port)
            errors = {s.labels["reason"]: s.value for s in page["vigie_bus_decode_errors"]}
            return (
                errors["not_json"] == 2
                and errors["too_large"] == 1
                and errors["unknown_check"] == 1
                and errors["version"] == 1
                and value(page, "probe_success", check=cid) == 1
            )

        await wait_for(counted, "each hostile message counted by reason, the good one stored")


async def test_nats_down_pages_once_not_once_per_worker_and_recovers(
    tmp_path: Path, nats_server: NatsServer, targets: str, receiver: Receiver, workers: Workers
) -> None:
    """NATS stopping hides every worker at once: one VigieBusUnreachable page, no worker lost
    page, no component page; the checks age to UNKNOWN. NATS back: all comes back, resolved."""
    config = write_config(
        tmp_path,
        base=targets,
        nats_url=nats_server.url,
        hook=f"{receiver.url}/hook",
        interval="1s",
        stale_intervals=2,
    )
    async with running(config) as (daemon, session):
        workers.start(config, "w1")
        workers.start(config, "w2")
        await wait_for(lambda: workers_live(session, daemon, 2), "two workers live", 30)
        nats_server.stop()
        await wait_for(
            lambda: receiver.notified("/hook", UNREACHABLE_NAME, "firing") >= 1,
            "the NATS outage page",
        )

        async def all_unknown() -> bool:
            page = await scrape(session, daemon.listen_port)
            states = page.get("vigie_component_state", [])
            return bool(states) and all(s.value == State.UNKNOWN for s in states)

        await wait_for(all_unknown, "every component UNKNOWN without results", 15)
        assert value(await scrape(session, daemon.listen_port), "vigie_bus_connected") == 0
        nats_server.start()  # back: the workers register again, their results flow again
        await wait_for(lambda: workers_live(session, daemon, 2), "two workers live again", 30)

        async def all_ok() -> bool:
            page = await scrape(session, daemon.listen_port)
            states = page.get("vigie_component_state", [])
            return bool(states) and all(s.value == State.OK for s in states)

        await wait_for(all_ok, "every component OK again", 15)
        await wait_for(
            lambda: receiver.notified("/hook", UNREACHABLE_NAME, "resolved") >= 1,
            "the NATS outage page resolved",
        )
    pages = firing(receiver)
    assert [a["labels"]["alertname"] for a in pages] == [UNREACHABLE_NAME], pages


async def test_every_worker_lost_together_pages_once(
    tmp_path: Path, nats_url: str, targets: str, receiver: Receiver, workers: Workers
) -> None:
    """Both workers killed at once: one VigieNoWorker page naming both, not one per worker."""
    config = write_config(
        tmp_path, base=targets, nats_url=nats_url, hook=f"{receiver.url}/hook", interval="1s"
    )
    async with running(config) as (daemon, session):
        workers.start(config, "w1")
        workers.start(config, "w2")
        await wait_for(lambda: workers_live(session, daemon, 2), "two workers live", 30)
        workers.kill("w1")
        workers.kill("w2")
        await wait_for(
            lambda: receiver.notified("/hook", NO_WORKER_NAME, "firing") >= 1,
            "the no-worker page",
        )
        page = await scrape(session, daemon.listen_port)
        assert value(page, "vigie_bus_workers") == 0
    pages = firing(receiver)
    assert [a["labels"]["alertname"] for a in pages] == [NO_WORKER_NAME], pages
    assert "(lost: w1, w2)" in pages[0]["annotations"]["summary"]
