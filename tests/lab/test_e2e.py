"""End to end: the simulated hospital, the daemon on config/demo.yaml and a real Alertmanager.

Every piece is real: the lab's SNMP agent and web services on loopback, the daemon with its
probes, health engine and SQLite outbox, and Debian's prometheus-alertmanager. Only time is
compressed: scenarios run at a high speed factor, and the demo config's check interval and
rule `for` durations are shortened to 1 s and 2 s. Profile rules cannot be shortened from the
config, so the SAN checks use a test-only copy of the shipped dell-isilon profile (renamed
dell-isilon-fast, its `for` durations 2 s). A page is an alert Alertmanager holds.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import yaml

from tests.alerting.conftest import Alertmanager, AlertmanagerFactory
from tests.waiting import wait_for
from vigie.lab.hospital import Lab
from vigie.lab.scenarios import APP_LAG, ScenarioController, ScenarioRun
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.monitor.demo import DEMO_CONFIG, demo_env
from vigie.probes import default_registry
from vigie.probes.snmp.profiles import SHIPPED_PROFILE_DIR

INTERVAL = 1.0
RULE_FOR = 2.0
SAN_PROFILE = "dell-isilon"
SLACK = 3.0
"""Probe time, health evaluation (0.2 s), outbox delivery and Alertmanager ingestion."""


def fast_profile(directory: Path, name: str) -> str:
    """Copy a shipped profile with its rules' `for` durations at RULE_FOR; return its new name."""
    profile: dict[str, Any] = yaml.safe_load((SHIPPED_PROFILE_DIR / f"{name}.yaml").read_text())
    for rule in profile.get("rules", []):
        if "for" in rule:
            rule["for"] = f"{RULE_FOR}s"
    directory.mkdir(exist_ok=True)
    (directory / f"{name}-fast.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return f"{name}-fast"


def fast_config(tmp_path: Path, am_url: str) -> Path:
    """Write config/demo.yaml with 1 s checks, 2 s rule durations and an Alertmanager."""
    config: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    fast_san = fast_profile(tmp_path / "profiles", SAN_PROFILE)
    config["snmp"]["profile_dirs"] = [str(tmp_path / "profiles")]
    for check in config["checks"]:
        if "snmp" in check:
            profiles = check["snmp"]["profiles"]
            check["snmp"]["profiles"] = [fast_san if p == SAN_PROFILE else p for p in profiles]
    config["defaults"] = {"interval": f"{INTERVAL}s", "timeout": "900ms"}
    for module in config["modules"].values():
        module["timeout"] = "900ms"
    for rule in config["rules"]:
        for key in ("for", "clear_for"):
            if key in rule:
                rule[key] = f"{RULE_FOR}s"
    config["health"] = {"flapping": {"changes": 4, "window": "1m"}, "resolve_hold": 0}
    config["alerting"] = {
        "alertmanagers": [am_url],
        "resend_interval": "1s",
        "backoff_initial": "50ms",
        "backoff_max": "300ms",
        "watchdog": False,
        "vigie_instance": "vigie-lab",
        "flush_timeout": "2s",
    }
    path = tmp_path / "demo-fast.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return path


@dataclass
class Hospital:
    """The lab, the daemon watching it and the Alertmanager it pages."""

    lab: Lab
    scenarios: ScenarioController
    daemon: Daemon
    am: Alertmanager
    session: aiohttp.ClientSession
    url: str

    async def pages(self) -> list[dict[str, Any]]:
        """Return the alerts Alertmanager holds now."""
        return await self.am.alerts(self.session)

    async def api(self, path: str) -> Any:
        """GET a JSON API path of the daemon."""
        async with self.session.get(f"{self.url}/api/v1/{path}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def play(self, name: str, speed: float) -> tuple[ScenarioRun, float]:
        """Start a scenario; return its run and the seconds from fault to the first page."""
        run = self.scenarios.start(name, speed)
        seen: list[float] = []

        async def paged() -> bool:
            if await self.pages():
                seen.append(time.time())
                return True
            return False

        await wait_for(paged, f"a page for {name}", within=30)
        assert run.fault_at is not None, run
        return run, seen[0] - run.fault_at


@pytest.fixture
async def hospital(
    tmp_path: Path,
    lab: Lab,
    alertmanagers: AlertmanagerFactory,
    session: aiohttp.ClientSession,
) -> AsyncIterator[Hospital]:
    """A healthy hospital watched by a running daemon paging a real Alertmanager."""
    am = alertmanagers("am", group_by=("...",))
    await am.start(session)
    env = demo_env(lab, tmp_path / "state", "127.0.0.1:0")
    registry = default_registry()
    loaded = load_config(fast_config(tmp_path, am.url), registry, env=env)
    daemon = Daemon(loaded, registry, session, env=env, logger=structlog.get_logger("e2e"))
    await daemon.start()  # the whole web app: the recovery test reads the recovery board
    controller = ScenarioController(lab)
    h = Hospital(lab, controller, daemon, am, session, f"http://127.0.0.1:{daemon.listen_port}")
    await wait_for(daemon.scheduler.first_round_done.is_set, "first round of checks")

    async def all_ok() -> bool:
        comps = await h.api("components")
        return all(c["state"] == "OK" for c in _rows(comps, "components"))

    await wait_for(all_ok, "every component OK before the outage")
    assert await h.pages() == []
    yield h
    await controller.stop()
    await daemon.stop()


def _sample(h: Hospital, check: str, name: str, **labels: str) -> float | None:
    """Return a sample of a check's latest result (labels: a subset of the sample's)."""
    result = h.daemon.store.latest(check)
    assert result is not None and result.success, (check, result)
    for sample in result.samples:
        if sample.name == name and set(labels.items()) <= set(sample.labels):
            return sample.value
    return None


def _rows(body: Any, key: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = body if isinstance(body, list) else body[key]
    return rows


async def _settle(h: Hospital, run: ScenarioRun, extra: float) -> None:
    """Wait until the daemon has watched the world for `extra` seconds after the scenario's
    last step and acted on it all the way, so late failures had every chance to add a page:
    every check reported since, the health engine evaluated after those reports (and handed
    the result to alerting), Vigie's outbox is drained and Alertmanager flushed every alert it
    holds since it last received one. The assertion that follows is that they added none.
    """
    await wait_for(lambda: run.finished, "the scenario's last step", within=30)
    since = run.applied[-1][0] + extra

    def observed() -> bool:
        """True once every check reported after `since` and an evaluation followed."""
        latest = [h.daemon.store.latest(cid) for cid in h.daemon.scheduler.plan]
        stamps = [r.timestamp for r in latest if r is not None]
        if len(stamps) < len(latest) or min(stamps) < since:
            return False
        return h.daemon.health.engine.snapshot.at >= max(stamps)

    await wait_for(observed, f"every check reporting {extra:g}s after the last step", within=60)
    alerts = h.daemon.alerts
    assert alerts is not None
    await wait_for(lambda: sum(alerts.queued().values()) == 0, "Vigie's outbox drained")
    await wait_for(lambda: h.am.settled(h.session), "Alertmanager to act on the alerts it holds")


async def test_power_cut_pages_once_for_the_site_with_its_applications(hospital: Hospital) -> None:
    """Mains lost at Nord: one site page within the budget, and the fall of servers adds none."""
    run, latency = await hospital.play("power-cut", speed=100)
    assert latency <= INTERVAL + SLACK, latency
    await _settle(hospital, run, extra=2 * INTERVAL + 1)
    pages = await hospital.pages()
    assert [p["labels"]["root_cause"] for p in pages] == ["site:nord"], pages
    page = pages[0]
    assert page["labels"]["alertname"] == "VigieSiteIncident"
    assert page["labels"]["severity"] == "critical"
    assert "secteur perdu" in page["annotations"]["summary"]  # the demo pages in French
    description = page["annotations"]["description"]
    for app in ("Dossier patient", "Résultats de laboratoire", "Imagerie PACS", "Prise de rendez"):
        assert app in description, description
    assert "Procédure dégradée DP-12" in page["annotations"]["degraded_mode"]


async def test_san_degradation_pages_once_for_the_array(hospital: Hospital) -> None:
    """SAN latency climbs: one page for san-nord within interval + for, its applications listed."""
    run, latency = await hospital.play("san-degradation", speed=100)
    assert 0 <= latency <= INTERVAL + RULE_FOR + SLACK, latency  # not before: baseline learnt
    await _settle(hospital, run, extra=2 * INTERVAL + 1)
    pages = await hospital.pages()
    assert [p["labels"]["root_cause"] for p in pages] == ["san-nord"], pages
    assert pages[0]["labels"]["component"] == "san-nord"
    description = pages[0]["annotations"]["description"]
    assert "storage_latency_baseline_ratio" in description, description
    for app in ("Dossier patient", "Résultats de laboratoire", "Imagerie PACS", "Prise de rendez"):
        assert app in description, description
    assert "Messagerie" not in description  # mail also runs at Bellevue
    # The hosts' own view, over ssh: every SAN path failed, folded into the SAN's one page.
    assert _sample(hospital, "srv-dpi-multipath", "multipath_map_ok") == 0


async def test_server_crash_pages_once_for_the_server_with_the_patient_record(
    hospital: Hospital,
) -> None:
    """The DPI server dies: one page naming srv-dpi, the patient record and its paper procedure."""
    run, latency = await hospital.play("server-crash", speed=100)
    assert latency <= INTERVAL + SLACK, latency
    await _settle(hospital, run, extra=APP_LAG / 100 + 2 * INTERVAL)
    pages = await hospital.pages()
    assert [p["labels"]["root_cause"] for p in pages] == ["srv-dpi"], pages
    annotations = pages[0]["annotations"]
    assert "Dossier patient informatisé (DPI)" in annotations["description"]
    assert annotations["degraded_mode"].startswith(
        "[niveau 1] Dossier patient informatisé (DPI) : Procédure dégradée DP-12"
    )
    assert annotations["runbook_url"].endswith("/runbooks/dpi")
    # Its BMC, read over Redfish, says the server is powered off.
    assert _sample(hospital, "srv-dpi-bmc", "server_power_state", state="Off") == 1


async def test_recovery_leaves_only_the_flapping_application(hospital: Hospital) -> None:
    """After recovery every component is OK but rdv, FLAPPING in the one incident left."""
    run = hospital.scenarios.start("recovery", speed=60)
    await wait_for(lambda: run.finished, "the recovery's last step", within=30)

    async def recovered() -> bool:
        comps = _rows(await hospital.api("components"), "components")
        failing = {c["id"]: c["state"] for c in comps if c["state"] != "OK"}
        return failing == {"rdv": "FLAPPING"}

    await wait_for(recovered, "every component OK but rdv FLAPPING", within=15)
    incidents = _rows(await hospital.api("incidents"), "incidents")
    assert [i["root_cause"] for i in incidents] == ["rdv"], incidents

    async def site_page_resolved() -> bool:
        roots = [p["labels"]["root_cause"] for p in await hospital.pages()]
        return "site:nord" not in roots and "rdv" in roots

    await wait_for(site_page_resolved, "the site page resolved, rdv's firing", within=10)
    # The recovery board: what came back and when, what is still down (rdv) on top.
    board = {r["id"]: r for r in await hospital.api("recovery")}
    assert {"dpi", "labo", "pacs", "rdv"} <= board.keys(), board
    assert next(iter(board)) == "rdv" and not board["rdv"]["back"], board
    for app in ("dpi", "labo", "pacs"):
        row = board[app]
        assert row["back"] and row["down_since"] and row["back_at"], row
        assert row["down_since"] < row["back_at"] and row["stable_for_seconds"] >= 0, row
    assert board["dpi"]["back_at"] <= board["labo"]["back_at"] <= board["pacs"]["back_at"]
    async with hospital.session.get(f"{hospital.url}/recovery") as response:
        page = await response.text()
    assert response.status == 200 and "Prise de rendez-vous" in page and "INSTABLE" in page
