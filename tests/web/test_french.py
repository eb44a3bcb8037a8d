"""The crisis cell's pages in French: a walk of every page of the demo during the lab's power cut.

The demo config sets `web.language: fr` and `timezone: Europe/Paris`. Every page of a live
daemon watching the lab (config/demo.yaml) is fetched while the power-cut scenario runs; none may
show an English sentence of the catalogue (device texts and configured names aside: they are
not in the catalogue). A browser naming English gets English; the root cause is the same name
on the overview and the incident page, and the timeline has a "mains lost" entry.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import quote

import aiohttp
import pytest

from tests.waiting import wait_for
from vigie.monitor.demo import Demo, running_demo
from vigie.monitor.health.archive import archived_incident
from vigie.monitor.health.states import State
from vigie.monitor.i18n import EN, FR, Entry, Language, Plural, negotiate, placeholders

SPEED = 40.0
"""Scenario speed: the batteries run out within about 20 s (as tests/web/screenshot.py)."""


def visible(page: str, devices: bool = True) -> str:
    """Return the visible text of a page: tags dropped, entities decoded, spaces collapsed.

    devices=False drops what devices and probes wrote (class `device`: errors, sample labels).
    """
    page = re.sub(r"(?s)<(style|head)\b.*?</\1>", " ", page)
    if not devices:
        page = re.sub(r'(?s)<(td|div) class="[^"]*\bdevice\b[^"]*">.*?</\1>', " ", page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _forms(entry: Entry) -> list[str]:
    return [entry.one, entry.other] if isinstance(entry, Plural) else [entry]


def _fragments(template: str) -> list[str]:
    """The literal words of a template between its placeholders, trimmed of punctuation."""
    parts = re.split(r"\{[^{}]*\}", template)
    return [p.strip(" :;,.·()[]=+-→") for p in parts]


def english_only() -> dict[str, str]:
    """English fragments of the catalogue that French never uses, by fragment: their id.

    A fragment French writes too, whole or as words of a French message ('Archive' in
    'Archive des incidents'), is French as well: left out.
    """
    forms = [re.sub(r"\{[^{}]*\}", " ", f) for entry in FR.values() for f in _forms(entry)]
    french = {f for form in forms for f in _fragments(form)}
    found: dict[str, str] = {}
    for key, entry in EN.items():
        for form in _forms(entry):
            for frag in _fragments(form):
                # two letters or fewer ("s", "d h") would match any text; 'OK' reads the same
                if len(re.sub(r"[^A-Za-z]", "", frag)) <= 2 or frag in french:
                    continue
                words = re.compile(rf"(?<!\w){re.escape(frag)}(?!\w)")
                if not any(words.search(f) for f in forms):
                    found.setdefault(frag, key)
    return found


def untranslated(text: str, fragments: dict[str, str]) -> list[str]:
    """Return the catalogue ids whose English words appear, as words, in a page's text.

    Words inside paths, ids and URLs (`/metrics`, `srv-down`) are not sentences: skipped.
    """
    found: list[str] = []
    for frag, key in fragments.items():
        match = re.search(rf"(?<![\w/.-]){re.escape(frag)}(?![\w/.-])", text)
        if match is not None:
            around = text[max(0, match.start() - 40) : match.end() + 40]
            found.append(f"{key}: {frag!r} in {around!r}")
    return sorted(found)


@pytest.fixture
async def power_cut() -> AsyncIterator[Demo]:
    """The demo with the power-cut scenario played until Nord's applications are impacted."""
    async with running_demo("127.0.0.1:0") as demo:
        await asyncio.wait_for(demo.daemon.scheduler.first_round_done.wait(), 60)
        demo.controller.start("power-cut", SPEED)

        def apps_hit() -> bool:
            comps = demo.daemon.health.engine.snapshot.components.values()
            hit = [c for c in comps if c.kind == "application" and c.state is State.IMPACTED]
            return len(hit) >= 3 and bool(demo.daemon.health.engine.snapshot.incidents)

        await wait_for(apps_hit, "the power cut reaching the applications", within=120)
        yield demo


async def _get(session: aiohttp.ClientSession, url: str, lang: str | None = None) -> str:
    headers = {} if lang is None else {"Accept-Language": lang}
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, (url, response.status)
        return await response.text()


def archive_one(demo: Demo) -> str:
    """Archive the power cut's record as of now under its own id; return that id.

    The demo's resolve_hold (30 s) would keep a real closing out of a test's time: the record
    is the daemon's own (archived_incident over its topology and history, its posted updates),
    added through the daemon's archive as a closing adds it.
    """
    daemon = demo.daemon
    assert daemon.archive is not None  # the demo has a state_dir
    incident = next(i for i in daemon.health.engine.snapshot.incidents.values() if i.site_wide)
    record = archived_incident(
        incident,
        time.time(),
        daemon.health.engine.topology,
        daemon.history.transitions,
        updates=[(a.at, a.who, a.detail, a.expected) for a in daemon.audit.updates(incident.id)],
    )
    record = replace(record, id=f"{incident.id}-archived")
    daemon.archive.add(record)
    return record.id


async def test_every_page_is_french_during_the_power_cut(power_cut: Demo) -> None:
    """Overview, board, checks, each incident and component page, availability, the archive and
    an archived incident, the reports (HTML and Markdown), the audit log: no English
    catalogue text."""
    demo = power_cut
    snap = demo.daemon.health.engine.snapshot
    paths = ["/", "/recovery", "/checks", "/archive", "/availability"]
    paths += ["/availability?from=2026-01-01&to=2026-01-31"]
    paths += [f"/incident/{quote(i.id, safe='')}" for i in snap.incidents.values()]
    paths += [f"/component/{quote(c, safe='')}" for c in demo.daemon.health.engine.topology.order]
    paths.append("/incident/nowhere")  # the 404 page too
    first = quote(next(i for i in snap.incidents.values() if i.site_wide).id, safe="")
    paths += ["/audit", f"/incident/{first}/update"]  # the audit log, an update's form
    paths += ["/maintenance", "/escalations"]  # operator state: windows, who was paged
    paths += [f"/incident/{first}/report", f"/incident/{first}/report.md"]
    fragments = english_only()
    assert fragments["applications impacted"] == "apps.impacted"  # the list is not empty
    problems: dict[str, list[str]] = {}
    async with aiohttp.ClientSession() as session:
        update = {"text": "La DSI rétablit le courant", "expected_recovery": "16:00"}
        url = f"{demo.url}/api/v1/incidents/{first}/updates"
        async with session.post(url, json=update) as response:  # shown on the pages walked
            assert response.status == 201
        archived = quote(archive_one(demo), safe="")
        paths += [f"/archive/{archived}", f"/incident/{archived}/report"]
        paths += [f"/incident/{archived}/report.md", "/archive"]
        for path in paths:
            headers = {"Accept-Language": "fr-FR,fr;q=0.9"}
            async with session.get(demo.url + path, headers=headers) as response:
                assert response.status in (200, 404), (path, response.status)
                page = await response.text()
            if path.endswith(".md"):
                assert page.startswith("# Rapport post-incident"), path
                text = " ".join(page.split())
            else:
                assert '<html lang="fr">' in page, path
                text = visible(page, devices=False)
            found = untranslated(text, fragments)
            if found:
                problems[path] = found
    assert not problems, problems
    assert len(paths) > 30  # every component was walked


async def test_the_french_overview_and_incident_agree_and_say_mains_lost(power_cut: Demo) -> None:
    """One root-cause name on both pages, times with their zone, a 'secteur perdu' entry."""
    demo = power_cut
    incident = next(i for i in demo.daemon.health.engine.snapshot.incidents.values() if i.site_wide)
    async with aiohttp.ClientSession() as session:
        overview = await _get(session, demo.url + "/")  # no Accept-Language: the config's fr
        page = await _get(session, f"{demo.url}/incident/{quote(incident.id, safe='')}")
        english = await _get(session, demo.url + "/", "en-GB,en;q=0.8,fr;q=0.5")
    roots = re.findall(r'class="root-cause">(?:<a [^>]*>)?([^<]+)<', overview)
    assert roots and re.findall(r'class="root-cause">(?:<a [^>]*>)?([^<]+)<', page)[0] in roots
    text = visible(overview)
    assert "Cause première : Datacenter Nord" in text
    assert re.search(r"secteur perdu à \d\d:\d\d CET", text), text
    assert re.search(r"applications? touchées?", text)
    assert "about 0 minutes" not in text and "environ 0 minute" not in text
    assert re.search(r"Mis à jour \d\d/\d\d \d\d:\d\d CET", text)
    timeline = visible(page.split("Chronologie", 1)[1])
    assert "secteur perdu" in timeline and "Datacenter Nord" in timeline
    # the browser asks for English first: English, same zone
    assert '<html lang="en">' in english and "Root cause: Datacenter Nord" in visible(english)
    assert "open incident" in visible(english)


async def test_alert_annotations_speak_the_configs_language(power_cut: Demo) -> None:
    """The alerts the daemon builds for the power cut are in French whatever the browser says."""
    from vigie.monitor.health.alerts import incident_alert
    from vigie.monitor.i18n import Speech, zone_of

    demo = power_cut
    config = demo.daemon.loaded.config
    speech = Speech(config.web.language, zone_of(config.timezone))
    incident = next(i for i in demo.daemon.health.engine.snapshot.incidents.values() if i.site_wide)
    alert = incident_alert(incident, "", speech)
    assert alert.annotations["summary"].startswith("Datacenter Nord : secteur perdu à ")
    assert "touchée" in alert.annotations["summary"]
    assert "[niveau 1]" in alert.annotations["description"]


def test_the_catalogue_has_every_message_in_both_languages() -> None:
    """Same ids, same placeholders, the same plural count; French differs where English reads."""
    assert EN.keys() == FR.keys()
    for key, entry in EN.items():
        french = FR[key]
        assert isinstance(french, Plural) == isinstance(entry, Plural) or key in (
            "site.mass_failure",  # French agrees "composant(s)" with the count, English not
            "site.recovering",
            "apps.more_at_risk",
            "g.strip_summary",  # "1 jour sur 30", "2 jours sur 30"; English: "1 of 30 days"
        ), key
        english = {p for form in _forms(entry) for p in placeholders(form)}
        assert english == {p for form in _forms(french) for p in placeholders(form)}, key


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        (None, "fr", "fr"),
        ("", "en", "en"),
        ("en-US,en;q=0.9", "fr", "en"),
        ("de-DE, fr;q=0.5, en;q=0.4", "en", "fr"),
        ("de, it", "fr", "fr"),  # nothing supported: the config's
        ("fr;q=0, en;q=0.1", "fr", "en"),  # q=0 refuses French
        ("FR-be", "en", "fr"),
        ("x" * 5000, "fr", "fr"),
    ],
)
def test_accept_language_picks_a_supported_language(
    header: str | None, default: Language, expected: Language
) -> None:
    """The browser's most wanted supported language wins over the config's, else the config's."""
    assert negotiate(header, default) == expected
