"""Rule schedules: wall-clock windows in a time zone, days, midnight, daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from vigie.core.schedule import parse_schedule

PARIS = ZoneInfo("Europe/Paris")


def at(text: str) -> float:
    """Return the epoch time of an ISO UTC time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_daily_window_in_the_zone() -> None:
    """07:00-20:00 Paris is 06:00-19:00 UTC in winter."""
    day = parse_schedule("07:00-20:00", PARIS)
    assert not day.active(at("2026-01-15T05:59:00"))
    assert day.active(at("2026-01-15T06:00:00"))
    assert day.active(at("2026-01-15T18:59:00"))
    assert not day.active(at("2026-01-15T19:00:00"))


@pytest.mark.parametrize(
    ("before", "start"),
    [
        # 29 March 2026: clocks go forward at 02:00, 07:00 is then 05:00 UTC (06:00 the day before)
        ("2026-03-28T20:00:00", "2026-03-29T05:00:00"),
        # 25 October 2026: clocks go back at 03:00, 07:00 is then 06:00 UTC (05:00 the day before)
        ("2026-10-24T20:00:00", "2026-10-25T06:00:00"),
    ],
)
def test_boundaries_keep_their_wall_clock_hour_across_dst(before: str, start: str) -> None:
    """The night of a change, the next start is 07:00 local, whatever the UTC offset."""
    day = parse_schedule("07:00-20:00", PARIS)
    assert day.next_change(at(before)) == at(start)
    assert not day.active(at(start) - 1) and day.active(at(start))


def test_spring_and_autumn_days_last_as_the_clock_says() -> None:
    """An overnight window 22:00-06:00 is 7 hours the spring night, 9 the autumn night."""
    night = parse_schedule("22:00-06:00", PARIS)
    start = night.next_change(at("2026-03-28T12:00:00"))
    assert night.next_change(start) - start == 7 * 3600
    start = night.next_change(at("2026-10-24T12:00:00"))
    assert night.next_change(start) - start == 9 * 3600
    assert night.active(at("2026-10-25T01:30:00"))  # 02:30 local, the hour seen twice


def test_days_and_overnight_windows() -> None:
    """Days name where a window starts; over midnight it ends the next morning."""
    week = parse_schedule("Mon-Fri 22:00-06:00", PARIS)
    friday_night = at("2026-01-16T23:30:00")  # Saturday 00:30 in Paris, started Friday
    assert week.active(friday_night)
    assert not week.active(at("2026-01-17T23:30:00"))  # Sunday 00:30: started Saturday
    weekend = parse_schedule("Sat,Sun 09:00-12:00", PARIS)
    assert weekend.days == frozenset({5, 6})
    assert weekend.active(at("2026-01-17T08:00:00"))
    assert not weekend.active(at("2026-01-16T08:00:00"))
    wrap = parse_schedule("Sat-Mon 00:00-24:00", PARIS)
    assert wrap.days == frozenset({5, 6, 0})


@pytest.mark.parametrize(
    "bad", ["7-20", "07:00-07:00", "25:00-26:00", "07:60-08:00", "Xyz 07:00-08:00", "24:00-01:00"]
)
def test_bad_schedules_say_what_is_expected(bad: str) -> None:
    """A config mistake names the expected syntax or the part that is wrong."""
    with pytest.raises(ValueError, match="invalid"):
        parse_schedule(bad, PARIS)
