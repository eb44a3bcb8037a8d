"""The pictures drawn on the server (monitor.web.svg): well-formed, safe, bounded, and true.

Each picture is parsed with xml.etree as a browser would: no script, no link out, a hostile
application name kept as text, a size bound with 500 applications and 10,000 state changes,
and what it draws read back from its geometry (the curve's last step sits on the count of
applications back; a bar's red part is as long as the outage). The availability page is served
over a scripted day (tests/health/test_availability.py) and its strips read back.
"""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import aiohttp

from tests.health.test_availability import APP_DOWN, DAY, HOUR, T0, served
from vigie.monitor.health.availability import Figures
from vigie.monitor.health.states import State
from vigie.monitor.i18n import Speech
from vigie.monitor.web.svg import (
    BACK_FILL,
    DAY_SHADES,
    DOWN_FILL,
    MAINTENANCE_STROKE,
    MAX_BARS,
    Track,
    day_starts,
    month_strip,
    outage_bars,
    restoration_curve,
    strip_legend,
    time_ticks,
    track,
)

__all__ = ["served"]  # the availability page's fixture, used below

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert(1)</script>&"'
PARIS = ZoneInfo("Europe/Paris")
FR = Speech("fr", PARIS)
EN = Speech("en", UTC)
MAX_BYTES = 64 * 1024
"""What one picture may weigh, whatever the data."""


def parse(svg: str) -> ET.Element:
    """Parse a picture; check it is safe (no script, no link out) and accessible."""
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    assert root.get("role") == "img"
    title = root.find(f"{NS}title")
    assert title is not None and title.text and title.get("id") == root.get("aria-labelledby")
    for element in root.iter():
        assert element.tag.removeprefix(NS) not in ("script", "foreignObject", "a", "image")
        for name, value in element.attrib.items():
            assert not name.startswith("on"), (element.tag, name)
            assert "http" not in value and "javascript" not in value.lower(), (name, value)
    assert "<script" not in svg
    return root


def texts(root: ET.Element) -> list[str]:
    """Every text drawn or titled in the picture."""
    return [e.text for e in root.iter() if e.text and e.tag in (f"{NS}text", f"{NS}title")]


def three() -> list[Track]:
    """Three applications: tier 1 down then back, tier 2 impacted then back, tier 3 still down."""
    return [
        Track("a", HOSTILE, 1, ((T0 - 100, State.OK), (T0, State.DOWN), (T0 + 3000, State.OK))),
        Track("b", "Laboratoire", 2, ((T0 + 60, State.IMPACTED), (T0 + 600, State.OK))),
        Track("c", "Messagerie", 3, ((T0 + 60, State.DOWN),)),
    ]


def test_each_picture_is_safe_xml_with_the_hostile_name_kept_as_text() -> None:
    """The name is escaped in the markup and reads back whole from the parsed picture."""
    curve = parse(restoration_curve(three(), T0 - 300, T0 + 3600, FR))
    bars = parse(outage_bars(three(), T0 - 300, T0 + 3600, FR))
    day = Figures(observed=DAY, down=0.0)
    strip = parse(month_strip(HOSTILE, day_starts(T0, PARIS), [day] * 30, FR))
    legend = parse(strip_legend(FR))
    assert any(HOSTILE in t for t in texts(bars))  # the row's title holds it whole
    assert any(HOSTILE in t for t in texts(strip))
    assert "Heure (CET)" in texts(curve) and "Applications rétablies" in texts(curve)
    assert "Niveau 1 (1/1)" in texts(curve)  # the legend counts those back, of how many
    assert {"en panne", "touchée", "rétablie"} <= set(texts(bars))
    assert "maintenance" in texts(legend) and "aucune indisponibilité" in texts(legend)


def test_the_curve_ends_on_the_count_of_applications_back() -> None:
    """The 'all' line's last step sits on the y of its count; tiers' legends say theirs."""
    tracks = three()
    root = parse(restoration_curve(tracks, T0 - 300, T0 + 3600, EN))
    summary = root.find(f"{NS}title")
    assert summary is not None and summary.text is not None
    assert summary.text.startswith("2 of 3 applications back at")
    assert "Tier 3: 0 of 1" in summary.text
    y_of_count = {
        e.text: float(e.get("y", "nan")) for e in root.iter(f"{NS}text") if e.get("dy") == "4"
    }
    paths = [p for p in root.iter(f"{NS}path")]
    total = next(p for p in paths if p.get("stroke-width") == "5")  # all applications
    last_v = float(re.findall(r"V([\d.]+)", total.get("d", ""))[-1])
    assert last_v == y_of_count["2"]
    assert "All applications (2/3)" in texts(root)  # mid-recovery: 2 back of the 3 that fell
    assert "Tier 3 (0/1)" in texts(root)
    # the tier 3 line never leaves 0: a single move and a flat line
    tier3 = next(p for p in paths if p.get("stroke-dasharray") == "2 2")
    assert "V" not in tier3.get("d", "")
    # OK before it fell is not back: from just after T0-100 the curve starts at 0
    later = parse(restoration_curve(tracks, T0 - 50, T0 + 3600, EN))
    first = next(p for p in later.iter(f"{NS}path") if p.get("stroke-width") == "5")
    move = re.match(r"M[\d.]+ ([\d.]+)", first.get("d", ""))
    assert move is not None and float(move.group(1)) == y_of_count["0"]


def test_a_bar_is_red_as_long_as_the_outage_then_green() -> None:
    """Down from the span's start to its middle, back after: half red, half green."""
    tr = Track("a", "Dossier patient", 1, ((T0, State.DOWN), (T0 + 3000, State.OK)))
    root = parse(outage_bars([tr], T0, T0 + 6000, EN))
    widths: dict[str, int] = {}
    for path in root.iter(f"{NS}path"):
        for run in re.findall(r"h(\d+)v", path.get("d", "")):
            widths[path.get("fill", "")] = widths.get(path.get("fill", ""), 0) + int(run)
    assert abs(widths[DOWN_FILL] - widths[BACK_FILL]) <= 2
    row = next(g for g in root.iter(f"{NS}g"))
    title = row.find(f"{NS}title")
    assert title is not None and title.text is not None
    assert "down 50m 00s" in title.text and "back at" in title.text
    # a one-second fall inside a long return still shows: the worst state wins its pixel
    blip = Track("b", "B", 1, ((T0, State.OK), (T0 + 1, State.DOWN), (T0 + 2, State.OK)))
    spike = parse(outage_bars([tr, blip], T0, T0 + 6000, EN))
    rows = list(spike.iter(f"{NS}g"))
    assert any(p.get("fill") == DOWN_FILL for p in rows[1].iter(f"{NS}path"))


def test_pictures_stay_small_with_500_applications_and_10000_changes() -> None:
    """Merged to the pixel and capped in rows: the size does not follow the data."""
    rnd = random.Random(16)
    states = [State.OK, State.DOWN, State.IMPACTED, State.FLAPPING]
    many = [
        Track(
            f"app-{i}",
            f"{HOSTILE} {i}",
            1 + i % 5,
            tuple(sorted((T0 + rnd.random() * DAY, rnd.choice(states)) for _ in range(20))),
        )
        for i in range(500)
    ]
    busy = Track("busy", "Flapping", 1, tuple((T0 + k * 8.64, states[k % 4]) for k in range(10000)))
    for tracks in (many, [busy], [*many, busy]):
        curve = restoration_curve(tracks, T0, T0 + DAY, FR)
        bars = outage_bars(tracks, T0, T0 + DAY, FR)
        assert len(curve) < MAX_BYTES and len(bars) < MAX_BYTES
        parse(curve)
        rows = [g for g in parse(bars).iter(f"{NS}g")]
        assert len(rows) == min(len(tracks), MAX_BARS)
    assert "et 461 autres applications" in texts(
        parse(outage_bars([*many, busy], T0, T0 + DAY, FR))
    )
    days = [Figures(observed=DAY, down=rnd.random() * DAY) for _ in range(400)]
    strip = month_strip("x", [T0 + k * DAY for k in range(400)], days, FR)
    assert len(strip) < MAX_BYTES and len(list(parse(strip).iter(f"{NS}rect"))) == 62


def test_the_month_strip_shades_each_day_and_slashes_maintenance() -> None:
    """A good day pale, a day down 5 hours darkest, maintenance slashed, each cell titled."""
    starts = day_starts(T0, PARIS, 3)
    days = [
        Figures(observed=DAY),
        Figures(observed=DAY - HOUR, down=5 * HOUR, maintenance=HOUR),
        Figures(),
    ]
    root = parse(month_strip("Dossier patient", starts, days, FR))
    cells = list(root.iter(f"{NS}rect"))
    assert [c.get("fill") for c in cells[:2]] == [DAY_SHADES[0][1], DAY_SHADES[-1][1]]
    titles = [c.find(f"{NS}title") for c in cells]
    words = [t.text for t in titles if t is not None]
    day2 = datetime.fromtimestamp(starts[1], PARIS).strftime("%d/%m")
    assert words[1] == f"{day2}: 78,261 % · indisponible 5 h 00 · maintenance 1 h 00"
    assert words[2] is not None and words[2].endswith("pas de données")
    slashes = [p for p in root.iter(f"{NS}path") if p.get("stroke") == MAINTENANCE_STROKE]
    assert len(slashes) == 1
    summary = root.find(f"{NS}title")
    assert summary is not None and summary.text is not None
    assert ": 1 jour sur 3 avec indisponibilité, 1 avec maintenance" in summary.text  # no "1 jours"
    two = parse(month_strip("Dossier patient", starts, [days[1], days[1], days[2]], FR))
    title = two.find(f"{NS}title")
    assert title is not None and title.text is not None and ": 2 jours sur 3" in title.text
    # days are midnights in the zone, summer time or not
    for at in day_starts(datetime(2026, 3, 31, 12, tzinfo=PARIS).timestamp(), PARIS, 5):
        assert datetime.fromtimestamp(at, PARIS).strftime("%H:%M") == "00:00"


def test_time_ticks_fall_on_round_local_times() -> None:
    """A few ticks, on round minutes or hours of the zone (Paris is not UTC)."""
    start = datetime(2026, 12, 2, 1, 7, tzinfo=PARIS).timestamp()
    ticks = time_ticks(start, start + 3 * HOUR, PARIS)
    assert 3 <= len(ticks) <= 7
    assert [label for _, label in ticks][:2] == ["01:30", "02:00"]
    short = time_ticks(start, start + 90, PARIS)  # a power cut seen at speed: seconds
    assert 3 <= len(short) <= 7 and all(label.count(":") == 2 for _, label in short)
    week = time_ticks(start, start + 7 * DAY, PARIS)
    assert all(label.count("/") == 1 for _, label in week) and len(week) <= 7


def test_a_track_keeps_the_state_in_force_at_its_start() -> None:
    """Changes before the span: only the last one stays (what held when the span began)."""
    tr = track("a", "A", 1, [(T0 + 10, State.OK), (T0 - 50, State.DOWN), (T0 - 90, State.OK)], T0)
    assert tr.changes == ((T0 - 50, State.DOWN), (T0 + 10, State.OK))


async def test_the_availability_page_draws_a_month_strip_per_application(served: str) -> None:
    """The scripted day's cell says its figure and is slashed for its hour of maintenance."""
    async with aiohttp.ClientSession() as s, s.get(f"{served}/availability") as resp:
        assert resp.status == 200
        page = await resp.text()
    strips = re.findall(r'(?s)<svg [^>]*class="picture month-strip".*?</svg>', page)
    assert len(strips) == 2  # app-dpi, app-mail
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="picture legend"' in page
    dpi = parse(next(s for s in strips if "Dossier patient" in s))
    day = datetime.fromtimestamp(T0, UTC).strftime("%d/%m")
    share = f"{(1 - APP_DOWN / (DAY - HOUR)) * 100:.3f} %"
    cell = next(
        r for r in dpi.iter(f"{NS}rect") if (r.findtext(f"{NS}title") or "").startswith(day)
    )
    assert cell.findtext(f"{NS}title") == f"{day}: {share} · down 19h 30m · maintenance 1h 00m"
    assert cell.get("fill") == DAY_SHADES[-1][1]  # down over 4 hours: the darkest
    assert len(list(dpi.iter(f"{NS}rect"))) == 30
