"""The lab's SNMP agent, read by net-snmp's own tools and by Vigie's snmp probe."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from tests.conftest import require_binary
from tests.snmp_peers import snmp_check
from tests.waiting import wait_for
from vigie.core.results import ProbeResult
from vigie.lab.hospital import DATA, SAN_NORMAL_LATENCY, Lab
from vigie.lab.snmp_agent import (
    MAX_VARBINDS,
    Device,
    SnmpAgent,
    parse_oid,
    read_snmprec,
    start_agent,
)
from vigie.probes.base import ProbeContext, ProbeLog
from vigie.probes.http import make_session
from vigie.probes.snmp import SnmpProbe
from vigie.probes.snmp.ber import ber_int, ber_items, ber_oid, ber_seq, ber_tlv

UPS = "1.3.6.1.2.1.33.1."


@pytest.fixture
async def agent() -> AsyncIterator[tuple[int, SnmpAgent, Device]]:
    """An agent serving the UPS-MIB recording as community 'ups'."""
    device = Device("ups", "ups", read_snmprec(DATA / "ups-mib.snmprec"))
    transport, protocol = await start_agent([device])
    yield transport.get_extra_info("sockname")[1], protocol, device
    transport.close()


async def net_snmp(tool: str, port: int, *args: str, community: str = "ups") -> str:
    """Run a net-snmp tool against the agent (numeric OIDs, no MIBs) and return its output."""
    binary = require_binary(f"/usr/bin/{tool}", "snmp")
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-v2c",
        "-c",
        community,
        "-On",
        "-m",
        "",
        "-t",
        "1",
        "-r",
        "0",
        f"127.0.0.1:{port}",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return (out + err).decode()


async def test_snmpget_reads_recorded_and_overridden_values(
    agent: tuple[int, SnmpAgent, Device],
) -> None:
    """snmpget sees the recording, then an override, and noSuchInstance for a missing OID."""
    port, _, device = agent
    out = await net_snmp("snmpget", port, UPS + "2.3.0", UPS + "1.1.0", "1.3.6.1.2.1.1.3.0")
    assert f".{UPS}2.3.0 = INTEGER: 34" in out
    assert f'.{UPS}1.1.0 = STRING: "EATON"' in out
    assert ".1.3.6.1.2.1.1.3.0 = Timeticks: (98765432)" in out
    device.set(UPS + "2.3.0", 7)
    out = await net_snmp("snmpget", port, UPS + "2.3.0", UPS + "2.3.1", "1.3.99.0")
    assert f".{UPS}2.3.0 = INTEGER: 7" in out
    assert f".{UPS}2.3.1 = No Such Instance" in out
    assert ".1.3.99.0 = No Such Object" in out


async def test_snmpgetnext_and_bulkwalk_walk_in_order_to_the_end(
    agent: tuple[int, SnmpAgent, Device],
) -> None:
    """GETNEXT returns the following OID; snmpbulkwalk walks every OID in order, then stops."""
    port, protocol, device = agent
    out = await net_snmp("snmpgetnext", port, UPS + "2.3.0")
    assert out.startswith(f".{UPS}2.4.0 = INTEGER: 100")
    out = await net_snmp("snmpbulkwalk", port, "-Cr7", "1.3.6.1")
    lines = [line for line in out.splitlines() if " = " in line]
    assert "No more variables left" in lines[-1]  # endOfMibView ends the walk
    oids = [line.split(" = ")[0].lstrip(".") for line in lines[:-1]]
    expected = sorted(device.base)
    assert [parse_oid(o) for o in oids] == expected
    assert protocol.stats.requests >= len(expected) // 7


async def test_wrong_community_and_silent_device_get_no_answer(
    agent: tuple[int, SnmpAgent, Device],
) -> None:
    """A wrong community, or a device switched off, gets silence (a timeout), as real agents."""
    port, protocol, device = agent
    out = await net_snmp("snmpget", port, UPS + "2.3.0", community="nope")
    assert "Timeout" in out
    device.answering = False
    out = await net_snmp("snmpget", port, UPS + "2.3.0")
    assert "Timeout" in out
    assert protocol.stats.dropped_unknown_community == 1
    assert protocol.stats.dropped_silent == 1


async def test_malformed_datagrams_are_dropped_and_the_agent_keeps_serving(
    agent: tuple[int, SnmpAgent, Device],
) -> None:
    """Garbage, truncated BER and oversized datagrams are counted and dropped; GETs still work."""
    port, protocol, _ = agent
    truncated = ber_seq(ber_int(1), ber_tlv(0x04, b"ups"))[:-2]
    bad_pdu = ber_seq(ber_int(1), ber_tlv(0x04, b"ups"), ber_seq(ber_int(1), tag=0xA0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in (b"\xff\x00garbage", truncated, bad_pdu, b"\x30" + b"\x00" * 5000):
            sock.sendto(data, ("127.0.0.1", port))
    await wait_for(lambda: protocol.stats.dropped_malformed >= 4, "the 4 datagrams dropped")
    out = await net_snmp("snmpget", port, UPS + "2.3.0")
    assert "INTEGER: 34" in out


def test_getbulk_answer_is_bounded() -> None:
    """A GETBULK asking for a million repetitions gets at most MAX_VARBINDS varbinds."""
    device = Device("big", "big", {(1, 3, 6, 1, 9, i): (2, i) for i in range(2000)})
    agent = SnmpAgent([device])
    request = ber_seq(
        ber_int(1),
        ber_tlv(0x04, b"big"),
        ber_seq(
            ber_int(7),
            ber_int(0),
            ber_int(1_000_000),
            ber_seq(ber_seq(ber_oid("1.3.6.1.9"), ber_tlv(0x05, b""))),
            tag=0xA5,
        ),
    )
    reply = agent.answer(request)
    assert reply is not None
    pdu = ber_items(ber_items(ber_items(reply)[0][1])[2][1])
    assert len(ber_items(pdu[3][1])) == MAX_VARBINDS


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    """A probe context on a fresh session."""
    session: aiohttp.ClientSession
    async with make_session() as session:
        yield ProbeContext(session=session, log=ProbeLog(structlog.get_logger()))


def _value(result: ProbeResult, name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    for sample in result.samples:
        if sample.name == name and tuple(sorted(sample.labels)) == want:
            return sample.value
    return None


async def test_vigie_probe_reads_the_lab_devices(lab: Lab, ctx: ProbeContext) -> None:
    """Vigie's snmp probe reads the lab's UPSes (both profiles), PDU and SAN, and their changes."""
    target = f"127.0.0.1:{lab.snmp_port}"
    probe = SnmpProbe()

    async def poll(device: str, *profiles: str) -> ProbeResult:
        check = snmp_check(
            target,
            auths={device: {"version": 2, "community": device}},
            auth=device,
            profiles=("system", *profiles),
            profile_dirs=(),
            probe=probe,
        )
        result = await probe(check, ctx)
        assert result.success, result.error
        return result

    ups1 = await poll("ups-nord-1", "ups-mib")
    assert _value(ups1, "ups_on_battery") == 0.0
    assert _value(ups1, "ups_battery_runtime_seconds") == 34 * 60
    lab.set_mains("nord", on=False, runtime_minutes=9)
    ups1 = await poll("ups-nord-1", "ups-mib")
    ups2 = await poll("ups-nord-2", "apc-ups")
    for result in (ups1, ups2):
        assert _value(result, "ups_on_battery") == 1.0
        assert _value(result, "ups_battery_runtime_seconds") == 9 * 60
    assert _value(await poll("ups-bellevue-1", "ups-mib"), "ups_on_battery") == 0.0
    pdu = await poll("pdu-nord-1", "apc-rpdu2")
    assert any(s.name.startswith("pdu_") for s in pdu.samples)
    san = await poll("san-nord", "dell-isilon")
    assert _value(san, "storage_latency_seconds", protocol="nfs3") == pytest.approx(
        SAN_NORMAL_LATENCY
    )
    assert _value(san, "storage_pool_used_ratio", pool="san-nord") == pytest.approx(0.706, abs=1e-3)
    assert _value(san, "storage_global_status", state="ok") == 1.0
    lab.set_san_latency("san-nord", 0.08)
    lab.set_san_status("san-nord", "degraded")
    san = await poll("san-nord", "dell-isilon")
    assert _value(san, "storage_latency_seconds", protocol="smb2") == pytest.approx(0.08)
    ratio = _value(san, "storage_latency_baseline_ratio", protocol="smb2")
    assert ratio is not None and ratio > 3
    assert _value(san, "storage_node_status", state="attn", node="san-nord-1") == 1.0


def test_recordings_are_served_as_recorded() -> None:
    """Every lab recording parses."""
    for path in sorted(DATA.glob("*.snmprec")):
        assert read_snmprec(path), path.name


def test_hex_octets_are_decoded(tmp_path: Path) -> None:
    """An octet string recorded in hex ('4x') is served as those bytes."""
    path = tmp_path / "hex.snmprec"
    path.write_text("1.3.6.1.2.1.2.2.1.6.1|4x|0011223344ff\n")
    assert read_snmprec(path) == {
        (1, 3, 6, 1, 2, 1, 2, 2, 1, 6, 1): (4, bytes.fromhex("0011223344ff"))
    }


def test_malformed_recording_names_file_and_line(tmp_path: Path) -> None:
    """A bad recording line is an error naming the file and line."""
    path = tmp_path / "bad.snmprec"
    path.write_text("1.3.6.1.2.1.1.1.0|4|ok\n1.3.6.1.2.1.1.3.0|67|not-a-number\n")
    with pytest.raises(ValueError, match=r"bad\.snmprec:2: "):
        read_snmprec(path)
