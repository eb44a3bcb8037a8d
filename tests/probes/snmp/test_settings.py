"""A check's settings and the `snmp:` block: bind resolves names, the config loads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.snmp_peers import snmp_check
from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.config import load_config
from vigie.probes.base import ProbeRegistry
from vigie.probes.snmp import SnmpCheckSettings, SnmpProbe


def test_bind_names_the_known_auths_and_profiles() -> None:
    """An unknown auth or profile name is an error listing the known ones."""
    with pytest.raises(ValueError, match="unknown auth 'nope'; known auths: lab, public_v2"):
        snmp_check("10.0.0.1", auths={"lab": {"community": "x"}}, auth="nope")
    with pytest.raises(ValueError, match=r"unknown profile 'ups'; known profiles: apc-rpdu2, "):
        snmp_check("10.0.0.1", profiles=("ups",))
    with pytest.raises(
        ValueError, match="profiles 'ups-mib' and 'apc-ups' both define 'ups_battery_status'"
    ):
        snmp_check("10.0.0.1", profiles=("ups-mib", "apc-ups"))


def test_bind_resolves_auth_profiles_and_plan() -> None:
    """bind() returns frozen settings embedding the auth, the profiles and the poll plan."""
    check = snmp_check("10.0.0.1", profiles=("system", "ups-mib"))
    settings = check.settings
    assert isinstance(settings, SnmpCheckSettings)
    assert settings.resolved_auth.community is not None
    assert settings.resolved_auth.community.get_secret_value() == "public"
    assert len(settings.resolved_profiles) == 2
    assert "1.3.6.1.2.1.33.1.4.1.0" in settings.plan.gets
    with pytest.raises(ValidationError):
        settings.walk_cap = 3  # type: ignore[misc]


def test_config_file_with_snmp_section(tmp_path: Path) -> None:
    """A config's snmp block and checks load; a bad auth name is an error at its line."""
    (tmp_path / "community").write_text("s3cret\n")
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "snmp:\n"
        "  auths:\n"
        "    ups: {version: 2, community_file: community}\n"
        "checks:\n"
        "  - id: ups-a\n"
        "    kind: snmp\n"
        "    target: 10.0.0.9\n"
        "    snmp: {auth: ups, profiles: [system, ups-mib]}\n"
        "  - id: ups-b\n"
        "    kind: snmp\n"
        "    target: '[::1]:1161'\n"
        "    snmp: {auth: upz}\n"
    )
    registry = ProbeRegistry([SnmpProbe()])
    with pytest.raises(ConfigErrors) as info:
        load_config(config, registry)
    (error,) = info.value.errors
    assert (error.line, error.path) == (12, "checks[1].snmp")
    assert "unknown auth 'upz'; known auths: public_v2, ups" in error.message
    config.write_text(config.read_text().replace("upz", "ups"))
    loaded = load_config(config, registry)
    settings = loaded.plan["ups-a"].settings
    assert isinstance(settings, SnmpCheckSettings)
    assert settings.resolved_auth.community is not None
    assert settings.resolved_auth.community.get_secret_value() == "s3cret"
    assert loaded.plan["ups-b"].target == "[::1]:1161"


def test_config_reports_a_broken_profile_dir(tmp_path: Path) -> None:
    """An invalid profile in profile_dirs is a config error quoting the profile's own place."""
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.yaml").write_text("source: s\nmetrics:\n  - {name: 1x}\n")
    config = tmp_path / "vigie.yaml"
    config.write_text("snmp:\n  profile_dirs: [profiles]\n")
    with pytest.raises(ConfigErrors, match=r"mine.yaml:3:5: metrics\[0\]"):
        load_config(config, ProbeRegistry([SnmpProbe()]))
