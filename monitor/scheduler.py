"""Scheduler: one loop per check on a monotonic grid, with limits, timeouts and error capture."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vigie.core.results import ProbeResult, bound_text, seconds
from vigie.monitor.ondemand import OnDemandGate
from vigie.monitor.store import ResultStore
from vigie.probes.base import Check, ProbeContext, ProbeLog, ProbeRegistry

Clock = Callable[[], float]

# Fine below 25 ms, so a loop lagging 2 ms is told apart from one lagging 20 ms.
LAG_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


# A failed run that lasted this share of its timeout counts as a timeout (a probe's own deadline).
SLOW_FAILURE_SHARE = 0.9

SLOT = 0.1
"""Checks start on a grid of this many seconds: the checks due in one slot start together.

Each wake-up of an idle event loop costs far more CPU than the Python it runs (about 0.15 ms
of a core per wake-up on the bench's VM, more than half of a plain GET's CPU), so the checks'
start offsets are rounded down to a multiple of SLOT: with the same interval, the checks
whose offsets fall in one slot share their due times and their wake-up. 100 ms keeps the
spread (3,000 checks every 30 s: 10 a slot; 50,000 every 60 s: 83) and adds no lag (lag is
measured from the slot, the planned start).
"""


def slow_lane_slots(per_host: int) -> int:
    """Return how many of a host's slots checks that timed out last time may hold at once."""
    return max(1, per_host // 4)


class HostSlots:
    """One host's slots: `limit` probes at once, of which at most a quarter in the slow lane.

    The slow lane holds checks whose last run timed out: however many of a host's checks hang,
    they hold at most slow_lane_slots(limit) of its slots, so its healthy checks keep the rest.
    """

    __slots__ = ("host", "slow")

    def __init__(self, limit: int) -> None:
        self.host = asyncio.Semaphore(limit)
        self.slow = asyncio.Semaphore(slow_lane_slots(limit))


class Wake:
    """A check's wake-up: set by a trigger, awaited with a deadline by the check's loop.

    One future and one timer a tick, settled by whichever comes first; asyncio.timeout
    around Event.wait cost a cancellation and two exceptions on every untriggered tick.
    """

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[bool] | None = None

    def set(self) -> None:
        """Wake the loop now (or at its next wait, if it is not waiting)."""
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def is_set(self) -> bool:
        """Return whether a wake-up is pending."""
        return self._flag

    def clear(self) -> None:
        """Forget a pending wake-up."""
        self._flag = False

    async def wait(self, delay: float) -> bool:
        """Wait up to delay seconds; return True if woken, False when the time is up."""
        if self._flag:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(delay, _time_up, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _time_up(waiter: asyncio.Future[bool]) -> None:
    """Settle a wait whose time is up (unless a trigger or a cancellation came first)."""
    if not waiter.done():
        waiter.set_result(False)


def start_offset(check_id: str, interval: float) -> float:
    """Return a stable offset in [0, interval) from a hash of the id, to spread the load."""
    digest = hashlib.blake2b(check_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * interval


class SchedulerMetrics:
    """The scheduler's own metrics, registered in the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "vigie_scheduler_lag_seconds",
            "Delay between a check's due time and the start of its probe.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge("vigie_probes_in_flight", "Probes running now.", registry=registry)
        self.duration = Histogram(
            "vigie_probe_duration_seconds",
            "Duration of probe runs by kind.",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.checks = Gauge(
            "vigie_checks", "Checks in the running plan by kind.", ["kind"], registry=registry
        )
        self.slow_lane = Gauge(
            "vigie_checks_slow_lane",
            "Checks whose last run timed out: they share a small part of their host's slots.",
            registry=registry,
        )
        self.probes = Counter(
            "vigie_probes_total",
            "Probe runs (scheduled and on demand) by kind and outcome: "
            "success, failure, timeout, error (the probe raised).",
            ["kind", "outcome"],
            registry=registry,
        )

    def for_kind(self, kind: str) -> KindMetrics:
        """Return the label children of one probe kind (created once, then cached by the caller)."""
        return KindMetrics(self, kind)


class KindMetrics:
    """One kind's metric children, so a probe run costs one dict lookup and no label building."""

    __slots__ = ("duration", "error", "failure", "success", "timeout")

    def __init__(self, metrics: SchedulerMetrics, kind: str) -> None:
        self.duration = metrics.duration.labels(kind=kind)
        self.success = metrics.probes.labels(kind=kind, outcome="success")
        self.failure = metrics.probes.labels(kind=kind, outcome="failure")
        self.timeout = metrics.probes.labels(kind=kind, outcome="timeout")
        self.error = metrics.probes.labels(kind=kind, outcome="error")


class Scheduler:
    """Runs every check of the plan on its own grid; reloads by diffing plans."""

    def __init__(
        self,
        registry: ProbeRegistry,
        store: ResultStore,
        session: aiohttp.ClientSession,
        metrics: SchedulerMetrics,
        *,
        max_concurrency: int = 1024,
        per_host_concurrency: int = 8,
        clock: Clock = time.monotonic,
        logger: Any = None,
        ondemand: OnDemandGate | None = None,
    ) -> None:
        self._registry = registry
        self._ondemand = ondemand
        self._deferred: dict[str, asyncio.TimerHandle] = {}  # on-demand runs waiting
        self._store = store
        self._session = session
        self._metrics = metrics
        self._kinds: dict[str, KindMetrics] = {}  # duration and outcome children per kind
        self._clock = clock
        self._base = clock()
        self._global = asyncio.Semaphore(max_concurrency)
        self._per_host_limit = per_host_concurrency
        self._hosts: dict[str, HostSlots] = {}
        self._slow: set[str] = set()  # ids of checks whose last run timed out: the slow lane
        self._plan: dict[str, Check] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._pending_first: set[str] = set()
        self.first_round_done = asyncio.Event()
        self._log = logger if logger is not None else structlog.get_logger()
        self._stopping = False
        self._probing: set[str] = set()
        self._wake: dict[str, Wake] = {}
        # Per check id: (target, logger bound to check and target), bound once, not every run.
        self._loggers: dict[str, tuple[str, Any]] = {}

    @property
    def plan(self) -> Mapping[str, Check]:
        """The checks running now, by id."""
        return self._plan

    def apply(self, plan: Mapping[str, Check]) -> tuple[list[str], list[str], list[str]]:
        """Swap in a new plan; return (added, removed, changed) ids. Unchanged checks go on."""
        added = [cid for cid in plan if cid not in self._plan]
        removed = [cid for cid in self._plan if cid not in plan]
        changed = [cid for cid in plan if cid in self._plan and plan[cid] != self._plan[cid]]
        for cid in removed + changed:
            task = self._tasks.pop(cid, None)
            if task is not None:
                task.cancel()
            self._pending_first.discard(cid)
            self._slow.discard(cid)
        self._metrics.slow_lane.set(len(self._slow))
        for cid in removed:
            deferred = self._deferred.pop(cid, None)
            if deferred is not None:
                deferred.cancel()
            self._store.remove(cid)
            self._wake.pop(cid, None)
            self._loggers.pop(cid, None)
        first = not self._plan and not self._tasks
        self._plan = dict(plan)
        for cid in added + changed:
            self._wake[cid] = Wake()
            self._tasks[cid] = asyncio.create_task(self._loop(self._plan[cid]), name=f"check:{cid}")
        if first:
            self._pending_first = set(self._plan)
            if not self._pending_first:
                self.first_round_done.set()
        kinds: dict[str, int] = {}
        for check in self._plan.values():
            kinds[check.kind] = kinds.get(check.kind, 0) + 1
        self._metrics.checks.clear()
        for kind, count in kinds.items():
            self._metrics.checks.labels(kind=kind).set(count)
            if kind not in self._kinds:  # every outcome exposed at 0 before the first run
                self._kinds[kind] = self._metrics.for_kind(kind)
        return added, removed, changed

    def phase(self, check: Check) -> float:
        """Return the check's first grid point: its offset, rounded down to a slot."""
        offset = start_offset(check.id, check.interval)
        return self._base + offset // SLOT * SLOT

    def next_due(self, check: Check, now: float, phase: float | None = None) -> float:
        """Return the first due time of the check's grid at or after now (phase: if known)."""
        if phase is None:
            phase = self.phase(check)
        k = max(0, math.ceil((now - phase) / check.interval))
        return phase + k * check.interval

    async def _loop(self, check: Check) -> None:
        """Run one check forever on its grid, skipping ticks missed while a run was late."""
        wake = self._wake[check.id]
        phase = self.phase(check)
        due = self.next_due(check, self._clock(), phase)
        while True:
            delay = due - self._clock()
            start_at = due
            if wake.is_set():
                start_at = self._clock()
            elif delay > 0 and await wake.wait(delay):
                start_at = self._clock()  # triggered: run now, then back on the grid
            wake.clear()
            self._probing.add(check.id)
            try:
                result = await self.run(check, start_at)
            finally:
                self._probing.discard(check.id)
            self._record(check, result)
            if self._stopping:
                return
            if start_at == due:
                due = max(due + check.interval, self.next_due(check, self._clock(), phase))

    def trigger(self, check_id: str) -> bool:
        """Run a check now (e.g. after a trap) without moving its grid; False if unknown."""
        wake = self._wake.get(check_id)
        if wake is None or check_id not in self._plan:
            return False
        wake.set()
        return True

    def run_now(self, check_id: str, reason: str) -> bool:
        """Run a check now for the health engine, if the on-demand gate grants it (bounded)."""
        check = self._plan.get(check_id)
        if check is None or check_id not in self._wake:
            return False
        if self._ondemand is not None and not self._ondemand.allow(check_id, check.timeout, reason):
            return False
        return self.trigger(check_id)

    def run_soon(self, check_id: str, reason: str) -> bool:
        """Run a check on demand now, or once the gate allows it; False if the check is unknown.

        For traps: a device sending two traps within a timeout gets its second re-poll late,
        never lost; one deferred run per check, so a trap storm costs one timer per device.
        """
        if check_id not in self._plan or check_id not in self._wake:
            return False
        if self._ondemand is None or self._ondemand.rate <= 0:
            return self.trigger(check_id)  # on-demand off: the trap port's own limits bound it
        if self.run_now(check_id, reason):
            return True
        if check_id not in self._deferred:
            delay = self._ondemand.retry_after(check_id, self._plan[check_id].timeout)
            self._deferred[check_id] = asyncio.get_running_loop().call_later(
                delay, self._run_deferred, check_id, reason
            )
        return True

    def _run_deferred(self, check_id: str, reason: str) -> None:
        """A deferred on-demand run's turn: ask again (deferred again if still refused)."""
        self._deferred.pop(check_id, None)
        if not self._stopping:
            self.run_soon(check_id, reason)

    def _record(self, check: Check, result: ProbeResult) -> None:
        previous = self._store.latest(check.id)
        self._store.update(check.id, result)
        if previous is None or previous.success != result.success:
            self._log.info(
                "check_up" if result.success else "check_down",
                check=check.id,
                kind=check.kind,
                target=check.target,
                error=result.error,
            )
        if check.id in self._pending_first:
            self._pending_first.discard(check.id)
            if not self._pending_first:
                self.first_round_done.set()

    def _host_limit(self, host: str) -> HostSlots:
        """Return the host's slots, created on first use."""
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = HostSlots(self._per_host_limit)
        return slots

    async def _acquire(self, check: Check) -> tuple[asyncio.Semaphore, ...]:
        """Take a slot of the check's host (slow lane if it timed out last time), then a global
        one; return the semaphores held, for _release.

        The host slot is taken before the global one, so checks queued on a busy host do not
        hold global slots while they wait. Plain acquires rather than a context manager
        generator: this runs for every probe.
        """
        slots = self._host_limit(check.host)
        held: tuple[asyncio.Semaphore, ...] = (
            (slots.slow, slots.host, self._global)
            if check.id in self._slow
            else (slots.host, self._global)
        )
        taken = 0
        try:
            for semaphore in held:
                await semaphore.acquire()
                taken += 1
        except BaseException:
            for semaphore in held[:taken]:
                semaphore.release()
            raise
        return held

    @staticmethod
    def _release(held: tuple[asyncio.Semaphore, ...]) -> None:
        """Give back the slots _acquire took, last taken first."""
        for semaphore in reversed(held):
            semaphore.release()

    def slow_lane(self) -> frozenset[str]:
        """Return the ids of the checks in the slow lane now (their last run timed out)."""
        return frozenset(self._slow)

    def _sort_lane(self, check: Check, timed_out: bool, result: ProbeResult, took: float) -> None:
        """Move a planned check to the slow lane after a timeout, back after anything else."""
        if self._plan.get(check.id) is not check:
            return  # ad hoc runs (/probe, vigie probe) and replaced checks leave the lanes alone
        slow = timed_out or (not result.success and took >= SLOW_FAILURE_SHARE * check.timeout)
        if slow != (check.id in self._slow):
            if slow:
                self._slow.add(check.id)
            else:
                self._slow.discard(check.id)
            self._metrics.slow_lane.set(len(self._slow))

    async def run(
        self, check: Check, due: float | None = None, *, keep_logs: bool = False
    ) -> ProbeResult:
        """Run a check once under the limits; timeouts and exceptions become failed results.

        keep_logs puts the probe's debug lines in the result (/probe?debug=true, `vigie probe`).
        """
        probe = self._registry[check.kind]
        timed_out = raised = False
        held = await self._acquire(check)
        try:
            start = self._clock()
            if due is not None:
                self._metrics.lag.observe(max(0.0, start - due))
            log = ProbeLog(self._logger(check, keep_logs), keep=keep_logs)
            ctx = ProbeContext(session=self._session, log=log)
            self._metrics.in_flight.inc()
            try:
                async with asyncio.timeout(check.timeout):
                    result = await probe(check, ctx)
            except TimeoutError:
                timed_out = True
                result = ProbeResult(False, error=f"timeout after {check.timeout:g}s")
            except Exception as exc:  # a probe must never kill the scheduler
                raised = True
                reason = bound_text(f"{type(exc).__name__}: {exc}")
                result = ProbeResult(False, error=reason)
            finally:
                self._metrics.in_flight.dec()
            duration = seconds(self._clock() - start)
        finally:
            self._release(held)
        self._sort_lane(check, timed_out, result, duration)
        per_kind = self._kinds.get(check.kind)
        if per_kind is None:
            per_kind = self._kinds[check.kind] = self._metrics.for_kind(check.kind)
        per_kind.duration.observe(duration)
        if timed_out:
            per_kind.timeout.inc()
        elif raised:
            per_kind.error.inc()
        elif result.success:
            per_kind.success.inc()
        else:
            per_kind.failure.inc()
        if result.error is not None:
            log("probe_failed" if not result.success else "probe_partial", reason=result.error)
        return ProbeResult(
            success=result.success,
            duration=duration,
            samples=result.samples,
            error=result.error,
            phases=result.phases,
            logs=(*result.logs, *log.lines) if log.lines else result.logs,
            timestamp=time.time(),
        )

    def _logger(self, check: Check, keep_logs: bool) -> Any:
        """Return the scheduler's logger bound to the check's id and target.

        A probe's lines are debug lines: when nobody would see them (debug off, not a debug
        run) the unbound logger is enough, and no logger is bound and kept per check.
        """
        is_enabled_for = getattr(self._log, "is_enabled_for", None)
        if not keep_logs and is_enabled_for is not None and not is_enabled_for(logging.DEBUG):
            return self._log
        cached = self._loggers.get(check.id)
        if cached is not None and cached[0] == check.target:
            return cached[1]
        bound = self._log.bind(check=check.id, target=check.target)
        if len(self._loggers) > 2 * len(self._plan) + 1024:  # ad hoc ids (/probe) piled up
            self._loggers.clear()
        self._loggers[check.id] = (check.target, bound)
        return bound

    def probing(self) -> int:
        """Return the number of checks whose probe is running now."""
        return len(self._probing)

    async def stop(self, drain_timeout: float) -> None:
        """Stop scheduling; let probes in flight finish for up to drain_timeout, then cancel."""
        self._stopping = True
        for deferred in self._deferred.values():
            deferred.cancel()
        self._deferred.clear()
        tasks = dict(self._tasks)
        self._tasks.clear()
        for cid, task in tasks.items():
            if cid not in self._probing:
                task.cancel()
        running = [t for cid, t in tasks.items() if cid in self._probing]
        if running:
            _, pending = await asyncio.wait(running, timeout=drain_timeout)
            if pending:
                self._log.warning("drain_timeout", cancelled=len(pending))
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
