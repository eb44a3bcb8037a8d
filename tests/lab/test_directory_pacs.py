"""The lab's PACS (DICOM), DNS and directory (LDAP), probed as config/demo.yaml's checks do.

Each check is taken from the demo config loaded with the lab's variables and run by its real
probe against the lab's real responders on loopback: UP in a healthy lab, DOWN with a reason
naming what was seen when the application, its servers' power or the protocol itself fails.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from vigie.core.results import ProbeResult
from vigie.lab.directory import dns_answer
from vigie.lab.hospital import APPS, Lab
from vigie.monitor.config import load_config
from vigie.monitor.demo import DEMO_CONFIG, demo_env
from vigie.probes import default_registry
from vigie.probes.base import Check, ProbeContext

NEW_CHECKS = ("pacs-dicom", "annuaire-dns", "annuaire-ldap")


@pytest.fixture
def checks(lab: Lab, tmp_path: Path) -> dict[str, Check[Any]]:
    """The demo's PACS, DNS and LDAP checks, resolved with this lab's ports and password."""
    env = demo_env(lab, tmp_path, "127.0.0.1:0")
    loaded = load_config(DEMO_CONFIG, default_registry(), env=env)
    return {cid: loaded.plan[cid] for cid in NEW_CHECKS}


async def _run(check: Check[Any], session: aiohttp.ClientSession) -> ProbeResult:
    """Run a check once with its kind's probe."""
    probe = default_registry()[check.kind]
    return await probe(check, ProbeContext(session=session))


async def _all(
    checks: dict[str, Check[Any]], session: aiohttp.ClientSession
) -> dict[str, ProbeResult]:
    results = await asyncio.gather(*(_run(c, session) for c in checks.values()))
    return dict(zip(checks, results, strict=True))


async def test_healthy_lab_answers_every_new_check(
    checks: dict[str, Check[Any]], session: aiohttp.ClientSession
) -> None:
    """C-ECHO accepted, dpi.chu.lab resolved, bind and search find the user accounts."""
    results = await _all(checks, session)
    for cid, result in results.items():
        assert result.success, (cid, result.error)
    entries = {s.name: s.value for s in results["annuaire-ldap"].samples}
    assert entries["ldap_search_entries"] == 2  # Claire Martin and Hugo Durand


async def test_applications_down_refuse_with_the_port_open(
    lab: Lab, checks: dict[str, Check[Any]], session: aiohttp.ClientSession
) -> None:
    """PACS down: the AE rejects the association; directory down: SERVFAIL and bind refused."""
    lab.set_service("pacs", up=False)
    lab.set_service("annuaire", up=False)
    results = await _all(checks, session)
    assert not any(r.success for r in results.values()), results
    assert "rejected" in (results["pacs-dicom"].error or "").lower(), results["pacs-dicom"]
    assert "SERVFAIL" in (results["annuaire-dns"].error or ""), results["annuaire-dns"]
    assert "52 unavailable" in (results["annuaire-ldap"].error or ""), results["annuaire-ldap"]
    lab.reset()
    assert all(r.success for r in (await _all(checks, session)).values())


async def test_a_dark_server_answers_nothing_and_one_controller_is_enough(
    lab: Lab, checks: dict[str, Check[Any]], session: aiohttp.ClientSession
) -> None:
    """Nord powered off: the PACS drops connections; the directory lives on at Bellevue; both
    controllers off: DNS silent (timeout) and LDAP closes."""
    lab.power_off_site("nord")
    results = await _all(checks, session)
    assert "aborted" in (results["pacs-dicom"].error or ""), results["pacs-dicom"]  # no PDU
    assert results["annuaire-dns"].success and results["annuaire-ldap"].success
    lab.set_bmc("srv-ad-2", power="Off")
    results = await _all(checks, session)
    assert "timeout" in (results["annuaire-dns"].error or ""), results["annuaire-dns"]
    ldap = results["annuaire-ldap"]
    assert re.search(r"closed|reset", ldap.error or ""), ldap


async def test_protocol_faults_over_the_control_endpoint(
    lab: Lab, checks: dict[str, Check[Any]], session: aiohttp.ClientSession
) -> None:
    """POST /lab/fault {"protocol": ..., "fault": ...} fails one port; "" clears it; bad is 400."""
    for body in (
        {"protocol": "dns", "fault": "REFUSED"},
        {"protocol": "ldap", "fault": "busy"},
        {"protocol": "dicom", "fault": "rejected"},
    ):
        async with session.post(f"{lab.url}/lab/fault", json=body) as response:
            assert response.status == 200, await response.text()
    state = await (await session.get(f"{lab.url}/lab/state")).json()
    assert state["protocols"] == {"dicom": "rejected", "dns": "REFUSED", "ldap": "busy"}
    results = await _all(checks, session)
    assert "REFUSED" in (results["annuaire-dns"].error or "")
    assert "51 busy" in (results["annuaire-ldap"].error or "")
    assert not results["pacs-dicom"].success
    async with session.post(
        f"{lab.url}/lab/fault", json={"protocol": "dns", "fault": ""}
    ) as response:
        assert response.status == 200
    assert (await _run(checks["annuaire-dns"], session)).success
    for bad in ({"protocol": "smtp", "fault": "x"}, {"protocol": "dns", "fault": "NXDOMAIN"}):
        async with session.post(f"{lab.url}/lab/fault", json=bad) as response:
            assert response.status == 400, bad


async def test_dns_zone_answers_over_udp_and_tcp(lab: Lab) -> None:
    """Known names resolve over both transports; unknown ones are NXDOMAIN, others REFUSED."""
    where = "127.0.0.1"
    query = dns.message.make_query("pacs.chu.lab", "A")
    udp = await dns.asyncquery.udp(query, where, port=lab.dns_port, timeout=2)
    tcp = await dns.asyncquery.tcp(query, where, port=lab.dns_port, timeout=2)
    for answer in (udp, tcp):
        assert [r.to_text() for rrset in answer.answer for r in rrset] == ["10.20.2.14"]
    missing = await dns.asyncquery.udp(
        dns.message.make_query("nope.chu.lab", "A"), where, port=lab.dns_port, timeout=2
    )
    assert missing.rcode() == dns.rcode.NXDOMAIN
    outside = await dns.asyncquery.udp(
        dns.message.make_query("example.org", "A"), where, port=lab.dns_port, timeout=2
    )
    assert outside.rcode() == dns.rcode.REFUSED
    assert dns_answer(b"\x00garbage", "") is None  # not DNS: dropped, never a crash


def test_the_directory_and_pacs_run_where_the_topology_says() -> None:
    """The directory runs on one controller per datacenter (the lab's apps table)."""
    assert APPS["annuaire"] == ("srv-ad-1", "srv-ad-2")
