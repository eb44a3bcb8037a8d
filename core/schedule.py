"""When a rule applies: `active: "07:00-20:00"`, optionally on some days ("Mon-Fri 07:00-20:00").

Times are wall-clock times in the config's time zone (a tzinfo the daemon gives: the core
knows no config), so a schedule keeps its hours across daylight-saving changes. A window
whose end is before its start runs over midnight ("20:00-07:00"); its days are those it
starts on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

__all__ = ["DAYS", "Schedule", "parse_schedule"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TEXT = re.compile(
    r"^\s*(?:(?P<days>[A-Za-z]{3}(?:\s*[-,]\s*[A-Za-z]{3})*)\s+)?"
    r"(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*-\s*(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$"
)
_DAY_PART = re.compile(r"^([A-Za-z]{3})(?:\s*-\s*([A-Za-z]{3}))?$")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A daily window of wall-clock time, on some days of the week, in one time zone."""

    text: str
    start: int  # minutes after midnight
    end: int
    days: frozenset[int]  # 0 is Monday
    zone: tzinfo

    def active(self, at: float) -> bool:
        """True when the epoch time `at` falls in the window."""
        local = datetime.fromtimestamp(at, self.zone)
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        if minute >= self.start:
            return day in self.days
        return minute < self.end and (day - 1) % 7 in self.days

    def next_change(self, at: float) -> float:
        """Return the first epoch time after `at` at which `active` may change."""
        local = datetime.fromtimestamp(at, self.zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        best = float("inf")
        for offset in range(-1, 9):
            day = midnight + timedelta(days=offset)
            for minute in (self.start, self.end):
                wall = (day + timedelta(minutes=minute)).replace(tzinfo=self.zone)
                moment = wall.timestamp()
                if at < moment < best:
                    best = moment
        return best


def parse_schedule(text: str, zone: tzinfo) -> Schedule:
    """Parse "HH:MM-HH:MM" with optional days ("Mon-Fri", "Sat,Sun"); ValueError says why."""
    match = _TEXT.match(text)
    if match is None:
        raise ValueError(
            f'invalid schedule {text!r}: expected "HH:MM-HH:MM", optionally after days '
            'such as "Mon-Fri" or "Sat,Sun"'
        )
    start = _minutes(match.group("h1"), match.group("m1"), text)
    end = _minutes(match.group("h2"), match.group("m2"), text)
    if start == 24 * 60:
        raise ValueError(f"invalid schedule {text!r}: 24:00 can only end a window")
    if start == end:
        raise ValueError(f"invalid schedule {text!r}: the window starts where it ends")
    days: set[int] = set()
    for part in (match.group("days") or "mon-sun").split(","):
        found = _DAY_PART.match(part.strip())
        if found is None:
            raise ValueError(f"invalid days {part.strip()!r} in schedule {text!r}")
        first = _day(found.group(1), text)
        last = _day(found.group(2), text) if found.group(2) else first
        span = (last - first) % 7
        days.update((first + i) % 7 for i in range(span + 1))
    return Schedule(text.strip(), start, end, frozenset(days), zone)


def _minutes(hours: str, minutes: str, text: str) -> int:
    """Return minutes after midnight from HH and MM (24:00 allowed as an end)."""
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise ValueError(f"invalid time {hours}:{minutes} in schedule {text!r}")
    return h * 60 + m


def _day(name: str, text: str) -> int:
    """Return 0 for Monday... from a three-letter English day name."""
    try:
        return DAYS.index(name.lower())
    except ValueError:
        raise ValueError(
            f"invalid day {name!r} in schedule {text!r} (known: {', '.join(DAYS)})"
        ) from None
