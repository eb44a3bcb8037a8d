"""Wiring: build the daemon from a config, run it, reload on SIGHUP, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import Gauge
from pydantic import BaseModel

from vigie.core.results import bound_text
from vigie.core.yamlpos import ConfigErrors
from vigie.monitor import heap
from vigie.monitor.alerting import AlertDispatcher, Outbox, build_sinks
from vigie.monitor.alerting.ack import Silences
from vigie.monitor.alerting.escalation import Escalations, escalations_for
from vigie.monitor.audit import AuditLog, annotate
from vigie.monitor.bus.consumer import BusConsumer
from vigie.monitor.config import LoadedConfig, load_config, load_config_logged
from vigie.monitor.eventloop import loop_name
from vigie.monitor.exposition import Exposition, check_labels
from vigie.monitor.health.alerts import IncidentNotifier
from vigie.monitor.health.archive import Closings, IncidentArchive, archived_incident
from vigie.monitor.health.availability import DownTime
from vigie.monitor.health.budget import BudgetCollector
from vigie.monitor.health.engine import Snapshot, build_engine, rules_of
from vigie.monitor.health.history import StateHistory
from vigie.monitor.health.maintenance import MaintenanceBook
from vigie.monitor.health.metrics import HealthCollector
from vigie.monitor.health.persist import HealthStateStore
from vigie.monitor.health.runner import HealthRunner, HealthRunnerMetrics
from vigie.monitor.i18n import Speech, zone_of
from vigie.monitor.ondemand import OnDemandGate, OnDemandMetrics
from vigie.monitor.probe_state import ProbeStateFile
from vigie.monitor.replicas import MaintenanceMirror, ReplicaSet, UpdateFeed, peer_settings
from vigie.monitor.runtime_metrics import register_runtime_collectors
from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
from vigie.monitor.statedir import StateDirMonitor
from vigie.monitor.store import ResultStore
from vigie.monitor.systemd import SystemdNotifier, watchdog_loop
from vigie.monitor.textformat import OwnRegistry
from vigie.monitor.traps import TrapMetrics, TrapReceiver
from vigie.probes.base import Closing, KeepsCheckState, ProbeRegistry
from vigie.probes.traps import TrapProbe


class Daemon:
    """The running daemon: scheduler, result store, exposition, web server, systemd notifier."""

    def __init__(
        self,
        loaded: LoadedConfig,
        registry: ProbeRegistry,
        session: aiohttp.ClientSession,
        *,
        notifier: SystemdNotifier | None = None,
        env: Mapping[str, str] | None = None,
        logger: Any = None,
        state_retry_every: float = 5.0,
    ) -> None:
        self.loaded = loaded = loaded.running()  # the plan, not the check models it came from
        self.registry = registry
        self.session = session
        self.env = os.environ if env is None else env
        self.notifier = notifier or SystemdNotifier.from_env({})
        self.log = logger if logger is not None else structlog.get_logger()
        self.own_registry = OwnRegistry()
        register_runtime_collectors(self.own_registry)  # process_cpu_seconds_total and the like
        self.store = ResultStore()
        self.exposition = Exposition(self.own_registry)
        self.store.subscribe(self.exposition.update)
        self.reload_ok = Gauge(
            "vigie_config_last_reload_successful",
            "Whether the last configuration reload succeeded.",
            registry=self.own_registry,
        )
        self.reload_time = Gauge(
            "vigie_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload.",
            registry=self.own_registry,
        )
        sched = loaded.config.scheduler
        self.scheduler = Scheduler(
            registry,
            self.store,
            session,
            SchedulerMetrics(self.own_registry),
            max_concurrency=sched.max_concurrency,
            per_host_concurrency=sched.per_host_concurrency,
            logger=self.log,
            ondemand=OnDemandGate(
                OnDemandMetrics(self.own_registry), rate=sched.ondemand_rate, logger=self.log
            ),
        )
        config = loaded.config
        # Every store in state_dir reports its writes here: a refused write keeps the state in
        # memory, is counted and logged, and pages a self-incident (vigie:state_dir).
        self.state_dir: StateDirMonitor | None = None
        if config.state_dir is not None:
            self.state_dir = StateDirMonitor(
                config.state_dir,
                self.own_registry,
                logger=self.log,
                url=(config.alerting.external_url or "") if config.alerting else "",
            )
        self._state_retry_every = state_retry_every
        self._state_retry_task: asyncio.Task[None] | None = None
        persist = (
            HealthStateStore(config.state_dir / "health.sqlite", report=self.state_dir)
            if config.state_dir
            else None
        )
        # With replicas: who this one is, which peers it sees alive, whether it sends to
        # the direct sinks (webhook, mail) that nothing deduplicates downstream.
        self.replicas: ReplicaSet | None = None
        alerting = config.alerting
        if config.replicas is not None:
            self.replicas = ReplicaSet(config.replicas, self.store.latest, self.own_registry)
            if alerting is not None and "vigie_instance" not in alerting.model_fields_set:
                alerting = alerting.model_copy(update={"vigie_instance": config.replicas.instance})
        self.alerts: AlertDispatcher | None = None
        self.escalations: Escalations | None = None
        self._escalation_task: asyncio.Task[None] | None = None
        self._notifier: IncidentNotifier | None = None
        self._outbox: Outbox | None = None
        if alerting is not None and config.state_dir is not None:
            self._outbox = Outbox(
                config.state_dir / "outbox.sqlite",
                report=self.state_dir,
                retry_every=state_retry_every,
            )
            # On-call escalation (alerting.oncall) keeps its state in the outbox's file.
            self.escalations = escalations_for(
                alerting, self._outbox, session, self.own_registry, logger=self.log
            )
            sinks = build_sinks(alerting)
            self.alerts = AlertDispatcher(
                alerting,
                self._outbox,
                self.escalations.wrap_sinks(sinks) if self.escalations else sinks,
                session,
                self.own_registry,
                logger=self.log,
                sender=None if self.replicas is None else self.replicas.is_sender,
                handoff=config.replicas.handoff if config.replicas is not None else 60.0,
                peer_resolved=None if self.replicas is None else self.replicas.peer_resolved,
            )
            if self.replicas is not None:  # served on /-/replica: the peers hold keep-alives
                self.replicas.resolved = self.alerts.recently_resolved
            if self.escalations is not None:
                self.escalations.attach(self.alerts)
            self._notifier = IncidentNotifier(
                self.alerts,
                url=alerting.external_url or "",
                speech=Speech(config.web.language, zone_of(config.timezone)),
                replica_hold=config.replicas.lost_hold if config.replicas is not None else 0.0,
            )
        self._alert_task: asyncio.Task[None] | None = None
        self.health = HealthRunner(
            build_engine(config, loaded.plan, logger=self.log, run_now=self.scheduler.run_now),
            self.scheduler.first_round_done,
            publish=self._publish,
            persist=persist,
            # windows opened by operators survive a restart (state_dir/maintenance.sqlite)
            maintenance=MaintenanceBook(
                config.maintenance,
                path=config.state_dir / "maintenance.sqlite" if config.state_dir else None,
                report=self.state_dir,
                retention=config.health.archive_retention,  # what availability looks back on
            ),
            logger=self.log,
            metrics=HealthRunnerMetrics(self.own_registry),
        )
        self.store.subscribe(self.health.on_result)
        # Maintenance windows of either replica, shared as Alertmanager silences.
        self.maintenance_mirror: MaintenanceMirror | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        if config.replicas is not None and alerting is not None and alerting.alertmanagers:
            self.maintenance_mirror = MaintenanceMirror(
                Silences(alerting.alertmanagers, session, alerting.timeout),
                lambda: self.health.maintenance,
                lambda: set(self.health.engine.topology.sites),
                config.replicas.instance,
                on_change=self.health.wake,
                logger=self.log,
            )
        # State changes for the status page's timelines and the recovery board, kept in the
        # state_dir when there is one, so a restart mid-recovery does not lose them.
        self._state = persist
        # What probes learnt (SNMP baselines, forecasts, last uptimes), saved each minute.
        self._probe_state = (
            ProbeStateFile(config.state_dir / "probes.json", self.log, report=self.state_dir)
            if config.state_dir
            else None
        )
        self._probe_state_task: asyncio.Task[None] | None = None
        self.history = StateHistory(restored=persist.load_history(50) if persist else None)
        # Closed incidents with their timeline, and every state change (availability figures).
        self.archive: IncidentArchive | None = (
            IncidentArchive(
                config.state_dir / "archive.sqlite",
                config.health.archive_retention,
                report=self.state_dir,
            )
            if config.state_dir
            else None
        )
        self._closings = Closings()
        # Down time per component (availability): vigie_component_down_seconds_total.
        self.downtime = DownTime()
        self.own_registry.register(self.downtime)
        # Operator actions (who, what, when, from where) and incident updates.
        self.audit = AuditLog(
            config.state_dir / "audit.sqlite" if config.state_dir else None,
            report=self.state_dir,
        )
        # With replicas: the incident updates posted on a peer, pulled into this audit log.
        self.update_feed: UpdateFeed | None = None
        self._feed_task: asyncio.Task[None] | None = None
        if config.replicas is not None:
            self.update_feed = UpdateFeed(
                config.replicas,
                self.audit,
                session,
                peer_settings(lambda: self.loaded.plan),
                lambda: {i.key: i.id for i in self.health.engine.snapshot.incidents.values()},
                on_change=self.health.wake,
                logger=self.log,
            )
        self.own_registry.register(HealthCollector(lambda: self.health.engine.snapshot))
        # Detection budgets follow the config in force (recomputed by load_config on reload).
        self.own_registry.register(BudgetCollector(lambda: self.loaded.budget()))  # noqa: PLW0108
        self.traps: TrapReceiver | None = None
        # The probe kind that decodes notifications (snmp): its config block names credentials.
        self._trap_probe = next((p for p in registry if isinstance(p, TrapProbe)), None)
        if config.traps is not None and self._trap_probe is not None:
            self.traps = TrapReceiver(
                config.traps,
                self.store,
                lambda check_id: self.scheduler.run_soon(check_id, "trap"),
                TrapMetrics(self.own_registry),
                decoder=self._trap_probe.trap_decoder(),
                logger=self.log,
            )
        # With a bus, workers run the checks and this process takes their results.
        self.bus: BusConsumer | None = None
        if config.bus is not None:
            self.bus = BusConsumer(
                config.bus,
                self.store,
                self.own_registry,
                logger=self.log,
                on_change=self.health.wake,
                # Results dropped with their worker: the checks stay planned, their labels too.
                forgot=lambda: self.exposition.set_labels(
                    {cid: check_labels(c) for cid, c in self.loaded.plan.items()}
                ),
                url=(config.alerting.external_url or "") if config.alerting else "",
            )
        self._runner: web.AppRunner | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._warm_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self.listen_port: int | None = None

    def _publish(self, snapshot: Snapshot) -> None:
        """Hand a new health snapshot to the alerting side (when configured)."""
        if self.replicas is not None:
            self.replicas.beat()  # the heartbeat the other replicas read: the health loop runs
        changes = self.history.observe(snapshot)
        if self._state is not None and (changes.added or changes.removed):
            try:
                self._state.save_history(changes.added, changes.removed, self.history.limit)
            except sqlite3.Error as exc:  # a full disk must not stop the health loop
                self.log.warning("history_save_failed", error=str(exc))
        if self._notifier is not None and self.alerts is not None:
            # Vigie's own incidents (state_dir unwritable) are paged like the others.
            own = self.state_dir.alerts() if self.state_dir is not None else []
            own += self.bus.alerts() if self.bus is not None else []  # lost workers
            # An incident's newest update (operators) rides on its alert as annotations.
            self.alerts.sync([*annotate(self._notifier.alerts(snapshot), self.audit), *own])
            if self.escalations is not None:
                self.escalations.observe(snapshot, self.alerts.active())
        self._archive(snapshot)

    def _archive(self, snapshot: Snapshot) -> None:
        """Count down time; keep state and maintenance changes, and each incident that closed."""
        closed = self._closings.observe(snapshot.incidents)
        changes = self.downtime.observe(snapshot)
        if self.archive is None:
            return
        try:
            self.archive.record_changes(changes)
            escalations = self.escalations.all() if closed and self.escalations else []
            for incident in closed:
                record = archived_incident(
                    incident,
                    snapshot.at or time.time(),
                    self.health.engine.topology,
                    self.history.transitions,
                    escalations=escalations,
                    updates=[
                        (a.at, a.who, a.detail, a.expected) for a in self.audit.updates(incident.id)
                    ],
                )
                self.archive.add(record)
                self.log.info("incident_archived", incident=record.id, seconds=record.duration)
        except sqlite3.Error as exc:  # a full disk must not stop the health loop
            self.log.warning("archive_save_failed", error=str(exc))

    async def _retry_state(self) -> None:
        """While a store holds state it could not write, try writing it every few seconds."""
        while True:
            await asyncio.sleep(self._state_retry_every)
            if self.state_dir is None or not self.state_dir.failing:
                continue
            if self._outbox is not None:
                self._outbox.flush()
            if self._state is not None:
                self._state.flush()
            if self.archive is not None:
                self.archive.flush()
            self.audit.flush()
            self.health.maintenance.flush()
            if self._probe_state is not None:
                await self._probe_state.save(self.registry)
            self.health.wake()  # publish now: the self-incident resolves without waiting

    async def start(self, app: web.Application | None = None) -> None:
        """Start the plan and the web server, then tell systemd we are ready."""
        from vigie.monitor.web import webconfig

        web_file = self.loaded.config.web.config_file
        web_config = None if web_file is None else webconfig.load_web_config(web_file)
        self.exposition.set_labels({cid: check_labels(c) for cid, c in self.loaded.plan.items()})
        if self._probe_state is not None:
            self._probe_state.load(self.registry)
            self._probe_state_task = asyncio.create_task(
                self._probe_state.run(self.registry), name="probe-state"
            )
        self.scheduler.apply({} if self.bus is not None else self.loaded.plan)
        if self.bus is not None:
            await self.bus.start(self.loaded.plan)
        if self.state_dir is not None:
            self._state_retry_task = asyncio.create_task(self._retry_state(), name="state-retry")
        if self.alerts is not None:
            self._alert_task = asyncio.create_task(self.alerts.run(), name="alerting")
        if self.maintenance_mirror is not None and self.replicas is not None:
            self._mirror_task = asyncio.create_task(
                self.maintenance_mirror.run(self.replicas.settings.interval), name="maintenance"
            )
        if self.update_feed is not None and self.replicas is not None:
            self._feed_task = asyncio.create_task(
                self.update_feed.run(self.replicas.settings.interval), name="update-feed"
            )
        if self.escalations is not None:
            self._escalation_task = asyncio.create_task(self.escalations.run(), name="escalation")
        self.health.start()
        if self.traps is not None:
            try:
                await self.traps.start(self.loaded.plan, self._trap_section(self.loaded))
            except OSError as exc:  # port 162 without CAP_NET_BIND_SERVICE, or in use
                self.log.error(
                    "traps_listen_failed", listen=self.traps.settings.listen, error=str(exc)
                )
                raise
        self.reload_ok.set(1)
        self.reload_time.set(time.time())
        if app is None:
            from vigie.monitor.web import build_app
            from vigie.monitor.web.readmodel import DaemonReadModel

            app = build_app(DaemonReadModel(self))
        if self.escalations is not None:
            from vigie.monitor.web import ack

            ack.add_routes(app, self.escalations)  # the link in pages, the operators' API
        if web_config is not None:
            webconfig.apply(app, web_config, self.log)
        from vigie.monitor.web import operators  # roles: web.yml's auth says who

        operators.configure(
            app,
            operators.Operations(
                operators.Roles(self.loaded.config.web.roles), self.audit, self.health.wake
            ),
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = self.loaded.config.web.host_port()
        tls = None
        if web_config is not None and web_file is not None:
            tls = webconfig.ssl_context(web_config, web_file)
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.listen_port = sockets[0].getsockname()[1] if sockets else port
        interval = self.notifier.watchdog_interval
        if interval is not None:
            self._watchdog = asyncio.create_task(watchdog_loop(self.notifier, interval))
        # The config, plan and topology live as long as the daemon: keep garbage collections
        # from scanning them again and again (monitor/heap.py).
        heap.settle()
        heap.break_transport_cycles()  # closed connections freed at once, not by the collector
        self._warm_metrics()
        self.notifier.ready()
        self.log.info(
            "daemon_started",
            config=str(self.loaded.path),
            checks=len(self.loaded.plan),
            listen=f"{host}:{self.listen_port}",
            loop=loop_name(asyncio.get_running_loop()),
        )

    async def reload(self) -> list[str]:
        """Reload the config file: apply it if valid, else keep the old plan. Return errors."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                # in a thread: 20k checks take seconds to validate, the loop keeps serving
                loaded = await asyncio.to_thread(
                    load_config, self.loaded.path, self.registry, self.env
                )
            except ConfigErrors as exc:
                self.reload_ok.set(0)
                for error in exc.errors:
                    self.log.error("config_reload_failed", error=str(error))
                self.notifier.ready()
                return [str(e) for e in exc.errors]
            for warning in loaded.warnings:
                self.log.warning("config_warning", warning=str(warning))
            try:
                return await self._apply(loaded)
            except Exception as exc:  # a bug must not pass for a good reload, nor kill the loop
                self.reload_ok.set(0)
                self.log.exception("config_reload_crashed", error=bound_text(repr(exc)))
                self.notifier.ready()
                return [f"reload failed: {bound_text(repr(exc))}"]

    async def _apply(self, loaded: LoadedConfig) -> list[str]:
        """Swap in a validated config: plan, exposition labels, traps, health."""
        loaded = loaded.running()
        if loaded.config.web != self.loaded.config.web:
            self.log.warning("config_web_change_needs_restart")
        if (loaded.config.alerting, loaded.config.state_dir) != (
            self.loaded.config.alerting,
            self.loaded.config.state_dir,
        ):
            self.log.warning("config_alerting_change_needs_restart")
        if loaded.config.scheduler != self.loaded.config.scheduler:
            self.log.warning("config_scheduler_change_needs_restart")
        self.exposition.set_labels({cid: check_labels(c) for cid, c in loaded.plan.items()})
        added, removed, changed = self.scheduler.apply({} if self.bus else loaded.plan)
        if self.bus is not None:
            self.bus.set_plan(loaded.plan)
        for probe in self.registry:  # drop per-check state of checks that left the plan
            if isinstance(probe, KeepsCheckState):
                probe.keep_only({cid for cid, c in loaded.plan.items() if c.kind == probe.kind})
        new_traps = loaded.config.traps
        if self.traps is None or new_traps is None:
            if new_traps != self.loaded.config.traps:
                self.log.warning("config_traps_change_needs_restart")
        else:
            await self.traps.update(loaded.plan, self._trap_section(loaded), new_traps)
        self._reload_health(loaded)
        self.loaded = loaded
        heap.settle(thaw=True)  # the previous config freed, the new one frozen
        self._warm_metrics()  # set_labels let go of the kept gzip blocks
        self.reload_ok.set(1)
        self.reload_time.set(time.time())
        self.log.info(
            "config_reloaded", added=len(added), removed=len(removed), changed=len(changed)
        )
        self.notifier.ready()
        return []

    def _trap_section(self, loaded: LoadedConfig) -> BaseModel | None:
        """Return the config block of the kind decoding notifications (its credentials)."""
        if self._trap_probe is None:
            return None
        section = getattr(loaded.config, self._trap_probe.kind, None)
        return section if isinstance(section, BaseModel) else None

    def _reload_health(self, loaded: LoadedConfig) -> None:
        """Keep the engine (and its rule timers) when the topology is unchanged, else rebuild."""
        old, new = self.loaded.config, loaded.config
        engine = self.health.engine
        if (old.sites, old.components, old.health) == (new.sites, new.components, new.health):
            engine.set_plan(loaded.plan, rules_of(new))
        else:
            fresh = build_engine(new, loaded.plan, logger=self.log, run_now=self.scheduler.run_now)
            fresh.adopt(engine)  # open incidents the change leaves alone go on, unnotified
            self.health.engine = fresh
        self.health.maintenance.set_config(new.maintenance)
        self.health.wake()

    def _warm_metrics(self) -> None:
        """Gzip the page once the first round is in, so the first scrape finds its blocks kept
        (at 20k checks, compressing all of them takes about 0.4 s on a busy core)."""
        if self._warm_task is not None:
            self._warm_task.cancel()

        async def warm() -> None:
            await self.scheduler.first_round_done.wait()
            async for _ in self.exposition.gzip_stream():
                pass

        self._warm_task = asyncio.create_task(warm())

    async def stop(self) -> None:
        """Drain in-flight probes (bounded), stop the web server and tell systemd."""
        self.notifier.stopping()
        self.log.info("daemon_stopping", in_flight=self.scheduler.probing())
        if self.traps is not None:
            await self.traps.stop()
        if self.bus is not None:
            await self.bus.stop()
        await self.scheduler.stop(self.loaded.config.scheduler.drain_timeout)
        if self._probe_state_task is not None:
            self._probe_state_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_state_task
        if self._probe_state is not None:
            await self._probe_state.save(self.registry)
        if self._state_retry_task is not None:
            self._state_retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._state_retry_task
        for probe in self.registry:  # e.g. log out of BMC sessions, while the session is open
            if isinstance(probe, Closing):
                await probe.close()
        await self.health.stop()
        if self._mirror_task is not None:
            self._mirror_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mirror_task
        if self.maintenance_mirror is not None:
            await self.maintenance_mirror.close()
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
        self.health.maintenance.close()
        if self.escalations is not None:
            self.escalations.stop()
        if self._escalation_task is not None:
            await self._escalation_task
        if self.alerts is not None:
            await self.alerts.stop()
        if self._alert_task is not None:
            await self._alert_task
        self.audit.close()
        if self.archive is not None:
            self.archive.close()
        if self._outbox is not None:
            self._outbox.close()  # writes what it holds in memory, if the file takes it now
        for task in (self._watchdog, self._warm_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._runner is not None:
            await self._runner.cleanup()
        self.log.info("daemon_stopped")


async def run_daemon(
    config_path: Path, registry: ProbeRegistry, env: Mapping[str, str] | None = None
) -> int:
    """Run the daemon until SIGTERM or SIGINT; SIGHUP reloads. Return the exit code."""
    from vigie.probes.http import make_session

    env = os.environ if env is None else env
    log = structlog.get_logger()
    loaded = load_config_logged(config_path, registry, env, log)
    if loaded is None:
        return 1
    for warning in loaded.warnings:  # what `vigie check` warns about, in the journal too
        log.warning("config_warning", warning=str(warning))
    notifier = SystemdNotifier.from_env(env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with make_session() as session:
        daemon = Daemon(loaded, registry, session, notifier=notifier, env=env, logger=log)
        reloads: set[asyncio.Task[list[str]]] = set()

        def on_hup() -> None:
            task = asyncio.create_task(daemon.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            await daemon.start()
        except OSError as exc:
            log.error("listen_failed", listen=loaded.config.web.listen, error=str(exc))
            return 1
        except ValueError as exc:  # webconfig.WebConfigError: names the web.yml and the field
            log.error("web_config_invalid", error=str(exc))
            return 1
        await stop.wait()
        await daemon.stop()
        notifier.close()
    return 0
