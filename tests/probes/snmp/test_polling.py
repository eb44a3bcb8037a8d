"""GETs and walks: PDU sizes, GETNEXT for v1, walk_cap on a huge table, a walk cut short."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.probes.snmp.polls import poll, v2
from tests.snmp_peers import (
    HalfWalkAgent,
    Snmpd,
    Snmpsim,
    serve_udp,
    snmp_check,
    start_snmpsim,
    value,
    values,
    write_big_table,
)
from vigie.probes.base import ProbeContext
from vigie.probes.snmp import SnmpProbe

BIG_ROWS = 100_000


@pytest.fixture(scope="module")
def big_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    """snmpsim with a generated 100k-row table; indexing it takes seconds, so it starts early."""
    root = tmp_path_factory.mktemp("snmpsim-big")
    data = root / "data"
    data.mkdir()
    write_big_table(data / "big.snmprec", BIG_ROWS)
    sim = start_snmpsim(data, root)
    yield sim
    sim.stop()


@pytest.fixture(scope="module", autouse=True)
def _start_big_sim_early(big_sim: Snmpsim) -> None:
    """Start indexing the big table while the other tests run."""


async def test_max_varbinds_splits_gets(probe: SnmpProbe, agent: Snmpd, ctx: ProbeContext) -> None:
    """Scalars are asked max_varbinds at a time: 5 system OIDs by 2 take 3 GET PDUs."""
    check = snmp_check(agent.target(), auths=v2(agent), auth="lab", max_varbinds=2)
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert value(result, "snmp_scrape_pdus_sent") == 3
    assert value(result, "snmp_scrape_varbinds_received") == 5


async def test_agent_stopping_mid_walk(probe: SnmpProbe, tmp_path: Path, ctx: ProbeContext) -> None:
    """An agent that answers the first GETBULK then goes silent fails 'mid-walk'."""
    column = "1.3.6.1.2.1.2.2.1.2"
    (tmp_path / "walk.yaml").write_text(
        "source: test\nmetrics:\n"
        f"  - {{name: g, oid: {column}, type: gauge, help: h, indexes: [{{label: i}}]}}\n"
    )
    agent = HalfWalkAgent(column, rows=500, answers=1)
    transport, port = await serve_udp(agent)
    try:
        check = snmp_check(
            f"127.0.0.1:{port}",
            profiles=("walk",),
            profile_dirs=(tmp_path,),
            timeout=1.0,
            max_repetitions=20,
        )
        result = await poll(probe, check, ctx)
    finally:
        transport.close()
    assert not result.success
    assert result.error == (
        f"agent stopped answering mid-walk of {column} after 20 varbinds (2 tries of 0.333s)"
    )
    assert values(result, "g") == {}  # no half-read table


async def test_snmpv1_uses_getnext(probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext) -> None:
    """SNMPv1 polls scalars and walks tables (GETNEXT, one varbind a PDU)."""
    check = snmp_check(
        sim.target(),
        auths={"v1": {"version": 1, "community": "apc-rpdu2"}},
        auth="v1",
        profiles=("system", "apc-rpdu2"),
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert value(result, "pdu_phase_voltage_volts", phase="1") == 228.0
    # 1 GET + per column one GETNEXT per row plus one past the end.
    rows = {
        "2.1.1.3": 1,
        "2.1.1.8": 1,
        "2.1.1.9": 1,
        "4.3.1.4": 1,
        "4.3.1.5": 1,
        "4.3.1.9": 1,
        "6.3.1.4": 1,
        "6.3.1.5": 1,
        "6.3.1.6": 1,
        "6.3.1.7": 1,
        "9.2.3.1.3": 4,
        "9.2.3.1.5": 4,
    }
    assert value(result, "snmp_scrape_pdus_sent") == 1 + sum(n + 1 for n in rows.values())


async def test_walk_cap_holds_on_a_huge_table(
    probe: SnmpProbe, big_sim: Snmpsim, tmp_path: Path, ctx: ProbeContext
) -> None:
    """A 100k-row table stops at walk_cap with 'walk cap reached', memory bounded."""
    big_sim.wait_ready("big")
    (tmp_path / "ifdescr.yaml").write_text(
        "source: test\nmetrics:\n"
        "  - {name: if_descr_info, oid: 1.3.6.1.2.1.2.2.1.2, type: info, label: descr, help: h,"
        " indexes: [{label: ifIndex}]}\n"
    )
    check = snmp_check(
        big_sim.target(),
        auths={"rec": {"community": "big"}},
        auth="rec",
        profiles=("ifdescr",),
        profile_dirs=(tmp_path,),
        timeout=20.0,
        max_repetitions=64,
    )
    result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error == (
        "walk cap reached: 1.3.6.1.2.1.2.2.1.2 has more than 10000 varbinds "
        "(raise walk_cap if the table is really that large)"
    )
    assert value(result, "snmp_scrape_varbinds_received") == 10000  # the default walk_cap
    # 64 varbinds a PDU: the walk stopped in the PDU holding varbind 10001, not at row 100k.
    assert value(result, "snmp_scrape_pdus_sent") == math.ceil(10001 / 64)
