"""The status pages during and after a Datacenter Nord power cut, on a real daemon and targets."""

from __future__ import annotations

import html
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.snmp_peers import Snmpsim, start_snmpsim
from tests.waiting import wait_for
from tests.web.outage import all_ok, fetch, nord_power_cut, power_cut, running_hospital
from vigie.monitor.health.states import State
from vigie.probes.base import ProbeRegistry
from vigie.probes.http import HttpProbe
from vigie.probes.snmp import SnmpProbe

EVIL = "<script>alert(1)</script>"


def text_of(page: str) -> str:
    """Return the visible text of a page, tags dropped and entities decoded, spaces collapsed."""
    page = re.sub(r"(?s)<(style|head)\b.*?</\1>", " ", page)
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    return re.sub(r" ([,)])", r"\1", text).replace("( ", "(")


async def test_overview_names_root_cause_impacted_apps_and_degraded_mode(tmp_path: Path) -> None:
    """During the power cut the overview shows Nord down, its UPS as cause, apps and what to do."""
    async with running_hospital(tmp_path) as (daemon, targets):
        await power_cut(daemon, targets)
        status, page = await fetch(daemon, "/")
    assert status == 200
    text = text_of(page)
    assert "DOWN Datacenter Nord" in text and "OK Datacenter Bellevue" in text
    assert "Datacenter Nord: mains lost at" in text
    root = "Root cause: Datacenter Nord · failing at the root: ups-nord-1 DOWN, ups-nord-2 DOWN"
    assert root in text
    assert "20 applications impacted" in text
    assert "Tier 1 · Dossier patient 00: Procédure dégradée DP-12: dossiers papier" in text
    # applications by criticality: tier 1 first, failing ones first within a tier
    assert text.index("Dossier patient 00") < text.index("Imagerie PACS")
    assert "because ups-nord-1, ups-nord-2 failed" in text
    assert 'http-equiv="refresh"' in page and "<script" not in page
    assert "/metrics" in page and 'href="/checks"' in page
    assert "chk-ups-nord-1" in text  # failing checks keep a short list, with their reason


async def test_incident_page_shows_apps_by_tier_timeline_and_what_recovered(
    tmp_path: Path,
) -> None:
    """The incident page lists apps by tier with degraded modes, a timeline, and apps back."""
    async with running_hospital(tmp_path) as (daemon, targets):
        await power_cut(daemon, targets)
        # the lab results app fails over to a spare: it answers again while Nord is still dark
        targets.down = nord_power_cut() - {"app-labo-01"}
        snap = daemon.health.engine.snapshot
        await wait_for(
            lambda: daemon.health.engine.snapshot.components["app-labo-01"].state is State.OK,
            "app-labo-01 back",
        )
        incident = daemon.health.engine.snapshot.incidents["site:nord"]
        assert incident.id == snap.incidents["site:nord"].id  # same incident, start time kept
        status, page = await fetch(daemon, f"/incident/{incident.id}")
    assert status == 200
    text = text_of(page)
    assert "Root cause: Datacenter Nord" in text
    assert re.search(r"Why DOWN ups-nord-1 since .*? DOWN ups-nord-2 since", text)
    assert "Impacted applications (19)" in text
    tiers = [int(t) for t in re.findall(r"<td class=\"tier\">(\d)</td>", page)]
    assert tiers == sorted(tiers) and tiers[0] == 1 and len(tiers) == 19
    assert "Procédure dégradée DP-12: dossiers papier, appeler le 4412" in text
    assert 'href="https://wiki.chu.local/runbooks/dpi"' in page
    assert re.search(r"Recovered \(\d+\) .*Résultats de laboratoire 01 application", text)
    timeline = text[text.index("Timeline") :]
    assert "ups-nord-1 OK → DOWN" in timeline, timeline
    assert re.search(r"Dossier patient 00 (OK|DOWN) → IMPACTED", timeline), timeline
    assert "Résultats de laboratoire 01 IMPACTED → OK" in timeline


async def test_component_page_shows_checks_results_history_and_dependencies(
    tmp_path: Path,
) -> None:
    """A component page shows its check's failure reason, history, dependencies and dependents."""
    async with running_hospital(tmp_path) as (daemon, targets):
        await power_cut(daemon, targets)
        status, page = await fetch(daemon, "/component/srv-00")
    assert status == 200
    text = text_of(page)
    assert "IMPACTED srv-00" in text and "because ups-nord-1, ups-nord-2 failed" in text
    assert "chk-srv-00" in text and "FAILED" in text and "status code 503" in text
    assert "Recent results" in text and "OK" in text  # history: OK before the cut
    assert re.search(r"Depends on .*IMPACTED san-nord", text)
    assert re.search(r"Needs 1 of: DOWN ups-nord-1 · DOWN ups-nord-2", text)
    assert re.search(r"Needed by .*Dossier patient 00", text)
    assert re.search(r"State changes .*IMPACTED .*OK", text)


async def test_recovery_board_after_power_returns(tmp_path: Path) -> None:
    """After power returns the board lists each application with down since, back at, stable for."""
    async with running_hospital(tmp_path) as (daemon, targets):
        await power_cut(daemon, targets)
        status, page = await fetch(daemon, "/recovery")
        assert status == 200 and "20 still down" in text_of(page)
        incident = daemon.health.engine.snapshot.incidents["site:nord"].id
        targets.down = set()
        await wait_for(
            lambda: all_ok(daemon) and not daemon.health.engine.snapshot.incidents, "recovery"
        )
        _, page = await fetch(daemon, "/recovery")
        _, api_body = await fetch(daemon, "/api/v1/recovery")
        closed, gone = await fetch(daemon, f"/incident/{incident}")
        _, overview = await fetch(daemon, "/")
    text = text_of(page)
    assert "0 still down 20 back" in text
    row = re.search(r"1 Dossier patient 00 BACK (\S+ \S+) \S+ (\S+ \S+) \S+ (\d+s)", text)
    assert row is not None, text
    assert row.group(1) <= row.group(2)  # down before back
    import json

    rows: list[dict[str, Any]] = json.loads(api_body)
    assert len(rows) == 20 and all(r["back"] and r["back_at"] for r in rows)
    assert [r["name"] for r in rows if r["id"] == "app-dpi-00"] == ["Dossier patient 00"]
    assert closed == 404 and "recovery board" in text_of(gone)
    assert "No open incident." in text_of(overview) and "20 back after an outage" in text_of(
        overview
    )


async def test_unknown_pages_are_404_with_escaped_names(tmp_path: Path) -> None:
    """An unknown component or incident gives a 404 page that escapes the requested name."""
    async with running_hospital(tmp_path) as (daemon, _):
        status, page = await fetch(daemon, "/component/%3Cb%3Eno%3C%2Fb%3E")
        assert status == 404 and "&lt;b&gt;no&lt;/b&gt;" in page and "<b>no" not in page
        status, page = await fetch(daemon, "/incident/nope@1")
        assert status == 404 and "No incident nope@1" in text_of(page)
        status, page = await fetch(daemon, "/checks")
        assert status == 200 and "chk-app-dpi-00" in page


@pytest.fixture(scope="module")
def evil_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    """snmpsim serving a device whose sysDescr is a script tag (community `evil`)."""
    root = tmp_path_factory.mktemp("evil-snmp")
    data = root / "data"
    data.mkdir()
    (data / "evil.snmprec").write_text(
        f"1.3.6.1.2.1.1.1.0|4|{EVIL}\n1.3.6.1.2.1.1.3.0|67|4242\n1.3.6.1.2.1.1.5.0|4|ups&co\n"
    )
    server = start_snmpsim(data, root)
    try:
        yield server.wait_ready("evil")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def with_evil_snmp(sim: Snmpsim) -> Any:
    """Return a config hook adding an snmp check of the evil device to ups-nord-1."""

    def hook(config: dict[str, Any]) -> None:
        config["snmp"] = {"auths": {"evil": {"version": 2, "community": "evil"}}}
        config["checks"].append(
            {
                "id": "ups-nord-1-snmp",
                "kind": "snmp",
                "target": sim.target(),
                "interval": "1s",
                "timeout": "1s",
                "snmp": {"auth": "evil", "profiles": ["system"]},
            }
        )
        ups = next(c for c in config["components"] if c["id"] == "ups-nord-1")
        ups["checks"].append("ups-nord-1-snmp")

    return hook


async def test_device_sysdescr_is_escaped_on_component_page(
    tmp_path: Path, evil_device: Snmpsim
) -> None:
    """A sysDescr holding a script tag shows as text on the component page, never as markup."""
    registry = ProbeRegistry([HttpProbe(), SnmpProbe()])
    async with running_hospital(tmp_path, registry, config_hook=with_evil_snmp(evil_device)) as (
        daemon,
        _,
    ):
        await wait_for(lambda: daemon.store.latest("ups-nord-1-snmp"), "the snmp poll")
        status, page = await fetch(daemon, "/component/ups-nord-1")
    assert status == 200
    assert "descr=&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page and "name=ups&amp;co" in page


async def test_recovery_board_survives_a_restart_mid_recovery(tmp_path: Path) -> None:
    """With a state_dir, a daemon restarted during the outage still shows when each app fell."""
    state = {"state_dir": str(tmp_path / "state")}
    async with running_hospital(tmp_path, extra=state) as (daemon, targets):
        await power_cut(daemon, targets)
        fell = daemon.history.recovery("app-dpi-00", time.time())
        assert fell is not None and fell.back_at is None
    async with running_hospital(tmp_path, extra=state) as (daemon, _):
        await wait_for(lambda: all_ok(daemon), "every component OK after the restart")
        _, page = await fetch(daemon, "/recovery")
        back = daemon.history.recovery("app-dpi-00", time.time())
    assert fell.down_since is not None and back is not None
    assert back.down_since == fell.down_since
    assert back.back_at is not None and back.back_at > fell.down_since
    assert "0 still down 20 back" in text_of(page)
