"""Incidents to alerts: one alert per incident and per warning not impacted by another."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from vigie.monitor.alerting.model import Alert
from vigie.monitor.health import wording
from vigie.monitor.health.engine import ComponentStatus, Incident, Snapshot
from vigie.monitor.i18n import Speech

ANNOTATION_LIMIT = 4000
"""Alertmanager and pagers cope badly with huge annotations: keep them bounded."""


def _bounded(text: str) -> str:
    return text if len(text) <= ANNOTATION_LIMIT else text[: ANNOTATION_LIMIT - 1] + "…"


ENGLISH = Speech("en")


def incident_alert(incident: Incident, url: str = "", speech: Speech = ENGLISH) -> Alert:
    """Return the alert of an incident, its annotations in the config's language."""
    if incident.site_wide:
        name = "VigieSiteIncident"
    elif incident.severity == "warning":
        name = "VigieRedundancyLost"
    else:
        name = "VigieIncident"
    labels = {
        "alertname": name,
        "severity": incident.severity,
        "site": incident.site,
        "component": incident.component,
        "root_cause": incident.root_cause,
    }
    degraded = "\n".join(
        speech.say(wording.degraded_line(a)) for a in incident.applications if a.degraded_mode
    )
    annotations = {
        "summary": speech.say(incident.summary),
        "description": speech.say(incident.description),
        "runbook_url": incident.runbook_url,
        "degraded_mode": degraded,
        "incident": incident.id,
    }
    return Alert(
        # The severity is part of the key: a changed severity is a new alert at Alertmanager
        # (labels make its identity), and the old one gets its resolve.
        key=f"{incident.key}/{incident.severity}",
        labels={k: v for k, v in labels.items() if v},
        annotations={k: _bounded(v) for k, v in annotations.items() if v},
        starts_at=datetime.fromtimestamp(incident.started_at, UTC),
        generator_url=url,
    )


def warning_alert(status: ComponentStatus, url: str = "", speech: Speech = ENGLISH) -> Alert:
    """Return the alert of a component in WARNING that nothing else explains."""
    labels = {
        "alertname": "VigieComponentWarning",
        "severity": "warning",
        "site": status.site,
        "component": status.id,
        "root_cause": status.id,
    }
    return Alert(
        key=f"warning:{status.id}",
        labels={k: v for k, v in labels.items() if v},
        annotations={
            "summary": speech.say(wording.warning_summary(status.id)),
            "description": _bounded("\n".join(speech.say(r) for r in status.reasons)),
        },
        starts_at=datetime.fromtimestamp(status.since, UTC),
        generator_url=url,
    )


class AlertSync(Protocol):
    """The dispatcher's side: make a set of alerts the firing set; tell which are firing."""

    def sync(self, alerts: Iterable[Alert], at: datetime | None = None) -> None:
        """Fire or update these alerts, resolve the others."""
        ...

    def active(self) -> dict[str, Alert]:
        """Return the firing alerts by key."""
        ...


class IncidentNotifier:
    """Turns each health snapshot into the set of firing alerts."""

    def __init__(
        self,
        target: AlertSync,
        *,
        url: str = "",
        speech: Speech = ENGLISH,
        replica_hold: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._target = target
        self._url = url
        self._speech = speech  # the config's language: the cell reads pages as it pages
        self._replica_hold = replica_hold
        self._clock = clock

    def alerts(self, snapshot: Snapshot) -> list[Alert]:
        """Return the alerts a snapshot calls for."""
        firing = self._target.active()
        wanted: list[Alert] = []
        for incident in snapshot.incidents.values():
            alert = incident_alert(incident, self._url, self._speech)
            if incident.maintenance and alert.key not in firing:
                continue  # a maintenance window holds new pages; the state is still shown
            if not incident.confirmed and alert.key not in firing:
                continue  # held until its dependencies' checks speak: maybe not the root
            if alert.key not in firing and self._replica_held(snapshot, incident):
                continue  # a lost replica waits: if its site fell, the site incident names it
            wanted.append(alert)
        wanted.extend(
            warning_alert(s, self._url, self._speech) for s in snapshot.warnings.values()
        )
        return wanted

    def _replica_held(self, snapshot: Snapshot, incident: Incident) -> bool:
        """Whether this is a lost Vigie replica's own incident, younger than replica_hold."""
        if not self._replica_hold or incident.site_wide:
            return False
        status = snapshot.components.get(incident.component)
        return (
            status is not None
            and status.kind == "monitor"
            and self._clock() - incident.started_at < self._replica_hold
        )

    def update(self, snapshot: Snapshot) -> None:
        """Fire new or changed alerts and resolve those whose incident is over."""
        self._target.sync(self.alerts(snapshot))
