"""Published health values: incident ids, and values comparable by content."""

from __future__ import annotations

from vigie.monitor.health.snapshot import ComponentStatus, Incident, Snapshot
from vigie.monitor.health.states import State


def incident(started: float) -> Incident:
    """A component incident started at `started`."""
    return Incident(
        key="component:srv",
        root_cause="srv",
        site="nord",
        severity="critical",
        started_at=started,
        summary="srv is DOWN",
        description="",
        impacted=(),
        applications=(),
    )


def test_incident_id_is_root_and_utc_start() -> None:
    """The readable id names the root cause and its UTC start, to the second."""
    assert incident(1_790_000_000.7).id == "srv@20260921T141320Z"


def test_snapshots_compare_by_content() -> None:
    """Two snapshots built apart from equal values are equal (what the incremental test uses)."""

    def status() -> ComponentStatus:
        return ComponentStatus("srv", "server", "nord", State.DOWN, State.DOWN, 1.0, (), ("srv",))

    one = Snapshot(2.0, {"srv": status()}, {"component:srv": incident(1.0)}, {"nord": State.DOWN})
    two = Snapshot(2.0, {"srv": status()}, {"component:srv": incident(1.0)}, {"nord": State.DOWN})
    assert one == two
    assert one != Snapshot(2.0, {"srv": status()}, {}, {"nord": State.DOWN})
