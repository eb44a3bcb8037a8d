"""Agents the snmp tests poll: net-snmp snmpd and snmpsim on loopback, started once a module."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.snmp_peers import FIXTURES, Snmpd, Snmpsim, running_snmpd, start_snmpsim
from vigie.probes.snmp import SnmpProbe


@pytest.fixture
def probe() -> SnmpProbe:
    """A fresh snmp probe."""
    return SnmpProbe()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    """snmpsim serving the recorded devices of tests/fixtures/snmp (community = file name)."""
    root = tmp_path_factory.mktemp("snmpsim")
    data = root / "data"
    shutil.copytree(FIXTURES, data, ignore=shutil.ignore_patterns("*.prom"))
    server = start_snmpsim(data, root)
    yield server.wait_ready("system")
    server.stop()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """A net-snmp snmpd shared by the tests that do not change or stop it."""
    with running_snmpd(tmp_path_factory.mktemp("snmpd")) as snmpd:
        yield snmpd


@pytest.fixture
def own_agent(tmp_path: Path) -> Iterator[Snmpd]:
    """A net-snmp snmpd of this test alone (its UPS state changes, or it is stopped)."""
    with running_snmpd(tmp_path / "snmpd") as snmpd:
        yield snmpd
