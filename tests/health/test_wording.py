"""The engine's sentences for people, in one place (to be translated): what each one says."""

from __future__ import annotations

import time

import pytest

from vigie.monitor.health import wording
from vigie.monitor.health.snapshot import ImpactedApp
from vigie.monitor.health.states import State


def app(i: int, degraded: str = "") -> ImpactedApp:
    """An application of tier 1."""
    return ImpactedApp(f"app-{i}", f"App {i}", 1, State.IMPACTED, degraded, "", "")


def test_reasons() -> None:
    """Reasons name the check, the rule and what was seen; impacted roots are sorted."""
    assert wording.no_result("chk-a") == "no result from check chk-a"
    assert wording.rule_active("chk-a", "probe_failed", "probe_success (0) == 0") == (
        "chk-a: probe_failed: probe_success (0) == 0"
    )
    assert wording.impacted_by(["ups-b", "san"]) == "impacted by san, ups-b"


@pytest.mark.parametrize(
    ("runtime", "tail"),
    [
        (None, ", on battery"),
        (60.0, ", on battery, about 1 minute of runtime left"),
        (900.0, ", on battery, about 15 minutes of runtime left"),
    ],
)
def test_mains_lost(runtime: float | None, tail: str) -> None:
    """Mains lost says the local time and, when known, the runtime left in minutes."""
    lost = time.mktime((2026, 3, 1, 9, 5, 0, 0, 0, -1))
    assert wording.mains_lost(lost, runtime) == "mains lost at 09:05" + tail


def test_site_summary_counts_apps_and_at_risk_only_when_more() -> None:
    """At risk is said only when more applications are at risk than already hit."""
    assert wording.site_summary("Nord", "x", 2) == "Nord: x; 2 applications impacted"
    assert wording.site_summary("Nord", "x", 2, 2) == "Nord: x; 2 applications impacted"
    assert wording.site_summary("Nord", "x", 2, 9) == "Nord: x; 2 applications impacted, 9 at risk"
    assert wording.mass_failure(3, 4) == "3 of 4 components failing"
    assert wording.recovering(1, 4) == "recovering, 1 of 4 components still failing"


def test_component_summary_names_five_apps_then_dots() -> None:
    """A root cause's summary names its first five applications; redundancy lost says so."""
    apps = [app(i) for i in range(7)]
    assert wording.component_summary("SAN", State.DOWN, apps[:2], False) == (
        "SAN is DOWN; 2 applications impacted: App 0, App 1"
    )
    assert wording.component_summary("SAN", State.DOWN, apps, False) == (
        "SAN is DOWN; 7 applications impacted: App 0, App 1, App 2, App 3, App 4..."
    )
    assert wording.component_summary("SAN", State.DOWN, [], False) == "SAN is DOWN"
    assert wording.component_summary("UPS A", State.DOWN, apps, True) == (
        "UPS A is DOWN: running without redundancy"
    )


def test_application_line_gives_the_degraded_mode() -> None:
    """An application's line gives its tier, state and, when set, its degraded mode."""
    assert wording.application_line(app(1)) == "[tier 1] App 1: IMPACTED"
    assert wording.application_line(app(1, "paper")) == (
        "[tier 1] App 1: IMPACTED - degraded mode: paper"
    )
