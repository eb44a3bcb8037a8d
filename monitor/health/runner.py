"""Runs the health engine in the daemon: feeds results, re-evaluates, publishes, persists."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from vigie.core.results import ProbeResult
from vigie.monitor.health.engine import HealthEngine, Snapshot
from vigie.monitor.health.maintenance import MaintenanceBook
from vigie.monitor.health.persist import HealthStateStore

Publisher = Callable[[Snapshot], None]

EVALUATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class HealthRunnerMetrics:
    """How often the health model is evaluated and what each pass costs, on the registry given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "vigie_health_evaluations_total",
            "Health evaluation passes (evaluate, persist, publish), failed ones included.",
            registry=registry,
        )
        self.seconds = Histogram(
            "vigie_health_evaluation_seconds",
            "Duration of a health evaluation pass (evaluate, persist, publish).",
            buckets=EVALUATION_BUCKETS,
            registry=registry,
        )


class HealthRunner:
    """Re-evaluates after results (at most every min_period) and every tick for timers."""

    def __init__(
        self,
        engine: HealthEngine,
        ready: asyncio.Event,
        *,
        publish: Publisher | None = None,
        persist: HealthStateStore | None = None,
        maintenance: MaintenanceBook | None = None,
        min_period: float = 0.2,
        tick: float = 1.0,
        logger: Any = None,
        metrics: HealthRunnerMetrics | None = None,
    ) -> None:
        self.engine = engine
        self._metrics = metrics if metrics is not None else HealthRunnerMetrics(CollectorRegistry())
        self._log = logger if logger is not None else structlog.get_logger()
        self._ready = ready
        self._publish = publish
        self._persist = persist
        self._min_period = min_period
        self._tick = tick
        self.maintenance = maintenance or MaintenanceBook()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.evaluations = 0
        self._saved: tuple[HealthEngine, int] | None = None  # engine and revision persisted
        if persist is not None:
            engine.restore(*persist.load())

    def on_result(self, check_id: str, result: ProbeResult | None) -> None:
        """Feed a result to the engine (ResultStore listener); evaluate soon if it changed
        something (most results change nothing: the next tick is soon enough)."""
        if self.engine.observe(check_id, result):
            self._dirty.set()

    def wake(self) -> None:
        """Ask for an evaluation now (after a reload, a maintenance change, a trap)."""
        self._dirty.set()

    def evaluate(self) -> Snapshot:
        """Evaluate now, persist, publish; return the snapshot. Each pass is counted and timed."""
        started = time.perf_counter()
        try:
            self.engine.maintenance = self.maintenance.active(self.engine.clock())
            snapshot = self.engine.evaluate()
            self.evaluations += 1
            saved = self._saved
            if self._persist is not None and (
                saved is None or saved[0] is not self.engine or saved[1] != self.engine.revision
            ):  # an unchanged snapshot has nothing new to save
                self._persist.save(*self.engine.durable_state())
                self._saved = (self.engine, self.engine.revision)
            if self._publish is not None:
                self._publish(snapshot)
            return snapshot
        finally:
            self._metrics.evaluations.inc()
            self._metrics.seconds.observe(time.perf_counter() - started)

    async def run(self) -> None:
        """Wait for the first round of checks (no verdict on no data), then evaluate on change."""
        await self._ready.wait()
        while True:
            self._dirty.clear()
            try:
                self.evaluate()
            except Exception as exc:  # one bad evaluation must not end detection for good
                self._log.exception("health_evaluation_failed", error=repr(exc)[:500])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick):
                    await self._dirty.wait()
            await asyncio.sleep(self._min_period)  # coalesce a burst of results

    def start(self) -> None:
        """Start the evaluation loop as a task."""
        self._task = asyncio.create_task(self.run(), name="health")

    async def stop(self) -> None:
        """Stop the loop and close the state store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._persist is not None:
            self._persist.close()
