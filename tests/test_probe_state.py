"""Probe state over a restart: the daemon keeps what probes learnt in state_dir, reads it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog
import yaml
from structlog.testing import capture_logs

from tests.snmp_peers import running_snmpd
from tests.waiting import wait_for
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.monitor.probe_state import ProbeStateFile
from vigie.probes import ProbeRegistry
from vigie.probes.http import make_session
from vigie.probes.snmp import SnmpProbe

UPTIME_KEY = "snmp_reboot_detected"  # the sysUpTime the reboot detection compares with


def write_config(path: Path, target: str, community: str) -> Path:
    """Write a config with a state_dir and one snmp check of the system group."""
    config = {
        "web": {"listen": "127.0.0.1:0"},
        "state_dir": str(path.parent / "state"),
        "snmp": {"auths": {"lab": {"version": 2, "community": community}}},
        "checks": [
            {
                "id": "ups-snmp",
                "kind": "snmp",
                "target": target,
                "interval": "1s",
                "timeout": "900ms",
                "snmp": {"auth": "lab", "profiles": ["system"]},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def run_daemon_once(config: Path, until: Any = None) -> SnmpProbe:
    """Start a daemon on config, wait for `until(daemon)` (or just the start), stop it."""
    probe = SnmpProbe()
    registry = ProbeRegistry([probe])
    async with make_session() as session:
        daemon = Daemon(load_config(config, registry, env={}), registry, session)
        await daemon.start()
        try:
            if until is not None:
                await wait_for(lambda: until(daemon), "the daemon's state under test")
        finally:
            await daemon.stop()
    return probe


async def test_daemon_saves_probe_state_at_stop_and_reads_it_at_start(tmp_path: Path) -> None:
    """The last sysUpTime of a check is in state_dir/probes.json after a stop, and back at start."""
    with running_snmpd(tmp_path / "agent") as agent:
        config = write_config(tmp_path / "vigie.yaml", agent.target(), agent.community)
        await run_daemon_once(config, lambda d: d.store.latest("ups-snmp") is not None)
        saved = json.loads((tmp_path / "state" / "probes.json").read_text())
        names = [entry[0] for entry in saved["snmp"]["previous"]["ups-snmp"]]
        assert UPTIME_KEY in names, saved
        restarted = await run_daemon_once(config)
    taken_back = restarted.save_state()["previous"]["ups-snmp"]
    assert any(entry[0] == UPTIME_KEY for entry in taken_back)


def test_a_damaged_state_file_is_logged_and_ignored(tmp_path: Path) -> None:
    """A state file that is not JSON is reported once; the probes start empty."""
    path = tmp_path / "probes.json"
    path.write_text('{"snmp": {"previous": ')
    probe = SnmpProbe()
    with capture_logs() as logs:
        ProbeStateFile(path, structlog.get_logger()).load([probe])
    assert [e["event"] for e in logs] == ["probe_state_unreadable"]
    assert probe.save_state() == SnmpProbe().save_state()  # as a fresh probe


def test_bad_parts_of_a_state_file_are_skipped(tmp_path: Path) -> None:
    """Entries of the wrong shape (an older or damaged file) are skipped, good ones kept."""
    path = tmp_path / "probes.json"
    good = [UPTIME_KEY, [], 1234.5]
    path.write_text(
        json.dumps({"snmp": {"previous": {"a": [good, ["x"], "junk"], "b": "junk"}, "derived": 3}})
    )
    probe = SnmpProbe()
    ProbeStateFile(path, structlog.get_logger()).load([probe])
    assert probe.save_state()["previous"] == {"a": [good], "b": []}


async def test_a_failed_save_is_logged_not_raised(tmp_path: Path) -> None:
    """When state_dir cannot be written (a file in its place), the save logs and returns."""
    (tmp_path / "state").write_text("not a directory")
    probe = SnmpProbe()
    probe.load_state({"previous": {"a": [[UPTIME_KEY, [], 1.0]]}})
    with capture_logs() as logs:
        await ProbeStateFile(tmp_path / "state" / "probes.json", structlog.get_logger()).save(
            [probe]
        )
    assert [e["event"] for e in logs] == ["probe_state_save_failed"]
