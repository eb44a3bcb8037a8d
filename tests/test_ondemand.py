"""The on-demand gate: one run per check per timeout, a global budget, both counted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.waiting import wait_for
from vigie.monitor.ondemand import OnDemandGate, OnDemandMetrics
from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
from vigie.monitor.store import ResultStore
from vigie.probes import default_registry
from vigie.probes.base import Check
from vigie.probes.http import HttpProbe, make_session


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log:
    """Keeps warning lines (the gate's only level) to assert on them."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        """Keep a line."""
        self.lines.append((event, fields))


def value(registry: CollectorRegistry, name: str, reason: str) -> float:
    """Return a counter's value for a reason (0 when never counted)."""
    return registry.get_sample_value(name, {"reason": reason}) or 0.0


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[float]]]:
    """A real HTTP server on 127.0.0.1 answering 200; yields (port, monotonic time of each hit)."""
    hits: list[float] = []

    async def handle(_: web.Request) -> web.Response:
        hits.append(time.monotonic())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1], hits
    finally:
        await runner.cleanup()


def test_one_run_per_check_per_timeout() -> None:
    """A second ask within the check's timeout is refused as 'recent'; after it, granted."""
    registry, clock = CollectorRegistry(), Clock()
    gate = OnDemandGate(OnDemandMetrics(registry), rate=50, clock=clock, logger=Log())
    assert gate.allow("chk-a", 2.0, "confirm")
    assert not gate.allow("chk-a", 2.0, "confirm")
    assert gate.allow("chk-b", 2.0, "power")  # another check is not held back
    clock.now += 2.0
    assert gate.allow("chk-a", 2.0, "recheck")
    assert value(registry, "vigie_ondemand_runs_total", "confirm") == 1
    assert value(registry, "vigie_ondemand_runs_total", "recheck") == 1
    assert value(registry, "vigie_ondemand_runs_total", "power") == 1
    assert value(registry, "vigie_ondemand_refused_total", "recent") == 1


def test_budget_spent_refuses_logs_once_and_refills() -> None:
    """Past `rate` runs in a second, asks are refused ('budget'), logged once, then granted
    again as the budget refills."""
    registry, clock, log = CollectorRegistry(), Clock(), Log()
    gate = OnDemandGate(OnDemandMetrics(registry), rate=5, clock=clock, logger=log)
    granted = [gate.allow(f"chk-{i}", 1.0, "confirm") for i in range(8)]
    assert granted == [True] * 5 + [False] * 3
    assert value(registry, "vigie_ondemand_refused_total", "budget") == 3
    assert [event for event, _ in log.lines] == ["ondemand_budget_spent"]
    clock.now += 0.2  # one run's worth of budget back
    assert gate.allow("chk-5", 1.0, "confirm")
    assert not gate.allow("chk-6", 1.0, "confirm")
    assert len(log.lines) == 2, "a new episode of a spent budget is logged again"


async def test_scheduler_run_now_runs_once_per_timeout_through_the_gate(
    server: tuple[int, list[float]],
) -> None:
    """Scheduler.run_now runs a check at once against a real server (its grid is an hour
    away), refuses a second ask within its timeout, and refuses unknown checks."""
    port, hits = server
    registry = CollectorRegistry()
    store = ResultStore()
    async with make_session() as session:
        sched = Scheduler(
            default_registry(),
            store,
            session,
            SchedulerMetrics(registry),
            ondemand=OnDemandGate(OnDemandMetrics(registry), rate=50, logger=Log()),
        )
        check = Check(
            "web",
            "http",
            f"http://127.0.0.1:{port}/",
            3600.0,
            5.0,
            HttpProbe.Settings(),
            host="127.0.0.1",
        )
        sched.apply({"web": check})
        try:
            assert sched.run_now("web", "confirm")
            await wait_for(lambda: store.latest("web") is not None, "the on-demand run")
            assert not sched.run_now("web", "confirm"), "a second run within the timeout"
            assert not sched.run_now("nope", "confirm")
            assert len(hits) == 1
            assert value(registry, "vigie_ondemand_runs_total", "confirm") == 1
            assert value(registry, "vigie_ondemand_refused_total", "recent") == 1
        finally:
            await sched.stop(1.0)


async def test_run_soon_defers_a_refused_ask_instead_of_dropping_it(
    server: tuple[int, list[float]],
) -> None:
    """A trap's re-poll asked again within the check's timeout runs once the timeout has
    passed (late, never lost); three asks in a row make two runs, not three."""
    port, hits = server
    registry = CollectorRegistry()
    store = ResultStore()
    results: list[float] = []
    store.subscribe(lambda _cid, result: results.append(result.timestamp) if result else None)
    async with make_session() as session:
        sched = Scheduler(
            default_registry(),
            store,
            session,
            SchedulerMetrics(registry),
            ondemand=OnDemandGate(OnDemandMetrics(registry), rate=50, logger=Log()),
        )
        check = Check(
            "ups",
            "http",
            f"http://127.0.0.1:{port}/",
            3600.0,
            0.5,
            HttpProbe.Settings(),
            host="127.0.0.1",
        )
        sched.apply({"ups": check})
        try:
            asked = time.monotonic()
            assert sched.run_soon("ups", "trap")
            assert sched.run_soon("ups", "trap"), "deferred, not refused"
            assert sched.run_soon("ups", "trap"), "coalesced with the deferred one"
            assert not sched.run_soon("nope", "trap")
            await wait_for(lambda: len(results) >= 2, "the deferred run's result")
            assert len(hits) == 2
            assert hits[1] - asked >= 0.45, "the second run waits for the check's timeout"
            assert value(registry, "vigie_ondemand_runs_total", "trap") == 2
            assert value(registry, "vigie_ondemand_refused_total", "recent") == 2
        finally:
            await sched.stop(1.0)
