"""Who is on call now: a weekly rotation from the config, or an ICS calendar (file or URL).

The calendar is the one a hospital already keeps for its astreinte: each event's summary names
a contact ("Astreinte DSI: Martin"); recurrences (RRULE, EXDATE, moved occurrences) and time
zones come from the calendar through `icalendar` and `recurring-ical-events`. It is re-read when
the file changes (or the URL's answer does), and the last good copy is kept on a read error.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import icalendar
import recurring_ical_events  # type: ignore[import-untyped]
import structlog
from yarl import URL

from vigie.core.results import bound_text
from vigie.monitor.alerting.settings import CalendarSettings, RotationSettings

MAX_CALENDAR_BYTES = 5 * 1024 * 1024


def rotation_at(rotation: RotationSettings, now: datetime) -> list[str]:
    """Return the rotation's contacts from the one on call at `now` onwards (on-call, +1, ...).

    Handovers fall on the same local wall-clock time each week, across summer time changes.
    """
    zone = ZoneInfo(rotation.timezone)
    start = rotation.start
    if start.tzinfo is not None:
        start = start.astimezone(zone).replace(tzinfo=None)
    local = now.astimezone(zone).replace(tzinfo=None)
    weeks = (local - start) // timedelta(days=7)
    n = len(rotation.contacts)
    return [rotation.contacts[(weeks + i) % n] for i in range(n)]


def _mentions(summary: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", summary, re.IGNORECASE) is not None


class Calendar:
    """An ICS calendar of the on-call duty, re-read on change."""

    def __init__(
        self,
        settings: CalendarSettings,
        contacts: Sequence[str],
        *,
        logger: Any = None,
    ) -> None:
        self.settings = settings
        self._contacts = list(contacts)
        self._log = logger if logger is not None else structlog.get_logger()
        self._cal: icalendar.Calendar | None = None
        self._seen: tuple[int, int] | None = None
        self._etag = ""
        self._modified = ""
        self._checked = -1e18
        self.error: str | None = None
        """The last read error, None once a read succeeded."""

    def _parse(self, data: bytes) -> None:
        cal = icalendar.Calendar.from_ical(data)
        recurring_ical_events.of(cal).between(datetime.now(UTC), timedelta(seconds=1))
        self._cal = cal
        self.error = None

    def load_file(self) -> bool:
        """Read the file if it changed since the last read; True when it was (re-)read."""
        path = self.settings.file
        assert path is not None
        try:
            st = Path(path).stat()
            seen = (st.st_mtime_ns, st.st_size)
            if seen == self._seen:
                return False
            if st.st_size > MAX_CALENDAR_BYTES:
                raise ValueError(f"larger than {MAX_CALENDAR_BYTES} bytes")
            self._parse(Path(path).read_bytes())
            self._seen = seen
        except Exception as exc:  # a bad calendar must not stop paging: keep the last one
            self._fail(exc)
            return False
        self._log.info("oncall_calendar_loaded", source=str(path))
        return True

    async def load_url(self, session: aiohttp.ClientSession) -> bool:
        """Fetch the URL (conditional GET); True when a new calendar was read."""
        url = self.settings.url
        assert url is not None
        headers = {}
        if self._etag:
            headers["If-None-Match"] = self._etag
        if self._modified:
            headers["If-Modified-Since"] = self._modified
        try:
            async with session.get(
                url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            ) as response:
                if response.status == 304:
                    return False
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                data = await response.content.read(MAX_CALENDAR_BYTES + 1)
                if len(data) > MAX_CALENDAR_BYTES:
                    raise ValueError(f"larger than {MAX_CALENDAR_BYTES} bytes")
                self._parse(data)
                self._etag = response.headers.get("ETag", "")
                self._modified = response.headers.get("Last-Modified", "")
        except Exception as exc:  # keep the last good calendar
            self._fail(exc)
            return False
        self._log.info("oncall_calendar_loaded", source=str(URL(url).origin()))
        return True

    def _fail(self, exc: BaseException) -> None:
        text = bound_text(f"{type(exc).__name__}: {exc}", 300)
        if text != self.error:
            self._log.warning("oncall_calendar_unreadable", error=text)
        self.error = text

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Re-read the calendar if `refresh` passed since the last look."""
        now = time.monotonic()
        if now - self._checked < self.settings.refresh and self._cal is not None:
            return
        self._checked = now
        if self.settings.file is not None:
            await asyncio.to_thread(self.load_file)
        else:
            await self.load_url(session)

    def at(self, now: datetime) -> list[str]:
        """Return the contacts named by events covering `now`, by event start then summary."""
        if self._cal is None:
            return []
        found: list[tuple[datetime, str, str]] = []
        for event in recurring_ical_events.of(self._cal).between(now, timedelta(seconds=1)):
            summary = str(event.get("SUMMARY", ""))
            start = event.get("DTSTART")
            when = start.dt if start is not None else now
            if not isinstance(when, datetime):
                when = datetime(when.year, when.month, when.day, tzinfo=UTC)
            elif when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            for name in self._contacts:
                if _mentions(summary, name):
                    found.append((when, summary, name))
        ordered: list[str] = []
        for _, _, name in sorted(found):
            if name not in ordered:
                ordered.append(name)
        return ordered


class OnCall:
    """Who is on call for one policy: its calendar first, its weekly rotation as fallback."""

    def __init__(
        self,
        rotation: RotationSettings | None,
        calendar: Calendar | None,
    ) -> None:
        self.rotation = rotation
        self.calendar = calendar

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Re-read the calendar when due."""
        if self.calendar is not None:
            await self.calendar.refresh(session)

    def at(self, now: datetime) -> list[str]:
        """Return who is on call at `now`, first the on-call, then the next ones."""
        if self.calendar is not None:
            names = self.calendar.at(now)
            if names:
                return names
        if self.rotation is not None:
            return rotation_at(self.rotation, now)
        return []

    def resolve(self, to: str, now: datetime) -> str | None:
        """Return the contact `to` names: a contact, `on-call`, or `on-call+N`."""
        if not to.startswith("on-call"):
            return to
        rest = to.removeprefix("on-call")
        index = int(rest.removeprefix("+")) if rest else 0
        names = self.at(now)
        return names[index] if index < len(names) else None
