"""The post-incident report as a PDF (fpdf2): what the Markdown report says, and its curve.

Same facts as monitor.web.report.markdown, in the same words: root cause, start and end, the
times to detect, page, acknowledge and recover, each impacted application with its tier, outage
and degraded mode, who was paged, the operator actions and the timeline; plus the restoration
curve (monitor.web.svg), which fpdf2 draws from its SVG (the outage bars are left out: fpdf2
ignores SVG patterns, so their hatching would vanish).

French needs a Unicode font: DejaVu Sans from Debian's fonts-dejavu-core when installed (the
tests' peers script installs it). Without it the PDF falls back to the built-in Helvetica, whose
Latin-1 keeps French accents; other characters (→, …, œ) are spelt in Latin-1, and the missing
font is logged once.
"""

from __future__ import annotations

import functools
import io
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import structlog
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

from vigie.core.results import bound_text
from vigie.monitor.i18n import Speech
from vigie.monitor.web.report import Report, percent
from vigie.monitor.web.svg import restoration_curve

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = (FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf")
FAMILY = "vigie-pdf"
MAX_CELL = 300
"""Characters of one table cell at most (names, degraded modes, action details)."""

_SPELLING = str.maketrans(
    {
        "→": "->",
        "←": "<-",
        "…": "...",
        "\u2019": "'",
        "\u2018": "'",
        "“": '"',
        "”": '"',
        "\u2013": "-",
        "—": "-",
        "≥": ">=",
        "≤": "<=",
        "œ": "oe",
        "Œ": "OE",
        "€": "EUR",
        "\u202f": " ",
        "\u2009": " ",
    }
)


@functools.cache
def unicode_fonts() -> tuple[Path, Path] | None:
    """DejaVu Sans (regular, bold) when installed; None, logged once, when missing."""
    if all(path.is_file() for path in FONT_FILES):
        return FONT_FILES
    structlog.get_logger().warning(
        "pdf_font_missing",
        font=str(FONT_FILES[0]),
        fallback="Helvetica: Latin-1 only, other characters spelt out",
        install="apt-get install fonts-dejavu-core",
    )
    return None


def latin1(text: str) -> str:
    """Text the built-in fonts can show: Latin-1 kept (é, à, ç), the rest spelt or dropped."""
    out = []
    for ch in text.translate(_SPELLING):
        if ord(ch) < 256:
            out.append(ch)
            continue
        plain = unicodedata.normalize("NFKD", ch).encode("latin-1", "ignore").decode("latin-1")
        out.append(plain or "?")
    return "".join(out)


class _Document(FPDF):
    """A4 pages numbered at their foot in the reader's language."""

    def __init__(self, sp: Speech, fonts: tuple[Path, Path] | None) -> None:
        super().__init__(format="A4")
        self.sp = sp
        self.unicode = fonts is not None
        if fonts is not None:
            self.add_font(FAMILY, "", str(fonts[0]))
            self.add_font(FAMILY, "B", str(fonts[1]))
        self.family = FAMILY if fonts is not None else "helvetica"
        self.set_auto_page_break(True, margin=15)
        self.set_margins(15, 15, 15)

    def text_of(self, text: str) -> str:
        """Text as the current font can show it."""
        return text if self.unicode else latin1(text)

    def footer(self) -> None:
        """The page number, small and grey."""
        self.set_y(-12)
        self.set_font(self.family, "", 8)
        self.set_text_color(110)
        self.cell(0, 5, self.text_of(self.sp.t("r.page", n=self.page_no())), align="C")
        self.set_text_color(0)

    def heading(self, text: str, size: float = 12) -> None:
        """A section's title."""
        self.ln(3)
        self.set_font(self.family, "B", size)
        self.multi_cell(
            0, size * 0.55, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L"
        )
        self.set_font(self.family, "", 9)
        self.ln(1)

    def line_of(self, text: str) -> None:
        """One paragraph of body text."""
        self.set_font(self.family, "", 9)
        self.multi_cell(0, 4.6, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")

    def rows(
        self, head: tuple[str, ...], rows: Sequence[tuple[str, ...]], widths: tuple[int, ...]
    ) -> None:
        """A table with a header row, each cell bounded."""
        self.set_font(self.family, "", 8)
        with self.table(
            col_widths=widths,
            text_align="LEFT",
            line_height=4.2,
            headings_style=FontFace(emphasis="BOLD", fill_color=(238, 241, 244)),
            first_row_as_headings=True,
        ) as table:
            for cells in (head, *rows):
                row = table.row()
                for text in cells:
                    row.cell(self.text_of(_bounded(text)))


def _bounded(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _svg_for_pdf(svg: str, unicode: bool) -> bytes:
    """The picture as fpdf2 takes it: titles dropped (it ignores them), our font named."""
    svg = re.sub(r"<title[^>]*>.*?</title>", "", svg, flags=re.S)
    if unicode:
        svg = svg.replace('font-family="sans-serif"', f'font-family="{FAMILY}"', 1)
    else:
        svg = latin1(svg)
    return svg.encode("utf-8")


def render_pdf(report: Report, sp: Speech, unicode: bool = True) -> bytes:
    """The report as PDF bytes, in the reader's language (unicode=False: the fallback font)."""
    fonts = unicode_fonts() if unicode else None
    pdf = _Document(sp, fonts)
    r, t = report.record, sp.t
    pdf.set_title(pdf.text_of(t("r.title", name=r.root_name)))
    pdf.set_creator("Vigie")
    pdf.add_page()
    pdf.heading(t("r.title", name=r.root_name), 15)
    pdf.set_font(pdf.family, "B", 10)
    pdf.multi_cell(
        0, 5, pdf.text_of(sp.say(r.summary)), new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L"
    )
    pdf.ln(2)
    root = f"{t('w.root_cause')} {r.root_name}" + (f" ({r.site_name})" if r.site_name else "")
    facts = [
        root,
        f"{t('r.start')}: {sp.clock(r.started_at)}",
        f"{t('r.end')}: {sp.clock(r.closed_at) if report.closed else t('r.still_open')}",
        f"{t('r.first_failure')}: {sp.clock(report.first_failure)}",
        f"{t('r.to_detect')}: {sp.duration(report.to_detect)}",
        f"{t('r.to_page')}: {sp.duration(report.to_page)}",
        f"{t('r.to_acknowledge')}: {sp.duration(report.to_acknowledge)}",
        f"{t('r.to_recover')}: {sp.duration(report.to_recover)}",
        t("w.incident_id", id=r.id),
    ]
    for fact in facts:
        pdf.line_of(fact)
    if report.tracks:
        pdf.heading(t("g.curve"))
        svg = restoration_curve(report.tracks, report.since, r.closed_at, sp, "pdf-curve")
        try:
            pdf.image(io.BytesIO(_svg_for_pdf(str(svg), pdf.unicode)), w=pdf.epw)
        except Exception as exc:  # the report matters more than its picture
            structlog.get_logger().warning("pdf_picture_failed", error=bound_text(str(exc)))
    pdf.heading(t("h.impacted_apps", n=len(report.apps)))
    head = (
        t("col.tier"),
        t("col.application"),
        t("col.down_since"),
        t("col.back_at"),
        t("col.duration"),
        t("r.availability"),
        t("col.meanwhile"),
    )
    rows = [
        (
            str(a.criticality),
            a.name,
            sp.clock(a.down_at),
            sp.clock(a.back_at),
            sp.duration(a.seconds),
            percent(a.availability, sp),
            a.degraded_mode or "-",
        )
        for a in report.apps
    ]
    if rows:
        pdf.rows(head, rows, (15, 34, 24, 24, 19, 22, 42))
    else:
        pdf.line_of(t("none.impacted"))
    pdf.heading(t("a.paging"))
    for p in r.paging:
        who = ", ".join(f"{c} ({s})" for s, c in p.paged) or "-"
        ack = (
            t("a.acked", by=p.acked_by or "?", at=sp.clock(p.acked_at), via=p.ack_via or "?")
            if p.acked_at
            else t("a.not_acked")
        )
        pdf.line_of(f"{p.team}: {t('a.paged_to')} {who}. {ack}")
    if not r.paging:
        pdf.line_of(t("a.no_paging"))
    pdf.heading(t("r.actions"))
    for action in report.actions:
        pdf.line_of(
            _bounded(
                f"{sp.clock(action.at)} {sp.who(action.who)} ({t('role.' + action.role)}):"
                f" {t('action.' + action.action)}"
                f" {action.target} {action.detail}"
            )
        )
    if not report.actions:
        pdf.line_of(t("r.no_actions"))
    pdf.heading(t("h.timeline"))
    for c in r.timeline:
        if c.event == "mains_lost":
            pdf.line_of(f"{sp.clock(c.at)} {c.name}: {t('w.mains_lost')}")
        else:
            was = sp.state(c.was) if c.was else t("w.first_seen")
            pdf.line_of(f"{sp.clock(c.at)} {c.name}: {was} → {sp.state(c.state)}")
    return bytes(pdf.output())
