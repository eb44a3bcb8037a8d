"""Health metrics: component, site and incident gauges, built from the latest snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vigie.monitor.health.engine import Snapshot
from vigie.monitor.health.states import State

STATE_CODES = ", ".join(f"{s.value}={s.name}" for s in State)


class HealthCollector(Collector):
    """Exposes the health snapshot; registered in the daemon's own registry."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Yield the health families from the current snapshot."""
        snap = self._snapshot()
        comp = GaugeMetricFamily(
            "vigie_component_state",
            f"Component state code ({STATE_CODES}).",
            labels=["component", "site", "kind"],
        )
        impacted = GaugeMetricFamily(
            "vigie_component_impacted_by",
            "1 when the component is impacted by the root cause.",
            labels=["component", "root_cause"],
        )
        for status in snap.components.values():
            comp.add_metric([status.id, status.site, status.kind], float(status.state))
            if status.state is State.IMPACTED:
                for root in status.roots:
                    impacted.add_metric([status.id, root], 1.0)
        site = GaugeMetricFamily(
            "vigie_site_state", f"Site state code ({STATE_CODES}).", labels=["site"]
        )
        for name, state in snap.sites.items():
            site.add_metric([name], float(state))
        incident = GaugeMetricFamily(
            "vigie_incident_active",
            "1 for each open incident (one per root cause).",
            labels=["incident", "root_cause", "site", "severity"],
        )
        for inc in snap.incidents.values():
            incident.add_metric([inc.id, inc.root_cause, inc.site, inc.severity], 1.0)
        yield comp
        yield site
        yield incident
        yield impacted
