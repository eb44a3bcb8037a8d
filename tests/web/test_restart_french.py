"""The crisis cell's pages stay French across restarts of the daemon (issue 16, points 1 and 7).

A daemon with web.language fr, Europe/Paris and a state_dir watches the test hospital during
Nord's power cut, alerting a real Alertmanager; it is restarted mid-incident (the monitoring
host sat in the datacenter that lost power), then once more after the incident closed. Each
time the incident, overview, board, archive and report pages carry no English sentence of the
catalogue, the incident keeps its id and its crisis-cell updates, and the alert the restarted
daemon sends speaks French: the sentences it reloads (the archive's summary, built again or
read back) keep their id and parameters, not their English rendering.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from tests.alerting.conftest import (
    Alertmanager,
    AlertmanagerFactory,
    alertmanagers,
    receiver,
    session,
)
from tests.health.hospital import hospital
from tests.waiting import wait_for
from tests.web.outage import Targets, all_ok, nord_incident, nord_power_cut
from tests.web.test_french import english_only, untranslated, visible
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.probes.base import ProbeRegistry
from vigie.probes.http import HttpProbe, make_session

__all__ = ["alertmanagers", "receiver", "session"]

BEFORE = "La DSI rétablit le courant de Nord"
AFTER = "Groupe électrogène branché, serveurs en cours de démarrage"


@pytest.fixture
async def am(alertmanagers: AlertmanagerFactory, session: aiohttp.ClientSession) -> Alertmanager:
    """One real Alertmanager."""
    manager = alertmanagers("am", group_by=("...",))
    await manager.start(session)
    return manager


@pytest.fixture
async def targets() -> AsyncIterator[Targets]:
    """The hospital's services, kept across the daemon's restarts."""
    served = Targets()
    await served.start()
    yield served
    await served.stop()


def french_config(tmp: Path, targets: Targets, am: Alertmanager) -> Path:
    """Write the French test hospital's config with a state_dir and alerting; return its path."""
    config = hospital(targets.base)
    config["web"] = {"listen": "127.0.0.1:0", "language": "fr"}
    config["timezone"] = "Europe/Paris"
    config["health"] = {"resolve_hold": 0}
    config["state_dir"] = str(tmp / "state")
    config["alerting"] = {"alertmanagers": [am.url], "watchdog": False}
    path = tmp / "vigie.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return path


@asynccontextmanager
async def daemon_on(path: Path) -> AsyncIterator[Daemon]:
    """Start a daemon on the config file; stop it on exit (a restart is two of these)."""
    registry = ProbeRegistry([HttpProbe()])
    async with make_session() as http:
        daemon = Daemon(load_config(path, registry, env={}), registry, http)
        await daemon.start()
        try:
            yield daemon
        finally:
            await daemon.stop()


async def french_pages(daemon: Daemon, paths: list[str]) -> dict[str, str]:
    """Fetch pages with no Accept-Language (the config's French); fail on English text.

    Returns each page's visible text (Markdown as it is), by path.
    """
    fragments = english_only()
    base = f"http://127.0.0.1:{daemon.listen_port}"
    texts: dict[str, str] = {}
    problems: dict[str, list[str]] = {}
    async with aiohttp.ClientSession() as s:
        for path in paths:
            async with s.get(base + path) as r:
                assert r.status == 200, (path, r.status)
                page = await r.text()
            if path.endswith(".md"):
                text = texts[path] = " ".join(page.split())
            else:
                assert '<html lang="fr">' in page, path
                text = visible(page, devices=False)  # device texts are not the catalogue's
                texts[path] = visible(page)
            if found := untranslated(text, fragments):
                problems[path] = found
    assert not problems, problems
    return texts


async def post_update(daemon: Daemon, iid: str, text: str) -> None:
    """Post a crisis-cell update on the incident through the API."""
    url = f"http://127.0.0.1:{daemon.listen_port}/api/v1/incidents/{quote(iid, safe='')}/updates"
    async with aiohttp.ClientSession() as s, s.post(url, json={"text": text}) as r:
        assert r.status == 201, await r.text()


async def test_a_restart_mid_power_cut_and_after_it_keeps_everything_french(
    tmp_path: Path, targets: Targets, am: Alertmanager, session: aiohttp.ClientSession
) -> None:
    """Restarted mid-incident: same incident, French pages and alert, the update kept; after
    the incident closed and another restart, its archive and report are French."""
    path = french_config(tmp_path, targets, am)
    async with daemon_on(path) as daemon:
        await wait_for(lambda: all_ok(daemon), "every component OK")
        targets.down = nord_power_cut()
        await wait_for(lambda: nord_incident(daemon), "the Datacenter Nord incident")
        iid = daemon.health.engine.snapshot.incidents["site:nord"].id
        await post_update(daemon, iid, BEFORE)
        await french_pages(daemon, ["/", f"/incident/{quote(iid, safe='')}"])

    page = f"/incident/{quote(iid, safe='')}"
    async with daemon_on(path) as daemon:
        await wait_for(lambda: nord_incident(daemon), "the incident, reloaded")
        assert daemon.health.engine.snapshot.incidents["site:nord"].id == iid
        texts = await french_pages(
            daemon, ["/", "/recovery", "/archive", page, f"{page}/report", f"{page}/report.md"]
        )
        for text in (texts["/"], texts[page]):
            assert "Cause première : Datacenter Nord" in text and "secteur perdu" in text
            assert BEFORE in text  # the update posted before the restart
        assert (
            "Chronologie" in texts[page] and "secteur perdu" in texts[page].split("Chronologie")[1]
        )
        await post_update(daemon, iid, AFTER)

        async def french_alert() -> bool:
            alert = await am.alert(session, "VigieSiteIncident")
            return alert is not None and alert["annotations"].get("update") == AFTER

        await wait_for(french_alert, "the restarted daemon's alert, with its update")
        alert = await am.alert(session, "VigieSiteIncident")
        assert alert is not None
        notes = alert["annotations"]
        assert notes["summary"].startswith("Datacenter Nord : secteur perdu à "), notes
        assert "touchées" in notes["summary"] and "[niveau 1]" in notes["description"], notes
        targets.down = set()
        await wait_for(
            lambda: daemon.archive is not None and daemon.archive.get(iid) is not None,
            "the closed incident in the archive",
        )

    archived = f"/archive/{quote(iid, safe='')}"
    async with daemon_on(path) as daemon:
        texts = await french_pages(
            daemon, ["/archive", archived, f"{page}/report", f"{page}/report.md"]
        )
    for shown in (archived, f"{page}/report", f"{page}/report.md"):
        # the summary as the incident last said it (recovering, at its close), in French
        assert re.search(r"Datacenter Nord : (secteur perdu|rétablissement en cours)", texts[shown])
        assert BEFORE in texts[shown] and AFTER in texts[shown], shown
    assert "Rapport post-incident : Datacenter Nord" in texts[f"{page}/report"]
    assert "Incident clos" in texts[archived]
