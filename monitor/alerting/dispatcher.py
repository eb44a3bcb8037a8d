"""The dispatcher: state changes to the outbox at once, then delivery to every sink with retries."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from vigie.core.results import bound_text
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.outbox import Entry, Outbox, Row
from vigie.monitor.alerting.settings import AlertingSettings
from vigie.monitor.alerting.sink import DeliveryError, Sink

Clock = Callable[[], float]
"""Wall-clock seconds since the epoch: alert times and Alertmanager's endsAt are wall times."""

WATCHDOG_KEY = "watchdog"
WATCHDOG_NAME = "VigieWatchdog"
INSTANCE = "vigie_instance"
"""The annotation naming the Vigie that sent an alert (a label only on per-instance alerts)."""

OWN_PREFIX = "vigie:"
"""Keys of Vigie's alerts about itself (its state_dir, its bus): labelled with the instance."""

Sender = Callable[[], bool]
"""Whether this Vigie sends to direct sinks now (monitor.replicas: the first replica alive)."""
PeerResolved = Callable[[], Mapping[str, float]]
"""Alert keys another replica resolved lately, with the wall time of each resolve."""
RESOLVED_KEPT = 1000
"""Recent resolves remembered for the peers (keys and times), at most."""


def watchdog_alert(instance: str, at: datetime) -> Alert:
    """Return the always-firing dead man's switch alert of a Vigie instance.

    The one alert whose labels name the instance: each replica's switch must be distinct.
    """
    return Alert(
        key=WATCHDOG_KEY,
        labels={"alertname": WATCHDOG_NAME, "severity": "none", INSTANCE: instance},
        annotations={
            "summary": f"Vigie {instance} alerting pipeline is alive",
            "description": (
                "This alert is always firing while Vigie runs and reaches Alertmanager. "
                "Route it to a dead man's switch: its absence means Vigie, or its path to "
                "Alertmanager, is down."
            ),
        },
        starts_at=at,
    )


class AlertingMetrics:
    """The delivery layer's own metrics, registered in the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "vigie_alert_outbox_depth",
            "Notifications queued in the outbox, not yet acknowledged, by sink.",
            ["sink"],
            registry=registry,
        )
        self.failures = Counter(
            "vigie_alert_delivery_failures",
            "Failed delivery attempts by sink (one per attempt, whatever its size).",
            ["sink"],
            registry=registry,
        )
        self.sent = Counter(
            "vigie_alerts_sent",
            "Alert notifications acknowledged by sink, re-sends included.",
            ["sink"],
            registry=registry,
        )
        self.active = Gauge(
            "vigie_alerts_active",
            "Alerts firing now, the watchdog excepted.",
            registry=registry,
        )


class AlertDispatcher:
    """Records each state change in the outbox before returning, then delivers it to every sink.

    Each sink has its own delivery loop, so a slow mail relay never holds back Alertmanager.
    A failed sink is retried with exponential backoff and full jitter until it acknowledges.

    Alert labels are the same on every replica (Alertmanager deduplicates by them); the
    instance goes in the `vigie_instance` annotation. With `sender`, direct sinks (those not
    re-sent: webhook, mail), which nothing deduplicates downstream, are delivered only while
    sender() is true; another replica's rows are dropped once `handoff` seconds old, so a
    change the sender died before delivering is still sent by the survivor. A resolve goes
    out from the replica that delivered the alert's firing notification to that sink, sender
    or not: the page of a replica's own loss is sent by its peer, which stops being sender the
    moment the lost replica is back, and the one back never had that alert to resolve.
    """

    def __init__(
        self,
        settings: AlertingSettings,
        outbox: Outbox,
        sinks: Sequence[Sink],
        session: aiohttp.ClientSession,
        registry: CollectorRegistry,
        *,
        clock: Clock = time.time,
        logger: Any = None,
        rng: random.Random | None = None,
        send_guard: float = 300.0,
        sender: Sender | None = None,
        handoff: float = 60.0,
        peer_resolved: PeerResolved | None = None,
    ) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique: {names}")
        self._settings = settings
        self._outbox = outbox
        self._sinks = list(sinks)
        self._session = session
        self._clock = clock
        self._log = logger if logger is not None else structlog.get_logger()
        self._rng = rng or random.Random()
        self._send_guard = send_guard
        self._sender = sender
        self._handoff = handoff
        self._peer_resolved = peer_resolved
        self._resolved: dict[str, float] = {}  # key -> when this Vigie resolved it (wall)
        # sink -> keys of the firing notifications this Vigie delivered there (its resolves)
        self._paged: dict[str, set[str]] = {name: set() for name in names}
        self._metrics = AlertingMetrics(registry)
        self._wake = {name: asyncio.Event() for name in names}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        for name in names:
            self._metrics.failures.labels(sink=name)
            self._metrics.sent.labels(sink=name)
        for sink, count in outbox.drop_sinks(names).items():
            self._log.warning("alert_sink_removed", sink=sink, dropped=count)
        self._active: dict[str, Alert] = outbox.active()
        self._update_gauges()

    # --- state changes: synchronous, on disk before returning ------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def fire(self, alert: Alert) -> None:
        """Fire or update an alert (no-op if unchanged); on disk when this returns."""
        # A failed write raises sqlite3.Error and changes nothing, so calling again retries.
        self._check_user_alert(alert)
        self._apply([alert], [], self._now())

    def resolve(self, key: str, at: datetime | None = None) -> None:
        """Resolve the alert with this key (at `at`, default now); unknown keys are ignored."""
        if key == WATCHDOG_KEY:
            raise ValueError("the watchdog is resolved only by turning it off in the config")
        self._apply([], [key], at or self._now())

    def sync(self, alerts: Iterable[Alert], at: datetime | None = None) -> None:
        """Make the given alerts the firing set: fire or update them, resolve the others."""
        alerts = list(alerts)
        for alert in alerts:
            self._check_user_alert(alert)
        wanted = {alert.key for alert in alerts}
        gone = [key for key in self._active if key not in wanted and key != WATCHDOG_KEY]
        self._apply(alerts, gone, at or self._now())

    def active(self) -> dict[str, Alert]:
        """Return the firing alerts by key, the watchdog excepted."""
        return {k: a for k, a in self._active.items() if k != WATCHDOG_KEY}

    @staticmethod
    def _check_user_alert(alert: Alert) -> None:
        if alert.key == WATCHDOG_KEY:
            raise ValueError(f"alert key {WATCHDOG_KEY!r} is reserved for the watchdog")
        if alert.ends_at is not None:
            raise ValueError(f"alert {alert.key!r} has ends_at set: use resolve()")

    def _entries(self, alert: Alert, change: bool) -> list[Entry]:
        """Queue a state change for every sink, an update only for the refreshed ones.

        A routed sink (an SMS gateway used by escalation policies) gets only its pages. An
        update of an alert a peer replica just resolved is not sent: it would re-fire it.
        """
        if not change and self._peer_held(alert):
            return []
        return [
            Entry(sink.name, alert, sink.delivery)
            for sink in self._sinks
            if (change or sink.refresh)
            and (sink.refresh or alert.key != WATCHDOG_KEY)
            and not getattr(sink, "routed", False)
        ]

    def _peer_held(self, alert: Alert) -> bool:
        """Whether a peer replica resolved this firing alert less than `handoff` ago.

        The replicas see a recovery up to a check interval apart: the slower one's keep-alive
        or update in between would re-fire at Alertmanager what the other just resolved. It
        is held instead, for `handoff` at most (a peer wrong about a recovery delays a page,
        never loses it); its own resolve goes out as usual.
        """
        if self._peer_resolved is None or alert.ends_at is not None:
            return False
        at = self._peer_resolved().get(alert.key)
        return (
            at is not None
            and at >= alert.starts_at.timestamp()
            and self._clock() - at < self._handoff
        )

    def recently_resolved(self) -> dict[str, float]:
        """The alerts this Vigie resolved in the last `handoff` seconds, with their times."""
        now = self._clock()
        return {k: at for k, at in self._resolved.items() if now - at < self._handoff}

    def page(
        self, entries: Sequence[Entry], also: Callable[[sqlite3.Connection], object] | None = None
    ) -> None:
        """Queue escalation pages to the named sinks, with `also` in the same transaction."""
        unknown = {e.sink for e in entries} - set(self._wake)
        if unknown:
            raise ValueError(f"unknown sinks: {sorted(unknown)}")
        self._outbox.record(entries, now=self._clock(), also=also)
        for entry in entries:
            self._wake[entry.sink].set()
        self._update_gauges()

    @property
    def sink_names(self) -> list[str]:
        """The names of the sinks delivered to."""
        return [sink.name for sink in self._sinks]

    def _apply(self, fired: Sequence[Alert], resolved: Sequence[str], at: datetime) -> None:
        """Record fired and resolved alerts in one transaction, then let the sinks know."""
        instance = self._settings.vigie_instance
        extra = self._settings.external_labels
        entries: list[Entry] = []
        activate: list[Alert] = []
        events: list[tuple[str, Alert]] = []
        for given in fired:
            alert = given.with_labels(extra) if extra else given
            if alert.key.startswith(OWN_PREFIX):  # one replica's own trouble: its own alert
                alert = alert.with_labels({INSTANCE: instance})
            if alert.annotations.get(INSTANCE) != instance:
                alert = replace(alert, annotations={**alert.annotations, INSTANCE: instance})
            old = self._active.get(alert.key)
            if old == alert:
                continue
            activate.append(alert)
            if old is None:
                entries += self._entries(alert, change=True)
                events.append(("alert_fired", alert))
            elif old.labels != alert.labels:
                # New labels are a new alert for Alertmanager: end the old one explicitly,
                # or it would linger until its endsAt.
                entries += self._entries(old.resolved(at), change=True)
                entries += self._entries(alert, change=True)
                events.append(("alert_relabelled", alert))
            else:
                entries += self._entries(alert, change=False)
                events.append(("alert_updated", alert))
        deactivate: list[str] = []
        for key in resolved:
            old = self._active.get(key)
            if old is None:
                continue
            deactivate.append(key)
            entries += self._entries(old.resolved(at), change=True)
            events.append(("alert_resolved", old))
            self._resolved[key] = at.timestamp()
        if len(self._resolved) > RESOLVED_KEPT:  # keep the latest
            latest = sorted(self._resolved.items(), key=lambda kv: kv[1])[-RESOLVED_KEPT:]
            self._resolved = dict(latest)
        if not activate and not deactivate:
            return
        self._outbox.record(entries, activate=activate, deactivate=deactivate, now=self._clock())
        for alert in activate:
            self._active[alert.key] = alert
        for key in deactivate:
            del self._active[key]
        for entry in entries:
            self._wake[entry.sink].set()
        self._update_gauges()
        for event, alert in events:
            self._log.info(
                event,
                key=alert.key,
                alertname=alert.name,
                severity=alert.labels.get("severity"),
                site=alert.labels.get("site"),
            )

    def _update_gauges(self) -> None:
        try:
            depth = self._outbox.depth()
        except Exception as exc:  # metrics must not turn a recorded change into an error
            self._log.error("alert_outbox_failed", error=bound_text(str(exc)))
            return
        for sink in self._sinks:
            self._metrics.depth.labels(sink=sink.name).set(depth.get(sink.name, 0))
        self._metrics.active.set(len(self._active) - (WATCHDOG_KEY in self._active))

    # --- delivery ------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver queued rows, new changes, re-sends and the watchdog until stop()."""
        if self._settings.watchdog:
            # Keep the start time across restarts: the watchdog has been up all along.
            old = self._active.get(WATCHDOG_KEY)
            start = old.starts_at if old is not None else self._now()
            self._apply([watchdog_alert(self._settings.vigie_instance, start)], [], self._now())
        elif WATCHDOG_KEY in self._active:
            self._apply([], [WATCHDOG_KEY], self._now())
        self._log.info(
            "alerting_started",
            sinks=[sink.name for sink in self._sinks],
            active=len(self.active()),
            queued=sum(self._outbox.depth().values()),
        )
        self._tasks = [
            asyncio.create_task(self._deliver(sink), name=f"alert-sink:{sink.name}")
            for sink in self._sinks
        ]
        self._tasks.append(asyncio.create_task(self._resend_loop(), name="alert-resend"))
        try:
            await self._stopped.wait()
        finally:
            await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _resend_loop(self) -> None:
        """Re-send firing alerts to the refreshed sinks now (after a restart) and periodically."""
        while True:
            self._resend()
            await asyncio.sleep(self._settings.resend_interval)

    def _resend(self) -> None:
        """Queue a keep-alive of each firing alert, unless one is queued already."""
        entries = [
            Entry(sink.name, alert, sink.delivery, refresh=True)
            for sink in self._sinks
            if sink.refresh
            for alert in self._active.values()
            if not self._peer_held(alert)
        ]
        if not entries:
            return
        try:
            queued = self._outbox.record(entries, now=self._clock())
        except Exception as exc:  # a full disk must not end re-sending for good
            self._log.error("alert_outbox_failed", error=bound_text(str(exc)))
            return
        if queued:
            for entry in entries:
                self._wake[entry.sink].set()
            self._update_gauges()

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2^(failures-1))]."""
        s = self._settings
        cap = min(s.backoff_max, s.backoff_initial * 2.0 ** min(failures - 1, 62))
        return self._rng.uniform(0.0, cap)

    async def _deliver(self, sink: Sink) -> None:
        """Send the sink's queued rows, oldest first, until stopped; back off on failure."""
        wake = self._wake[sink.name]
        failures = 0
        while True:
            wake.clear()
            try:
                rows = self._outbox.pending(sink.name, sink.batch_size)
            except Exception as exc:  # the outbox may fail (disk); try again later
                self._log.error("alert_outbox_failed", sink=sink.name, error=bound_text(str(exc)))
                await asyncio.sleep(self._settings.backoff_max)
                continue
            if not rows:
                await wake.wait()
                continue
            own = self._own_resolves(sink, rows)
            wait = None if own else self._left_to_peer(sink, rows)
            if own:
                rows = own
            if wait is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await wake.wait()
                continue
            reason = await self._attempt(sink, rows)
            if reason is None:
                if failures:
                    self._log.info("alert_sink_recovered", sink=sink.name, failures=failures)
                failures = 0
                continue
            failures += 1
            delay = self._backoff(failures)
            self._log.warning(
                "alert_delivery_failed",
                sink=sink.name,
                reason=reason,
                failures=failures,
                queued=len(rows),
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)

    def _left_to_peer(self, sink: Sink, rows: Sequence[Row]) -> float | None:
        """None when this Vigie sends to the sink now; else drop the rows the sending replica
        has had `handoff` seconds to deliver and return how long to wait before looking again.
        """
        if sink.refresh or self._sender is None or self._sender():
            return None
        now = self._clock()
        done = [row.id for row in rows if now - row.created >= self._handoff]
        if done:
            try:
                self._outbox.ack(done)
            except Exception as exc:  # the disk: the rows are looked at again in a second
                self._log.error("alert_outbox_failed", sink=sink.name, error=bound_text(str(exc)))
                return 1.0
            self._update_gauges()
            self._log.info("alert_left_to_peer", sink=sink.name, alerts=len(done))
            return 0.0
        # Look again at least every second: the sender may die (and this replica take over).
        return min(1.0, max(0.05, min(row.created for row in rows) + self._handoff - now))

    def _own_resolves(self, sink: Sink, rows: Sequence[Row]) -> list[Row]:
        """The resolves among rows of alerts whose firing this Vigie delivered to the sink,
        when another replica is the sender ([] while this one sends all rows anyway)."""
        if sink.refresh or self._sender is None or self._sender():
            return []
        paged = self._paged[sink.name]
        return [r for r in rows if r.alert.state == "resolved" and r.alert.key in paged]

    async def _attempt(self, sink: Sink, rows: Sequence[Row]) -> str | None:
        """Send rows once; record the outcome; return None on success, else the reason."""
        ids = [row.id for row in rows]
        try:
            async with asyncio.timeout(self._send_guard):
                await sink.send([row.alert for row in rows], self._session)
        except DeliveryError as exc:
            reason = exc.reason
        except TimeoutError:
            reason = f"{sink.name}: no answer within {self._send_guard:g}s"
        except Exception as exc:  # a sink's bug must not end its delivery loop
            reason = bound_text(f"{sink.name}: {type(exc).__name__}: {exc}")
        else:
            try:
                self._outbox.ack(ids)
            except Exception as exc:  # delivered all the same: at worst re-sent after a restart
                self._log.error("alert_outbox_failed", sink=sink.name, error=bound_text(str(exc)))
            self._metrics.sent.labels(sink=sink.name).inc(len(ids))
            if not sink.refresh:
                paged = self._paged[sink.name]
                for row in rows:
                    if row.alert.state == "firing":
                        paged.add(row.alert.key)
                    else:
                        paged.discard(row.alert.key)
            self._update_gauges()
            self._log.debug("alert_delivered", sink=sink.name, alerts=len(ids))
            return None
        self._metrics.failures.labels(sink=sink.name).inc()
        with contextlib.suppress(Exception):  # the reason is logged by the caller anyway
            self._outbox.failed(ids, reason)
        return reason

    async def stop(self) -> None:
        """Stop the loops, then give what is queued one bounded chance (flush_timeout)."""
        self._stopped.set()
        await self._cancel_tasks()
        deadline = time.monotonic() + self._settings.flush_timeout

        async def flush(sink: Sink) -> None:
            if not sink.refresh and self._sender is not None and not self._sender():
                return  # another replica sends to it; what is queued waits for a restart
            while (rows := self._outbox.pending(sink.name, sink.batch_size)) and (
                left := deadline - time.monotonic()
            ) > 0:
                try:
                    async with asyncio.timeout(left):
                        if await self._attempt(sink, rows) is not None:
                            return  # down: no point hammering it until the deadline
                except TimeoutError:
                    return

        await asyncio.gather(*(flush(sink) for sink in self._sinks))
        left = {sink: n for sink, n in self._outbox.depth().items() if n}
        if left:
            self._log.warning("alert_flush_incomplete", queued=left)
        self._log.info("alerting_stopped", active=len(self.active()))

    def queued(self) -> Mapping[str, int]:
        """Return the number of queued notifications per sink."""
        return self._outbox.depth()
