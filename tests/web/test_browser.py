"""Debian's headless chromium renders the status page during a power cut; device text stays text."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import itertools
import json
import os
import re
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import bcrypt

from tests.conftest import require_binary
from tests.snmp_peers import Snmpsim
from tests.waiting import wait_for
from tests.web.outage import CHROMIUM, CHROMIUM_FLAGS, chromium, power_cut, running_hospital
from tests.web.test_pages import EVIL, evil_device, with_evil_snmp
from vigie.monitor.app import Daemon
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


# --- the crisis cell in French, driven through the DevTools protocol ---------------------------

PASSWORD = "Cellule-de-crise-2026"
UPDATE = "La DSI rétablit le courant de Nord, groupe électrogène en route"
FORM = re.compile(r'<form\b[^>]*method="post"', re.IGNORECASE)


class Page:
    """One tab of a headless chromium driven over the DevTools protocol (CDP), as a user would:
    open a page, fill a form, press its button, read the DOM chromium rendered."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events read meanwhile are kept)."""
        mine = next(self._ids)
        await self._ws.send_json({"id": mine, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self._ws.receive_json(), 30)
            if message.get("id") == mine:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self._events.append(message["method"])

    async def _loaded(self) -> None:
        """Wait for the load event of the page being opened."""
        while "Page.loadEventFired" not in self._events:
            message = await asyncio.wait_for(self._ws.receive_json(), 30)
            if "method" in message:
                self._events.append(message["method"])

    async def open(self, url: str) -> str:
        """Open a URL, wait until it has loaded, return the rendered DOM."""
        self._events.clear()
        await self.call("Page.navigate", url=url)
        await self._loaded()
        return await self.dom()

    async def evaluate(self, expression: str) -> Any:
        """Evaluate an expression in the page (awaiting a promise), return its value."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return result["result"].get("value")

    async def submit(self, fields: dict[str, str]) -> str:
        """Fill the page's form fields by name, press its submit button, return the next DOM."""
        self._events.clear()
        fill = "".join(
            f"document.querySelector('[name={name}]').value = {json.dumps(value)};"
            for name, value in fields.items()
        )
        await self.evaluate(fill + "document.querySelector('form [type=submit]').click(); true")
        await self._loaded()
        return await self.dom()

    async def dom(self) -> str:
        """The DOM as chromium rendered it (what --dump-dom prints)."""
        return str(await self.evaluate("document.documentElement.outerHTML"))


@asynccontextmanager
async def browser(binary: str, user: str) -> AsyncIterator[Page]:
    """A headless chromium asking for French, logged in (basic auth) as `user`."""
    # chromium's helpers may still write in the profile as they exit: never fail on its removal
    with tempfile.TemporaryDirectory(prefix="vigie-cdp-", ignore_cleanup_errors=True) as profile:
        proc = await asyncio.create_subprocess_exec(
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",  # chromium writes the port it chose in the profile
            "--accept-lang=fr-FR,fr",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            active = Path(profile) / "DevToolsActivePort"
            await wait_for(lambda: "\n" in _read(active), "chromium's DevTools port")
            port = _read(active).split("\n")[0]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                    tabs = await r.json()
                tab = next(t for t in tabs if t["type"] == "page")
                async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    page = Page(ws)
                    await page.call("Page.enable")
                    await page.call("Network.enable")
                    # what the browser sends once its user typed the password in the prompt
                    await page.call("Network.setExtraHTTPHeaders", headers=authorization(user))
                    yield page
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: chromium and its helpers
            await proc.wait()


def authorization(user: str) -> dict[str, str]:
    """The basic-auth header of a user of the test's web.yml."""
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@asynccontextmanager
async def french_cell(tmp: Path) -> AsyncIterator[tuple[Daemon, str]]:
    """The test hospital in French (Europe/Paris) with a state_dir and basic auth: alice is an
    operator, bob a viewer; Nord's power cut under way. Yields the daemon and the incident id."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_yml = tmp / "web.yml"
    web_yml.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n  bob: '{hashed}'\n")

    def hook(config: dict[str, Any]) -> None:
        config["web"] = {
            "listen": "127.0.0.1:0",
            "language": "fr",
            "config_file": str(web_yml),
            "roles": {"alice": "operator", "bob": "viewer"},
        }

    extra = {"state_dir": str(tmp / "state"), "timezone": "Europe/Paris"}
    async with running_hospital(tmp, extra=extra, config_hook=hook) as (daemon, targets):
        await power_cut(daemon, targets)
        yield daemon, daemon.health.engine.snapshot.incidents["site:nord"].id


async def test_chromium_in_french_a_viewer_reads_and_an_operator_posts_an_update(
    tmp_path: Path,
) -> None:
    """bob (viewer) sees no operator form and his browser's POST of an update is refused (403,
    naming the operator role); alice (operator) posts one through the incident page's form and
    reads it, in French, on the incident page and on the overview."""
    binary = require_binary(CHROMIUM, "chromium")
    async with french_cell(tmp_path) as (daemon, iid):
        base = f"http://127.0.0.1:{daemon.listen_port}"
        incident = f"{base}/incident/{quote(iid, safe='')}"
        end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        window = {"target": "srv-19", "end": end, "reason": "micrologiciel"}
        async with (
            aiohttp.ClientSession(headers=authorization("alice")) as s,
            s.post(f"{base}/api/v1/maintenance", json=window) as r,
        ):
            assert r.status == 201, await r.text()  # a window the operator may end early
        async with browser(binary, "bob") as bob:
            overview = await bob.open(f"{base}/")
            page = await bob.open(incident)
            refused = await bob.evaluate(
                "fetch(location.pathname + '/updates', {method: 'POST',"
                " body: new URLSearchParams({text: 'bob écrit'})})"
                ".then(async r => [r.status, await r.text()])"
            )
            form = await bob.open(incident + "/update")
            shown = await bob.open(f"{base}/maintenance")
        assert '<html lang="fr">' in overview and "Cause première : Datacenter Nord" in visible(
            overview
        )
        assert "Points de situation de la cellule de crise" in visible(page)
        assert "micrologiciel" in visible(shown)  # bob reads the window, with no way to end it
        for dom in (overview, page, form, shown):
            assert not FORM.search(dom) and "<textarea" not in dom
        assert "/update" not in page  # no link to the form either
        assert refused[0] == 403, refused
        assert "il faut le rôle opérateur ; bob a le rôle lecteur" in refused[1], refused
        assert "il faut le rôle opérateur" in visible(form)  # the form itself: refused too
        async with browser(binary, "alice") as alice:
            page = await alice.open(incident)
            assert re.search(r'href="/incident/[^"]+/update"', page)
            form = await alice.open(incident + "/update")
            assert FORM.search(form) and "Publier un point de situation" in visible(form)
            after = await alice.submit({"text": UPDATE, "expected_recovery": "16:00"})
            location = await alice.evaluate("location.href")
            overview = await alice.open(f"{base}/")
            windows = await alice.open(f"{base}/maintenance")
        assert FORM.search(windows)  # the operator may end the window; bob could not
        assert unquote(location) == unquote(incident)  # back on the incident page
        text = visible(after)
        assert UPDATE in text, text
        assert re.search(r"retour prévu : \d\d/\d\d 16:00 CET", text), text
        assert re.search(r"publié par alice, \d\d/\d\d \d\d:\d\d CET", text), text
        assert UPDATE in visible(overview) and "publié par alice" in visible(overview)
        assert "bob écrit" not in text


async def test_chromium_in_french_renders_the_power_cuts_report_and_availability(
    tmp_path: Path,
) -> None:
    """The printable report of the power cut and the availability page, as chromium renders
    them in French: words, the root cause, durations and percentages with a decimal comma."""
    binary = require_binary(CHROMIUM, "chromium")
    async with french_cell(tmp_path) as (daemon, iid):
        base = f"http://127.0.0.1:{daemon.listen_port}"
        report = await chromium(
            binary,
            "--accept-lang=fr-FR,fr",
            "--dump-dom",
            f"http://alice:{quote(PASSWORD, safe='')}@127.0.0.1:{daemon.listen_port}"
            f"/incident/{quote(iid, safe='')}/report",
        )
        availability = await chromium(
            binary,
            "--accept-lang=fr-FR,fr",
            "--dump-dom",
            f"http://bob:{quote(PASSWORD, safe='')}@127.0.0.1:{daemon.listen_port}/availability",
        )
    assert base  # the daemon answered both on its free port
    text = visible(report)
    assert '<html lang="fr">' in report and "Rapport post-incident : Datacenter Nord" in text
    assert "toujours en cours" in text  # the power cut is not over
    assert "Délai de détection" in text and "Chronologie" in text
    assert "secteur perdu" in text and "Dossier patient" in text
    assert "<script" not in report.lower()
    text = visible(availability)
    assert '<html lang="fr">' in availability and "Disponibilité" in text
    assert "Par niveau" in text and "Par application" in text and "Dernières 24 h" in text
    # Nord's first record system fell with the power cut: below 100 %, its down time in words
    nord = re.search(r"Dossier patient 00\b.*?(\d{1,3}),(\d{3}) % indisponible \d+ s", text)
    assert nord is not None and int(nord.group(1)) < 100, text
    assert re.search(r"Dossier patient 12\b.*?100,000 %", text), text  # Bellevue's stayed up
    assert "availability" not in text.lower() and "<script" not in availability.lower()
