"""Every sentence the health engine writes for people: reasons, incident summaries, details.

One module so that the wording can be reviewed, and translated (the crisis cell reads French),
without touching the logic that decides states and incidents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from vigie.monitor.health.snapshot import ImpactedApp
from vigie.monitor.health.states import State

FLAPPING = "flapping: too many state changes"
MAINTENANCE = "In a maintenance window: not paged."
APPS_NAMED = 5
"""A component incident's summary names this many applications, then `...`."""


def no_result(check_id: str) -> str:
    """A check with no result, or none for too long."""
    return f"no result from check {check_id}"


def rule_active(check_id: str, rule: str, seen: str) -> str:
    """A rule holding on a check, with what was seen (e.g. `probe_success (0) == 0`)."""
    return f"{check_id}: {rule}: {seen}"


def impacted_by(roots: Iterable[str]) -> str:
    """A component failing because of what it depends on."""
    return f"impacted by {', '.join(sorted(roots))}"


def mains_lost(lost_at: float, runtime: float | None) -> str:
    """A site whose every UPS runs on battery: since when, and the runtime left if known."""
    clock = datetime.fromtimestamp(lost_at).strftime("%H:%M")
    what = f"mains lost at {clock}, on battery"
    if runtime is not None:
        minutes = round(runtime / 60)
        unit = "minute" if minutes == 1 else "minutes"
        what += f", about {minutes} {unit} of runtime left"
    return what


def mass_failure(failing: int, members: int) -> str:
    """Many components of a site failing at once."""
    return f"{failing} of {members} components failing"


def recovering(failing: int, members: int) -> str:
    """A site incident that stays open while what failed during it recovers."""
    return f"recovering, {failing} of {members} components still failing"


def site_summary(name: str, what: str, apps: int, at_risk: int | None = None) -> str:
    """A site incident's one-line summary; at_risk: applications on battery, not yet hit."""
    summary = f"{name}: {what}; {apps} applications impacted"
    if at_risk is not None and at_risk > apps:
        summary += f", {at_risk} at risk"
    return summary


def replicas_lost(summary: str, lost: Sequence[str]) -> str:
    """A site incident's summary naming the Vigie replicas that fell with the site."""
    return f"{summary}; {' + '.join(lost)} lost"


def component_summary(
    label: str, state: State, apps: Sequence[ImpactedApp], redundant_only: bool
) -> str:
    """A root cause's one-line summary: its state and the applications it hits."""
    if redundant_only:
        return f"{label} is {state.name}: running without redundancy"
    summary = f"{label} is {state.name}"
    if apps:
        summary += (
            f"; {len(apps)} applications impacted: "
            + ", ".join(a.name for a in apps[:APPS_NAMED])
            + ("..." if len(apps) > APPS_NAMED else "")
        )
    return summary


def application_line(app: ImpactedApp) -> str:
    """One application in an incident's description, with what clinicians do meanwhile."""
    return f"[tier {app.criticality}] {app.name}: {app.state.name}" + (
        f" - degraded mode: {app.degraded_mode}" if app.degraded_mode else ""
    )
