"""Debian's headless chromium renders the status page during a power cut; device text stays text."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import quote

from tests.conftest import require_binary
from tests.snmp_peers import Snmpsim
from tests.waiting import wait_for
from tests.web.outage import CHROMIUM, chromium, power_cut, running_hospital
from tests.web.test_pages import EVIL, evil_device, with_evil_snmp
from vigie.probes.base import ProbeRegistry
from vigie.probes.http import HttpProbe
from vigie.probes.snmp import SnmpProbe

__all__ = ["evil_device"]  # the snmpsim fixture, shared with the page tests

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def visible(dom: str) -> str:
    """Return the text of a dumped DOM, tags dropped, entities decoded, spaces collapsed."""
    dom = re.sub(r"(?s)<(style|head)\b.*?</\1>", " ", dom)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


async def test_chromium_shows_the_power_cut_and_never_runs_device_text(
    tmp_path: Path, evil_device: Snmpsim
) -> None:
    """The rendered overview names the cause and apps; a <script> sysDescr is shown, not run."""
    binary = require_binary(CHROMIUM, "chromium")
    registry = ProbeRegistry([HttpProbe(), SnmpProbe()])
    async with running_hospital(tmp_path, registry, config_hook=with_evil_snmp(evil_device)) as (
        daemon,
        targets,
    ):
        await wait_for(lambda: daemon.store.latest("ups-nord-1-snmp"), "the snmp poll")
        await power_cut(daemon, targets)
        base = f"http://127.0.0.1:{daemon.listen_port}"
        overview = await chromium(binary, "--dump-dom", f"{base}/")
        component = await chromium(binary, "--dump-dom", f"{base}/component/ups-nord-1")
        shot = tmp_path / "overview.png"
        await chromium(binary, f"--screenshot={shot}", "--window-size=1280,900", f"{base}/")
    text = visible(overview)
    assert "Datacenter Nord: mains lost at" in text
    assert "20 applications impacted" in text
    assert "Procédure dégradée DP-12: dossiers papier, appeler le 4412" in text
    assert "OK Datacenter Bellevue" in text
    # the device's text is in the DOM as text, and no script element exists anywhere
    assert "descr=&lt;script&gt;alert(1)&lt;/script&gt;" in component
    assert f"descr={EVIL}" in visible(component)
    assert "<script" not in component.lower() and "<script" not in overview.lower()
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 20_000


async def test_chromium_reads_the_power_cut_in_french(tmp_path: Path) -> None:
    """web.language fr, Europe/Paris: a French browser gets French; an English one, English."""
    binary = require_binary(CHROMIUM, "chromium")
    french = {"web": {"listen": "127.0.0.1:0", "language": "fr"}, "timezone": "Europe/Paris"}
    async with running_hospital(tmp_path, extra=french) as (daemon, targets):
        await power_cut(daemon, targets)
        base = f"http://127.0.0.1:{daemon.listen_port}"
        incident = next(iter(daemon.health.engine.snapshot.incidents.values())).id
        overview = await chromium(binary, "--accept-lang=fr-FR,fr", "--dump-dom", f"{base}/")
        page = await chromium(
            binary, "--accept-lang=fr-FR,fr", "--dump-dom", f"{base}/incident/{quote(incident)}"
        )
        english = await chromium(binary, "--accept-lang=en-US,en", "--dump-dom", f"{base}/")
    text = visible(overview)
    assert '<html lang="fr">' in overview
    assert re.search(r"Datacenter Nord : secteur perdu à \d\d:\d\d CET", text), text
    assert "20 applications touchées" in text and "Cause première : Datacenter Nord" in text
    assert "EN PANNE Datacenter Nord" in text and "OK Datacenter Bellevue" in text
    assert re.search(r"Mis à jour \d\d/\d\d \d\d:\d\d CET", text)
    timeline = visible(page).split("Chronologie", 1)[1]
    assert "secteur perdu" in timeline
    assert "Datacenter Nord: mains lost at" in visible(english)
    assert "<script" not in overview.lower()
