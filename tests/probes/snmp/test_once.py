"""One poll from the command line: `vigie profile probe`, the daemon's probe and plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.snmp_peers import Snmpsim
from vigie.monitor.cli import main
from vigie.probes.snmp import SnmpSection
from vigie.probes.snmp.once import COMMAND_LINE_AUTH, command_line_check


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


def test_command_line_check_binds_like_the_plan(tmp_path: Path) -> None:
    """Credentials given as options become an auth of their own beside the config's, bound
    with the profiles as the daemon's plan binds them; a wrong option is a ValueError."""
    community = tmp_path / "community"
    community.write_text("from-a-file\n")
    section = SnmpSection.model_validate({"auths": {"ups": {"version": 2, "community": "c"}}})
    entry = {"version": 1, "community_file": str(community)}
    check = command_line_check("ups-a:1161", ["ups-mib"], section=section, auth_entry=entry)
    assert (check.id, check.kind, check.target, check.host) == (
        "probe",
        "snmp",
        "ups-a:1161",
        "ups-a",
    )
    settings = check.settings
    assert settings.auth == COMMAND_LINE_AUTH
    assert settings.resolved_auth.version == 1
    assert settings.resolved_auth.community is not None
    assert settings.resolved_auth.community.get_secret_value() == "from-a-file"
    assert [p.source for p in settings.resolved_profiles] == [
        SnmpSection().profiles()["ups-mib"].source
    ]
    named = command_line_check("[::1]", [], section=section, auth="ups", timeout=3.0)
    assert (named.target, named.timeout, named.settings.profiles) == ("[::1]:161", 3.0, ["system"])
    with pytest.raises(ValueError, match="unknown auth 'nope'"):
        command_line_check("ups-a", ["system"], auth="nope")
    with pytest.raises(ValueError, match="username is only for version 3"):
        command_line_check("ups-a", ["system"], auth_entry={"version": 2, "username": "x"})
