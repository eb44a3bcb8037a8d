"""`vigie worker`: run this worker's share of the checks and publish each result on NATS.

The share is the rendezvous hash of the check ids over the live workers of the bucket
(vigie.monitor.bus.members); when a worker joins, leaves or is lost, the scheduler's plan is
swapped through Scheduler.apply, the reload path: unchanged checks go on undisturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import nats.errors
import structlog
from nats.aio.client import Client
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry

from vigie.core.results import ProbeResult, bound_text
from vigie.core.yamlpos import ConfigErrors
from vigie.monitor import __version__, heap
from vigie.monitor.bus.codec import encode, subject_token
from vigie.monitor.bus.link import connect_until, members_bucket, watch_members
from vigie.monitor.bus.members import Change, Membership, owner
from vigie.monitor.bus.settings import WORKER_NAME, BusSettings
from vigie.monitor.config import LoadedConfig, load_config, load_config_logged
from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
from vigie.monitor.store import ResultStore
from vigie.probes.base import Check, Closing, ProbeRegistry

QUEUE_SIZE = 10_000
"""Results waiting to be handed to the NATS client; beyond, new ones are dropped and counted."""


class Worker:
    """One worker: a scheduler over its share, a publisher, a heartbeat and a bucket watch."""

    def __init__(
        self,
        loaded: LoadedConfig,
        registry: ProbeRegistry,
        session: aiohttp.ClientSession,
        name: str,
        *,
        logger: Any = None,
    ) -> None:
        if not WORKER_NAME.match(name):
            raise ValueError(f"worker name must be 1-64 letters, digits, _ or -, got {name!r}")
        bus = loaded.config.bus
        if bus is None:
            raise ValueError("vigie worker needs a `bus:` section in the config")
        self.name = name
        self.settings: BusSettings = bus
        self.loaded = loaded.running()  # the plan, not the check models it came from
        self.registry = registry
        self.log = (logger if logger is not None else structlog.get_logger()).bind(worker=name)
        self.own_registry = CollectorRegistry()
        self.store = ResultStore(history=1)
        sched = loaded.config.scheduler
        self.scheduler = Scheduler(
            registry,
            self.store,
            session,
            SchedulerMetrics(self.own_registry),
            max_concurrency=sched.max_concurrency,
            per_host_concurrency=sched.per_host_concurrency,
            logger=self.log,
        )
        self.store.subscribe(self._on_result)
        self.membership = Membership(bus.worker_ttl, me=name)
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_SIZE)
        self.published = 0
        self.dropped = 0
        self._client: Client | None = None
        self._bucket: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = time.time()

    def share(self) -> dict[str, Check]:
        """Return the checks this worker runs now: those the rendezvous hash gives it."""
        live = sorted(self.membership.live())
        return {
            cid: check for cid, check in self.loaded.plan.items() if owner(cid, live) == self.name
        }

    def _apply_share(self) -> None:
        """Swap the scheduler's plan for this worker's share (unchanged checks go on)."""
        added, removed, _ = self.scheduler.apply(self.share())
        if added or removed:
            self.log.info(
                "worker_share_changed",
                workers=len(self.membership.live()),
                checks=len(self.scheduler.plan),
                added=len(added),
                removed=len(removed),
            )

    def _on_change(self, change: Change) -> None:
        """Membership moved: log it and take the new share."""
        for name in change.lost:
            self.log.warning("bus_worker_lost", lost=name)
        self._apply_share()

    def _on_result(self, check_id: str, result: ProbeResult | None) -> None:
        """Queue a result for publication (ResultStore listener); a full queue drops it."""
        if result is None:
            return
        data = encode(check_id, self.name, result, self.settings.max_result_bytes)
        subject = f"{self.settings.results_subject}.{subject_token(check_id)}"
        try:
            self._queue.put_nowait((subject, data))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                self.log.error("bus_publish_queue_full", dropped=self.dropped)

    def _info(self) -> bytes:
        """Return what this worker's key says about it (shown on the status page)."""
        return json.dumps(
            {
                "v": 1,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": __version__,
                "started": round(self._started, 3),
                "checks": len(self.scheduler.plan),
            }
        ).encode()

    async def _publish(self, client: Client) -> None:
        """Hand queued results to the NATS client (which buffers them while reconnecting)."""
        while True:
            subject, data = await self._queue.get()
            try:
                await client.publish(subject, data)
                self.published += 1
            except (nats.errors.Error, OSError) as exc:
                self.dropped += 1
                if self.dropped % 1000 == 1:
                    self.log.error("bus_publish_failed", error=bound_text(repr(exc), 200))
            finally:
                self._queue.task_done()

    async def _heartbeat(self, bucket: KeyValue) -> None:
        """Refresh this worker's key three times a TTL, so one lost refresh loses nothing."""
        while True:
            try:
                await bucket.put(self.name, self._info())
                self.membership.touch_me()
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self.log.warning("bus_heartbeat_failed", error=bound_text(repr(exc), 200))
            await asyncio.sleep(self.settings.worker_ttl / 3)

    async def start(self) -> None:
        """Connect, register, read the live workers, then run this worker's share."""
        client = self._client = await connect_until(
            self.settings, f"vigie-worker-{self.name}", self.log
        )
        bucket = self._bucket = await members_bucket(client, self.settings)
        await bucket.put(self.name, self._info())
        ready = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._publish(client), name="bus-publish"),
            asyncio.create_task(self._heartbeat(bucket), name="bus-heartbeat"),
            asyncio.create_task(
                watch_members(bucket, self.membership, self._on_change, self.log, ready=ready),
                name="bus-watch",
            ),
        ]
        await ready.wait()  # the other workers are known: the first share is the right one
        self._apply_share()
        shortest = min((c.interval for c in self.loaded.plan.values()), default=None)
        if shortest is not None and self.settings.worker_ttl > 0.75 * shortest:
            self.log.warning(
                "bus_worker_ttl_long",
                worker_ttl=self.settings.worker_ttl,
                shortest_interval=shortest,
                effect="a lost worker's checks may miss more than one run",
            )
        self.log.info(
            "worker_started",
            servers=self.settings.public_servers(),
            workers=len(self.membership.live()),
            checks=len(self.scheduler.plan),
        )

    async def reload(self, path: Path, env: Mapping[str, str]) -> list[str]:
        """Reload the config: the same share rule over the new plan. Return errors."""
        try:
            loaded = load_config(path, self.registry, env)
        except ConfigErrors as exc:
            for error in exc.errors:
                self.log.error("config_reload_failed", error=str(error))
            return [str(e) for e in exc.errors]
        if loaded.config.bus != self.loaded.config.bus:
            self.log.warning("config_bus_change_needs_restart")
        self.loaded = loaded.running()
        self._apply_share()
        return []

    async def stop(self) -> None:
        """Leave the bucket (the others take the checks at once), drain probes and results."""
        if self._bucket is not None:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await self._bucket.delete(self.name)
        await self.scheduler.stop(self.loaded.config.scheduler.drain_timeout)
        for probe in self.registry:
            if isinstance(probe, Closing):
                await probe.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None and not self._client.is_closed:
            with contextlib.suppress(Exception):
                await self._client.drain()
        self.log.info("worker_stopped", published=self.published, dropped=self.dropped)


async def run_worker(
    config_path: Path, name: str, registry: ProbeRegistry, env: Mapping[str, str] | None = None
) -> int:
    """Run a worker until SIGTERM or SIGINT; SIGHUP reloads. Return the exit code."""
    from vigie.probes.http import make_session

    env = os.environ if env is None else env
    log = structlog.get_logger()
    loaded = load_config_logged(config_path, registry, env, log)
    if loaded is None:
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with make_session() as session:
        try:
            worker = Worker(loaded, registry, session, name, logger=log)
        except ValueError as exc:
            log.error("worker_invalid", error=str(exc))
            return 1
        reloads: set[asyncio.Task[list[str]]] = set()

        def on_hup() -> None:
            task = asyncio.create_task(worker.reload(config_path, env))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        starting = asyncio.create_task(worker.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # stopped before NATS answered
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        else:
            starting.result()
            heap.settle()  # the config and plan live as long as the worker (monitor/heap.py)
            heap.break_transport_cycles()
            await stop.wait()
        stopping.cancel()
        await worker.stop()
    return 0
