"""The consumer's own verdicts, without NATS: no worker at all pages once, after a grace."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from vigie.monitor.bus.consumer import NO_WORKER_GRACE, NO_WORKER_NAME, BusConsumer
from vigie.monitor.bus.settings import BusSettings
from vigie.monitor.store import ResultStore


class Clock:
    """A settable monotonic clock (the grace is tested without waiting 30 s)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_no_worker_at_all_pages_once_after_the_grace_and_not_before() -> None:
    """A fleet restarting has the grace to register; past it, one page names the checks."""
    clock = Clock()
    consumer = BusConsumer(
        BusSettings(servers=["nats://127.0.0.1:1"], worker_ttl=1.0),
        ResultStore(),
        CollectorRegistry(),
        clock=clock,
    )
    consumer.set_plan(["a", "b", "c"])
    assert consumer.alerts() == []
    clock.now += NO_WORKER_GRACE + 1
    alerts = consumer.alerts()
    assert [a.labels["alertname"] for a in alerts] == [NO_WORKER_NAME]
    assert "3 checks unassigned" in alerts[0].annotations["summary"]
    consumer.membership.put("w1", b"{}")
    assert consumer.alerts() == []
