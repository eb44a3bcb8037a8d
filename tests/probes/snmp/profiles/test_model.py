"""SNMP device profiles as data: the shipped ones load, and a wrong one is refused saying where."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.probes.snmp.profiles.build import MINIMAL, write_profile
from tests.snmp_peers import FIXTURES
from vigie.core.yamlpos import ConfigErrors
from vigie.probes.snmp.profiles import SHIPPED_PROFILE_DIR, load_profile_dirs, load_profile_file
from vigie.probes.snmp.profiles.docs import check_profile_command

SHIPPED = {
    "apc-rpdu2",
    "apc-ups",
    "dell-compellent",
    "dell-isilon",
    "entity-sensor",
    "fc-switch",
    "host-resources",
    "if-mib",
    "netapp",
    "storage-generic",
    "system",
    "ups-mib",
}
SNMPREC_TYPES = {"2", "4", "4x", "6", "64", "65", "66", "67", "70"}


def test_shipped_profiles_load() -> None:
    """Every shipped profile validates and the set is the documented one."""
    profiles = load_profile_dirs([SHIPPED_PROFILE_DIR])
    assert set(profiles) == SHIPPED
    for name, prof in profiles.items():
        assert prof.source.strip(), name
        assert check_profile_command(SHIPPED_PROFILE_DIR / f"{name}.yaml") == 0


def test_shipped_profile_dir_is_found_from_the_package() -> None:
    """The shipped profile directory is located relative to the package, not the cwd."""
    assert SHIPPED_PROFILE_DIR.is_absolute()
    assert (SHIPPED_PROFILE_DIR / "ups-mib.yaml").is_file()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_profile_has_a_fixture_and_golden_file(name: str) -> None:
    """Each shipped profile has a recorded device and the metrics Vigie renders for it."""
    assert (FIXTURES / f"{name}.snmprec").is_file()
    assert (FIXTURES / f"{name}.prom").is_file()


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.snmprec")), ids=lambda p: p.name)
def test_recordings_are_sorted_and_typed(path: Path) -> None:
    """A recording is snmpsim's OID|TYPE|VALUE lines, sorted by OID, with known type tags."""
    keys = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        oid, tag, _ = line.split("|", 2)
        assert re.fullmatch(r"[0-9]+(\.[0-9]+)+", oid), f"{path.name}:{number}"
        assert tag in SNMPREC_TYPES, f"{path.name}:{number}: type {tag}"
        keys.append(tuple(int(p) for p in oid.split(".")))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


INVALID = [
    ("no source", "metrics: []\n", "source: required field is missing"),
    (
        "counter without _total",
        """
        source: s
        metrics:
          - {name: x_bytes, oid: 1.3.6.1.2.1.2.2.1.10, type: counter, help: h,
             indexes: [{label: ifIndex}]}
        """,
        "counter name 'x_bytes' must end with _total",
    ),
    (
        "unit not in name",
        """
        source: s
        metrics:
          - {name: ups_runtime, oid: 1.3.6.1.2.1.33.1.2.3.0, type: gauge, unit: seconds, help: h}
        """,
        "name 'ups_runtime' must end with its unit _seconds",
    ),
    (
        "stateset without states",
        """
        source: s
        metrics:
          - {name: st, oid: 1.3.6.1.2.1.33.1.4.1.0, type: stateset, help: h}
        """,
        "a stateset needs states",
    ),
    (
        "bad oid",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.six, type: gauge, help: h}
        """,
        "metrics[0].oid: String should match pattern",
    ),
    (
        "unknown key",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.1.3.0, type: gauge, help: h, scael: 2}
        """,
        "metrics[0].scael: unknown key",
    ),
    (
        "boolean on unknown state",
        """
        source: s
        metrics:
          - {name: st, oid: 1.3.6.1.2.1.33.1.4.1.0, type: stateset, help: h,
             states: {3: normal, 5: battery}}
        booleans:
          - {name: on_batt, metric: st, in: [batery], help: h}
        """,
        "'batery' is not a state of 'st'",
    ),
    (
        "rule on unknown metric",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.1.3.0, type: gauge, help: h}
        rules:
          - {name: r, expr: "gg > 1", severity: warning}
        """,
        "rule 'r': unknown metric 'gg'",
    ),
    (
        "rule on unknown state",
        """
        source: s
        metrics:
          - {name: st, oid: 1.3.6.1.2.1.33.1.4.1.0, type: stateset, help: h,
             states: {3: normal, 5: battery}}
        rules:
          - {name: r, expr: 'st{state="bypass"} == 1', severity: warning}
        """,
        "rule 'r': 'bypass' is not a state of st",
    ),
    (
        "rule not a comparison",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.1.3.0, type: gauge, help: h}
        rules:
          - {name: r, expr: "rate(g[5m]) > 1", severity: warning}
        """,
        "rule 'r': expr must be",
    ),
    (
        "bad severity",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.1.3.0, type: gauge, help: h}
        rules:
          - {name: r, expr: "g > 1", severity: page}
        """,
        "rules[0].severity: Input should be 'info', 'warning', 'degraded' or 'critical'",
    ),
    (
        "trap sets unknown metric",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.1.3.0, type: gauge, help: h}
        traps:
          - {oid: 1.3.6.1.6.3.1.1.5.1, name: coldStart, set: {nope: 1}}
        """,
        "trap 'coldStart' sets unknown metric 'nope'",
    ),
    (
        "family twice",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.1.3.0, type: gauge, help: h}
          - {name: g, oid: 1.3.6.1.2.1.1.7.0, type: gauge, help: h}
        """,
        "family 'g' is defined twice",
    ),
    (
        "lookup on unknown index",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.2.2.1.5, type: gauge, help: h,
             indexes: [{label: ifIndex}], lookups: [{label: n, oid: 1.3.6.1.2.1.2.2.1.2,
             indexes: [port]}]}
        """,
        "lookup 'n' uses unknown index 'port'",
    ),
    (
        "required and optional",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.1.3.0, type: gauge, help: h, required: true,
             optional: true}
        """,
        "required and optional contradict each other",
    ),
    (
        "required not a boolean",
        """
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.2.1.1.3.0, type: gauge, help: h, required: sometimes}
        """,
        "metrics[0].required: Input should be a valid boolean",
    ),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_profile_is_rejected_with_its_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each invalid profile gives its own clear error naming the file and a line."""
    path = write_profile(tmp_path, "bad", text)
    with pytest.raises(ConfigErrors) as info:
        load_profile_file(path)
    rendered = str(info.value)
    assert message in rendered
    assert rendered.startswith(f"{path}:")


def test_profile_error_points_at_the_line(tmp_path: Path) -> None:
    """An error inside the fifth metric names that metric's line and field path."""
    metrics = "".join(
        f"  - {{name: g{i}, oid: 1.3.6.1.2.1.1.{i}.0, type: gauge, help: h}}\n" for i in range(4)
    )
    path = tmp_path / "p.yaml"
    path.write_text(
        "source: s\nmetrics:\n" + metrics + "  - name: g4\n    oid: 1.3.6.1.2.1.1.9.0\n"
        "    type: gauge\n    help: h\n    unit: furlongs\n"
    )
    with pytest.raises(ConfigErrors) as info:
        load_profile_file(path)
    (error,) = info.value.errors
    assert (error.line, error.path) == (11, "metrics[4].unit")


def test_profile_dirs_reject_a_duplicate_name(tmp_path: Path) -> None:
    """A profile directory may not redefine a shipped profile's name."""
    write_profile(tmp_path, "system", MINIMAL)
    with pytest.raises(ConfigErrors, match="profile 'system' is already defined"):
        load_profile_dirs([SHIPPED_PROFILE_DIR, tmp_path])


def test_dollar_signs_are_kept_literally(tmp_path: Path) -> None:
    """Profiles are data: `${...}` in a help text is not an environment reference."""
    path = write_profile(tmp_path, "p", MINIMAL.replace("Uptime.", "'Costs ${HOME} $$.'"))
    assert load_profile_file(path).metrics[0].help == "Costs ${HOME} $$."
