"""Health metrics: component, site and incident gauges, built from the latest snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from vigie.monitor.health.engine import Snapshot
from vigie.monitor.health.states import State
from vigie.monitor.textformat import FamilyText, TextCollector

STATE_CODES = ", ".join(f"{s.value}={s.name}" for s in State)


class HealthCollector(TextCollector):
    """Exposes the health snapshot; registered in the daemon's own registry."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self._families = (
            FamilyText("vigie_component_state", "gauge", COMPONENT_HELP, COMPONENT_LABELS),
            FamilyText("vigie_site_state", "gauge", SITE_HELP, ("site",)),
            FamilyText("vigie_incident_active", "gauge", INCIDENT_HELP, INCIDENT_LABELS),
            FamilyText("vigie_component_impacted_by", "gauge", IMPACTED_HELP, IMPACTED_LABELS),
        )
        # the components' text, kept while the snapshot's components are the same mapping
        self._kept: tuple[object, str, str] | None = None

    def collect(self) -> Iterator[Metric]:
        """Yield the health families from the current snapshot."""
        snap = self._snapshot()
        comp = GaugeMetricFamily("vigie_component_state", COMPONENT_HELP, labels=COMPONENT_LABELS)
        impacted = GaugeMetricFamily(
            "vigie_component_impacted_by", IMPACTED_HELP, labels=IMPACTED_LABELS
        )
        for labels, value in _components(snap):
            comp.add_metric(labels, value)
        for labels, value in _impacted(snap):
            impacted.add_metric(labels, value)
        site = GaugeMetricFamily("vigie_site_state", SITE_HELP, labels=["site"])
        for labels, value in _sites(snap):
            site.add_metric(labels, value)
        incident = GaugeMetricFamily("vigie_incident_active", INCIDENT_HELP, labels=INCIDENT_LABELS)
        for labels, value in _incidents(snap):
            incident.add_metric(labels, value)
        yield comp
        yield site
        yield incident
        yield impacted

    def text(self) -> str:
        """Write the same families as text; the components' only when the snapshot's changed."""
        snap = self._snapshot()
        comp, site, incident, impacted = self._families
        kept = self._kept
        if kept is None or kept[0] is not snap.components:
            kept = self._kept = (
                snap.components,
                comp.render(_components(snap)),
                impacted.render(_impacted(snap)),
            )
        return "".join(
            (kept[1], site.render(_sites(snap)), incident.render(_incidents(snap)), kept[2])
        )


COMPONENT_HELP = f"Component state code ({STATE_CODES})."
COMPONENT_LABELS = ["component", "site", "kind"]
SITE_HELP = f"Site state code ({STATE_CODES})."
INCIDENT_HELP = "1 for each open incident (one per root cause)."
INCIDENT_LABELS = ["incident", "root_cause", "site", "severity"]
IMPACTED_HELP = "1 when the component is impacted by the root cause."
IMPACTED_LABELS = ["component", "root_cause"]

Row = tuple[tuple[str, ...], float]


def _components(snap: Snapshot) -> Iterator[Row]:
    for status in list(snap.components.values()):
        yield (status.id, status.site, status.kind), float(status.state)


def _impacted(snap: Snapshot) -> Iterator[Row]:
    for status in list(snap.components.values()):
        if status.state is State.IMPACTED:
            for root in status.roots:
                yield (status.id, root), 1.0


def _sites(snap: Snapshot) -> Iterator[Row]:
    for name, state in list(snap.sites.items()):
        yield (name,), float(state)


def _incidents(snap: Snapshot) -> Iterator[Row]:
    for inc in list(snap.incidents.values()):
        yield (inc.id, inc.root_cause, inc.site, inc.severity), 1.0
