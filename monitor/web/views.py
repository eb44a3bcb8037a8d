"""What the pages show, as plain frozen dataclasses: built from the read model, rendered by Jinja.

Each page is one dataclass whose fields are the template's variables; rows are dataclasses too,
so a page can be built and inspected in a test without a daemon, a web server or a template.
Times are epoch seconds (the templates format them); texts from targets are already bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vigie.monitor.health.snapshot import ImpactedApp, Incident
from vigie.monitor.web.svg import Track


def iso(ts: float) -> str:
    """Return an epoch time as ISO 8601 UTC."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# --- rows shared by pages and the JSON API ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteRow:
    """A site or room with its state (UNKNOWN before the first evaluation)."""

    id: str
    name: str
    parent: str | None
    state: str


@dataclass(frozen=True, slots=True)
class CheckRow:
    """A check of the plan with its last result; `at` is ISO 8601 as the API gives it."""

    id: str
    kind: str
    target: str
    labels: dict[str, str]
    interval: float
    success: bool | None
    error: str | None
    at: str | None


@dataclass(frozen=True, slots=True)
class RecoveryRow:
    """An application that failed: its state now, when it fell, when it came back."""

    id: str
    name: str
    criticality: int
    state: str
    back: bool
    down_since: float | None
    back_at: float | None
    stable_for_seconds: float | None
    degraded_mode: str = ""

    def json(self) -> dict[str, Any]:
        """The row as /api/v1/recovery gives it (ISO 8601 times)."""
        return {
            "id": self.id,
            "name": self.name,
            "criticality": self.criticality,
            "state": self.state,
            "back": self.back,
            "down_since": None if self.down_since is None else iso(self.down_since),
            "back_at": None if self.back_at is None else iso(self.back_at),
            "stable_for_seconds": self.stable_for_seconds,
        }


# --- rows of the pages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComponentRef:
    """A link to a component with its state."""

    id: str
    name: str
    state: str


@dataclass(frozen=True, slots=True)
class KindRef:
    """A link to a component with its kind and state."""

    id: str
    name: str
    kind: str
    state: str


@dataclass(frozen=True, slots=True)
class AppRow:
    """An application on the overview: state, why it fails and what to do meanwhile."""

    id: str
    name: str
    criticality: int | None
    state: str
    failing: bool
    since: float
    degraded_mode: str
    runbook_url: str
    roots: tuple[ComponentRef, ...]
    incident: str | None
    maintenance: bool


@dataclass(frozen=True, slots=True)
class IncidentCard:
    """An open incident on the overview."""

    id: str
    severity: str
    summary: str
    started: float
    maintenance: bool
    root_name: str
    site_name: str
    causes: tuple[ComponentRef, ...]
    applications: tuple[ImpactedApp, ...]
    paged: bool = False
    """On-call escalation runs for it (alerting.oncall)."""
    acked_by: str | None = None
    acked_at: float | None = None


@dataclass(frozen=True, slots=True)
class WarningRow:
    """A component in WARNING with its reasons."""

    id: str
    name: str
    reasons: tuple[str, ...]
    since: float


@dataclass(frozen=True, slots=True)
class Cause:
    """A failing component at the root of an incident."""

    id: str
    name: str
    state: str
    since: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImpactedRow:
    """An application an incident impacts, with its degraded mode and runbook."""

    id: str
    name: str
    criticality: int
    state: str
    since: float | None
    degraded_mode: str
    runbook_url: str
    team: str


@dataclass(frozen=True, slots=True)
class Change:
    """One state change on an incident's timeline (`was`: the state before, or 'first seen')."""

    at: float
    id: str
    name: str
    was: str
    state: str
    event: str = ""
    """A change of no component: `mains_lost` (the site's UPS all went on battery)."""


@dataclass(frozen=True, slots=True)
class Recovered:
    """A component of an incident's reach that failed and has come back."""

    id: str
    name: str
    kind: str
    down_since: float
    back_at: float
    stable_for: float | None


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One sample of a check's last result, labels as one bounded text."""

    name: str
    labels: str
    value: float


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One past result of a check."""

    at: float
    success: bool
    duration: float
    error: str | None


@dataclass(frozen=True, slots=True)
class CheckDetail:
    """A check feeding a component: its last result, some samples and its recent results."""

    id: str
    kind: str
    target: str
    interval: float
    success: bool | None
    error: str | None
    at: float | None
    duration: float | None
    samples: tuple[SampleRow, ...]
    more_samples: int
    history: tuple[ResultRow, ...]


@dataclass(frozen=True, slots=True)
class DepGroup:
    """One dependency: a plain component, or a group of which `need` must be healthy."""

    group: bool
    need: int
    members: tuple[ComponentRef, ...]


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """One recorded state change of a component."""

    at: float
    state: str


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A component's detection budget term by term, with the name of what decides it."""

    seconds: float
    target: float | None
    over_target: bool
    tier: int | None
    check: str
    via: str
    via_name: str
    interval: float
    timeout: float
    for_: float
    confirm: float
    group_wait: float


# --- pages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overview:
    """What the crisis cell sees first: sites, open incidents, applications, failing checks."""

    now: float
    evaluated: float
    sites: tuple[SiteRow, ...]
    incidents: tuple[IncidentCard, ...]
    apps: tuple[AppRow, ...]
    apps_down: int
    warnings: tuple[WarningRow, ...]
    failing_checks: tuple[CheckRow, ...]
    recovered: int


@dataclass(frozen=True, slots=True)
class IncidentPage:
    """Root cause, impacted applications, other impacted components, what recovered, timeline."""

    now: float
    incident: Incident
    started: float
    root_name: str
    site_name: str
    causes: tuple[Cause, ...]
    apps: tuple[ImpactedRow, ...]
    runbook_url: str
    impacted_other: tuple[KindRef, ...]
    timeline: tuple[Change, ...]
    recovered: tuple[Recovered, ...]


@dataclass(frozen=True, slots=True)
class ComponentPage:
    """A component: state and why, its checks with results, dependencies, dependents, history."""

    now: float
    id: str
    name: str
    kind: str
    site: str
    criticality: int | None
    team: str
    runbook_url: str
    degraded_mode: str
    state: str | None
    reasons: tuple[str, ...]
    since: float | None
    roots: tuple[ComponentRef, ...]
    checks: tuple[CheckDetail, ...]
    deps: tuple[DepGroup, ...]
    dependents: tuple[ComponentRef, ...]
    transitions: tuple[TransitionRow, ...]
    incident: str | None
    budget: BudgetView | None


@dataclass(frozen=True, slots=True)
class RecoveryBoard:
    """Applications after an outage: still down first, then the most recently back."""

    now: float
    rows: tuple[RecoveryRow, ...]
    down: int
    back: int
    tracks: tuple[Track, ...] = ()
    """Each row's state changes since its outage began, for the pictures (monitor.web.svg)."""
    since: float = 0.0
    """Where the pictures start: a little before the first outage began."""


@dataclass(frozen=True, slots=True)
class ChecksPage:
    """The plain list of checks with their last result."""

    now: float
    checks: tuple[CheckRow, ...]


@dataclass(frozen=True, slots=True)
class NotFound:
    """An unknown incident or component: what was asked for and where to look instead."""

    now: float
    what: str
    hint: str


Page = Overview | IncidentPage | ComponentPage | RecoveryBoard | ChecksPage | NotFound
