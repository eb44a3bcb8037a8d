"""Freshness rules in the engine: `time()` and schedules fall due on timers, with no new
result, and the incremental evaluation still equals a full recompute at every step."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from vigie.core.results import ProbeResult, Sample
from vigie.monitor.config import LoadedConfig, load_config
from vigie.monitor.health.engine import HealthEngine, Snapshot, build_engine
from vigie.monitor.health.states import State
from vigie.probes import default_registry

COUNTER = "mirth_channel_received_total"
EXPIRY = "probe_tls_cert_expiry_timestamp_seconds"


class Clock:
    """A clock the test moves by hand, given to both engines."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc(text: str) -> float:
    """Return the epoch time of an ISO UTC time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def config(tmp_path: Path) -> LoadedConfig:
    """A lab feed and a web portal in Paris, each with one check and one time-based rule."""
    check: dict[str, Any] = {"kind": "http", "interval": "60s", "timeout": "5s"}
    raw = {
        "timezone": "Europe/Paris",
        "sites": [{"id": "dc"}],
        "components": [
            {"id": "lab-feed", "kind": "application", "site": "dc", "checks": ["lab"]},
            {"id": "portal", "kind": "application", "site": "dc", "checks": ["portal"]},
        ],
        "checks": [
            {**check, "id": "lab", "target": "http://127.0.0.1:9/stats"},
            {**check, "id": "portal", "target": "https://127.0.0.1:9/"},
        ],
        "rules": [
            {
                "name": "lab_silent",
                "expr": f"increase({COUNTER}[30m]) == 0",
                "severity": "degraded",
                "active": "07:00-20:00",
                "checks": ["lab"],
            },
            {
                "name": "cert_expiring",
                "expr": f"{EXPIRY} - time() < 30d",
                "severity": "warning",
                "checks": ["portal"],
            },
        ],
    }
    path = tmp_path / "vigie.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, default_registry(), env={})


class Pair:
    """An incremental engine and a full-recompute one fed the same results on one clock."""

    def __init__(self, tmp_path: Path, now: float) -> None:
        loaded = config(tmp_path)
        self.clock = Clock(now)
        self.inc: HealthEngine = build_engine(loaded.config, loaded.plan, clock=self.clock)
        self.full: HealthEngine = build_engine(loaded.config, loaded.plan, clock=self.clock)

    def feed(self, check_id: str, *samples: Sample) -> None:
        """Give both engines one successful result."""
        result = ProbeResult(True, 0.01, samples)
        self.inc.observe(check_id, result)
        self.full.observe(check_id, result)

    def at(self, now: float) -> Snapshot:
        """Evaluate both at now; they must agree; return the snapshot."""
        self.clock.now = now
        got, want = self.inc.evaluate(), self.full.evaluate(full=True)
        assert got == want
        return got


def test_certificate_expiry_falls_due_without_a_new_result(tmp_path: Path) -> None:
    """The rule turns on when time() reaches 30 days before expiry, between two results."""
    start = utc("2026-06-01T12:00:00")
    pair = Pair(tmp_path, start)
    pair.feed("portal", Sample(EXPIRY, start + 30 * 86400 + 90))
    pair.feed("lab", Sample(COUNTER, 1.0))
    assert pair.at(start).components["portal"].state is State.OK
    assert pair.at(start + 89).components["portal"].state is State.OK
    status = pair.at(start + 91).components["portal"]  # no result since: the timer did it
    assert status.state is State.WARNING
    assert any("- now" in reason for reason in status.reasons)


@pytest.mark.parametrize(
    ("evening", "morning"),
    [
        # 28 March 2026 20:00 in Paris is 19:00 UTC (winter); 29 March 07:00 is 05:00 UTC
        ("2026-03-28T19:00:00", "2026-03-29T05:00:00"),
        # 24 October 2026 20:00 in Paris is 18:00 UTC (summer); 25 October 07:00 is 06:00 UTC
        ("2026-10-24T18:00:00", "2026-10-25T06:00:00"),
    ],
)
def test_silent_feed_pages_by_day_and_keeps_quiet_at_night_across_dst(
    tmp_path: Path, evening: str, morning: str
) -> None:
    """A flat counter is a silence 07:00-20:00 Paris only; the night's change moves UTC hours:
    the rule stops and starts at 20:00 and 07:00 local, on timers, results or none."""
    end = utc(evening)
    start = end - 3600  # 19:00 in Paris
    pair = Pair(tmp_path, start)
    count = 0.0
    for minute in range(60):  # the feed sends for 10 minutes, then nothing
        count += 1.0 if minute < 10 else 0.0
        pair.clock.now = start + minute * 60
        pair.feed("lab", Sample(COUNTER, count, (), "counter"))
        pair.feed("portal", Sample(EXPIRY, start + 365 * 86400))
        snap = pair.at(pair.clock.now)
        want = State.DEGRADED if minute >= 39 else State.OK  # flat from minute 9 on
        assert snap.components["lab-feed"].state is want, minute
    assert snap.components["lab-feed"].reasons
    assert pair.at(end - 1).components["lab-feed"].state is State.DEGRADED
    assert pair.at(end + 1).components["lab-feed"].state is State.OK  # 20:00: no result since
    now = pair.clock.now
    while now < utc(morning) - 60:  # the night: silence is normal
        now += 60
        pair.clock.now = now
        pair.feed("lab", Sample(COUNTER, count, (), "counter"))
        pair.feed("portal", Sample(EXPIRY, start + 365 * 86400))
        assert pair.at(now).components["lab-feed"].state is State.OK
    # a night of one result a minute: the window held 30 minutes of points, no more
    assert 30 <= pair.inc.window_points() <= 33
    start_day = utc(morning)
    assert pair.at(start_day - 1).components["lab-feed"].state is State.OK
    assert pair.at(start_day + 1).components["lab-feed"].state is State.DEGRADED  # 07:00 Paris


@pytest.mark.parametrize("seed", range(4))
def test_random_days_incremental_equals_full(tmp_path: Path, seed: int) -> None:
    """Random results and silences over days and a DST night: both engines always agree."""
    rng = random.Random(seed)
    now = utc("2026-03-27T12:00:00")
    pair = Pair(tmp_path, now)
    count, expiry = 0.0, now + 30 * 86400 + rng.choice((60.0, 3600.0, 86400.0))
    states: set[State] = set()
    for _ in range(400):
        now += rng.choice((1.0, 30.0, 60.0, 60.0, 600.0, 3600.0))
        pair.clock.now = now
        if rng.random() < 0.8:  # sometimes nothing comes: timers and staleness decide
            count += rng.choice((0.0, 0.0, 1.0, 5.0)) if rng.random() < 0.95 else -count
            pair.feed("lab", Sample(COUNTER, count, (), "counter"))  # -count: a reset
        if rng.random() < 0.5:
            expiry += rng.choice((0.0, 0.0, 86400.0, -86400.0))
            pair.feed("portal", Sample(EXPIRY, expiry))
        snap = pair.at(now)
        states |= {c.state for c in snap.components.values()}
    assert {State.OK, State.DEGRADED} <= states  # the schedule and the window both played
