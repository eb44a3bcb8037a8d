"""The own families written as text read byte for byte as generate_latest writes them."""

from __future__ import annotations

import random
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tests.health.sim import FakeClock, QuietLog, load_generated
from tests.health.test_incremental import World
from vigie.monitor.exposition import render_registry
from vigie.monitor.health.availability import DownTime
from vigie.monitor.health.budget import BudgetCollector
from vigie.monitor.health.engine import build_engine
from vigie.monitor.health.metrics import HealthCollector
from vigie.monitor.runtime_metrics import register_runtime_collectors
from vigie.monitor.textformat import FamilyText, OwnRegistry, TextCollector

HOSTILE = ['quote " back \\ nl \n end', "é中😀", "", "}{,=", "a" * 300]
VALUES = [0.0, 1.0, -2.5, 1e-07, 1.2345678e20, 123456789.0, float("nan"), float("inf"), -0.0]


class Hostile(TextCollector):
    """A gauge and a counter of hostile label values and awkward numbers, both ways."""

    def __init__(self, rng: random.Random) -> None:
        self.rows = [
            ((rng.choice(HOSTILE), rng.choice(HOSTILE), str(i)), rng.choice(VALUES))
            for i in range(60)
        ]
        self.gauge = FamilyText("test_hostile", "gauge", "Help \\ with\nnewline.", ("z", "a", "m"))
        self.counter = FamilyText("test_events", "counter", "Events.", ("z", "a", "m"))

    def collect(self) -> Iterator[Metric]:
        """Yield client_python's families."""
        gauge = GaugeMetricFamily("test_hostile", "Help \\ with\nnewline.", labels=["z", "a", "m"])
        counter = CounterMetricFamily("test_events", "Events.", labels=["z", "a", "m"])
        for labels, value in self.rows:
            gauge.add_metric(list(labels), value)
            counter.add_metric(list(labels), abs(value))
        yield gauge
        yield counter

    def text(self) -> str:
        """Write the same as text."""
        return self.gauge.render(self.rows) + self.counter.render(
            (labels, abs(value)) for labels, value in self.rows
        )


def test_family_text_writes_what_generate_latest_writes() -> None:
    """Hostile label values, NaN, infinities, a counter's _total, labels sorted by name."""
    for seed in range(20):
        registry = OwnRegistry()
        registry.register(Hostile(random.Random(seed)))
        for _ in range(2):  # the second time from the memo
            assert render_registry(registry) == generate_latest(registry), seed


class Plain(Collector):
    """An ordinary collector: it keeps its place between text collectors."""

    def collect(self) -> Iterator[Metric]:
        """Yield one family."""
        family = GaugeMetricFamily("test_between", "Between.", labels=["x"])
        family.add_metric(["1"], 1.0)
        yield family


def test_the_daemons_families_read_the_same_through_a_random_outage() -> None:
    """Health, down time and budgets of a generated hospital, through random failures, repairs
    and power cuts: the page's text equals generate_latest's at every step, registry order kept."""
    loaded = load_generated(1, hypervisors=4, apps=40)
    clock = FakeClock()
    engine = build_engine(
        loaded.config, loaded.plan, clock=clock, logger=QuietLog(), run_now=lambda c, r: True
    )
    downtime = DownTime()
    registry = OwnRegistry()
    register_runtime_collectors(registry)
    registry.register(downtime)
    registry.register(Plain())
    registry.register(HealthCollector(lambda: engine.snapshot))
    registry.register(BudgetCollector(loaded.budget))
    rng = random.Random(7)
    world = World(engine, rng)
    checks = sorted(engine.checks)
    seen_failing = 0
    for _ in range(60):
        clock.now += rng.choice((1.0, 5.0, 30.0))
        world.move()
        for check_id in rng.sample(checks, len(checks) // 3):
            engine.observe(check_id, world.result(engine.check_components[check_id][0]))
        downtime.observe(engine.evaluate())
        seen_failing += any(s.state.failing for s in engine.snapshot.components.values())
        text = render_registry(registry).decode()
        want = generate_latest(registry).decode()
        # process and GC figures move between the two reads: compare the daemon's families
        assert _ours(text) == _ours(want)
        assert text.index("test_between") < text.index("vigie_component_state")
    assert seen_failing > 10  # the walk went through outages, not only a quiet hospital
    assert "vigie_component_down_seconds_total{" in text and "vigie_page_budget_seconds{" in text


def _ours(text: str) -> list[str]:
    """The lines of the families this test is about, in order."""
    return [
        line
        for line in text.splitlines()
        if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(("vigie_", "test_"))
    ]


def test_registry_order_follows_registration_and_unregistration() -> None:
    """collectors() is registration order; an unregistered collector leaves the page."""
    registry = OwnRegistry()
    first, second = Hostile(random.Random(1)), Plain()
    registry.register(first)
    registry.register(second)
    assert registry.collectors() == [first, second]
    registry.unregister(first)
    assert render_registry(registry) == generate_latest(registry)
    assert b"test_hostile" not in render_registry(registry)
