"""Detection budget: the worst case from a fault to the first notification, term by term."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from vigie.core.rules import DEFAULT_RULE
from vigie.monitor.cli import main
from vigie.monitor.health.budget import (
    Budgets,
    budget_table,
    compute_budgets,
    over_target,
    rules_by_check,
)
from vigie.monitor.health.topology import AnyOf, ComponentSpec, RuleSpec, SiteSpec
from vigie.probes.base import Check
from vigie.probes.redfish import RedfishSettings

SITES = [
    SiteSpec(id="nord"),
    SiteSpec(id="nord-salle-1", parent="nord"),
    SiteSpec(id="nord-salle-2", parent="nord"),
    SiteSpec(id="bellevue"),
]


class _NoSettings(BaseModel):
    """A probe's settings: none of them matter to the budget."""


def _check(cid: str, interval: float = 30.0, timeout: float = 10.0, **labels: str) -> Check:
    return Check(
        id=cid,
        kind="http",
        target="http://127.0.0.1:1/",
        interval=interval,
        timeout=timeout,
        settings=_NoSettings(),
        labels=tuple(sorted(labels.items())),
    )


def _comp(cid: str, kind: str = "server", **fields: Any) -> ComponentSpec:
    return ComponentSpec.model_validate({"id": cid, "kind": kind, **fields})


def _rule(name: str, severity: str, for_: str, checks: list[str]) -> RuleSpec:
    return RuleSpec.model_validate(
        {
            "name": name,
            "expr": "probe_success == 0",
            "severity": severity,
            "for": for_,
            "checks": checks,
        }
    )


# A tier-1 application on a server at the defaults: 30 s interval, 10 s timeout, 10 s group_wait.
SERVER = _comp("srv", site="nord-salle-1", checks=["srv-bmc"])
APP = _comp("dpi", "application", criticality=1, checks=["dpi-web"], depends_on=["srv"])
DEFAULT_PLAN = [_check("srv-bmc"), _check("dpi-web")]


@dataclass(frozen=True)
class Case:
    """One topology and settings, and the budget expected of one component."""

    components: list[ComponentSpec]
    checks: list[Check]
    component: str
    seconds: float | None
    via: str = ""
    terms: tuple[float, float, float, float, float] | None = None  # interval..group_wait
    tier: int | None = None
    rules: list[RuleSpec] = field(default_factory=list)
    confirm_max: float = 60.0
    group_wait: float = 10.0


CASES = {
    "server crash at defaults: 30 + 10 + 0 + 0 (no dependency) + 10": Case(
        [SERVER, APP], DEFAULT_PLAN, "srv", 50.0, "srv", (30, 10, 0, 0, 10), tier=1
    ),
    "tier-1 app at defaults: 30 + 10 + 0 + 10 (its server's check, run at once) + 10": Case(
        [SERVER, APP], DEFAULT_PLAN, "dpi", 60.0, "dpi", (30, 10, 0, 10, 10), tier=1
    ),
    "a down rule's `for` adds to detection": Case(
        [SERVER, APP],
        DEFAULT_PLAN,
        "dpi",
        120.0,
        "dpi",
        (30, 10, 60, 10, 10),
        tier=1,
        rules=[_rule("app_down", "down", "1m", ["dpi-web"])],
    ),
    "a degraded rule's `for` is a deliberate wait, left out": Case(
        [SERVER, APP],
        DEFAULT_PLAN,
        "dpi",
        60.0,
        "dpi",
        (30, 10, 0, 10, 10),
        tier=1,
        rules=[_rule("app_slow", "degraded", "5m", ["dpi-web"])],
    ),
    "a warning rule's `for` on a server is left out": Case(
        [SERVER, APP],
        DEFAULT_PLAN,
        "srv",
        50.0,
        "srv",
        (30, 10, 0, 0, 10),
        rules=[_rule("hot", "warning", "15m", ["srv-bmc"])],
    ),
    "confirmation is bounded by health.confirm_max": Case(
        [SERVER, APP], DEFAULT_PLAN, "dpi", 55.0, "dpi", (30, 10, 0, 5, 10), confirm_max=5.0
    ),
    "confirm_max 0: no confirmation": Case(
        [SERVER, APP], DEFAULT_PLAN, "dpi", 50.0, "dpi", (30, 10, 0, 0, 10), confirm_max=0.0
    ),
    "group_wait 0 (webhooks only)": Case(
        [SERVER, APP], DEFAULT_PLAN, "dpi", 50.0, "dpi", (30, 10, 0, 10, 0), group_wait=0.0
    ),
    "an application is detected through a slower dependency": Case(
        [SERVER, APP],
        [_check("srv-bmc", 60.0, 20.0), _check("dpi-web", 5.0, 2.0)],
        "dpi",
        90.0,
        "srv",
        (60, 20, 0, 0, 10),
        tier=1,
    ),
    "a server's budget is its own checks, the worst of them": Case(
        [_comp("srv", checks=["a", "b"]), APP],
        [_check("a", 10.0, 5.0), _check("b", 60.0, 10.0), _check("dpi-web", 5.0, 2.0)],
        "srv",
        80.0,
        "srv",
        (60, 10, 0, 0, 10),
        tier=1,
    ),
    "checks attach by selector too": Case(
        [_comp("srv", selector={"component": "srv"})],
        [_check("x", 20.0, 5.0, component="srv"), _check("y", 90.0, 5.0, component="other")],
        "srv",
        35.0,
        "srv",
        (20, 5, 0, 0, 10),
    ),
    "a component without checks takes its dependencies' budget": Case(
        [_comp("cluster", "hypervisor_cluster", depends_on=["h1"]), _comp("h1", checks=["h1-bmc"])],
        [_check("h1-bmc", 15.0, 5.0)],
        "cluster",
        30.0,
        "h1",
        (15, 5, 0, 0, 10),
    ),
    "confirmation looks through a dependency without checks, as the engine does": Case(
        [
            _comp("vm", "vm", checks=["vm-ping"], depends_on=["cluster"]),
            _comp("cluster", "hypervisor_cluster", depends_on=[AnyOf(any_of=["h1", "h2"])]),
            _comp("h1", checks=["h1-bmc"]),
            _comp("h2", checks=["h2-bmc"]),
        ],
        [_check("vm-ping", 10.0, 2.0), _check("h1-bmc", 30.0, 4.0), _check("h2-bmc", 30.0, 7.0)],
        "vm",
        29.0,
        "vm",
        (10, 2, 0, 7, 10),
    ),
    "an application with nothing to detect it has no budget": Case(
        [_comp("lonely", "application", criticality=1)], [], "lonely", None
    ),
    "a UPS waits for its site's other power devices (the site roll-up), not another site's": Case(
        [
            _comp("ups-1", "ups", site="nord-salle-1", checks=["ups-1-snmp"]),
            _comp("pdu-2", "pdu", site="nord-salle-2", checks=["pdu-2-snmp"]),
            _comp("ups-b", "ups", site="bellevue", checks=["ups-b-snmp"]),
        ],
        [
            _check("ups-1-snmp", 30.0, 5.0),
            _check("pdu-2-snmp", 30.0, 8.0),
            _check("ups-b-snmp", 30.0, 9.0),
        ],
        "ups-1",
        53.0,
        "ups-1",
        (30, 5, 0, 8, 10),
    ),
    "a UPS counts its on_battery rule's `for` (how a power cut is seen)": Case(
        [_comp("ups-1", "ups", site="nord", checks=["ups-1-snmp"])],
        [_check("ups-1-snmp", 30.0, 10.0)],
        "ups-1",
        80.0,
        "ups-1",
        (30, 10, 30, 0, 10),
        rules=[_rule("on_battery", "warning", "30s", ["ups-1-snmp"])],
    ),
    "a business service takes the worst application under it and its tier": Case(
        [SERVER, APP, _comp("care", "business_service", criticality=2, depends_on=["dpi"])],
        DEFAULT_PLAN,
        "care",
        60.0,
        "dpi",
        (30, 10, 0, 10, 10),
        tier=2,
    ),
    "an application without criticality is tier 4, as the engine ranks it": Case(
        [SERVER, _comp("intranet", "application", checks=["dpi-web"], depends_on=["srv"])],
        DEFAULT_PLAN,
        "srv",
        50.0,
        "srv",
        (30, 10, 0, 0, 10),
        tier=4,
    ),
}


def _budgets(case: Case) -> Budgets:
    return compute_budgets(
        SITES,
        case.components,
        case.rules,
        {c.id: c for c in case.checks},
        confirm_max=case.confirm_max,
        group_wait=case.group_wait,
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_budget_cases(case: Case) -> None:
    """Each component's budget is the sum of its deciding path's terms, named with its source."""
    budget = _budgets(case).components.get(case.component)
    if case.seconds is None:
        assert budget is None
        return
    assert budget is not None
    assert budget.seconds == case.seconds
    assert budget.via == case.via
    assert (budget.interval, budget.timeout, budget.for_, budget.confirm, budget.group_wait) == (
        case.terms
    )
    if case.tier is not None:
        assert budget.tier == case.tier


def test_goal_tier_one_server_crash_pages_within_a_minute_at_defaults() -> None:
    """The issue's goal at defaults: a tier-1 application behind a crashed server, 60 s."""
    budgets = _budgets(Case([SERVER, APP], DEFAULT_PLAN, "dpi", 60.0))
    assert budgets.components["dpi"].seconds <= budgets.page_within[1] == 60.0
    assert over_target(budgets, [SERVER, APP]) == []


def test_over_target_names_the_application_and_the_setting_to_change() -> None:
    """An application over its tier's target is a warning at its place, with what to change."""
    case = CASES["an application is detected through a slower dependency"]
    problems = over_target(_budgets(case), case.components)
    assert len(problems) == 1
    loc, message = problems[0]
    assert loc == ("components", 1)
    assert message.startswith("application 'dpi' (tier 1) may be paged only 90s after a fault,")
    assert "over its target of 60s (health.page_within[1])" in message
    assert "check 'srv-bmc' through 'srv' takes 60s interval + 20s timeout" in message
    assert "lower the interval of check 'srv-bmc'" in message
    assert message.endswith("or raise health.page_within[1]")


def test_over_target_points_at_a_rule_when_its_for_dominates() -> None:
    """When a rule's `for` is the largest term, the advice is to shorten it."""
    case = CASES["a down rule's `for` adds to detection"]
    ((_, message),) = over_target(_budgets(case), case.components)
    assert "shorten `for` of rule 'app_down' on check 'dpi-web'" in message


def test_check_budgets_cover_checks_that_feed_a_component_only() -> None:
    """Each check feeding a component has the worst budget over them; a loose check has none."""
    case = Case([SERVER, APP], [*DEFAULT_PLAN, _check("loose")], "dpi", 60.0)
    checks = _budgets(case).checks
    assert set(checks) == {"srv-bmc", "dpi-web"}
    assert (checks["dpi-web"].component, checks["dpi-web"].seconds) == ("dpi", 60.0)
    assert (checks["srv-bmc"].component, checks["srv-bmc"].seconds) == ("srv", 50.0)


def test_table_lists_worst_first_and_flags_what_is_over() -> None:
    """The --budget table starts with the worst component and marks a missed target OVER."""
    case = CASES["an application is detected through a slower dependency"]
    lines = budget_table(_budgets(case))
    assert lines[0].split() == [
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
        "detected",
        "by",
    ]
    assert lines[1].split() == [
        "dpi",
        "application",
        "1",
        "90s",
        "60s",
        "OVER",
        "60s",
        "20s",
        "0s",
        "0s",
        "10s",
        "srv-bmc",
        "(srv)",
    ]
    assert lines[2].split()[:5] == ["srv", "server", "1", "90s", "60s"]


CONFIG = """\
defaults: {interval: 30s, timeout: 10s}
health:
  page_within: {2: 45s}
checks:
  - {id: srv-bmc, kind: tcp, target: "127.0.0.1:1"}
  - {id: pacs-web, kind: tcp, target: "127.0.0.1:1"}
sites: [{id: nord}]
components:
  - {id: srv, kind: server, site: nord, checks: [srv-bmc]}
  - id: pacs
    kind: application
    site: nord
    criticality: 2
    checks: [pacs-web]
    depends_on: [srv]
"""


def test_vigie_check_warns_with_file_and_line_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vigie check --budget` prints the table; a budget over page_within warns at file:line."""
    path = tmp_path / "vigie.yaml"
    path.write_text(CONFIG)
    assert main(["check", "--budget", str(path)]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if "page_within" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: {path}:10:5: components[1]: application 'pacs'")
    assert "may be paged only 60s after a fault, over its target of 45s" in warnings[0]
    assert "lower the interval of check 'pacs-web'" in warnings[0]
    table = out.split("detection budget, worst case from a fault to the first notification:\n")
    assert len(table) == 2
    assert table[1].splitlines()[1].split()[:6] == [
        "pacs",
        "application",
        "2",
        "60s",
        "45s",
        "OVER",
    ]


def test_vigie_check_without_budget_prints_no_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --budget the summary stays as it was: no table, the warning still shown."""
    path = tmp_path / "vigie.yaml"
    path.write_text(CONFIG)
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "detection budget" not in out
    assert "over its target of 45s" in err


def test_page_latency_bench_judges_against_these_budgets(tmp_path: Path) -> None:
    """The bench's hospital budgets 60 s at defaults for both faults, 6 s at 1/10 scale."""
    from tests.bench.page_latency import budgets, hospital, percentile

    def at(scale: float) -> dict[str, float]:
        config = hospital(
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            port=3,
            state=tmp_path / "state",
            scale=scale,
            instance="test",
        )
        return budgets(config, tmp_path)

    assert at(1.0) == {"server crash": 60.0, "power cut": 60.0}
    assert at(10.0) == {"server crash": 6.0, "power cut": 6.0}
    assert (percentile([3.0, 1.0, 2.0], 50), percentile([3.0, 1.0, 2.0], 99)) == (2.0, 3.0)


def test_rules_a_check_settings_bring_count_in_its_budget() -> None:
    """Settings that are a RuleSource (Redfish's shipped rules) add their rules to the check's."""
    bmc = Check(
        id="bmc",
        kind="redfish",
        target="https://127.0.0.1:1",
        interval=60.0,
        timeout=10.0,
        settings=RedfishSettings.model_validate({"auth": "none"}),
    )
    plain = _check("web")
    rules = rules_by_check({"bmc": bmc, "web": plain}, [])
    assert rules["web"] == [DEFAULT_RULE]
    assert rules["bmc"] == [DEFAULT_RULE, *bmc.settings.health_rules()]
    assert len(rules["bmc"]) > 1
