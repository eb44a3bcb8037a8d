"""`vigie profile check` validates profile files; `vigie probe snmp` and `vigie profile probe`
poll a live snmpd with profiles and credentials given on the command line or by a config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.snmp_peers import Snmpd, auth_password, priv_password, running_snmpd
from vigie.monitor.cli import main

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """A net-snmp snmpd serving UPS-MIB on a free port, with v2c and v3 users."""
    with running_snmpd(tmp_path_factory.mktemp("snmpd")) as snmpd:
        yield snmpd


def test_profile_check_accepts_shipped_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    """`vigie profile check` on a shipped profile summarises it and exits 0."""
    assert main(["profile", "check", str(ROOT / "config" / "profiles" / "ups-mib.yaml")]) == 0
    out = capsys.readouterr().out
    assert "ups-mib.yaml: OK," in out and "4 traps" in out


def test_profile_check_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vigie profile check` prints each error with file:line:column and exits 1."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "source: test\n"
        "metrics:\n"
        "  - name: ups_thing_total\n"
        "    oid: 1.3.6.1.2.1.33.1.2.1.0\n"
        "    type: gauge\n"
        "    help: x\n"
        "    colour: red\n"
    )
    assert main(["profile", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:7:5: metrics[0].colour: unknown key" in err
    assert err.splitlines()[-1] == f"1 error(s) in {bad}" or "error(s) in" in err


def test_probe_snmp_with_a_community(agent: Snmpd, capsys: pytest.CaptureFixture[str]) -> None:
    """`vigie probe snmp TARGET --profile ups-mib --community C` prints the UPS's samples."""
    code = main(
        ["probe", "snmp", agent.target(), "--profile", "ups-mib", "--community", agent.community]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'ups_on_battery{check="probe"' in out
    assert "ups_battery_runtime_seconds{" in out and " 2040\n" in out
    assert agent.community not in out.replace(f'"{agent.target()}"', "")


def test_probe_snmp_v3_reads_passwords_from_files(
    agent: Snmpd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """v3 authPriv credentials come from files and never show in the output."""
    auth_file, priv_file = tmp_path / "auth", tmp_path / "priv"
    auth_file.write_text(auth_password("sha_aes") + "\n")
    priv_file.write_text(priv_password("sha_aes") + "\n")
    args = ["probe", "snmp", agent.target(), "-p", "system", "-u", "sha_aes"]
    args += ["--auth-password-file", str(auth_file), "--priv-password-file", str(priv_file)]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert 'snmp_system_info{check="probe"' in captured.out
    assert auth_password("sha_aes") not in captured.out + captured.err


def test_probe_snmp_wrong_community_fails_with_a_reason(
    agent: Snmpd, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong community exits 1 and says why on stderr."""
    code = main(["probe", "snmp", agent.target(), "-p", "system", "--community", "nope", "-t", "1"])
    assert code == 1
    assert "probe failed: timeout" in capsys.readouterr().err


def test_profile_probe_uses_the_configs_auths(
    agent: Snmpd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vigie profile probe TARGET PROFILE --config FILE --auth NAME` uses the config's auth."""
    config = tmp_path / "vigie.yaml"
    config.write_text(f"snmp:\n  auths:\n    ups: {{version: 2, community: {agent.community}}}\n")
    code = main(["profile", "probe", agent.target(), "ups-mib", "-c", str(config), "--auth", "ups"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'ups_output_source{check="probe"' in out


def test_probe_snmp_unknown_profile_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown profile exits 2 naming the known ones."""
    assert main(["probe", "snmp", "127.0.0.1:1", "--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'; known profiles:" in err and "ups-mib" in err


def test_probe_without_config_or_snmp_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """`vigie probe CHECK_ID` without --config exits 2 with both usages."""
    assert main(["probe", "some-check"]) == 2
    assert "vigie probe snmp TARGET" in capsys.readouterr().err
