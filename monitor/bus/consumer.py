"""`vigie run` with a bus: every result from the workers into the store, and their health.

A plain subscription, not a queue group: every `vigie run` replica sees every result. The
daemon runs no check itself; it watches the workers' bucket to know who is live and which
checks each one holds. A lost worker (its key aged out) pages as one Vigie self-incident
until its checks report again from the survivors; its last results leave the store at once
(no stale UP on /metrics) and the health engine ages them to UNKNOWN after its stale bound,
which never pages per component.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry, Counter, Gauge

from vigie.monitor.alerting.model import Alert
from vigie.monitor.bus.codec import DecodeError, decode
from vigie.monitor.bus.link import connect_until, members_bucket, watch_members
from vigie.monitor.bus.members import Change, Membership, shares
from vigie.monitor.bus.settings import BusSettings
from vigie.monitor.store import ResultStore

SELF_INCIDENT_NAME = "VigieWorkerLost"
NO_WORKER_NAME = "VigieNoWorker"
UNREACHABLE_NAME = "VigieBusUnreachable"
NO_WORKER_GRACE = 30.0
"""Time after start before no worker at all pages: a fleet restarting registers meanwhile."""
MAX_WORKERS = 1000
"""Bound on the workers tracked (and labelled in metrics): the bucket is writable by peers."""
DECODE_REASONS = (
    "too_large", "not_json", "not_an_object", "version", "bad_check_id", "bad_worker",
    "bad_success", "bad_duration", "bad_timestamp", "bad_time", "bad_error", "bad_phases",
    "bad_samples", "bad_sample", "unknown_check",
)  # fmt: skip


class BusMetrics:
    """The bus consumer's metrics, on the daemon's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.workers = Gauge("vigie_bus_workers", "Live probe workers.", registry=registry)
        self.assigned = Gauge(
            "vigie_bus_worker_checks",
            "Checks assigned to each live worker (rendezvous hash over the live workers).",
            ["worker"],
            registry=registry,
        )
        self.unassigned = Gauge(
            "vigie_bus_unassigned_checks",
            "Checks of lost workers not reported since by another worker.",
            registry=registry,
        )
        self.results = Counter(
            "vigie_bus_results", "Results received from the bus and stored.", registry=registry
        )
        self.decode_errors = Counter(
            "vigie_bus_decode_errors",
            "Messages on the results subject dropped unread, by reason.",
            ["reason"],
            registry=registry,
        )
        self.connected = Gauge(
            "vigie_bus_connected", "1 while connected to the NATS cluster.", registry=registry
        )
        for reason in DECODE_REASONS:
            self.decode_errors.labels(reason=reason)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One live worker as the status page shows it."""

    name: str
    checks: int
    results: int
    last_result_age: float | None
    heartbeat_age: float
    host: str
    version: str


@dataclass(frozen=True, slots=True)
class BusStatus:
    """The bus as `vigie run` sees it: connected or not, each live worker, the lost ones."""

    connected: bool
    worker_ttl: float
    workers: tuple[WorkerView, ...]
    lost: Mapping[str, int]  # lost worker -> its checks not reported since

    def to_json(self) -> dict[str, Any]:
        """Return the /-/workers document: a worker is healthy while its key is fresh."""
        return {
            "connected": self.connected,
            "worker_ttl_seconds": self.worker_ttl,
            "workers": [
                {
                    "name": w.name,
                    "healthy": w.heartbeat_age <= self.worker_ttl,
                    "checks": w.checks,
                    "results": w.results,
                    "last_result_age_seconds": None
                    if w.last_result_age is None
                    else round(w.last_result_age, 3),
                    "heartbeat_age_seconds": round(w.heartbeat_age, 3),
                    "host": w.host,
                    "version": w.version,
                }
                for w in self.workers
            ],
            "lost": dict(self.lost),
        }


@dataclass(slots=True)
class _Lost:
    """A lost worker's checks not reported since by anyone, and when it was lost."""

    at: float  # wall clock, the self-incident's start
    noticed: float  # monotonic: paged after a hold, so workers lost together page once
    count: int  # its checks when lost: the page's text stays the same until it resolves
    waiting: set[str]


class BusConsumer:
    """Subscribes to every result, follows the workers, pages lost workers as one incident."""

    def __init__(
        self,
        settings: BusSettings,
        store: ResultStore,
        registry: CollectorRegistry,
        *,
        name: str = "vigie-run",
        logger: Any = None,
        on_change: Callable[[], None] = lambda: None,
        forgot: Callable[[], None] = lambda: None,
        url: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._store = store
        self._metrics = BusMetrics(registry)
        self._name = name
        self._log = logger if logger is not None else structlog.get_logger()
        self._on_change = on_change
        self._forgot = forgot
        self._url = url
        self._clock = clock
        self._plan: frozenset[str] = frozenset()
        self.membership = Membership(settings.worker_ttl, clock=clock)
        self._assigned: dict[str, set[str]] = {}
        self._lost: dict[str, _Lost] = {}
        self._received: dict[str, int] = {}  # live worker -> results received
        self._last: dict[str, float] = {}  # live worker -> when its last result came
        self._started = clock()
        self._down_since: tuple[float, float] | None = None  # (monotonic, wall) of the outage
        self._client: Client | None = None
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # subscribed and the bucket's keys read

    # --- plan and membership ---------------------------------------------------------------

    def set_plan(self, check_ids: Iterable[str]) -> None:
        """Follow a new plan: results of other ids are refused, removed ids leave the store."""
        new = frozenset(check_ids)
        for gone in self._plan - new:
            self._store.remove(gone)
        self._plan = new
        for lost in self._lost.values():
            lost.waiting &= new
        self._reassign()

    def _reassign(self) -> None:
        """Recompute every live worker's share and the metrics that show it."""
        self._assigned = shares(self._plan, self.membership.live())
        self._metrics.workers.set(len(self._assigned))
        self._metrics.assigned.clear()
        for worker, ids in self._assigned.items():
            self._metrics.assigned.labels(worker=worker).set(len(ids))
        self._metrics.unassigned.set(
            len(set().union(*(lost.waiting for lost in self._lost.values())))
        )

    def _membership_changed(self, change: Change) -> None:
        """Log joins and departures; a lost worker's checks wait for a survivor's results."""
        before = self._assigned
        for name in change.joined:
            self._log.info("bus_worker_joined", worker=name)
            self._lost.pop(name, None)  # back: its checks come back to it
        for name in change.left:
            self._log.info("bus_worker_left", worker=name, checks=len(before.get(name, ())))
        for name in change.left + change.lost:
            self._received.pop(name, None)
            self._last.pop(name, None)
        hidden = self._task is not None and not self.connected()  # NATS down, not the worker
        for name in change.lost:
            held = set(before.get(name, ()))
            report = self._log.warning if hidden else self._log.error
            report("bus_worker_lost", worker=name, checks=len(held), hidden=hidden)
            for check_id in held:  # no stale result stands for a check nobody runs now
                self._store.remove(check_id)
            if held:
                self._forgot()  # the store's listeners take removal for leaving the plan
                if not hidden:
                    self._lost[name] = _Lost(time.time(), self._clock(), len(held), held)
        if len(self.membership.live()) > MAX_WORKERS:  # a flood of keys: keep the oldest
            self._log.error("bus_too_many_workers", workers=len(self.membership.live()))
        self._reassign()
        self._on_change()

    # --- results -------------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        """Decode one message into the store; anything else is counted and dropped."""
        try:
            got = decode(msg.data, self.settings.max_result_bytes)
            if got.check_id not in self._plan:
                raise DecodeError("unknown_check")
        except DecodeError as exc:
            self._metrics.decode_errors.labels(reason=exc.reason).inc()
            return
        self._metrics.results.inc()
        if got.worker in self._received:
            self._received[got.worker] += 1
            self._last[got.worker] = self._clock()
        elif got.worker in self.membership.live() and len(self._received) < MAX_WORKERS:
            self._received[got.worker] = 1
            self._last[got.worker] = self._clock()
        if self._lost:
            resolved = False
            for name, lost in list(self._lost.items()):
                lost.waiting.discard(got.check_id)
                if not lost.waiting:
                    del self._lost[name]
                    self._log.info("bus_worker_checks_reassigned", worker=name, checks=lost.count)
                    resolved = True
            if resolved:
                self._reassign()
                self._on_change()
        self._store.update(got.check_id, got.result)

    # --- what the daemon reads -----------------------------------------------------------------

    def alerts(self) -> list[Alert]:
        """Return Vigie's own incidents, each paged once: NATS unreachable (it hides every
        worker at once), or no worker alive (past a grace after start or reconnection, or
        several lost together), or else one per lost worker whose checks are not all back."""
        if self._task is not None and not self.connected():
            down = self._unreachable()
            return [down] if down is not None else []
        if self._down_since is not None:  # connected again: the workers get a grace to show up
            self._down_since = None
            self._started = self._clock()
        grace = max(NO_WORKER_GRACE, 3 * self.settings.worker_ttl)
        waited = self._clock() - self._started > grace
        if (
            self._plan
            and not self.membership.live()
            and (len(self._lost) > 1 or (not self._lost and waited))
        ):
            return [self._no_worker()]
        hold = self.settings.worker_ttl / 2  # keys refresh every third of a TTL: losses
        now = self._clock()  # closer than that are one event, paged as no worker at all
        return [
            self._worker_lost(name, lost)
            for name, lost in sorted(self._lost.items())
            if now - lost.noticed >= hold
        ]

    def _worker_lost(self, name: str, lost: _Lost) -> Alert:
        """Return the page of one lost worker (its text fixed at the loss: paged once)."""
        return Alert(
            key=f"vigie:bus:worker:{name}",
            labels={
                "alertname": SELF_INCIDENT_NAME,
                "severity": "critical",
                "component": "vigie",
                "root_cause": "bus_worker",
                "worker": name,
            },
            annotations={
                "summary": f"Vigie worker {name} lost, {lost.count} checks unassigned "
                "until the other workers take them over",
                "description": f"The key of worker {name} in the NATS bucket "
                f"{self.settings.kv_bucket} was not refreshed for "
                f"{self.settings.worker_ttl:g}s. Its checks are UNKNOWN, not paged one "
                "by one, until live workers report them. Fix: look at the worker's "
                "host and its journal (journalctl -u vigie-worker@...).",
            },
            starts_at=datetime.fromtimestamp(lost.at, UTC),
            generator_url=self._url,
        )

    def _no_worker(self) -> Alert:
        """Return the one page of no live worker at all (several lost together included)."""
        servers = ", ".join(self.settings.public_servers())
        lost = f" (lost: {', '.join(sorted(self._lost))})" if self._lost else ""
        return Alert(
            key="vigie:bus:no_worker",
            labels={
                "alertname": NO_WORKER_NAME,
                "severity": "critical",
                "component": "vigie",
                "root_cause": "bus_worker",
            },
            annotations={
                "summary": f"No Vigie worker alive{lost}: {len(self._plan)} checks unassigned",
                "description": f"No live key in the NATS bucket {self.settings.kv_bucket} on "
                f"{servers}: every check is UNKNOWN (not paged one by one). Start `vigie "
                "worker` processes, or check that they reach NATS.",
            },
            starts_at=datetime.fromtimestamp(
                min((x.at for x in self._lost.values()), default=time.time()), UTC
            ),
            generator_url=self._url,
        )

    def _unreachable(self) -> Alert | None:
        """Return the one page of an outage of NATS once it lasted a TTL (None before)."""
        if self._down_since is None:
            self._down_since = (self._clock(), time.time())
        if self._clock() - self._down_since[0] <= self.settings.worker_ttl:
            return None
        servers = ", ".join(self.settings.public_servers())
        return Alert(
            key="vigie:bus:unreachable",
            labels={
                "alertname": UNREACHABLE_NAME,
                "severity": "critical",
                "component": "vigie",
                "root_cause": "bus",
            },
            annotations={
                "summary": f"Vigie cannot reach NATS ({servers}): "
                f"{len(self._plan)} checks without results",
                "description": "The workers' results and their keys come through NATS: until "
                "it answers, every check ages to UNKNOWN (not paged one by one). Workers keep "
                "probing and buffer a little while reconnecting. Fix: look at the NATS servers "
                "and the network between them and this host.",
            },
            starts_at=datetime.fromtimestamp(self._down_since[1], UTC),
            generator_url=self._url,
        )

    def workers(self) -> list[WorkerView]:
        """Return the live workers for the status page, by name."""
        now = self._clock()
        out = []
        for name, member in sorted(self.membership.members().items()):
            last = self._last.get(name)
            out.append(
                WorkerView(
                    name=name,
                    checks=len(self._assigned.get(name, ())),
                    results=self._received.get(name, 0),
                    last_result_age=None if last is None else now - last,
                    heartbeat_age=max(0.0, now - member.seen),
                    host=member.info.get("host", ""),
                    version=member.info.get("version", ""),
                )
            )
        return out

    def lost(self) -> Mapping[str, int]:
        """Return the lost workers whose checks are not all back, with their check counts."""
        return {name: lost.count for name, lost in self._lost.items()}

    def status(self) -> BusStatus:
        """Return the bus's state for the web: connection, live workers, lost ones."""
        return BusStatus(
            connected=self.connected(),
            worker_ttl=self.settings.worker_ttl,
            workers=tuple(self.workers()),
            lost={name: len(lost.waiting) for name, lost in sorted(self._lost.items())},
        )

    # --- life cycle ----------------------------------------------------------------------------

    async def start(self, check_ids: Iterable[str]) -> None:
        """Follow the plan and connect in the background (the daemon starts without NATS)."""
        self.set_plan(check_ids)
        self._started = self._clock()
        self._task = asyncio.create_task(self._run(), name="bus")

    async def _run(self) -> None:
        """Connect, subscribe to every result, then follow the bucket for ever."""
        client = self._client = await connect_until(self.settings, self._name, self._log)
        self._metrics.connected.set(1)
        self._sub = await client.subscribe(
            f"{self.settings.results_subject}.>", cb=self._on_message
        )
        bucket = await members_bucket(client, self.settings)
        self._log.info("bus_connected", servers=self.settings.public_servers())
        await watch_members(
            bucket, self.membership, self._membership_changed, self._log, ready=self.ready
        )

    def connected(self) -> bool:
        """True while the NATS connection is up."""
        up = self._client is not None and self._client.is_connected
        self._metrics.connected.set(1 if up else 0)
        return up

    async def stop(self) -> None:
        """Stop following and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None and not self._client.is_closed:
            with contextlib.suppress(Exception):
                await self._client.close()
