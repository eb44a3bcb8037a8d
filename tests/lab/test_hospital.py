"""The simulated hospital's services and control surface, over real loopback sockets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.waiting import wait_for
from vigie.lab.hospital import APPS, SERVERS, Lab
from vigie.lab.scenarios import ScenarioController
from vigie.monitor.config import load_config
from vigie.monitor.demo import DEMO_CONFIG, demo_env
from vigie.probes import default_registry
from vigie.probes.base import Check, ProbeContext
from vigie.probes.fhir import FhirProbe, FhirSettings
from vigie.probes.smtp import SmtpProbe, SmtpProbeSettings


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def test_health_pages_follow_the_injected_faults(
    lab: Lab, session: aiohttp.ClientSession
) -> None:
    """Every server and application answers OK; a downed one answers 503 with its reason."""
    for name in SERVERS:
        assert await _get(session, f"{lab.url}/srv/{name}/health") == (200, f"status: OK {name}\n")
    for name in APPS:
        assert (await _get(session, f"{lab.url}/app/{name}/health"))[0] == 200
    lab.set_service("dpi", up=False, reason="database down")
    assert await _get(session, f"{lab.url}/app/dpi/health") == (
        503,
        "status: ERROR dpi database down\n",
    )
    assert (await _get(session, f"{lab.url}/app/nope/health"))[0] == 404
    with pytest.raises(KeyError, match="unknown server or application 'nope'"):
        lab.set_service("nope")


async def test_latency_and_flapping_are_served(lab: Lab, session: aiohttp.ClientSession) -> None:
    """A slow service answers after its latency; a flapping one alternates OK and errors."""
    lab.set_service("labo", latency=0.3)
    started = asyncio.get_running_loop().time()
    assert (await _get(session, f"{lab.url}/app/labo/health"))[0] == 200
    assert asyncio.get_running_loop().time() - started >= 0.3
    lab.set_service("rdv", flap_period=0.1)
    seen: set[int] = set()

    async def both() -> bool:
        seen.add((await _get(session, f"{lab.url}/app/rdv/health"))[0])
        return seen == {200, 503}

    await wait_for(both, "rdv answering both 200 and 503", within=5)


async def _smtp(lab: Lab) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", lab.smtp_port)
    banner = await reader.readline()
    if banner.startswith(b"220"):
        writer.write(b"QUIT\r\n")
        await writer.drain()
        banner += await reader.readline()
    writer.close()
    await writer.wait_closed()
    return banner


async def test_mail_relay_banner_follows_the_mail_service(lab: Lab) -> None:
    """The mail port greets with 220 and says 221 on QUIT; with mail down it answers 421."""
    assert await _smtp(lab) == b"220 mail.chu.lab ESMTP ready\r\n221 bye\r\n"
    lab.set_service("mail", up=False)
    assert (await _smtp(lab)).startswith(b"421 ")


async def test_mail_relay_and_dpi_fhir_answer_the_demo_probes(
    lab: Lab, session: aiohttp.ClientSession
) -> None:
    """The demo's smtp and fhir checks pass against the lab, and fail with mail or the DPI down."""
    smtp, fhir = SmtpProbe(), FhirProbe()
    smtp_check = Check(
        "mail-smtp",
        "smtp",
        f"127.0.0.1:{lab.smtp_port}",
        30.0,
        5.0,
        SmtpProbeSettings(tls="none"),
    )
    fhir_check = Check(
        "dpi-fhir",
        "fhir",
        f"{lab.url}/fhir/R4",
        30.0,
        5.0,
        FhirSettings(fhir_version="4.0", resource_types=["Patient"], search="Patient?_count=1"),
    )
    ctx = ProbeContext(session=session)
    mail, dpi = await smtp(smtp_check, ctx), await fhir(fhir_check, ctx)
    assert mail.success, mail.error
    assert dpi.success, dpi.error
    lab.set_service("mail", up=False)
    lab.set_service("dpi", up=False, reason="database down")
    mail, dpi = await smtp(smtp_check, ctx), await fhir(fhir_check, ctx)
    assert mail.error == "banner 421 mail.chu.lab service not available"
    assert dpi.error == (
        "metadata: HTTP 503: OperationOutcome fatal transient: DPI unavailable: database down"
    )


async def test_control_endpoint_starts_scenarios_and_applies_faults(
    lab: Lab, session: aiohttp.ClientSession
) -> None:
    """/lab/scenario/NAME plays it, /lab/fault and /lab/reset change the lab, bad input is 400."""
    controller = ScenarioController(lab)
    async with session.post(f"{lab.url}/lab/scenario/server-crash?speed=1000") as response:
        assert response.status == 200
        assert await response.json() == {
            "scenario": "server-crash",
            "speed": 1000.0,
            "started": True,
        }
    await wait_for(lambda: not lab.services["dpi"].up, "the crash applied")
    async with session.post(f"{lab.url}/lab/scenario/meteor") as response:
        assert response.status == 404
        assert "unknown scenario 'meteor'" in await response.text()
    async with session.post(f"{lab.url}/lab/scenario/power-cut?speed=-1") as response:
        assert response.status == 400
    async with session.post(
        f"{lab.url}/lab/fault", json={"mains": "nord", "on": False}
    ) as response:
        assert response.status == 200
    assert lab.devices["ups-nord-1"].value("1.3.6.1.2.1.33.1.4.1.0") == 5
    async with session.post(f"{lab.url}/lab/fault", json={"service": "pacs", "up": False}) as resp:
        assert resp.status == 200
    assert not lab.services["pacs"].up
    for bad in (b"[1]", b"{not json", b'{"service": "nope"}', b'{"what": 1}'):
        async with session.post(f"{lab.url}/lab/fault", data=bad) as response:
            assert response.status == 400, bad
            assert (await response.text()).startswith("fault: ")
    async with session.post(f"{lab.url}/lab/reset") as response:
        assert response.status == 200
    state = await (await session.get(f"{lab.url}/lab/state")).json()
    assert all(s["healthy"] for s in state["services"].values())
    assert state["ports"]["snmp"] == lab.snmp_port
    await controller.stop()


def test_demo_config_loads_and_passes_vigie_check(tmp_path: Path) -> None:
    """config/demo.yaml loads with the lab's variables, and `vigie check` accepts it."""
    lab = Lab(http_port=8081, snmp_port=1161, smtp_port=2525, ssh_port=2222, hl7_port=2575)
    lab.dicom_port, lab.dns_port, lab.ldap_port = 11112, 5353, 3389  # not bound: only written
    lab.write_ssh_files(tmp_path)
    env = demo_env(lab, tmp_path, "127.0.0.1:0")
    loaded = load_config(DEMO_CONFIG, default_registry(), env=env)
    kinds = {c.kind for c in loaded.plan.values()}
    assert kinds == set(
        ["dicom", "dns", "fhir", "hl7", "http", "ldap", "redfish", "smtp", "snmp", "ssh"]
    )
    assert loaded.warnings == []
    apps = [c for c in loaded.config.components if c.kind == "application"]
    assert all(a.degraded_mode and a.runbook_url and a.criticality for a in apps)
    proc = subprocess.run(
        [sys.executable, "-m", "vigie.monitor.cli", "check", str(DEMO_CONFIG)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "39 checks, 23 components" in proc.stdout
