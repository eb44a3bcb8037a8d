"""From check results to component states, root causes and incidents (one per root cause).

Rule trackers per check and the component pass (own state, dependencies, flapping) live
here; the incidents are built in `incidents.py`, their wording in `wording.py`, the topology
graph in `model.py` and the published values in `snapshot.py` (re-exported here).
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from vigie.core.results import ProbeResult, Sample
from vigie.core.rules import DEFAULT_RULE, Rule
from vigie.core.window import Window
from vigie.monitor.exposition import result_samples
from vigie.monitor.health import wording
from vigie.monitor.health.incidents import (
    IncidentInputs,
    SiteRules,
    hold_resolved,
    root_causes,
    site_rollup,
)
from vigie.monitor.health.index import StatusIndex
from vigie.monitor.health.model import APPLICATION_KINDS, POWER_KINDS, Topology
from vigie.monitor.health.snapshot import (
    ComponentStatus,
    ImpactedApp,
    Incident,
    Later,
    Reason,
    Snapshot,
)
from vigie.monitor.health.states import FAILING, NAMES, RANK, SEVERITY_STATE, State
from vigie.monitor.health.topology import (
    ComponentSpec,
    HealthSettings,
    RuleSpec,
    SiteSpec,
    dependency_members,
    selector_matches,
)
from vigie.monitor.i18n import zone_of
from vigie.probes.base import Check, RuleSource

__all__ = [
    "APPLICATION_KINDS",
    "POWER_KINDS",
    "CheckHealth",
    "ComponentStatus",
    "HealthConfig",
    "HealthEngine",
    "ImpactedApp",
    "Incident",
    "RuleTracker",
    "Snapshot",
    "Topology",
    "build_engine",
    "rules_of",
]

_OK, _UNKNOWN, _IMPACTED = State.OK, State.UNKNOWN, State.IMPACTED  # the hot path's constants
Clock = Callable[[], float]
RunNow = Callable[[str, str], bool]
RUNTIME = "ups_battery_runtime_seconds"
"""The sample a UPS's runtime left is read from (a site on battery says it)."""
"""(check id, reason) -> True when granted: the scheduler's bounded on-demand run."""


# --- Rules on checks -------------------------------------------------------------------------


@dataclass(slots=True)
class RuleTracker:
    """One rule on one check: pending (`for`), active, clearing (`clear_for`).

    A rule with `rate()`/`increase()` keeps its conditions' bounded windows here (one per
    rule and check); one with `time()` or a schedule knows when time alone changes it (`due`).
    """

    rule: Rule
    active: bool = False
    pending_since: float | None = None
    clearing_since: float | None = None
    holds: bool = False
    clear_holds: bool = False
    seen: str = ""
    active_since: float = 0.0
    due: float = math.inf
    memory: Window | None = None
    clear_memory: Window | None = None
    said: tuple[Later] | None = dataclasses.field(default=None, compare=False)  # its reason

    def __post_init__(self) -> None:
        self.memory = self.rule.condition.memory()
        self.clear_memory = self.rule.clear.memory() if self.rule.clear is not None else None

    def observe(self, samples: Sequence[Sample], now: float, *, record: bool = True) -> None:
        """Evaluate the rule on a new result (or again at its due time), then advance timers."""
        rule = self.rule
        holds, seen = rule.condition.evaluate(samples, now, self.memory, record=record)
        self.holds = bool(holds)
        if holds is not None:
            self.seen = seen
        if rule.clear is not None:
            clear, clear_seen = rule.clear.evaluate(samples, now, self.clear_memory, record=record)
            self.clear_holds = bool(clear)
            if self.active and clear is not None and not clear:
                self.seen = seen if holds else clear_seen
        else:
            self.clear_holds = not self.holds
        if rule.timed:
            self.due = min(
                rule.condition.due(samples, now, self.memory),
                rule.clear.due(samples, now, self.clear_memory) if rule.clear else math.inf,
                rule.active.next_change(now) if rule.active is not None else math.inf,
            )
        if rule.active is not None and not rule.active.active(now):  # off schedule
            self.holds, self.clear_holds = False, True
            self.active, self.pending_since, self.clearing_since = False, None, None
            return
        self.advance(now)

    def advance(self, now: float) -> None:
        """Apply `for` and `clear_for` with the last evaluation."""
        if not self.active:
            self.clearing_since = None
            if not self.holds:
                self.pending_since = None
                return
            if self.pending_since is None:
                self.pending_since = now
            if now - self.pending_since >= self.rule.for_:
                self.active, self.active_since = True, now
            return
        self.pending_since = None
        if not self.clear_holds:
            self.clearing_since = None
            return
        if self.clearing_since is None:
            self.clearing_since = now
        if now - self.clearing_since >= self.rule.clear_for:
            self.active, self.clearing_since = False, None

    def reason(self, check_id: str) -> tuple[Later]:
        """Return why the rule holds on the check, as facts: the same (no new object to
        collect) while it sees the same."""
        said = self.said
        if said is None or said[0].args[2] != self.seen:
            said = self.said = (Later(wording.rule_active, check_id, self.rule, self.seen),)
        return said


@dataclass(slots=True)
class CheckHealth:
    """A check's rules and freshness."""

    check: Check
    trackers: list[RuleTracker]
    last_result: float | None = None
    taken: float | None = None  # when the last result's run began (arrival minus duration)
    samples: tuple[Sample, ...] = ()  # the last result's, where read again (HealthEngine.keeps)
    cached: State | None = None  # the state, with cached_why, until cached_until
    cached_why: tuple[Reason, ...] = ()
    cached_until: float = 0.0

    def outcome(self, now: float, stale_intervals: int) -> Hashable:
        """Return what component states read of this check: freshness, and each rule's
        outcome and timers. Two equal outcomes give the same state and reasons."""
        fresh = self.last_result is not None and now - self.last_result <= stale_intervals * max(
            self.check.interval, 1.0
        )
        rules = tuple(
            (
                t.active,
                t.pending_since,
                t.clearing_since,
                t.active_since,
                t.seen if t.active else "",
                t.due,
            )
            for t in self.trackers
        )
        return fresh, rules

    def state(self, now: float, stale_intervals: int) -> tuple[State, tuple[Reason, ...]]:
        """Return the check's state and reasons; cached until a result or a timer changes it.

        The reasons are kept as facts (`Later`): written only if a page or an alert reads them.
        """
        cached = self.cached
        if cached is not None and now < self.cached_until:
            return cached, self.cached_why
        stale_after = stale_intervals * max(self.check.interval, 1.0)
        last = self.last_result
        if last is None or now - last > stale_after:
            self.cached, self.cached_why = _UNKNOWN, (Later(wording.no_result, self.check.id),)
            self.cached_until = math.inf  # until the next result
            return self.cached, self.cached_why
        state, rank = _OK, 0
        reasons: tuple[Reason, ...] = ()
        until = last + stale_after
        for tracker in self.trackers:
            if tracker.due <= now:  # time() or a schedule: judged again on the last samples
                tracker.observe(self.samples, now, record=False)
            until = min(until, tracker.due)
            if tracker.pending_since is not None or tracker.clearing_since is not None:
                tracker.advance(now)  # never starts a timer that was not running before
                if tracker.pending_since is not None:
                    until = min(until, tracker.pending_since + tracker.rule.for_)
                if tracker.clearing_since is not None:
                    until = min(until, tracker.clearing_since + tracker.rule.clear_for)
            if tracker.active:
                severity = SEVERITY_STATE[tracker.rule.severity]
                if RANK[severity] > rank:
                    state, rank = severity, RANK[severity]
                said = tracker.reason(self.check.id)
                reasons = reasons + said if reasons else said
        self.cached, self.cached_why, self.cached_until = state, reasons, until
        return state, reasons


# --- Engine ----------------------------------------------------------------------------------


class HealthEngine:
    """Keeps rule state per check and recomputes components, sites and incidents on demand."""

    def __init__(
        self,
        topology: Topology,
        *,
        stale_intervals: int = 3,
        flap_changes: int = 6,
        flap_window: float = 600.0,
        site_window: float = 120.0,
        site_ratio: float = 0.5,
        resolve_hold: float = 0.0,
        confirm_max: float = 60.0,
        clock: Clock = time.time,
        logger: Any = None,
        run_now: RunNow | None = None,
    ) -> None:
        self.topology = topology
        self.run_now = run_now
        # Active confirmation: when what a component depends on last changed state (a result
        # taken before that is stale for it), when each datacenter showed a sign of power
        # loss, and which incidents have had their deciding checks asked for.
        self._dep_change: dict[str, float] = {}
        self._power_sign: dict[str, float] = {}
        self._asked: set[str] = set()
        self._recovered: set[str] = set()
        self.stale_intervals = stale_intervals
        self.flap_changes = flap_changes
        self.flap_window = flap_window
        self.site_window = site_window
        self.site_ratio = site_ratio
        self.resolve_hold = resolve_hold
        self.confirm_max = confirm_max
        self._confirmed: set[str] = set()
        self._held_since: dict[str, float] = {}
        self._dep_checks: dict[str, list[str]] = {}
        self._open: dict[str, Incident] = {}
        self._last_seen: dict[str, float] = {}
        self.clock = clock
        self.log = logger if logger is not None else structlog.get_logger()
        self.checks: dict[str, CheckHealth] = {}
        self.check_components: dict[str, list[str]] = {}
        self.component_checks: dict[str, list[str]] = collections.defaultdict(list)
        self._healths: dict[str, tuple[CheckHealth, ...]] = {}  # component_checks' CheckHealth
        self.keeps: set[str] = set()  # checks whose last samples are read again (set_plan)
        self.maintenance: dict[str, str] = {}
        self._since: dict[str, tuple[State, float]] = {}
        self._fail_changes: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._failing_since: dict[str, float] = {}
        self._explained: set[str] = set()  # failing now, explained by a dependency meanwhile
        self._incident_start: dict[str, float] = {}
        # Incremental evaluation: the statuses with their indexes, the components a result
        # changed, and when time alone may change one (a heap of (due, component)).
        self.index = StatusIndex(topology)
        self._dirty: set[str] = set()
        self._timers: list[tuple[float, str]] = []
        self._timer_at: dict[str, float] = {}  # each component's earliest timer in the heap
        self._full = True  # the next evaluation recomputes everything
        self._maintenance_seen: dict[str, str] = {}
        self._awaited: set[str] = set()
        self.revision = 0  # counts the snapshots that may differ from the one before
        self._debug = True  # the logger shows debug events (read at each evaluation)
        self.snapshot = Snapshot(0.0, {}, {}, {})

    def restore(
        self, incident_start: Mapping[str, float], since: Mapping[str, tuple[State, float]]
    ) -> None:
        """Take back incident start times and component `since` saved before a restart."""
        self._incident_start.update(incident_start)
        self._confirmed.update(incident_start)  # saved incidents were paged: never held again
        self._since.update(since)
        for cid, (state, at) in since.items():
            if state.failing:
                self._failing_since[cid] = at
        self._full = True

    def adopt(self, old: HealthEngine) -> None:
        """Take over a running engine's state after a reload that changed the topology.

        Unchanged checks keep their rule timers and results, components their states, and
        incidents their keys, starts and confirmation: an incident whose root and impacted set
        the new topology leaves alone goes on as it was, with no notification.
        """
        for check_id, health in old.checks.items():
            mine = self.checks.get(check_id)
            if (
                mine is not None
                and mine.check == health.check
                and [t.rule for t in mine.trackers] == [t.rule for t in health.trackers]
            ):
                self.checks[check_id] = health
        self._healths = self._component_healths()
        comps = self.topology.components
        self._since = {k: v for k, v in old._since.items() if k in comps}
        self._failing_since = {k: v for k, v in old._failing_since.items() if k in comps}
        for cid, changes in old._fail_changes.items():
            if cid in comps:
                self._fail_changes[cid] = changes
        self._explained = {c for c in old._explained if c in comps}
        self._dep_change = {k: v for k, v in old._dep_change.items() if k in comps}
        self._power_sign = {k: v for k, v in old._power_sign.items() if k in self.topology.sites}
        self._incident_start = dict(old._incident_start)
        self._confirmed = set(old._confirmed)
        self._held_since = dict(old._held_since)
        self._asked = set(old._asked)
        self._recovered = set(old._recovered)
        self._open = dict(old._open)
        self._last_seen = dict(old._last_seen)
        self.maintenance = dict(old.maintenance)
        self.snapshot = old.snapshot
        self._full = True

    def durable_state(self) -> tuple[dict[str, float], dict[str, tuple[State, float]]]:
        """Return what must survive a restart: incident starts and component states.

        A held (unconfirmed) incident is left out: restored, it would count as already paged.
        """
        held = {k for k, i in self._open.items() if not i.confirmed}
        starts = {k: v for k, v in self._incident_start.items() if k not in held}
        return starts, dict(self._since)

    def set_plan(
        self,
        plan: Mapping[str, Check],
        rules: Sequence[tuple[Rule, Sequence[str], Mapping[str, str]]] = (),
    ) -> None:
        """Attach checks to components and rules to checks; keep trackers of unchanged checks."""
        old = self.checks
        self._dep_checks = {}
        self.checks = {}
        self.check_components = {}
        self.component_checks = collections.defaultdict(list)
        for cid, check in plan.items():
            labels = dict(check.labels)
            check_rules = [DEFAULT_RULE, *_profile_rules(check)]
            check_rules += [
                r for r, ids, sel in rules if cid in ids or selector_matches(sel, labels)
            ]
            previous = old.get(cid)
            if (
                previous is not None
                and previous.check == check
                and [t.rule for t in previous.trackers] == check_rules
            ):
                self.checks[cid] = previous
            else:
                self.checks[cid] = CheckHealth(check, [RuleTracker(r) for r in check_rules])
            comps = list(self.topology.by_check.get(cid, ()))
            for key, value in labels.items():
                for comp_id in self.topology.by_selector.get((key, value), ()):
                    selector = self.topology.components[comp_id].selector
                    if comp_id not in comps and selector_matches(selector, labels):
                        comps.append(comp_id)
            self.check_components[cid] = comps
            for comp in comps:
                self.component_checks[comp].append(cid)
        comps_spec = self.topology.components
        self.keeps = {
            cid
            for cid, health in self.checks.items()
            if any(t.rule.timed for t in health.trackers)
            or any(comps_spec[c].kind == "ups" for c in self.check_components[cid])
        }
        self._healths = self._component_healths()
        self._full = True  # a new plan: every component is recomputed at the next evaluation

    def observe(self, check_id: str, result: ProbeResult | None) -> bool:
        """Feed a check result to its rules; return True when it changed what the model says.

        A result that leaves every rule's outcome and timer as they were (the common case: a
        check passing again) changes nothing: no component is marked for the next evaluation.
        """
        health = self.checks.get(check_id)
        if health is None or result is None:
            return False
        now = self.clock()
        before = health.outcome(now, self.stale_intervals)
        health.last_result = now
        health.taken = now - min(max(result.duration, 0.0), health.check.timeout)
        health.cached = None
        samples = result_samples(result)
        # Kept only where read again: 60,000 objects replaced every interval at 20,000 checks
        # were most of what the garbage collector's young collections scanned.
        health.samples = tuple(samples) if check_id in self.keeps else ()
        for tracker in health.trackers:
            tracker.observe(samples, now)
        comps = self.check_components.get(check_id, ())
        if health.outcome(now, self.stale_intervals) != before:
            if comps:
                # Its state now, while the result is at hand: the evaluation that follows a
                # site-wide failure then reads thousands of states instead of working them out.
                health.state(now, self.stale_intervals)
            self._dirty.update(comps)
            return bool(comps)
        # The incident pass reads results directly (confirmation, power devices answering, a
        # UPS's runtime left): a result awaited there asks for an evaluation, recomputing none.
        return check_id in self._awaited

    def window_points(self) -> int:
        """Return the points the rules' rate()/increase() windows hold (the memory they cost:
        at most 64 series x 259 points per rule and check, about 100 bytes a point)."""
        return sum(
            window.size()
            for health in self.checks.values()
            for tracker in health.trackers
            for window in (tracker.memory, tracker.clear_memory)
            if window is not None
        )

    def _component_healths(self) -> dict[str, tuple[CheckHealth, ...]]:
        """Return each component's CheckHealth objects (what `_own_state` reads: no lookup
        by check id per check and evaluation)."""
        checks = self.checks
        return {cid: tuple(checks[c] for c in ids) for cid, ids in self.component_checks.items()}

    def samples_of(self, component: str) -> list[Sample]:
        """Return the latest samples of every check of a component that keeps them: a UPS's
        (its runtime left), or one with a rule that time alone changes (`keeps`)."""
        out: list[Sample] = []
        for cid in self.component_checks.get(component, ()):
            out.extend(self.checks[cid].samples)
        return out

    def _own_state(self, cid: str, now: float) -> tuple[State, tuple[Reason, ...], float]:
        """Worst state of the component's checks; UNKNOWN only when none of them is known.

        Also return when the first of those states may change with time alone (a timer).
        """
        own, rank = _OK, 0
        known = False
        reasons: tuple[Reason, ...] = ()
        stale: tuple[Reason, ...] = ()
        due = math.inf
        for health in self._healths.get(cid, ()):
            state = health.cached
            until = health.cached_until
            if state is not None and now < until:  # health.state()'s cache
                why = health.cached_why
            else:
                state, why = health.state(now, self.stale_intervals)
                until = health.cached_until
            if until < due:  # noqa: PLR1730 - min() is a call per check and evaluation
                due = until
            if state is _UNKNOWN:
                stale += why
                continue
            known = True
            if state is not _OK:
                if RANK[state] > rank:
                    own, rank = state, RANK[state]
                reasons += why
        if stale and not known:
            return _UNKNOWN, stale, due
        return own, reasons, due

    def _stale(self, cid: str) -> bool:
        """True when a check of cid has no result taken since its dependencies last changed."""
        changed = self._dep_change.get(cid)
        if changed is None:
            return False
        for check_id in self.component_checks.get(cid, ()):
            taken = self.checks[check_id].taken
            if taken is None or taken < changed:
                return True
        return False

    def _flapping(self, cid: str, failing: bool, explained: bool, now: float) -> bool:
        """Count failing/not-failing changes in the window; True while there are too many.

        A failure that its dependencies explain (at any moment of it) is no flap: its changes
        are taken back, so a component hit by two outages of its cause is not FLAPPING. Asked
        only of a component failing now or counted before (the common case, never failed in
        the window and not failing now, is told apart by the caller without a call).
        """
        was = cid in self._failing_since
        changes = self._fail_changes[cid]
        if failing != was:
            if failing:
                changes.append(now)
                self._failing_since[cid] = now
            else:
                self._failing_since.pop(cid, None)
                if cid in self._explained:
                    self._explained.discard(cid)
                else:
                    changes.append(now)
        if failing and explained and cid not in self._explained:
            self._explained.add(cid)
            began = self._failing_since[cid]
            if began in changes:  # a few at most; runs for each component of a failing site
                changes.remove(began)
        while changes and now - changes[0] > self.flap_window:
            changes.popleft()
        return len(changes) >= self.flap_changes

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, *, full: bool = False) -> Snapshot:
        """Bring components, sites and incidents up to date now; return the snapshot.

        Only components whose results or timers changed are recomputed, with what depends on
        them; when nothing changed and no incident is open, this is the last snapshot again.
        `full` (and the first evaluation, a new plan, a maintenance change) recomputes every
        component from scratch: the reference the incremental path is tested against.
        """
        now = self.clock()
        self._debug = _debug_enabled(self.log)
        if full or self._full or self.maintenance != self._maintenance_seen:
            self._full = False
            self._maintenance_seen = dict(self.maintenance)
            self._dirty.clear()
            self._timers.clear()
            self._timer_at.clear()
            self.index.clear()
            recovered: set[str] = set()
            for cid in self.topology.order:
                self.index.put(self._component(cid, now, recovered))
            changed = True
        else:
            todo, self._dirty = self._dirty, set()
            timers, timer_at = self._timers, self._timer_at
            while timers and timers[0][0] <= now:
                at, cid = heapq.heappop(timers)
                if timer_at.get(cid) == at:  # else superseded by an earlier one, already run
                    del timer_at[cid]
                    todo.add(cid)
            changed = self._recompute(todo, now) if todo else False
        if not changed and self._quiet():
            self.snapshot = dataclasses.replace(self.snapshot, at=now)
            return self.snapshot
        incidents = self._incidents(now)
        warnings = {
            cid: c
            for cid, c in self.index.warnings().items()
            if not c.maintenance
            and f"site:{self.topology.dc[cid]}" not in incidents  # explained by the site's
            and f"site:{c.site}" not in incidents  # or by its room's
            and not self._power_pending(self.topology.dc[cid], now)  # maybe the site's soon
        }
        components = self.snapshot.components
        if changed or not components:
            components = dict(self.index.status)
        self.revision += 1
        self.snapshot = Snapshot(
            now, components, incidents, self.index.site_states(self.site_ratio), warnings
        )
        return self.snapshot

    def _quiet(self) -> bool:
        """True when time alone changes nothing: nothing failing, open, held or on battery."""
        return not (self.index.failing or self._open or self._held_since or self._power_sign)

    def _recompute(self, todo: Iterable[str], now: float) -> bool:
        """Recompute these components, then what depends on any that changed, in order.

        Return True when a status changed.
        """
        topo = self.topology
        heap = [topo.index[c] for c in todo if c in topo.index]
        heapq.heapify(heap)
        queued = set(heap)
        recovered: set[str] = set()
        changed = False
        while heap:
            cid = topo.order[heapq.heappop(heap)]
            new = self._component(cid, now, recovered)
            old = self.index.put(new)
            if old is new:  # `_component` returns the same object for the same status
                continue
            changed = True
            if old is not None and old.state is new.state and old.roots == new.roots:
                continue
            for dependent in topo.dependents.get(cid, ()):
                at = topo.index[dependent]
                if at not in queued:
                    queued.add(at)
                    heapq.heappush(heap, at)
        return changed

    def _component(self, cid: str, now: float, recovered: set[str]) -> ComponentStatus:
        """Compute one component's status from its checks and its dependencies' statuses.

        Run for each component a change reaches (1,500 after a site-wide failure at 5,000):
        written for speed, with few allocations.
        """
        status = self.index.status
        groups = self.topology.groups[cid]
        own, why, due = self._own_state(cid, now)
        if recovered and not recovered.isdisjoint(self.topology.upstream[cid]):
            self._dep_change[cid] = now  # its results so far predate this recovery
        broken: list[tuple[str, ...]] | None = None
        for members, need in groups:
            healthy = 0
            for m in members:
                dep = status.get(m)
                if dep is not None and dep.state not in FAILING:
                    healthy += 1
            if healthy < need:
                if broken is None:
                    broken = [members]
                else:
                    broken.append(members)
        # Only a failure of its own counts as a flap: not one its dependencies explain,
        # nor one seen in results older than their last change.
        failing = own in FAILING
        counted = failing or cid in self._failing_since or self._fail_changes.get(cid)
        if counted and self._flapping(cid, failing, bool(broken) or self._stale(cid), now):
            own = State.FLAPPING  # held failing: no page storm while it flaps
            why = (*why, wording.FLAPPING)
        if broken and (own in FAILING or own is _UNKNOWN or not self.component_checks.get(cid)):
            dep_roots = {
                root
                for members in broken
                for m in members
                if m in status and status[m].state in FAILING
                for root in status[m].roots
            }
            state, roots = _IMPACTED, tuple(sorted(dep_roots))
            why = (*why, wording.impacted_by_sorted(roots))
        else:
            state, roots = own, ((cid,) if own in FAILING else ())
        prev = self._since.get(cid)
        if prev is not None and prev[0] in FAILING and state not in FAILING:
            recovered.add(cid)  # recovered: what depends on it must be seen again
        self._schedule(cid, now, due)
        spec = self.topology.components[cid]
        since = prev[1] if prev is not None and prev[0] is state else now
        if prev is None or prev[0] is not state:
            self._since[cid] = (state, since)  # else unchanged: no new object to collect
        if prev is not None and prev[0] is not state:
            # IMPACTED changes follow from their root's: debug, so an outage logs its roots.
            impacted = _IMPACTED in (prev[0], state)
            if self._debug or not impacted:  # a site's thousand debug lines skipped unasked
                (self.log.debug if impacted else self.log.info)(
                    "component_state_changed",
                    component=cid,
                    site=spec.site,
                    old=NAMES[prev[0]],
                    new=NAMES[state],
                )
        maintenance = self._in_maintenance(spec)
        old = status.get(cid)
        if (
            old is not None
            and old.state is state
            and old.own is own
            and old.since == since
            and old.roots == roots
            and old.maintenance is maintenance
            and old.why == why
        ):
            return old  # the same status: no new object, and `_recompute` sees it by identity
        return ComponentStatus(  # positional: keywords cost 1,500 times a site-wide failure
            cid, spec.kind, spec.site or "", state, own, since, why, roots, maintenance
        )

    def _schedule(self, cid: str, now: float, due: float) -> None:
        """Note when time alone may change cid: a check's `for`, `clear_for` or staleness
        falling due (`due`, from its checks), or its oldest counted flap leaving the window."""
        changes = self._fail_changes.get(cid)
        if changes and len(changes) >= self.flap_changes:
            due = min(due, changes[-self.flap_changes] + self.flap_window)
        if due < math.inf:
            at = max(due, now)
            pending = self._timer_at.get(cid)
            if pending is None or at < pending:  # one timer per component, the earliest
                self._timer_at[cid] = at
                heapq.heappush(self._timers, (at, cid))

    def _in_maintenance(self, spec: ComponentSpec) -> bool:
        if not self.maintenance:
            return False
        return spec.id in self.maintenance or (
            spec.site is not None
            and (spec.site in self.maintenance or self.topology.dc[spec.id] in self.maintenance)
        )

    def _site_power(
        self, site: str, components: Mapping[str, ComponentStatus]
    ) -> tuple[float, float | None] | None:
        """Return (mains lost at, runtime left) when every UPS of the site runs on battery."""
        ups = self.topology.ups.get(site, [])
        if not ups:
            return None
        lost_at: list[float] = []
        runtimes: list[float] = []
        for comp in ups:
            trackers = [
                t
                for cid in self.component_checks.get(comp, ())
                for t in self.checks[cid].trackers
                if t.rule.name == "on_battery"
            ]
            active = [t for t in trackers if t.active]
            if not active and not components[comp].state.failing:
                return None
            lost_at.extend(t.active_since for t in active)
            runtimes.extend(s.value for s in self.samples_of(comp) if s.name == RUNTIME)
        if not runtimes and all(components[c].state.failing for c in ups):
            runtimes.append(0.0)  # every UPS down or silent on battery: no runtime to count on
        return (
            min(lost_at) if lost_at else components[ups[0]].since,
            min(runtimes) if runtimes else None,
        )

    def _dependency_checks(self, cid: str) -> list[str]:
        """Return the checks of cid's direct dependencies (through those without checks)."""
        cached = self._dep_checks.get(cid)
        if cached is not None:
            return cached
        found: dict[str, None] = {}
        seen = {cid}
        queue = [m for d in self.topology.deps.get(cid, ()) for m in dependency_members(d)]
        while queue:
            member = queue.pop()
            if member in seen or member not in self.topology.components:
                continue
            seen.add(member)
            ids = self.component_checks.get(member)
            if ids:
                found.update(dict.fromkeys(ids))
            else:  # a component without checks takes its state from its own dependencies
                queue.extend(
                    m for d in self.topology.deps.get(member, ()) for m in dependency_members(d)
                )
        self._dep_checks[cid] = list(found)
        return self._dep_checks[cid]

    def _ask(self, check_ids: Iterable[str], reason: str) -> None:
        """Ask the scheduler to run these checks now (it may refuse: its budget is bounded)."""
        if self.run_now is None:
            return
        for check_id in check_ids:
            self.run_now(check_id, reason)

    def _confirm(self, key: str, root: str, started: float, now: float) -> bool:
        """True once a root is known to be one, or health.confirm_max passed.

        Known: its own checks have a result taken after the last change of what it depends
        on (a dependent still failing from before its cause recovered is no root), and its
        dependencies' checks have a result taken after it failed (a dependent failing a moment
        before its cause is seen is no root). Missing results are asked for at once.
        """
        if key in self._confirmed:
            return True
        own = [self.checks[c] for c in self.component_checks.get(root, ()) if c in self.checks]
        deps = [self.checks[c] for c in self._dependency_checks(root) if c in self.checks]
        changed = self._dep_change.get(root)
        own_fresh = changed is None or all(c.taken is not None and c.taken >= changed for c in own)
        if self.confirm_max <= 0 or (not deps and own_fresh):
            self._confirmed.add(key)  # no dependency: a UPS or a SAN array pages at once
            return True
        held = self._held_since.setdefault(key, now)
        fresh = own_fresh and all(
            c.last_result is not None and c.last_result >= started for c in deps
        )
        if not fresh:  # asked again at each evaluation: the gate grants one per timeout
            self._asked.add(key)
            self._ask(
                (c.check.id for c in deps if c.last_result is None or c.last_result < started),
                "confirm",
            )
            if not own_fresh:
                self._ask((c.check.id for c in own), "recheck")
        # Without an answer, the scheduled runs bring one within interval + timeout.
        bound = min(
            self.confirm_max, max(c.check.interval + c.check.timeout for c in [*deps, *own])
        )
        if not fresh and now - held < bound:
            return False
        self._confirmed.add(key)
        self._held_since.pop(key, None)
        self.log.debug(
            "incident_confirmed", incident=key, held_seconds=round(now - held, 3), fresh=fresh
        )
        return True

    def _power_signs(self, dc: str, components: Mapping[str, ComponentStatus]) -> float | None:
        """Return when the first result showing power loss at dc arrived (None: no sign).

        A sign: a UPS on battery, or a UPS or PDU failing.
        """
        first: float | None = None
        for comp in self.topology.power_members.get(dc, ()):
            for check_id in self.component_checks.get(comp, ()):
                health = self.checks[check_id]
                if components[comp].own.failing or any(
                    t.active and t.rule.name == "on_battery" for t in health.trackers
                ):
                    arrived = health.last_result or 0.0
                    first = arrived if first is None else min(first, arrived)
        return first

    def _power_pending(self, dc: str, now: float) -> bool:
        """True while a sign of power loss at dc waits for every power device there to answer."""
        sign = self._power_sign.get(dc)
        if sign is None:
            return False
        waiting = False
        bound = 0.0
        for comp in self.topology.power_members.get(dc, ()):
            for check_id in self.component_checks.get(comp, ()):
                health = self.checks[check_id]
                bound = max(bound, health.check.interval + health.check.timeout)
                if health.last_result is None or health.last_result < sign:
                    waiting = True
        # Without an answer, the scheduled runs bring one within interval + timeout.
        return waiting and now - sign < min(self.confirm_max, bound)

    def _watch_power(self, dc: str, components: Mapping[str, ComponentStatus], now: float) -> bool:
        """Follow power loss signs at dc: on the first, run every power device's check now.

        Return True while the site roll-up waits for them: nothing there is paged meanwhile, so
        a power cut is one page (the site's), never a UPS's first then a resolve.
        """
        first = self._power_signs(dc, components)
        if first is None:
            self._power_sign.pop(dc, None)
            return False
        if dc not in self._power_sign:
            self._power_sign[dc] = first
            self._ask(
                (
                    check_id
                    for comp in self.topology.power_members.get(dc, ())
                    for check_id in self.component_checks.get(comp, ())
                ),
                "power",
            )
        return self._power_pending(dc, now)

    def _incidents(self, now: float) -> dict[str, Incident]:
        """Roll sites up, page each other root cause once, hold what just cleared."""
        topo = self.topology
        components = self.index.status
        roots = self.index.ordered_roots()
        pending = {dc: self._watch_power(dc, components, now) for dc in topo.datacenters}
        inputs = IncidentInputs(
            topology=topo,
            components=components,
            now=now,
            roots=roots,
            impacted_by=self.index.impacted,
            failing_at=self.index.failing_at,
            confirmed={r.id: self._root_confirmed(r, pending, now) for r in roots},
            pending=pending,
            power={site: self._site_power(site, components) for site in topo.sites},
            open=self._open,
            started=self._incident_start,
            maintenance=self.maintenance,
        )
        incidents, absorbed = site_rollup(inputs, SiteRules(self.site_window, self.site_ratio))
        incidents.update(root_causes(inputs, absorbed))
        hold_resolved(incidents, self._open, self._last_seen, now, self.resolve_hold)
        self._recheck(incidents, components)
        self._open = dict(incidents)
        for store in (self._incident_start, self._last_seen, self._held_since):
            for key in [k for k in store if k not in incidents]:
                del store[key]
        self._confirmed.intersection_update(incidents)
        self._asked.intersection_update(incidents)
        self._awaited = self._awaited_checks()
        return incidents

    def _awaited_checks(self) -> set[str]:
        """Return the checks whose next result may decide something held: the checks of held
        roots and of their dependencies, and the power devices of a site showing power loss."""
        awaited: set[str] = set()
        for key in self._held_since:
            root = key.removeprefix("component:")
            awaited.update(self.component_checks.get(root, ()))
            awaited.update(self._dependency_checks(root))
        for dc in self._power_sign:
            for comp in self.topology.power_members.get(dc, ()):
                awaited.update(self.component_checks.get(comp, ()))
        return awaited

    def _root_confirmed(
        self, root: ComponentStatus, pending: Mapping[str, bool], now: float
    ) -> bool:
        """True when a root may page: confirmed, and not waiting for its site's power devices."""
        key = f"component:{root.id}"
        if pending.get(self.topology.dc[root.id], False):
            return key in self._confirmed
        return self._confirm(key, root.id, self._incident_start.get(key, root.since), now)

    def _recheck(
        self, incidents: Mapping[str, Incident], components: Mapping[str, ComponentStatus]
    ) -> None:
        """When a paged root recovers, run what it impacted now: their failed results are old.

        Until a result taken after the recovery, none of them is confirmed as a root of its own.
        """
        for key, previous in self._open.items():
            root = previous.root_cause
            if not previous.confirmed or root not in components or key in self._recovered:
                continue
            if key not in incidents or not components[root].state.failing:
                self._recovered.add(key)
                self._ask(
                    (c for comp in previous.impacted for c in self.component_checks.get(comp, ())),
                    "recheck",
                )
        self._recovered.intersection_update(
            k
            for k, i in incidents.items()
            if i.root_cause in components and components[i.root_cause].state.failing is False
        )


class HealthConfig(Protocol):
    """What the engine reads of a validated config (the daemon's ConfigBase has all of it)."""

    @property
    def sites(self) -> Sequence[SiteSpec]:
        """Datacenters and rooms."""
        ...

    @property
    def components(self) -> Sequence[ComponentSpec]:
        """What can fail and what it depends on."""
        ...

    @property
    def rules(self) -> Sequence[RuleSpec]:
        """The config's rules on checks."""
        ...

    @property
    def health(self) -> HealthSettings:
        """The health model's settings."""
        ...

    @property
    def timezone(self) -> str | None:
        """IANA zone the rules' schedules are read in; None: the host's."""
        ...


def _debug_enabled(log: Any) -> bool:
    """True unless the logger says it drops debug events (structlog's filtering loggers do)."""
    enabled = getattr(log, "is_enabled_for", None)
    return enabled is None or bool(enabled(logging.DEBUG))


def _profile_rules(check: Check) -> list[Rule]:
    """Rules the probe brings with the check's settings (an SNMP profile's, Redfish's)."""
    settings = check.settings
    return settings.health_rules() if isinstance(settings, RuleSource) else []


def build_engine(
    config: HealthConfig,
    plan: Mapping[str, Check],
    clock: Clock = time.time,
    logger: Any = None,
    run_now: RunNow | None = None,
) -> HealthEngine:
    """Build a health engine from a validated config and its plan.

    run_now is the scheduler's bounded on-demand run (active confirmation); None: passive.
    """
    settings = config.health
    engine = HealthEngine(
        Topology(config.sites, config.components),
        stale_intervals=settings.stale_intervals,
        flap_changes=settings.flapping.changes,
        flap_window=settings.flapping.window,
        site_window=settings.site_window,
        site_ratio=settings.site_ratio,
        resolve_hold=settings.resolve_hold,
        confirm_max=settings.confirm_max,
        clock=clock,
        logger=logger,
        run_now=run_now,
    )
    engine.set_plan(plan, rules_of(config))
    return engine


def rules_of(config: HealthConfig) -> list[tuple[Rule, Sequence[str], Mapping[str, str]]]:
    """Return the config's rules with the checks and selector they apply to (schedules in the
    config's time zone)."""
    zone = zone_of(config.timezone)
    return [(r.rule(zone), tuple(r.checks), dict(r.selector)) for r in config.rules]
