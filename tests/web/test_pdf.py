"""The post-incident report as PDF: the lab's power cut rendered, its text read back with pypdf
and held against the Markdown report of the same facts; served by a live daemon with its
content type and file name; French accents with DejaVu Sans, and the Latin-1 fallback without.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from pypdf import PdfReader
from structlog.testing import capture_logs

from tests.conftest import require_binary
from tests.health.test_archive import T0, escalation, incident, topology
from tests.waiting import wait_for
from tests.web.test_french import SPEED
from tests.web.test_report import HISTORY
from vigie.monitor.audit import Action
from vigie.monitor.demo import running_demo
from vigie.monitor.health.archive import archived_incident
from vigie.monitor.i18n import Speech, zone_of
from vigie.monitor.web import pdf
from vigie.monitor.web.pdf import latin1, render_pdf
from vigie.monitor.web.report import Report, build, markdown, pdf_name, percent


def text_of(body: bytes) -> str:
    """A PDF's text, every page, spaces collapsed (table cells wrap at spaces)."""
    assert body.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(body))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def figures(report: Report, sp: Speech) -> list[str]:
    """What both forms must say: times, durations, each application's outage and tier."""
    out = [
        sp.duration(report.to_detect),
        sp.duration(report.to_page),
        sp.duration(report.to_acknowledge),
        sp.clock(report.first_failure),
        sp.clock(report.record.started_at),
        report.record.id,
    ]
    for a in report.apps:
        out += [a.name, sp.clock(a.down_at), sp.clock(a.back_at), sp.duration(a.seconds)]
        out.append(percent(a.availability, sp))
    return out


def test_a_scripted_report_says_in_pdf_what_the_markdown_says() -> None:
    """The scripted incident (tests/web/test_report.py): same figures, French accents kept."""
    record = archived_incident(
        incident(T0),
        T0 + 3600,
        topology(),
        lambda c: HISTORY.get(c, []),
        escalations=[escalation()],
    )
    update = Action(T0 + 900, "cellule", "operator", "basic_auth", "", "update", record.id, "ok")
    report = build(record, True, [update], {"app-dpi": 0.99952})
    sp = Speech("fr", zone_of("Europe/Paris"))
    require_binary(str(pdf.FONT_FILES[0]), "fonts-dejavu-core")
    md = " ".join(markdown(report, sp).split())
    text = text_of(render_pdf(report, sp))
    for figure in figures(report, sp):
        assert figure in md and figure in text, figure
    both = ("Délai de prise en compte: 5 min 00 s", "Pris en compte par Dr Martin", "IMPACTÉ → OK")
    for words in (*both, "50 min 20 s", "99,952 %", "Dossiers papier"):
        assert words in md and words in text, words
    assert "Reprise : applications rétablies au fil du temps" in text  # the curve's heading
    assert "Niveau 1 (1/1)" in text  # and its legend, drawn from the SVG

    # without DejaVu: Helvetica, accents kept (Latin-1), the arrow spelt
    plain = text_of(render_pdf(report, sp, unicode=False))
    assert "IMPACTÉ -> OK" in plain and "Délai de rétablissement: 1 h 00" in plain
    assert "Niveau 1 (1/1)" in plain  # the curve is drawn with the built-in font too


def test_latin1_spells_what_the_builtin_font_cannot_show() -> None:
    """Accents stay; arrows, ellipses, ligatures and other scripts are spelt or marked."""
    assert latin1("Rétabli → œuvre… ≥ 3 ✓ é") == "Rétabli -> oeuvre... >= 3 ? é"


def test_a_missing_font_is_logged_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DejaVu file: one warning naming the package, then the fallback silently."""
    monkeypatch.setattr(pdf, "FONT_FILES", (tmp_path / "a.ttf", tmp_path / "b.ttf"))
    pdf.unicode_fonts.cache_clear()
    try:
        with capture_logs() as logs:
            assert pdf.unicode_fonts() is None
            assert pdf.unicode_fonts() is None
    finally:
        pdf.unicode_fonts.cache_clear()
    assert [e["event"] for e in logs] == ["pdf_font_missing"]
    assert "fonts-dejavu-core" in logs[0]["install"]


def test_the_file_name_carries_the_incident_id_in_safe_characters() -> None:
    """`site:nord@2026…` becomes a name no browser or shell trips on."""
    assert pdf_name('site:nord@20261202T014700Z"; x') == (
        "vigie-report-site-nord-20261202T014700Z-x.pdf"
    )


async def test_the_lab_power_cut_pdf_matches_its_markdown() -> None:
    """The demo's power cut (speed 40): the PDF served and the Markdown report agree."""
    async with running_demo("127.0.0.1:0") as demo:
        await asyncio.wait_for(demo.daemon.scheduler.first_round_done.wait(), 60)
        demo.controller.start("power-cut", SPEED)

        def nord_apps_down() -> bool:
            found = demo.daemon.health.engine.snapshot.incidents.get("site:nord")
            return found is not None and len(found.applications) >= 3

        await wait_for(nord_apps_down, "Nord's applications in the site incident", within=120)
        daemon = demo.daemon
        open_incident = daemon.health.engine.snapshot.incidents["site:nord"]
        record = archived_incident(
            open_incident,
            daemon.health.engine.snapshot.at,
            daemon.health.engine.topology,
            daemon.history.transitions,
        )
        report = build(record, False, [])
        config = demo.daemon.loaded.config  # the demo speaks French, in Paris
        speech = Speech(config.web.language, zone_of(config.timezone))
        md = " ".join(markdown(report, speech).split())
        text = text_of(await asyncio.to_thread(render_pdf, report, speech))
        assert len(report.apps) >= 3
        for figure in figures(report, speech):
            assert figure in md and figure in text, figure
        assert "secteur perdu" in text and "toujours en cours" in text
        assert "Applications rétablies" in text  # the curve's axis, drawn in the PDF
        url = f"{demo.url}/incident/{quote(open_incident.id, safe='')}/report.pdf"
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            assert resp.status == 200 and resp.content_type == "application/pdf"
            name = re.search(r'filename="([^"]+)"', resp.headers["Content-Disposition"])
            body = await resp.read()
        assert name is not None and name.group(1) == pdf_name(open_incident.id)
        served = text_of(body)
        assert open_incident.id in served and "Rapport post-incident : Datacenter Nord" in served
