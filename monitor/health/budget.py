"""Detection budget: the worst case from a fault to Alertmanager's first notification.

For the check that detects a fault, the budget is

    interval + timeout   the fault lands just after a run: the next run fails, at worst hung
  + for                  the longest `for` of the check's `down` rules (and `on_battery`
                         for a UPS or a PDU, the power-cut signal)
  + confirmation         active confirmation runs the deciding checks at once: one timeout of
                         the slowest of them, at most health.confirm_max (0 when nothing to run)
  + group_wait           the Alertmanager route's group_wait (alerting.group_wait)

A component's budget is the worst over the checks that can detect its failure; a component
without checks, and an application always, takes the worst over what it depends on too: its
root cause may be detected through a dependency. Slow conditions (degraded and warning rules:
latency over a baseline, a pool filling up) wait on purpose and are left out: the budget
answers "how long until someone knows that something stopped?".
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from prometheus_client.core import GaugeMetricFamily, Metric

from vigie.core.rules import DEFAULT_RULE, Rule
from vigie.monitor.health.topology import (
    DEFAULT_PAGE_WITHIN,
    ComponentSpec,
    RuleSpec,
    SiteSpec,
    dependency_members,
    selector_matches,
)
from vigie.monitor.textformat import FamilyText, TextCollector
from vigie.probes.base import Check, RuleSource

APPLICATION_KINDS = frozenset({"application", "business_service"})
POWER_KINDS = frozenset({"ups", "pdu"})
POWER_RULES = frozenset({"on_battery"})
"""Warning rules that still start a page: a UPS on battery is how a power cut is seen."""
DEFAULT_GROUP_WAIT = 10.0
DEFAULT_TIER = 4
"""The tier of an application without `criticality`, as the health engine ranks it."""

Loc = tuple[int | str, ...]
Problem = tuple[Loc, str]


@dataclass(frozen=True, slots=True)
class CheckBudget:
    """How long one check takes to see a fault: its interval, timeout and longest `for`."""

    check: str
    interval: float
    timeout: float
    for_: float
    rule: str

    @property
    def detect(self) -> float:
        """Seconds from the fault to the rule firing, at worst."""
        return self.interval + self.timeout + self.for_


@dataclass(frozen=True, slots=True)
class Budget:
    """A component's worst case from a fault to the first notification, term by term."""

    component: str
    kind: str
    tier: int | None
    via: str
    check: str
    rule: str
    interval: float
    timeout: float
    for_: float
    confirm: float
    group_wait: float

    @property
    def seconds(self) -> float:
        """The whole budget in seconds."""
        return self.interval + self.timeout + self.for_ + self.confirm + self.group_wait

    def terms(self) -> str:
        """The sum spelt out, e.g. `30s interval + 10s timeout + 0s for + ...`."""
        return (
            f"{_s(self.interval)} interval + {_s(self.timeout)} timeout + {_s(self.for_)} for"
            f" + {_s(self.confirm)} confirmation + {_s(self.group_wait)} group_wait"
        )


def _s(seconds: float) -> str:
    return f"{seconds:g}s"


def rules_by_check(plan: Mapping[str, Check], rules: Sequence[RuleSpec]) -> dict[str, list[Rule]]:
    """Return the rules each check runs: the default, its profile's, the config's."""
    parsed = [(r.rule(), frozenset(r.checks), dict(r.selector)) for r in rules]
    out: dict[str, list[Rule]] = {}
    sources: dict[type, bool] = {}  # per settings class: a runtime Protocol check is slow
    for cid, check in plan.items():
        labels = dict(check.labels)
        found = [DEFAULT_RULE]
        settings = check.settings
        is_source = sources.get(type(settings))
        if is_source is None:
            is_source = sources[type(settings)] = isinstance(settings, RuleSource)
        if is_source:
            found.extend(cast(RuleSource, settings).health_rules())
        found.extend(r for r, ids, sel in parsed if cid in ids or selector_matches(sel, labels))
        out[cid] = found
    return out


def check_budget(check: Check, rules: Iterable[Rule], power: bool = False) -> CheckBudget:
    """Return a check's detection time: interval + timeout + longest `for` of its fault rules."""
    worst = DEFAULT_RULE
    for rule in rules:
        counts = rule.severity == "down" or (power and rule.name in POWER_RULES)
        if counts and rule.for_ > worst.for_:
            worst = rule
    return CheckBudget(check.id, check.interval, check.timeout, worst.for_, worst.name)


class _Graph:
    """What the budget needs of the topology: checks per component, dependencies, sites."""

    def __init__(
        self,
        sites: Sequence[SiteSpec],
        components: Sequence[ComponentSpec],
        plan: Mapping[str, Check],
    ) -> None:
        self.components = {c.id: c for c in components}
        self.parent = {s.id: s.parent for s in sites}
        self.deps = {
            c.id: [m for d in (*c.depends_on, *c.powered_by) for m in dependency_members(d)]
            for c in components
        }
        self.dependents: dict[str, list[str]] = collections.defaultdict(list)
        for cid, deps in self.deps.items():
            for member in deps:
                self.dependents[member].append(cid)
        by_label: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        for check_id, check in plan.items():
            for item in check.labels:
                by_label[item].append(check_id)
        self.checks: dict[str, list[str]] = {}
        for comp in components:
            ids = dict.fromkeys(c for c in comp.checks if c in plan)
            if comp.selector:
                for check_id in by_label.get(min(comp.selector.items()), ()):
                    if selector_matches(comp.selector, dict(plan[check_id].labels)):
                        ids.setdefault(check_id)
            self.checks[comp.id] = list(ids)
        self.power_by_dc: dict[str, list[str]] = collections.defaultdict(list)
        for comp in components:
            if comp.kind in POWER_KINDS:
                self.power_by_dc[self.datacenter(comp.site)].append(comp.id)

    def datacenter(self, site: str | None) -> str:
        """Return the top-level site a room belongs to."""
        seen: set[str] = set()
        while site is not None and self.parent.get(site) and site not in seen:
            seen.add(site)
            site = self.parent[site]
        return site or ""

    def dependency_checks(self, cid: str) -> list[str]:
        """Checks of cid's direct dependencies, through those without checks (as the engine)."""
        found: dict[str, None] = {}
        seen = {cid}
        queue = list(self.deps.get(cid, ()))
        while queue:
            member = queue.pop()
            if member in seen or member not in self.components:
                continue
            seen.add(member)
            if self.checks.get(member):
                found.update(dict.fromkeys(self.checks[member]))
            else:
                queue.extend(self.deps.get(member, ()))
        return list(found)

    def deciding_checks(self, cid: str) -> list[str]:
        """Checks active confirmation runs before cid is paged: its dependencies' and, for a
        power device, every other power device's of its datacenter (the site roll-up)."""
        found = dict.fromkeys(self.dependency_checks(cid))
        comp = self.components[cid]
        if comp.kind in POWER_KINDS:
            for other in self.power_by_dc.get(self.datacenter(comp.site), ()):
                if other != cid:
                    found.update(dict.fromkeys(self.checks.get(other, ())))
        return list(found)

    def order(self) -> list[str]:
        """Dependencies before dependents, without recursion (validation rejects cycles)."""
        done: set[str] = set()
        out: list[str] = []
        for start in self.components:
            stack: list[tuple[str, bool]] = [(start, False)]
            while stack:
                cid, expanded = stack.pop()
                if expanded:
                    out.append(cid)
                    continue
                if cid in done or cid not in self.components:
                    continue
                done.add(cid)
                stack.append((cid, True))
                stack.extend((m, False) for m in self.deps.get(cid, ()) if m not in done)
        return out

    def tiers(self) -> dict[str, int]:
        """Tier of each component: its criticality, else the most critical application on it."""
        tier: dict[str, int] = {}
        apps = [c for c in self.components.values() if c.kind in APPLICATION_KINDS]
        for app in sorted(apps, key=lambda c: c.criticality or DEFAULT_TIER):
            level = app.criticality or DEFAULT_TIER
            stack = [app.id]
            while stack:
                cid = stack.pop()
                if cid in tier or cid not in self.components:
                    continue
                tier[cid] = level
                stack.extend(self.deps.get(cid, ()))
        for comp in self.components.values():
            if comp.criticality is not None and comp.kind not in APPLICATION_KINDS:
                tier[comp.id] = comp.criticality
        return tier


@dataclass(frozen=True, slots=True)
class Budgets:
    """Budgets of every component and every check that feeds one, and the tier targets."""

    components: Mapping[str, Budget]
    checks: Mapping[str, Budget]
    page_within: Mapping[int, float]

    def target(self, budget: Budget) -> float | None:
        """The page_within target of a budget's tier (none for a component serving no tier)."""
        return None if budget.tier is None else self.page_within.get(budget.tier)

    def worst_first(self) -> list[Budget]:
        """Component budgets, the largest first (ties by id)."""
        return sorted(self.components.values(), key=lambda b: (-b.seconds, b.component))


def compute_budgets(
    sites: Sequence[SiteSpec],
    components: Sequence[ComponentSpec],
    rules: Sequence[RuleSpec],
    plan: Mapping[str, Check],
    *,
    confirm_max: float,
    group_wait: float = DEFAULT_GROUP_WAIT,
    page_within: Mapping[int, float] | None = None,
) -> Budgets:
    """Compute every budget; a component nothing can detect, and a check feeding none, has none."""
    graph = _Graph(sites, components, plan)
    check_rules = rules_by_check(plan, rules)
    tiers = graph.tiers()
    own: dict[str, Budget] = {}
    checks: dict[str, Budget] = {}
    for comp in components:
        power = comp.kind in POWER_KINDS
        deciding = [plan[c].timeout for c in graph.deciding_checks(comp.id)]
        confirm = min(confirm_max, max(deciding)) if deciding and confirm_max > 0 else 0.0
        for check_id in graph.checks[comp.id]:
            seen = check_budget(plan[check_id], check_rules[check_id], power)
            budget = Budget(
                component=comp.id,
                kind=comp.kind,
                tier=tiers.get(comp.id),
                via=comp.id,
                check=seen.check,
                rule=seen.rule,
                interval=seen.interval,
                timeout=seen.timeout,
                for_=seen.for_,
                confirm=confirm,
                group_wait=group_wait,
            )
            if _worse(budget, own.get(comp.id)):
                own[comp.id] = budget
            if _worse(budget, checks.get(check_id)):
                checks[check_id] = budget
    reach: dict[str, Budget] = {}
    for cid in graph.order():
        found = own.get(cid)
        for member in graph.deps.get(cid, ()):
            below = reach.get(member)
            if below is not None and (found is None or below.seconds > found.seconds):
                found = below
        if found is not None:
            reach[cid] = found
    out: dict[str, Budget] = {}
    for comp in components:
        best = own.get(comp.id)
        if comp.kind in APPLICATION_KINDS or best is None:
            best = reach.get(comp.id)
        if best is not None:
            out[comp.id] = replace(best, component=comp.id, kind=comp.kind, tier=tiers.get(comp.id))
    targets = dict(DEFAULT_PAGE_WITHIN if page_within is None else page_within)
    return Budgets(components=out, checks=checks, page_within=targets)


def _worse(budget: Budget, than: Budget | None) -> bool:
    """True when budget is larger (ties: the lower check id, so the order of checks is moot)."""
    if than is None or budget.seconds != than.seconds:
        return than is None or budget.seconds > than.seconds
    return budget.check < than.check


def budgets_of(config: Any, plan: Mapping[str, Check]) -> Budgets:
    """Compute the budgets of a validated config (a ConfigBase) and its plan."""
    alerting = getattr(config, "alerting", None)
    group_wait = DEFAULT_GROUP_WAIT if alerting is None else float(alerting.group_wait)
    return compute_budgets(
        config.sites,
        config.components,
        config.rules,
        plan,
        confirm_max=float(config.health.confirm_max),
        group_wait=group_wait,
        page_within=config.health.page_within,
    )


def advice(budget: Budget) -> str:
    """Name the setting whose change shortens a budget most: its largest term."""
    terms = [
        (budget.interval, f"lower the interval of check {budget.check!r}"),
        (budget.timeout, f"lower the timeout of check {budget.check!r}"),
        (budget.for_, f"shorten `for` of rule {budget.rule!r} on check {budget.check!r}"),
        (
            budget.confirm,
            f"lower the timeout of the checks {budget.via!r} depends on, or health.confirm_max",
        ),
        (budget.group_wait, "lower alerting.group_wait (and the Alertmanager route's group_wait)"),
    ]
    return max(terms, key=lambda t: t[0])[1]


def over_target(budgets: Budgets, components: Sequence[ComponentSpec]) -> list[Problem]:
    """Warnings, located on each application whose budget is over its tier's target."""
    problems: list[Problem] = []
    for i, comp in enumerate(components):
        budget = budgets.components.get(comp.id)
        if comp.kind not in APPLICATION_KINDS or budget is None:
            continue
        target = budgets.target(budget)
        if target is None or budget.seconds <= target:
            continue
        via = "" if budget.via == comp.id else f" through {budget.via!r}"
        problems.append(
            (
                ("components", i),
                f"application {comp.id!r} (tier {budget.tier}) may be paged only"
                f" {_s(budget.seconds)} after a fault, over its target of {_s(target)}"
                f" (health.page_within[{budget.tier}]): check {budget.check!r}{via} takes"
                f" {budget.terms()}; {advice(budget)}, or raise health.page_within[{budget.tier}]",
            )
        )
    return problems


def budget_table(budgets: Budgets) -> list[str]:
    """Lines of `vigie check --budget`: components worst first, then checks worst first."""
    header = (
        "component",
        "kind",
        "tier",
        "budget",
        "target",
        "interval",
        "timeout",
        "for",
        "confirm",
        "group_wait",
        "detected by",
    )
    rows: list[tuple[str, ...]] = [header]
    for b in budgets.worst_first():
        target = budgets.target(b)
        over = " OVER" if target is not None and b.seconds > target else ""
        by = b.check if b.via == b.component else f"{b.check} ({b.via})"
        rows.append(
            (
                b.component,
                b.kind,
                "-" if b.tier is None else str(b.tier),
                _s(b.seconds),
                ("-" if target is None else _s(target)) + over,
                _s(b.interval),
                _s(b.timeout),
                _s(b.for_),
                _s(b.confirm),
                _s(b.group_wait),
                by,
            )
        )
    lines = _columns(rows)
    checks = sorted(budgets.checks.values(), key=lambda b: (-b.seconds, b.check))
    check_rows: list[tuple[str, ...]] = [("check", "budget", "component", "rule")]
    check_rows += [(b.check, _s(b.seconds), b.component, b.rule) for b in checks]
    return [*lines, "", *_columns(check_rows)]


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def budget_json(budget: Budget, target: float | None) -> dict[str, Any]:
    """Serialise a budget for /api/v1/components and the component page, term by term."""
    return {
        "seconds": budget.seconds,
        "target": target,
        "over_target": target is not None and budget.seconds > target,
        "tier": budget.tier,
        "check": budget.check,
        "via": budget.via,
        "rule": budget.rule,
        "interval": budget.interval,
        "timeout": budget.timeout,
        "for": budget.for_,
        "confirm": budget.confirm,
        "group_wait": budget.group_wait,
    }


BUDGET_HELP = (
    "Worst case from a fault of the component to the first notification (detection"
    " budget: interval + timeout + for + confirmation + group_wait)."
)
BUDGET_LABELS = ("component", "kind", "tier")


class BudgetCollector(TextCollector):
    """Exposes vigie_page_budget_seconds from the budgets of the config in force."""

    def __init__(self, budgets: Callable[[], Budgets]) -> None:
        self._budgets = budgets
        self._family = FamilyText("vigie_page_budget_seconds", "gauge", BUDGET_HELP, BUDGET_LABELS)
        self._kept: tuple[Budgets, str] | None = None  # the text, until a reload's new budgets

    def collect(self) -> Iterator[Metric]:
        """Yield one gauge per component that something can detect."""
        family = GaugeMetricFamily(
            "vigie_page_budget_seconds", BUDGET_HELP, labels=list(BUDGET_LABELS)
        )
        for labels, seconds in _budget_rows(self._budgets()):
            family.add_metric(list(labels), seconds)
        yield family

    def text(self) -> str:
        """Write the same family as text, once per config."""
        budgets = self._budgets()
        kept = self._kept
        if kept is None or kept[0] is not budgets:
            kept = self._kept = (budgets, self._family.render(_budget_rows(budgets)))
        return kept[1]


def _budget_rows(budgets: Budgets) -> Iterator[tuple[tuple[str, ...], float]]:
    for b in list(budgets.components.values()):
        yield (b.component, b.kind, "" if b.tier is None else str(b.tier)), b.seconds
