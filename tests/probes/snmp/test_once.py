"""One poll from the command line: `vigie profile probe`, the daemon's probe and plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.snmp_peers import (
    Snmpsim,
)
from vigie.monitor.cli import main


def test_profile_probe_command(
    sim: Snmpsim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vigie profile probe` prints a live device's metrics and debug log, auths from a config."""
    config = tmp_path / "vigie.yaml"
    config.write_text("snmp:\n  auths:\n    rec: {version: 2, community: system}\n")
    args = ["profile", "probe", sim.target(), "system", "-c", str(config), "--auth", "rec"]
    assert main([*args, "-t", "5"]) == 0
    out = capsys.readouterr().out
    assert 'snmp_uptime_seconds{check="probe",kind="snmp"' in out
    assert "# log: snmp_done" in out
    assert main(["profile", "probe", sim.target(), "system", "-t", "1"]) == 1
    assert "probe failed: timeout" in capsys.readouterr().err


def test_profile_probe_command_exit_codes(
    sim: Snmpsim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command exits 0 with metrics, 1 when the poll fails, 2 on a bad profile name."""
    config = tmp_path / "vigie.yaml"
    config.write_text("snmp:\n  auths:\n    rec: {version: 2, community: apc-ups}\n")
    args = ["profile", "probe", sim.target(), "apc-ups", "-c", str(config), "--auth", "rec"]
    assert main(args) == 0
    assert "ups_on_battery{" in capsys.readouterr().out
    assert main(["profile", "probe", sim.target(), "system", "-t", "1"]) == 1
    assert "probe failed: timeout" in capsys.readouterr().err
    assert main(["profile", "probe", sim.target(), "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
