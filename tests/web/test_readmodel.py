"""The web's seam: pages and the API built from a small hand-made read model, with no daemon.

`Hospital` implements StatusSource by hand over a four-component topology in a power cut. It is
the interface's second implementation (DaemonReadModel is the first), not a mock: the page
builders, the templates and the aiohttp routes all run for real against it, over 127.0.0.1.
"""

from __future__ import annotations

import ast
import json
import socket
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import BaseModel

from vigie.core.results import ProbeResult, Sample
from vigie.monitor.exposition import Shard, gzip_stream
from vigie.monitor.health.budget import Budget, Budgets
from vigie.monitor.health.history import Recovery, StateHistory, Transition
from vigie.monitor.health.maintenance import MaintenanceBook, MaintenanceSpec, Window
from vigie.monitor.health.model import Topology
from vigie.monitor.health.snapshot import ComponentStatus, ImpactedApp, Incident, Snapshot
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import ComponentSpec, SiteSpec
from vigie.monitor.i18n import Speech
from vigie.monitor.web import build_app
from vigie.monitor.web.pages import component_page, incident_page, overview, recovery_rows
from vigie.monitor.web.readmodel import Paging, ProbeRun, TopologyView
from vigie.monitor.web.views import ComponentRef, DepGroup
from vigie.probes.base import Check

T0 = 1_767_000_000.0
"""The power cut starts here (epoch seconds); the snapshot is taken a minute later."""
EVIL = "<script>alert(1)</script>"
WEB = Path(__file__).resolve().parents[2] / "monitor" / "web"


class NoSettings(BaseModel):
    """A check's settings: the pages never read them."""


def _topology() -> Topology:
    """Nord (one room) and Sud; two UPS feed a server that runs the patient record."""
    sites = [
        SiteSpec(id="nord", name="Datacenter Nord"),
        SiteSpec(id="nord-s1", name="Salle 1", parent="nord"),
        SiteSpec(id="sud", name="Datacenter Sud"),
    ]
    comps = [
        ComponentSpec(id="ups-a", kind="ups", site="nord"),
        ComponentSpec(id="ups-b", kind="ups", site="nord"),
        ComponentSpec(id="srv-1", kind="server", site="nord-s1", powered_by=["ups-a", "ups-b"]),
        ComponentSpec(
            id="app-dpi",
            kind="application",
            site="nord-s1",
            name="Dossier patient",
            criticality=1,
            team="DPI",
            runbook_url="https://wiki.chu.local/dpi",
            degraded_mode="Procédure DP-12: dossiers papier",
            checks=["chk-dpi"],
            depends_on=["srv-1"],
        ),
        ComponentSpec(
            id="app-mail",
            kind="application",
            site="sud",
            name="Messagerie",
            criticality=3,
            runbook_url="javascript:alert(1)",
        ),
    ]
    return Topology(sites, comps)


def _status(cid: str, kind: str, site: str, state: State, *roots: str) -> ComponentStatus:
    own = state if not roots else State.OK
    reasons = (f"{cid} answers 503 {EVIL}",) if state is State.DOWN else ()
    return ComponentStatus(cid, kind, site, state, own, T0, reasons, roots or (cid,))


def _snapshot(at: float) -> Snapshot:
    """Nord lost both UPS: the server and the patient record are impacted; mail warns."""
    ups = ("ups-a", "ups-b")
    mail = ComponentStatus(
        "app-mail", "application", "sud", State.WARNING, State.WARNING, T0, ("queue 91%",), ()
    )
    comps = {
        "ups-a": _status("ups-a", "ups", "nord", State.DOWN),
        "ups-b": _status("ups-b", "ups", "nord", State.DOWN),
        "srv-1": _status("srv-1", "server", "nord-s1", State.IMPACTED, *ups),
        "app-dpi": _status("app-dpi", "application", "nord-s1", State.IMPACTED, *ups),
        "app-mail": mail,
    }
    dpi = ImpactedApp(
        "app-dpi",
        "Dossier patient",
        1,
        State.IMPACTED,
        "Procédure DP-12: dossiers papier",
        "https://wiki.chu.local/dpi",
        "DPI",
    )
    incident = Incident(
        key="site:nord",
        root_cause="nord",
        site="nord",
        severity="critical",
        started_at=T0,
        summary="Datacenter Nord: mains lost",
        description="",
        impacted=("ups-a", "ups-b", "srv-1", "app-dpi"),
        applications=(dpi,),
        site_wide=True,
    )
    sites = {"nord": State.DOWN, "nord-s1": State.DOWN, "sud": State.WARNING}
    return Snapshot(at, comps, {"site:nord": incident}, sites, {"app-mail": mail})


class OneLine:
    """A /metrics page of one line (the whole page for every shard)."""

    async def stream(self, shard: Shard | None = None) -> AsyncIterator[bytes]:
        """Yield the line."""
        yield b'probe_success{check="chk-dpi"} 0\n'

    def gzip_stream(self, shard: Shard | None = None) -> AsyncIterator[bytes]:
        """The line gzipped."""
        return gzip_stream(self.stream(shard))


class Hospital:
    """A StatusSource written by hand: fixed health, one check, recorded operator actions."""

    def __init__(self) -> None:
        self._topology = _topology()
        self._snapshot = _snapshot(T0 + 60)
        self.history = StateHistory()
        self.history.observe(
            Snapshot(
                T0 - 600, {c: _status(c, "x", "", State.OK) for c in self._topology.order}, {}, {}
            )
        )
        self.history.observe(self._snapshot)
        self.check = Check(
            id="chk-dpi",
            kind="http",
            target="https://dpi.chu.local/health",
            interval=10.0,
            timeout=2.0,
            settings=NoSettings(),
            labels=(("site", "nord"),),
        )
        failed = ProbeResult(
            success=False,
            duration=0.25,
            samples=(Sample("probe_success", 0.0), Sample("probe_info", 1.0, (("descr", EVIL),))),
            error=f"status code 503: {EVIL}",
            timestamp=T0 + 55,
        )
        self._results = [ProbeResult(success=True, duration=0.1, timestamp=T0 - 5), failed]
        self.book = MaintenanceBook()
        self.problem: str | None = None
        self.reloads = 0
        self.reload_errors: list[str] = []
        self.first_round_done = False
        self.acked = Paging()

    def snapshot(self) -> Snapshot:
        """The fixed power-cut snapshot."""
        return self._snapshot

    def topology(self) -> TopologyView:
        """The five-component topology."""
        return self._topology

    def component_checks(self, component: str) -> Sequence[str]:
        """chk-dpi feeds app-dpi, nothing feeds the rest."""
        return ["chk-dpi"] if component == "app-dpi" else []

    def transitions(self, component: str) -> Sequence[Transition]:
        """From a real StateHistory fed the two snapshots."""
        return self.history.transitions(component)

    def recovery(self, component: str, now: float) -> Recovery | None:
        """From the StateHistory."""
        return self.history.recovery(component, now)

    def recoveries(self, components: Iterable[str], now: float) -> Sequence[Recovery]:
        """From the StateHistory."""
        return self.history.recoveries(components, now)

    def budgets(self) -> Budgets:
        """app-dpi is seen within 42 s through srv-1's check; tier 1 targets 60 s."""
        budget = Budget("app-dpi", "application", 1, "srv-1", "chk-srv", "down", 10, 2, 20, 0, 10)
        return Budgets({"app-dpi": budget}, {}, {1: 60.0})

    def maintenance_windows(self) -> Sequence[Window]:
        """The book's windows."""
        return self.book.windows

    def archive(self) -> None:
        """No state_dir: nothing archived."""
        return None

    def plan(self) -> Mapping[str, Check]:
        """One check."""
        return {self.check.id: self.check}

    def latest(self, check_id: str) -> ProbeResult | None:
        """The failed run."""
        return self._results[-1] if check_id == self.check.id else None

    def results(self, check_id: str) -> Sequence[ProbeResult]:
        """An OK run, then the failed one."""
        return self._results if check_id == self.check.id else []

    def ready(self) -> bool:
        """As the test sets it."""
        return self.first_round_done

    def state_dir_problem(self) -> str | None:
        """As the test sets it."""
        return self.problem

    def speech(self) -> Speech:
        """English in UTC, as a config with web.language unset on a UTC host."""
        return Speech("en", UTC)

    def metrics(self) -> OneLine:
        """A one-line exposition."""
        return OneLine()

    def replica(self) -> None:
        """This hospital's Vigie runs alone."""
        return None

    def workers(self) -> None:
        """It runs its checks itself."""
        return None

    def paging(self) -> Mapping[str, Paging]:
        """The power cut is paged; as the test sets who acknowledged it."""
        return {"site:nord": self.acked}

    def add_maintenance(self, spec: MaintenanceSpec, author: str) -> Window:
        """Into the real MaintenanceBook."""
        return self.book.add(spec, author=author)

    def end_maintenance(self, window_id: str, who: str) -> Window | None:
        """Out of the real MaintenanceBook."""
        return self.book.end(window_id, who)

    def finished_maintenance(self) -> Sequence[Window]:
        """The real MaintenanceBook's finished windows."""
        return self.book.finished

    async def reload(self) -> list[str]:
        """Count the call and return the errors the test chose."""
        self.reloads += 1
        return self.reload_errors

    async def run_check(self, check_id: str) -> ProbeRun | None:
        """A canned debug run of chk-dpi."""
        if check_id != self.check.id:
            return None
        result = ProbeResult(success=False, duration=0.5, error="timeout", logs=("dial tcp",))
        return ProbeRun(self.check, result, 'probe_success{check="chk-dpi"} 0\n')


def test_component_page_is_built_from_the_read_model_alone() -> None:
    """A component page: state, causes, its check's result and history, deps, budget, changes."""
    page = component_page(Hospital(), "app-dpi")
    assert (page.name, page.site, page.state, page.criticality) == (
        "Dossier patient",
        "Salle 1",
        "IMPACTED",
        1,
    )
    assert [r.id for r in page.roots] == ["ups-a", "ups-b"] and page.incident is not None
    (check,) = page.checks
    assert check.success is False and check.error == f"status code 503: {EVIL}"
    assert [s.labels for s in check.samples] == ["", f"descr={EVIL}"]
    assert [h.success for h in check.history] == [False, True]  # newest first
    assert page.deps == (DepGroup(False, 1, (ComponentRef("srv-1", "srv-1", "IMPACTED"),)),)
    assert page.budget is not None and (page.budget.seconds, page.budget.via_name) == (42, "srv-1")
    assert [t.state for t in page.transitions] == ["IMPACTED", "OK"]
    server = component_page(Hospital(), "srv-1")
    assert [(d.group, d.need, [m.id for m in d.members]) for d in server.deps] == [
        (True, 1, ["ups-a", "ups-b"])
    ]
    assert [d.name for d in server.dependents] == ["Dossier patient"] and server.budget is None


def test_overview_and_incident_page_are_built_from_the_read_model_alone() -> None:
    """Overview and incident page: site, causes, applications by tier, warnings, timeline."""
    source = Hospital()
    page = overview(source)
    assert [(s.id, s.state) for s in page.sites] == [
        ("nord", "DOWN"),
        ("nord-s1", "DOWN"),
        ("sud", "WARNING"),
    ]
    (card,) = page.incidents
    assert card.root_name == "Datacenter Nord" and [c.id for c in card.causes] == ["ups-a", "ups-b"]
    assert [(a.name, a.failing) for a in page.apps] == [
        ("Dossier patient", True),
        ("Messagerie", False),
    ]
    assert page.apps[1].runbook_url == ""  # a javascript: runbook is never a link
    assert page.apps_down == 1 and [w.reasons for w in page.warnings] == [("queue 91%",)]
    assert [c.id for c in page.failing_checks] == ["chk-dpi"]
    detail = incident_page(source, source.snapshot().incidents["site:nord"])
    assert [a.degraded_mode for a in detail.apps] == ["Procédure DP-12: dossiers papier"]
    assert [c.id for c in detail.impacted_other] == ["ups-a", "ups-b", "srv-1"]
    assert [(e.id, e.was, e.state) for e in detail.timeline][:2] == [
        ("ups-a", "OK", "DOWN"),
        ("ups-b", "OK", "DOWN"),
    ]
    rows = recovery_rows(source, T0 + 60)
    assert [(r.id, r.back, r.down_since) for r in rows] == [("app-dpi", False, T0)]


async def test_overview_says_whether_on_call_acknowledged(served: tuple[Hospital, str]) -> None:
    """A paged incident nobody acknowledged stands out in red; once acknowledged, who and when."""
    source, url = served
    (card,) = overview(source).incidents
    assert card.paged and card.acked_by is None
    status, html = await _get(url + "/")
    assert status == 200 and 'class="unacked">paged, not acknowledged yet<' in html
    source.acked = Paging("Dr. Martin <script>", T0 + 120)
    status, html = await _get(url + "/")
    assert "unacked" not in html.split("<h2>", 2)[-1]
    assert "acknowledged by Dr. Martin &lt;script&gt; at" in html


@pytest.fixture
async def served() -> AsyncIterator[tuple[Hospital, str]]:
    """The web application over the hand-made read model, on a free loopback port."""
    source = Hospital()
    runner = web.AppRunner(build_app(source), access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield source, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()


async def _get(url: str, method: str = "GET", body: object = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.request(method, url, json=body) as resp:
        return resp.status, await resp.text()


async def test_pages_and_api_are_served_from_the_read_model(
    served: tuple[Hospital, str],
) -> None:
    """Every route answers from the read model: pages escape target text, the API serialises."""
    _, base = served
    status, page = await _get(base + "/component/app-dpi")
    assert status == 200 and "Dossier patient" in page and "Procédure DP-12" in page
    assert "&lt;script&gt;" in page and "<script" not in page
    assert "Detection budget: paged at worst 42 s after a fault" in page
    status, page = await _get(base + "/")
    assert status == 200 and "Datacenter Nord: mains lost" in page
    status, body = await _get(base + "/api/v1/components")
    assert {c["id"]: c["state"] for c in json.loads(body)}["app-dpi"] == "IMPACTED"
    status, body = await _get(base + "/api/v1/checks")
    assert [c["error"] for c in json.loads(body)] == [f"status code 503: {EVIL}"]
    status, body = await _get(base + "/api/v1/recovery")
    assert json.loads(body)[0]["down_since"] == "2025-12-29T09:20:00Z"
    assert (await _get(base + "/component/nope"))[0] == 404
    assert (await _get(base + "/metrics"))[1] == 'probe_success{check="chk-dpi"} 0\n'


async def test_operator_actions_go_through_the_read_model(served: tuple[Hospital, str]) -> None:
    """Maintenance, reload, the debug probe, health and readiness call the read model's methods."""
    source, base = served
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, body = await _get(
        base + "/api/v1/maintenance", "POST", {"target": "srv-1", "end": end, "reason": "UPS"}
    )
    assert status == 201 and json.loads(body)["target"] == "srv-1"
    assert [w.target for w in source.book.windows] == ["srv-1"]
    assert (await _get(base + "/api/v1/maintenance", "POST", {"target": "x", "end": end}))[0] == 404
    source.reload_errors = ["vigie.yaml:3:1: checks: bad"]
    status, body = await _get(base + "/-/reload", "POST")
    assert (status, source.reloads) == (500, 1) and "checks: bad" in body
    status, body = await _get(base + "/probe?check=chk-dpi&debug=true")
    assert status == 200 and "dial tcp" in body and "Probe failed: timeout" in body
    assert (await _get(base + "/probe?check=nope"))[0] == 404
    assert (await _get(base + "/-/ready"))[0] == 503
    source.first_round_done = True
    source.problem = "disk full"
    status, body = await _get(base + "/-/ready")
    assert status == 200 and "Degraded: state_dir: disk full" in body
    assert "Vigie runs degraded, state_dir: disk full" in (await _get(base + "/checks"))[1]


def test_only_the_read_model_knows_the_daemon() -> None:
    """No module of monitor/web but readmodel.py imports vigie.monitor.app."""
    offenders = []
    for path in sorted(WEB.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n == "vigie.monitor.app" for n in names) and path.name != "readmodel.py":
                offenders.append(path.name)
    assert offenders == []
