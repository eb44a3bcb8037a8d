"""Pictures drawn on the server as inline SVG: the restoration curve, outage bars, month strips.

Pure functions from data to SVG text (markupsafe.Markup, so Jinja inserts it as it is): no
JavaScript, no external asset, no font to fetch (generic `sans-serif`), every text escaped,
every word from the catalogue (monitor.i18n) in the reader's language, times in the reader's
zone. Each picture is `role="img"` with a `<title>` sentence summing it up, and colours that
also differ in dash, pattern or shade, with a legend in words, for colour-blind readers.

Sizes are bounded whatever the data: points are merged to the pixel (a step line has at most
one corner per pixel column), bars are drawn per pixel column and capped at MAX_BARS rows, a
month strip has one cell per day of at most MAX_DAYS days.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

import jinja2
from markupsafe import Markup, escape

from vigie.monitor.health.availability import Figures
from vigie.monitor.health.states import State
from vigie.monitor.i18n import Speech

MAX_BARS = 40
"""Applications drawn at most in the outage bars (the rest named by a count)."""
MAX_DAYS = 62
"""Days drawn at most in a month strip."""
MAX_NAME_CHARS = 30
"""An application's name drawn in the bars is cut there (the row's title holds it whole)."""

TIER_STYLE: dict[int, tuple[str, str]] = {
    # tier: (colour, dash) - Okabe-Ito colours, told apart by their dash too
    1: ("#d55e00", ""),
    2: ("#0072b2", "7 3"),
    3: ("#009e73", "2 2"),
    4: ("#cc79a7", "9 3 2 3"),
    5: ("#7a7a7a", "1 3"),
}
TOTAL_STYLE = ("#1b2430", "")
"""All applications: drawn first, thick and half see-through, so tiers show over it."""

DOWN_FILL = "#b2182b"
IMPACTED_FILL = "#e08214"
BACK_FILL = "#8fd19e"
DAY_SHADES: tuple[tuple[float, str], ...] = (
    # down seconds up to (inclusive), fill: darker as the day was worse (luminance falls)
    (0.0, "#d9f0d3"),
    (300.0, "#fdd49e"),
    (3600.0, "#fc8d59"),
    (4 * 3600.0, "#d7301f"),
    (math.inf, "#7f0000"),
)
NO_DATA_FILL = "#e5e7eb"
MAINTENANCE_STROKE = "#1d4ed8"


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Track:
    """An application's state changes over a span: (time, state), oldest first.

    Before its first failing state the application is not part of the outage (not drawn,
    not counted); after it, a state that is not failing counts as back.
    """

    id: str
    name: str
    tier: int
    changes: tuple[tuple[float, State], ...]


def track(
    cid: str, name: str, tier: int, changes: Iterable[tuple[float, State]], since: float
) -> Track:
    """A Track from changes: those from `since` on, and the one in force at `since`."""
    ordered = sorted(changes, key=lambda c: c[0])
    before = [c for c in ordered if c[0] < since]
    return Track(cid, name, tier, (*before[-1:], *(c for c in ordered if c[0] >= since)))


# --- small helpers -----------------------------------------------------------------------------


def _n(value: float) -> str:
    """A coordinate with at most one decimal."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _svg_open(uid: str, width: int, height: int, summary: str, css_class: str) -> list[str]:
    """The opening tag, accessible: role img, labelled by its title (a summary sentence)."""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" role="img"'
        f' width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' aria-labelledby="{uid}-t" font-family="sans-serif" font-size="11">',
        f'<title id="{uid}-t">{escape(summary)}</title>',
    ]


def _cut(text: str, most: int) -> str:
    """Text cut to `most` characters with an ellipsis."""
    return text if len(text) <= most else text[: most - 1] + "…"


STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
DAY = 86400


def time_ticks(start: float, end: float, zone: tzinfo, most: int = 6) -> list[tuple[float, str]]:
    """A few readable ticks over [start, end] in the zone: round hours, minutes or days."""
    span = max(end - start, 1.0)
    step = next((s for s in STEPS if span / s <= most), 0)
    if step:
        offset = datetime.fromtimestamp(start, zone).utcoffset()
        off = offset.total_seconds() if offset is not None else 0.0
        first = math.ceil((start + off) / step) * step - off
        fmt = "%H:%M:%S" if step < 60 else "%H:%M" if span <= DAY else "%d/%m %H:%M"
        ticks = [first + k * step for k in range(int((end - first) // step) + 1)]
        return [(t, datetime.fromtimestamp(t, zone).strftime(fmt)) for t in ticks]
    days = max(1, math.ceil(span / DAY / most))
    day: date = datetime.fromtimestamp(start, zone).date()
    out: list[tuple[float, str]] = []
    while len(out) <= most + 1:
        at = datetime.combine(day, time(0), tzinfo=zone).timestamp()
        if at > end:
            break
        if at >= start:
            out.append((at, day.strftime("%d/%m")))
        day += timedelta(days=days)
    return out


def _tier_label(tier: int, sp: Speech) -> str:
    return sp.t("g.no_tier") if tier >= 5 else sp.t("g.tier", n=tier)


# --- the restoration curve ---------------------------------------------------------------------

CURVE_W, CURVE_H = 760, 270
CURVE_LEFT, CURVE_RIGHT, CURVE_TOP, CURVE_BOTTOM = 52, 230, 14, 44


def back_counts(tracks: Sequence[Track], at: float) -> dict[int, int]:
    """How many applications of each tier are back at `at` (failed, then not failing)."""
    out: dict[int, int] = {}
    for tr in tracks:
        failed = back = False
        for when, state in tr.changes:
            if when > at:
                break
            failed = failed or state.failing
            back = failed and not state.failing
        if back:
            out[tr.tier] = out.get(tr.tier, 0) + 1
    return out


def _toggles(tr: Track) -> list[tuple[float, int]]:
    """When the application becomes back (+1) or falls again (-1), in time order."""
    out: list[tuple[float, int]] = []
    failed = back = False
    for when, state in tr.changes:
        failed = failed or state.failing
        now = failed and not state.failing
        if now != back:
            out.append((when, 1 if now else -1))
            back = now
    return out


def _step_path(
    points: list[tuple[float, int]],
    x_of: Callable[[float], float],
    y_of: Callable[[float], float],
    x_end: float,
) -> str:
    """A step line through (time, count) points, one corner per pixel column at most."""
    merged: list[tuple[float, int]] = []
    for t, v in points:
        x = round(x_of(t))
        if merged and merged[-1][0] == x:
            merged[-1] = (x, v)
        else:
            merged.append((x, v))
    parts = [f"M{_n(merged[0][0])} {_n(y_of(merged[0][1]))}"]
    for corner, v in merged[1:]:
        parts.append(f"H{_n(corner)}V{_n(y_of(v))}")
    parts.append(f"H{_n(x_end)}")
    return "".join(parts)


def restoration_curve(
    tracks: Sequence[Track], start: float, end: float, sp: Speech, uid: str = "curve"
) -> Markup:
    """Applications back over time: a step line per tier and one for all, time in sp's zone."""
    end = max(end, start + 60.0)
    total = len(tracks)
    tiers = sorted({tr.tier for tr in tracks})
    final = back_counts(tracks, end)
    back = sum(final.values())
    summary = sp.t("g.curve_summary", back=back, n=total, at=sp.clock(end))
    if tracks:
        detail = "; ".join(
            sp.t(
                "g.tier_back",
                tier=_tier_label(t, sp),
                back=final.get(t, 0),
                n=sum(1 for tr in tracks if tr.tier == t),
            )
            for t in tiers
        )
        summary = f"{summary} ({detail})"
    left, top = CURVE_LEFT, CURVE_TOP
    right, bottom = CURVE_W - CURVE_RIGHT, CURVE_H - CURVE_BOTTOM
    top_count = max(1, total)

    def x_of(t: float) -> float:
        return left + (min(max(t, start), end) - start) / (end - start) * (right - left)

    def y_of(v: float) -> float:
        return bottom - v / top_count * (bottom - top)

    out = _svg_open(uid, CURVE_W, CURVE_H, summary, "picture restoration")
    out.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}"'
        ' fill="#fff" stroke="#c9d1d9"/>'
    )
    # y axis: a few integer ticks
    step = max(1, math.ceil(top_count / 5))
    for v in range(0, top_count + 1, step):
        y = _n(y_of(v))
        out.append(
            f'<line x1="{left}" x2="{right}" y1="{y}" y2="{y}" stroke="#eef1f4"/>'
            f'<text x="{left - 6}" y="{y}" text-anchor="end" dy="4">{v}</text>'
        )
    for t, label in time_ticks(start, end, sp.zone):
        x = _n(x_of(t))
        out.append(
            f'<line x1="{x}" x2="{x}" y1="{top}" y2="{bottom + 4}" stroke="#eef1f4"/>'
            f'<text x="{x}" y="{bottom + 16}" text-anchor="middle">{escape(label)}</text>'
        )
    zone = datetime.fromtimestamp(end, sp.zone).strftime("%Z")
    out.append(
        f'<text x="{(left + right) // 2}" y="{CURVE_H - 6}" text-anchor="middle"'
        f' fill="#5b6673">{escape(sp.t("g.axis_time", zone=zone))}</text>'
    )
    out.append(
        f'<text transform="translate(14 {(top + bottom) // 2}) rotate(-90)"'
        f' text-anchor="middle" fill="#5b6673">{escape(sp.t("g.axis_back"))}</text>'
    )
    # (label, style, width, points, applications in the series): the legend says "back/of"
    series: list[tuple[str, tuple[str, str], float, list[tuple[float, int]], int]] = []
    for tier in tiers:
        mine = [tr for tr in tracks if tr.tier == tier]
        series.append(
            (
                _tier_label(tier, sp),
                TIER_STYLE.get(tier, TIER_STYLE[5]),
                2.0,
                _series(mine, start, end),
                len(mine),
            )
        )
    if len(tiers) != 1:
        series.insert(0, (sp.t("g.total"), TOTAL_STYLE, 5.0, _series(tracks, start, end), total))
    for i, (label, (colour, dash), width, points, of) in enumerate(series):
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        if width > 4:
            dashes += ' stroke-opacity="0.4"'
        out.append(
            f'<path d="{_step_path(points, x_of, y_of, right)}" fill="none"'
            f' stroke="{colour}" stroke-width="{_n(width)}"{dashes}/>'
        )
        ly = top + 8 + i * 18
        count = points[-1][1] if points else 0
        out.append(
            f'<line x1="{right + 10}" x2="{right + 40}" y1="{ly}" y2="{ly}"'
            f' stroke="{colour}" stroke-width="{_n(width)}"{dashes}/>'
            f'<text x="{right + 46}" y="{ly + 4}">{escape(_cut(label, 24))} ({count}/{of})</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def _series(tracks: Sequence[Track], start: float, end: float) -> list[tuple[float, int]]:
    """(time, applications back) at the span's start and at each change within it."""
    count = sum(back_counts(tracks, start).values())
    events = sorted(e for tr in tracks for e in _toggles(tr) if start < e[0] <= end)
    points = [(start, count)]
    for when, delta in events:
        count += delta
        points.append((when, count))
    return points


# --- the outage bars ---------------------------------------------------------------------------

BAR_W = 760
BAR_LABEL = 210
BAR_RIGHT = 16
BAR_ROW = 18
BAR_TOP = 30
NONE, BACK, IMPACTED, DOWN = 0, 1, 2, 3
"""A pixel column's category, worst wins."""


def _category(state: State, failed: bool) -> int:
    if state is State.DOWN:
        return DOWN
    if state.failing:
        return IMPACTED
    return BACK if failed else NONE


def _spans(tr: Track, start: float, end: float) -> list[tuple[float, float, int]]:
    """(from, to, category) of a track over [start, end]."""
    out: list[tuple[float, float, int]] = []
    failed = False
    changes = list(tr.changes)
    for i, (when, state) in enumerate(changes):
        failed = failed or state.failing
        until = changes[i + 1][0] if i + 1 < len(changes) else end
        a, b = max(when, start), min(until, end)
        if b > a or (b == a and state.failing and start <= a <= end):
            out.append((a, b, _category(state, failed)))
    return out


def outage_bars(
    tracks: Sequence[Track], start: float, end: float, sp: Speech, uid: str = "bars"
) -> Markup:
    """One bar per application over [start, end]: down, impacted, back (a legend in words)."""
    end = max(end, start + 60.0)
    shown = list(tracks[:MAX_BARS])
    more = len(tracks) - len(shown)
    rows_h = len(shown) * BAR_ROW + (BAR_ROW if more else 0)
    height = BAR_TOP + rows_h + 40
    left, right = BAR_LABEL, BAR_W - BAR_RIGHT
    width = right - left
    down_n = sum(1 for tr in tracks if tr.changes and tr.changes[-1][1] is State.DOWN)
    failing_n = sum(1 for tr in tracks if tr.changes and tr.changes[-1][1].failing)
    summary = sp.t(
        "g.bars_summary",
        n=len(tracks),
        down=down_n,
        impacted=failing_n - down_n,
        back=len(tracks) - failing_n,
    )
    out = _svg_open(uid, BAR_W, height, summary, "picture outage-bars")
    out.append(
        f'<defs><pattern id="{uid}-hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
        f' patternTransform="rotate(45)"><rect width="6" height="6" fill="{IMPACTED_FILL}"/>'
        '<rect width="2.5" height="6" fill="#fff"/></pattern></defs>'
    )
    fills = {DOWN: DOWN_FILL, IMPACTED: f"url(#{uid}-hatch)", BACK: BACK_FILL}
    # legend, in words
    x = left
    for cat, key in ((DOWN, "g.down"), (IMPACTED, "g.impacted"), (BACK, "g.back")):
        out.append(
            f'<rect x="{x}" y="6" width="16" height="12" fill="{fills[cat]}"'
            ' stroke="#5b6673" stroke-width="0.5"/>'
            f'<text x="{x + 21}" y="16">{escape(sp.t(key))}</text>'
        )
        x += 30 + 7 * len(sp.t(key))

    def x_of(t: float) -> float:
        return left + (t - start) / (end - start) * width

    for row, tr in enumerate(shown):
        y = BAR_TOP + row * BAR_ROW
        spans = _spans(tr, start, end)
        seconds = {DOWN: 0.0, IMPACTED: 0.0}
        for a, b, cat in spans:
            if cat in seconds:
                seconds[cat] += b - a
        back_at = next((w for w, s in reversed(tr.changes) if not s.failing), None)
        ends_back = (
            bool(tr.changes)
            and not tr.changes[-1][1].failing
            and any(s.failing for _, s in tr.changes)
        )
        line = sp.t(
            "g.bar_row",
            name=tr.name,
            tier=_tier_label(tr.tier, sp),
            down=sp.duration(seconds[DOWN]),
            impacted=sp.duration(seconds[IMPACTED]),
        )
        if ends_back and back_at is not None:
            line += " " + sp.t("g.bar_back", at=sp.clock(back_at))
        out.append(
            f"<g><title>{escape(line)}</title>"
            f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">'
            f"{escape(_cut(tr.name, MAX_NAME_CHARS))}</text>"
            f'<rect x="{left}" y="{y + 2}" width="{width}" height="12" fill="#f4f6f8"/>'
        )
        columns = [NONE] * width
        for a, b, cat in spans:
            if cat == NONE:
                continue
            lo = max(0, min(width - 1, math.floor(x_of(a) - left)))
            hi = max(lo + 1, min(width, math.ceil(x_of(b) - left)))
            for c in range(lo, hi):
                columns[c] = max(columns[c], cat)
        paths: dict[int, list[str]] = {DOWN: [], IMPACTED: [], BACK: []}
        c = 0
        while c < width:
            cat = columns[c]
            run = c
            while run < width and columns[run] == cat:
                run += 1
            if cat != NONE:
                paths[cat].append(f"M{left + c} {y + 2}h{run - c}v12h-{run - c}z")
            c = run
        for cat, parts in paths.items():
            if parts:
                out.append(f'<path d="{"".join(parts)}" fill="{fills[cat]}"/>')
        out.append("</g>")
    if more:
        y = BAR_TOP + len(shown) * BAR_ROW
        out.append(
            f'<text x="{left}" y="{y + 12}" fill="#5b6673">{escape(sp.t("g.more", n=more))}</text>'
        )
    axis_y = BAR_TOP + rows_h + 4
    for t, label in time_ticks(start, end, sp.zone):
        xt = _n(x_of(t))
        out.append(
            f'<line x1="{xt}" x2="{xt}" y1="{BAR_TOP}" y2="{axis_y + 4}"'
            ' stroke="#c9d1d9" stroke-width="0.5"/>'
            f'<text x="{xt}" y="{axis_y + 16}" text-anchor="middle">{escape(label)}</text>'
        )
    zone = datetime.fromtimestamp(end, sp.zone).strftime("%Z")
    out.append(
        f'<text x="{(left + right) // 2}" y="{height - 4}" text-anchor="middle"'
        f' fill="#5b6673">{escape(sp.t("g.axis_time", zone=zone))}</text>'
    )
    out.append("</svg>")
    return Markup("".join(out))


# --- the month strip ---------------------------------------------------------------------------

CELL, GAP = 13, 2


def day_starts(until: float, zone: tzinfo, days: int = 30) -> list[float]:
    """The starts of the `days` days in the zone ending with the one holding `until`."""
    last: date = datetime.fromtimestamp(until, zone).date()
    first = last - timedelta(days=max(1, min(days, MAX_DAYS)) - 1)
    return [
        datetime.combine(first + timedelta(days=k), time(0), tzinfo=zone).timestamp()
        for k in range((last - first).days + 1)
    ]


def _shade(f: Figures) -> str:
    if f.observed <= 0:
        return NO_DATA_FILL
    return next(fill for most, fill in DAY_SHADES if f.down <= most)


def _share(f: Figures, sp: Speech) -> str:
    share = f.availability
    if share is None:
        return sp.t("g.no_data")
    text = f"{share * 100:.3f} %"
    return text.replace(".", ",") if sp.language == "fr" else text


def month_strip(
    name: str, starts: Sequence[float], days: Sequence[Figures], sp: Speech, uid: str = "strip"
) -> Markup:
    """A cell per day shaded by its down time, maintenance slashed, a title per cell."""
    pairs = list(zip(starts, days, strict=False))[-MAX_DAYS:]
    width = max(1, len(pairs)) * (CELL + GAP)
    height = CELL + 14
    bad = sum(1 for _, f in pairs if f.down > 0)
    maint = sum(1 for _, f in pairs if f.maintenance > 0)
    first = datetime.fromtimestamp(pairs[0][0], sp.zone).strftime("%d/%m") if pairs else "-"
    last = datetime.fromtimestamp(pairs[-1][0], sp.zone).strftime("%d/%m") if pairs else "-"
    summary = sp.t(
        "g.strip_summary", name=name, days=len(pairs), bad=bad, maint=maint, start=first, end=last
    )
    out = _svg_open(uid, width, height, summary, "picture month-strip")
    for i, (at, f) in enumerate(pairs):
        x = i * (CELL + GAP)
        day = datetime.fromtimestamp(at, sp.zone).strftime("%d/%m")
        words = [f"{day}: {_share(f, sp)}"]
        if f.down:
            words.append(sp.t("av.down", d=sp.duration(f.down)))
        if f.maintenance:
            words.append(sp.t("av.maint", d=sp.duration(f.maintenance)))
        out.append(
            f'<rect x="{x}" y="0" width="{CELL}" height="{CELL}" fill="{_shade(f)}">'
            f"<title>{escape(' · '.join(words))}</title></rect>"
        )
        if f.maintenance:
            out.append(
                f'<path d="M{x} {CELL}L{x + CELL} 0" stroke="{MAINTENANCE_STROKE}"'
                ' stroke-width="2.5"/>'
            )
    if pairs:
        out.append(
            f'<text x="0" y="{height - 2}" font-size="10" fill="#5b6673">{first}</text>'
            f'<text x="{width - GAP}" y="{height - 2}" font-size="10" fill="#5b6673"'
            f' text-anchor="end">{last}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def strip_legend(sp: Speech, uid: str = "strip-legend") -> Markup:
    """The month strips' legend in words: what each shade and the slash mean."""
    items = [
        (DAY_SHADES[0][1], sp.t("g.day_ok"), False),
        (DAY_SHADES[1][1], sp.t("g.day_under", d="5 min"), False),
        (DAY_SHADES[2][1], sp.t("g.day_under", d="1 h"), False),
        (DAY_SHADES[3][1], sp.t("g.day_under", d="4 h"), False),
        (DAY_SHADES[4][1], sp.t("g.day_over", d="4 h"), False),
        ("#fff", sp.t("g.maintenance"), True),
        (NO_DATA_FILL, sp.t("g.no_data"), False),
    ]
    parts: list[str] = []
    x = 0
    for fill, label, slash in items:
        parts.append(
            f'<rect x="{x}" y="3" width="{CELL}" height="{CELL}" fill="{fill}"'
            ' stroke="#5b6673" stroke-width="0.5"/>'
        )
        if slash:
            parts.append(
                f'<path d="M{x} {3 + CELL}L{x + CELL} 3" stroke="{MAINTENANCE_STROKE}"'
                ' stroke-width="2.5"/>'
            )
        parts.append(f'<text x="{x + CELL + 4}" y="14">{escape(label)}</text>')
        x += CELL + 16 + round(6.2 * len(label))
    out = _svg_open(uid, x, 20, sp.t("g.legend"), "picture legend")
    out += parts
    out.append("</svg>")
    return Markup("".join(out))


# --- Jinja -------------------------------------------------------------------------------------


def install(env: jinja2.Environment) -> None:
    """Offer the pictures to templates, drawn in the page's reader's language (its `sp`)."""

    @jinja2.pass_context
    def curve(
        ctx: jinja2.runtime.Context,
        tracks: Sequence[Track],
        start: float,
        end: float,
        uid: str = "curve",
    ) -> Markup:
        return restoration_curve(tracks, start, end, ctx["sp"], uid)

    @jinja2.pass_context
    def bars(
        ctx: jinja2.runtime.Context,
        tracks: Sequence[Track],
        start: float,
        end: float,
        uid: str = "bars",
    ) -> Markup:
        return outage_bars(tracks, start, end, ctx["sp"], uid)

    @jinja2.pass_context
    def strip(
        ctx: jinja2.runtime.Context,
        name: str,
        starts: Sequence[float],
        days: Sequence[Figures],
        uid: str = "strip",
    ) -> Markup:
        return month_strip(name, starts, days, ctx["sp"], uid)

    @jinja2.pass_context
    def legend(ctx: jinja2.runtime.Context) -> Markup:
        return strip_legend(ctx["sp"])

    env.globals.update(
        restoration_curve=curve, outage_bars=bars, month_strip=strip, strip_legend=legend
    )
