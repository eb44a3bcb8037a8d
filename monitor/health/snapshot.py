"""What the health engine publishes: component statuses, incidents and a snapshot of both.

Plain frozen values, read by the web pages, the API, the alerting and the history; kept apart
from the engine so that readers do not import the machinery that computes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vigie.monitor.health.states import State


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """What the health model says of one component now."""

    id: str
    kind: str
    site: str
    state: State
    own: State
    since: float
    reasons: tuple[str, ...]
    roots: tuple[str, ...]
    maintenance: bool = False


@dataclass(frozen=True, slots=True)
class ImpactedApp:
    """An application hit by an incident, with what clinicians do meanwhile."""

    id: str
    name: str
    criticality: int
    state: State
    degraded_mode: str
    runbook_url: str
    team: str


@dataclass(frozen=True, slots=True)
class Incident:
    """One root cause with its blast radius."""

    key: str
    root_cause: str
    site: str
    severity: str
    started_at: float
    summary: str
    description: str
    impacted: tuple[str, ...]
    applications: tuple[ImpactedApp, ...]
    site_wide: bool = False
    maintenance: bool = False
    runbook_url: str = ""
    component: str = ""
    confirmed: bool = True  # False while held: its dependencies' checks have not spoken yet

    @property
    def id(self) -> str:
        """A readable incident id: root cause and start time."""
        stamp = datetime.fromtimestamp(self.started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.root_cause}@{stamp}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole health picture at one instant."""

    at: float
    components: Mapping[str, ComponentStatus]
    incidents: Mapping[str, Incident]
    sites: Mapping[str, State]
    warnings: Mapping[str, ComponentStatus] = field(default_factory=dict)
