"""Roles, the audit log and incident updates (issue 16, points 4 and 5), against a live daemon.

The test hospital of tests/web/outage.py, its server srv-00 failing, watched by a Daemon whose
web.yml sets basic auth (alice is an operator, bob a viewer) and whose alerting goes to a real
Alertmanager: a viewer reads but cannot act (403 naming the role); an operator's update shows
on the overview, the incident page, the API, the audit log, and reaches Alertmanager as an
annotation of the incident's alert.
"""

from __future__ import annotations

import re
import sqlite3
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import bcrypt
import pytest
import trustme
import yaml
from prometheus_client import CollectorRegistry

from tests.alerting.conftest import (
    Alertmanager,
    AlertmanagerFactory,
    Receiver,
    alertmanagers,
    receiver,
    session,
)
from tests.alerting.oncall_fixtures import Gateway
from tests.alerting.test_oncall_daemon import ALICE as ONCALL
from tests.alerting.test_oncall_daemon import LINK, daemon_config, gateway, running, targets
from tests.conftest import require_binary
from tests.waiting import wait_for
from tests.web.outage import CHROMIUM, Targets, chromium, running_hospital
from tests.web.test_webconfig import basic
from vigie.monitor.app import Daemon
from vigie.monitor.audit import AuditLog
from vigie.monitor.statedir import StateDirMonitor

__all__ = ["alertmanagers", "gateway", "receiver", "session", "targets"]

PASSWORD = "Cellule-de-crise-2026"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
ALICE = basic("alice", PASSWORD)
BOB = basic("bob", PASSWORD)
UPDATE = "La DSI rétablit le lien du labo"


@pytest.fixture
async def am(alertmanagers: AlertmanagerFactory, session: aiohttp.ClientSession) -> Alertmanager:
    """One real Alertmanager."""
    manager = alertmanagers("am", group_by=("...",))
    await manager.start(session)
    return manager


@pytest.fixture
async def cell(tmp_path: Path, am: Alertmanager) -> AsyncIterator[tuple[Daemon, Targets]]:
    """The hospital with basic auth, roles, a state_dir and alerting to the Alertmanager."""
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"basic_auth_users:\n  alice: '{HASH}'\n  bob: '{HASH}'\n")

    def hook(config: dict[str, Any]) -> None:
        config["web"] = {
            "listen": "127.0.0.1:0",
            "config_file": str(web_yml),
            "roles": {"alice": "operator", "bob": "viewer"},
        }

    extra = {
        "state_dir": str(tmp_path / "state"),
        "alerting": {"alertmanagers": [am.url], "watchdog": False},
    }
    async with running_hospital(tmp_path, extra=extra, config_hook=hook) as (daemon, targets):
        yield daemon, targets


def open_incident(daemon: Daemon) -> str | None:
    """The id of srv-00's incident once open and paged."""
    incident = daemon.health.engine.snapshot.incidents.get("component:srv-00")
    return None if incident is None or not incident.confirmed else incident.id


async def test_a_viewer_reads_an_operator_acts_and_the_update_reaches_alertmanager(
    cell: tuple[Daemon, Targets], am: Alertmanager, session: aiohttp.ClientSession
) -> None:
    """Viewer: pages 200, every action 403 naming the operator role, no form. Operator: the
    update shows on every page and the API, the actions in the audit log (page, API, SQLite),
    and Alertmanager's alert carries the update as annotations."""
    daemon, targets = cell
    targets.down = {"srv-00"}
    await wait_for(lambda: open_incident(daemon) is not None, "srv-00's incident")
    iid = open_incident(daemon)
    assert iid is not None
    base = f"http://127.0.0.1:{daemon.listen_port}"
    page = f"{base}/incident/{quote(iid, safe='')}"
    end = datetime.now(UTC) + timedelta(hours=1)
    window = {"target": "srv-01", "end": end.isoformat(), "reason": "firmware"}
    update = {"text": UPDATE, "expected_recovery": "16:00"}
    async with aiohttp.ClientSession() as s:
        # the viewer
        for path in ("/", "/recovery", "/api/v1/incidents", "/audit", "/api/v1/audit"):
            async with s.get(base + path, headers=BOB) as r:
                assert r.status == 200, path
        async with s.get(page, headers=BOB) as r:
            assert r.status == 200
            assert "/update" not in await r.text()  # no form for a viewer
        async with s.get(page + "/update", headers=BOB) as r:
            assert r.status == 403
        for url, body in (
            (f"{base}/api/v1/maintenance", window),
            (f"{base}/api/v1/incidents/{quote(iid, safe='')}/updates", update),
            (f"{base}/api/v1/acknowledgements", {"incident": "x"}),
        ):
            async with s.post(url, json=body, headers=BOB) as r:
                assert r.status == 403, url
                answer = await r.json()
                assert answer["role_needed"] == "operator"
                assert "bob is a viewer" in answer["error"]
        async with s.post(f"{base}/-/reload", headers=BOB) as r:
            assert r.status == 403 and "operator role" in await r.text()
        async with s.post(page + "/updates", data={"text": "x"}, headers=BOB) as r:
            assert r.status == 403
        async with s.post(f"{base}/api/v1/maintenance", json=window) as r:
            assert r.status == 401  # no credentials at all: web.yml's auth answers first
        # the operator, though not from another site's page (the browser's saved password)
        evil = {**ALICE, "Origin": "http://intranet.example"}
        async with s.post(f"{base}/api/v1/maintenance", json=window, headers=evil) as r:
            assert r.status == 403 and "another site" in await r.text()
        async with s.get(page, headers=ALICE) as r:
            assert "/update" in await r.text()
        async with s.get(page + "/update", headers=ALICE) as r:
            assert r.status == 200 and 'name="expected_recovery"' in await r.text()
        async with s.post(
            f"{base}/api/v1/incidents/{quote(iid, safe='')}/updates", json=update, headers=ALICE
        ) as r:
            assert r.status == 201
            posted = await r.json()
        assert posted["by"] == "alice" and posted["text"] == UPDATE
        assert posted["expected_recovery"] is not None
        async with s.post(f"{base}/api/v1/maintenance", json=window, headers=ALICE) as r:
            assert r.status == 201
        async with s.post(
            f"{base}/api/v1/incidents/nowhere/updates", json=update, headers=ALICE
        ) as r:
            assert r.status == 404
        async with s.post(
            f"{base}/api/v1/incidents/{quote(iid, safe='')}/updates",
            json={"text": "x" * 501},
            headers=ALICE,
        ) as r:
            assert r.status == 400
        for url in (base + "/", page):
            async with s.get(url, headers=BOB) as r:
                assert UPDATE in await r.text(), url
        async with s.get(f"{base}/api/v1/incidents/{quote(iid, safe='')}/updates") as r:
            assert r.status == 401
        async with s.get(
            f"{base}/api/v1/incidents/{quote(iid, safe='')}/updates", headers=BOB
        ) as r:
            assert [u["text"] for u in await r.json()] == [UPDATE]
        async with s.get(f"{base}/api/v1/audit", headers=BOB) as r:
            actions = await r.json()
        assert [(a["action"], a["who"], a["role"]) for a in actions] == [
            ("maintenance", "alice", "operator"),
            ("incident_update", "alice", "operator"),
        ]
        assert actions[0]["target"] == "srv-01" and "firmware" in actions[0]["detail"]
        assert all(a["remote"] == "127.0.0.1" for a in actions)
        async with s.get(f"{base}/audit", headers=BOB) as r:
            text = await r.text()
        assert "maintenance window opened" in text and UPDATE in text

    async def annotated() -> bool:
        alert = await am.alert(session, "VigieIncident")
        return alert is not None and alert["annotations"].get("update") == UPDATE

    await wait_for(annotated, "Alertmanager's alert carrying the update")
    alert = await am.alert(session, "VigieIncident")
    assert alert is not None
    assert alert["annotations"]["update_by"] == "alice"
    assert "expected_recovery" in alert["annotations"]
    state_dir = daemon.loaded.config.state_dir
    assert state_dir is not None
    db = sqlite3.connect(state_dir / "audit.sqlite")
    try:
        rows = db.execute("SELECT who, action, target FROM action ORDER BY id").fetchall()
    finally:
        db.close()
    assert rows == [("alice", "incident_update", iid), ("alice", "maintenance", "srv-01")]


async def test_without_auth_everyone_may_act_as_before(tmp_path: Path) -> None:
    """No web.yml, no roles: anyone reaching the web may act (as before roles); it is audited."""
    async with running_hospital(tmp_path) as (daemon, _):
        base = f"http://127.0.0.1:{daemon.listen_port}"
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/-/reload") as r:
                assert r.status == 200
            async with s.get(f"{base}/api/v1/audit") as r:
                actions = await r.json()
    assert [(a["action"], a["who"], a["via"], a["detail"]) for a in actions] == [
        ("reload", "anonymous", "anonymous", "applied")
    ]


async def test_client_certificate_subject_maps_to_a_role(tmp_path: Path) -> None:
    """web.yml asks for client certificates: the certificate's CN names the role; a client
    without one is an anonymous viewer."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        "  client_ca_file: ca.pem\n  client_auth_type: VerifyClientCertIfGiven\n"
    )

    def hook(config: dict[str, Any]) -> None:
        config["web"] = {
            "listen": "127.0.0.1:0",
            "config_file": str(web_yml),
            "roles": {"CN=cellule-crise": "operator", "CN=ecran-mural": "viewer"},
        }

    def client(cn: str | None) -> aiohttp.ClientSession:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        if cn is not None:
            ca.issue_cert(f"{cn}@chu.local", common_name=cn).configure_cert(ctx)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))

    async with running_hospital(tmp_path, config_hook=hook) as (daemon, _):
        url = f"https://127.0.0.1:{daemon.listen_port}/-/reload"
        async with client("cellule-crise") as s, s.post(url) as r:
            assert r.status == 200
        async with client("ecran-mural") as s, s.post(url) as r:
            assert r.status == 403 and "ecran-mural is a viewer" in await r.text()
        async with client(None) as s, s.post(url) as r:
            assert r.status == 403 and "anonymous is a viewer" in await r.text()
        async with client("ecran-mural") as s, s.get(url.replace("-/reload", "api/v1/audit")) as r:
            actions = await r.json()
    assert [(a["via"], a["role"]) for a in actions] == [("certificate", "operator")]
    assert "CN=cellule-crise" in actions[0]["who"]


def test_an_unwritable_state_dir_keeps_actions_in_memory_and_writes_them_back(
    tmp_path: Path,
) -> None:
    """The state_dir is a file: actions are kept and shown, the monitor says so; once it is a
    directory again, flush() writes them all, in order, and the problem clears."""
    state = tmp_path / "state"
    state.write_text("not a directory")
    monitor = StateDirMonitor(state, CollectorRegistry())
    log = AuditLog(state / "audit.sqlite", report=monitor)
    log.record(who="alice", role="operator", via="basic_auth", remote="::1", action="reload")
    log.record(
        who="alice",
        role="operator",
        via="basic_auth",
        remote="::1",
        action="maintenance",
        target="srv-01",
    )
    assert [a.action for a in log.recent()] == ["maintenance", "reload"]
    assert log.pending == 2
    idle_monitor = StateDirMonitor(state, CollectorRegistry())
    idle = AuditLog(state / "idle.sqlite", report=idle_monitor)  # nothing recorded on it
    summary = monitor.summary()
    assert summary is not None and "audit.sqlite" in summary
    assert not log.flush()
    state.unlink()
    state.mkdir()
    assert log.flush()
    assert log.pending == 0 and monitor.summary() is None
    assert idle_monitor.summary() is not None and idle.flush()  # the start's failure clears too
    assert idle_monitor.summary() is None
    idle.close()
    log.close()
    again = AuditLog(state / "audit.sqlite")
    assert [(a.action, a.target) for a in again.recent()] == [
        ("maintenance", "srv-01"),
        ("reload", ""),
    ]
    again.close()


async def test_a_paged_link_acknowledges_as_its_receiver_and_is_audited(
    *,
    tmp_path: Path,
    targets: Targets,
    gateway: Gateway,
    receiver: Receiver,
    session: aiohttp.ClientSession,
) -> None:
    """With roles on, the SMS link (its own authority) still acknowledges, recorded as the
    receiver it was sent to; the operators' API refuses the anonymous viewer."""
    path = daemon_config(tmp_path, targets.base, gateway, receiver, "30s")
    config = yaml.safe_load(path.read_text())
    config["web"]["roles"] = {"cellule": "operator"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    async with running(path) as daemon:
        targets.down = {"dpi"}
        await wait_for(lambda: gateway.to(ONCALL), "the level-1 SMS")
        match = LINK.search(gateway.to(ONCALL)[0])
        assert match is not None
        base = f"http://127.0.0.1:{daemon.listen_port}"
        async with session.post(f"{base}/api/v1/acknowledgements", json={"incident": "x"}) as r:
            assert r.status == 403
        async with session.post(match.group(1)) as r:
            assert r.status == 200
        async with session.get(f"{base}/api/v1/audit") as r:
            actions = await r.json()
    assert [(a["action"], a["who"], a["role"], a["via"]) for a in actions] == [
        ("acknowledge", "alice", "receiver", "link")
    ]
    assert actions[0]["target"].startswith("component:dpi")


async def test_chromium_shows_the_update_form_to_an_operator_only(
    cell: tuple[Daemon, Targets],
) -> None:
    """Headless chromium logged in as bob (viewer) sees no update link and is refused the
    form; as alice (operator) it reads the link and the form."""
    binary = require_binary(CHROMIUM, "chromium")
    daemon, targets = cell
    targets.down = {"srv-00"}
    await wait_for(lambda: open_incident(daemon) is not None, "srv-00's incident")
    iid = quote(open_incident(daemon) or "", safe="")

    def url(user: str, path: str) -> str:
        return f"http://{user}:{quote(PASSWORD, safe='')}@127.0.0.1:{daemon.listen_port}{path}"

    link = re.compile(r'href="/incident/[^"]+/update"')
    viewer = await chromium(binary, "--dump-dom", url("bob", f"/incident/{iid}"))
    assert "srv-00" in viewer and not link.search(viewer)
    refused = await chromium(binary, "--dump-dom", url("bob", f"/incident/{iid}/update"))
    assert "<textarea" not in refused and "operator role" in refused
    operator = await chromium(binary, "--dump-dom", url("alice", f"/incident/{iid}"))
    assert link.search(operator), re.findall(r'href="[^"]*"', operator)
    form = await chromium(binary, "--dump-dom", url("alice", f"/incident/{iid}/update"))
    assert "<textarea" in form and 'method="post"' in form
