"""The read model of the web: the one narrow interface the pages and the JSON API read.

`StatusSource` names everything the web shows (health snapshot, topology, checks and their
results, state history, detection budgets, maintenance windows, the incident archive, state_dir
health) and the few operator actions it performs (open or end a maintenance window, reload,
run a check now). The daemon implements it through `DaemonReadModel`; a test implements it by
hand to build pages with no daemon at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from vigie.core.results import ProbeResult
from vigie.monitor.bus.consumer import BusStatus
from vigie.monitor.exposition import MetricsPage, check_labels, label_text, result_samples
from vigie.monitor.health.archive import IncidentArchive
from vigie.monitor.health.budget import Budgets
from vigie.monitor.health.history import Recovery, Transition
from vigie.monitor.health.maintenance import MaintenanceSpec, Window
from vigie.monitor.health.snapshot import Snapshot
from vigie.monitor.health.topology import ComponentSpec, Dependency, SiteSpec
from vigie.monitor.i18n import Speech, zone_of
from vigie.monitor.replicas import ReplicaStatus
from vigie.monitor.web.views import iso
from vigie.probes.base import Check

if TYPE_CHECKING:
    from vigie.monitor.app import Daemon


class TopologyView(Protocol):
    """What the web reads of the topology: sites, components and the dependency graph."""

    @property
    def sites(self) -> Mapping[str, SiteSpec]:
        """Sites and rooms by id."""

    @property
    def components(self) -> Mapping[str, ComponentSpec]:
        """Components by id, with their names, tiers, runbooks and degraded-mode texts."""

    @property
    def deps(self) -> Mapping[str, Sequence[Dependency]]:
        """What each component depends on (plain ids and any_of groups), power feeds included."""

    @property
    def dependents(self) -> Mapping[str, Sequence[str]]:
        """The components depending directly on each component."""

    @property
    def members(self) -> Mapping[str, Sequence[str]]:
        """The components of each datacenter, its rooms included."""

    def datacenter(self, site: str | None) -> str:
        """Return the top-level site a site or room belongs to."""

    def site_name(self, site: str) -> str:
        """Return a site's human name, or its id."""


@dataclass(frozen=True, slots=True)
class ProbeRun:
    """One check run on demand for the debug page: the check, its result, its series as text."""

    check: Check
    result: ProbeResult
    metrics: str


@dataclass(frozen=True, slots=True)
class Paging:
    """How an open incident's on-call escalation stands: acknowledged (by whom, when) or not."""

    acked_by: str | None = None
    acked_at: float | None = None


class StatusSource(Protocol):
    """Everything the status pages and /api/v1 read, and the operator actions they perform."""

    # --- health -------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The last evaluated health: component states, site states, open incidents."""

    def topology(self) -> TopologyView:
        """The topology in force: sites, components, dependencies, applications."""

    def component_checks(self, component: str) -> Sequence[str]:
        """Ids of the checks feeding a component."""

    def transitions(self, component: str) -> Sequence[Transition]:
        """A component's recorded state changes, oldest first."""

    def recovery(self, component: str, now: float) -> Recovery | None:
        """A component's last outage and its recovery, None when it never failed."""

    def recoveries(self, components: Iterable[str], now: float) -> Sequence[Recovery]:
        """The recoveries of those components that failed since Vigie started."""

    def budgets(self) -> Budgets:
        """The detection budgets of the config in force."""

    def maintenance_windows(self) -> Sequence[Window]:
        """Maintenance windows, from the config and from the API."""

    def archive(self) -> IncidentArchive | None:
        """Closed incidents and every state change kept; None without a state_dir."""

    # --- checks -------------------------------------------------------------------------------

    def plan(self) -> Mapping[str, Check]:
        """The checks of the running plan by id."""

    def latest(self, check_id: str) -> ProbeResult | None:
        """A check's last result, None before its first run."""

    def results(self, check_id: str) -> Sequence[ProbeResult]:
        """A check's recent outcomes (results without samples), oldest first."""

    # --- Vigie itself -------------------------------------------------------------------------

    def ready(self) -> bool:
        """True once every check has run once."""

    def state_dir_problem(self) -> str | None:
        """One line saying why state cannot be written (Vigie runs degraded), else None."""

    def speech(self) -> Speech:
        """The config's language and time zone (a page's browser may ask another language)."""

    def metrics(self) -> MetricsPage:
        """The /metrics exposition: every check's series and Vigie's own, streamed by shard."""

    def replica(self) -> ReplicaStatus | None:
        """Which replica answers and how it sees its peers; None without `replicas:`."""

    def workers(self) -> BusStatus | None:
        """The probe workers on NATS and their health; None without `bus:`."""

    def paging(self) -> Mapping[str, Paging]:
        """Open incidents under on-call escalation, by incident key; empty without `oncall`."""

    # --- operator actions ---------------------------------------------------------------------

    def add_maintenance(self, spec: MaintenanceSpec, author: str) -> Window:
        """Open a maintenance window (its target is known) and re-evaluate health at once.

        ValueError (maintenance.TooLong) when it is longer than web.maintenance_max.
        """

    def end_maintenance(self, window_id: str, who: str) -> Window | None:
        """End an open window early and re-evaluate health at once; None when none is open.

        maintenance.NotEndable for a window from the config file.
        """

    def finished_maintenance(self) -> Sequence[Window]:
        """The last windows that finished (ended early or past their end), latest first."""

    async def reload(self) -> list[str]:
        """Reload the config file; return its errors (none: applied)."""

    async def run_check(self, check_id: str) -> ProbeRun | None:
        """Run a check now with its debug lines kept; None for an unknown check."""


class DaemonReadModel:
    """The daemon seen through StatusSource: reads its parts, never hands them out."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def snapshot(self) -> Snapshot:
        """The last evaluated health (the engine in force: a reload may replace it)."""
        return self._daemon.health.engine.snapshot

    def topology(self) -> TopologyView:
        """The topology of the engine in force."""
        return self._daemon.health.engine.topology

    def component_checks(self, component: str) -> Sequence[str]:
        """Ids of the checks the engine attached to a component."""
        return self._daemon.health.engine.component_checks.get(component, ())

    def transitions(self, component: str) -> Sequence[Transition]:
        """A component's recorded state changes, oldest first."""
        return self._daemon.history.transitions(component)

    def recovery(self, component: str, now: float) -> Recovery | None:
        """A component's last outage and its recovery."""
        return self._daemon.history.recovery(component, now)

    def recoveries(self, components: Iterable[str], now: float) -> Sequence[Recovery]:
        """The recoveries of those components that failed."""
        return self._daemon.history.recoveries(components, now)

    def budgets(self) -> Budgets:
        """The detection budgets of the config in force."""
        return self._daemon.loaded.budget()

    def maintenance_windows(self) -> Sequence[Window]:
        """The maintenance book's windows."""
        return list(self._daemon.health.maintenance.windows)

    def archive(self) -> IncidentArchive | None:
        """The daemon's incident archive (state_dir/archive.sqlite)."""
        return self._daemon.archive

    def plan(self) -> Mapping[str, Check]:
        """The scheduler's plan."""
        return self._daemon.scheduler.plan

    def latest(self, check_id: str) -> ProbeResult | None:
        """The result store's last result of a check."""
        return self._daemon.store.latest(check_id)

    def results(self, check_id: str) -> Sequence[ProbeResult]:
        """The result store's recent results of a check, oldest first."""
        return self._daemon.store.history(check_id)

    def ready(self) -> bool:
        """True once the scheduler's first round is done."""
        return self._daemon.scheduler.first_round_done.is_set()

    def state_dir_problem(self) -> str | None:
        """The state_dir monitor's summary, None without a state_dir or when writes work."""
        monitor = self._daemon.state_dir
        return None if monitor is None else monitor.summary()

    def speech(self) -> Speech:
        """web.language and timezone of the config in force."""
        config = self._daemon.loaded.config
        return Speech(config.web.language, zone_of(config.timezone))

    def metrics(self) -> MetricsPage:
        """The daemon's exposition."""
        return self._daemon.exposition

    def replica(self) -> ReplicaStatus | None:
        """The replica set's view now, None when this Vigie runs alone."""
        replicas = self._daemon.replicas
        return None if replicas is None else replicas.status()

    def workers(self) -> BusStatus | None:
        """The bus consumer's view now, None when this Vigie runs its checks itself."""
        bus = self._daemon.bus
        return None if bus is None else bus.status()

    def paging(self) -> Mapping[str, Paging]:
        """The open escalations by incident key (an alert key is `<incident key>/<severity>`);
        an incident paged to several teams counts as acknowledged once one team did."""
        escalations = self._daemon.escalations
        found: dict[str, Paging] = {}
        for esc in escalations.all(open_only=True) if escalations is not None else ():
            key = esc.alert_key.rpartition("/")[0] or esc.alert_key
            if esc.acknowledged and found.get(key, Paging()).acked_at is None:
                found[key] = Paging(esc.acked_by, esc.acked_at)
            else:
                found.setdefault(key, Paging())
        return found

    def add_maintenance(self, spec: MaintenanceSpec, author: str) -> Window:
        """Add the window to the book (kept in state_dir), log it and wake the health loop."""
        daemon = self._daemon
        longest = daemon.loaded.config.web.maintenance_max
        win = daemon.health.maintenance.add(spec, author=author, longest=longest)
        daemon.log.info(
            "maintenance_added",
            window=win.id,
            target=win.target,
            end=iso(win.end),
            reason=win.reason,
            author=win.author,
        )
        daemon.health.wake()
        if daemon.maintenance_mirror is not None:  # replicas: the other holds its pages too
            daemon.maintenance_mirror.opened(win)
        return win

    def end_maintenance(self, window_id: str, who: str) -> Window | None:
        """End the window in the book, log it, wake the health loop (pages resume at once)."""
        daemon = self._daemon
        win = daemon.health.maintenance.end(window_id, who)
        if win is None:
            return None
        daemon.log.info("maintenance_ended", window=win.id, target=win.target, by=win.ended_by)
        daemon.health.wake()
        if daemon.maintenance_mirror is not None:  # replicas: the other's pages resume too
            daemon.maintenance_mirror.ended(win)
        return win

    def finished_maintenance(self) -> Sequence[Window]:
        """The book's last finished windows."""
        return self._daemon.health.maintenance.finished

    async def reload(self) -> list[str]:
        """The daemon's reload."""
        return await self._daemon.reload()

    async def run_check(self, check_id: str) -> ProbeRun | None:
        """Run the check through the scheduler (its limits apply) and render its series."""
        daemon = self._daemon
        check = daemon.scheduler.plan.get(check_id)
        if check is None:
            return None
        result = await daemon.scheduler.run(check, keep_logs=True)
        exp = daemon.exposition
        text = exp.render_text(
            exp.render_samples(label_text(check_labels(check)), result_samples(result))
        )
        return ProbeRun(check, result, text)
