"""SNMP device profiles: the YAML model and its errors, evaluation, shipped data and docs."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.snmp_peers import FIXTURES
from vigie.core.results import Sample
from vigie.core.yamlpos import ConfigErrors
from vigie.probes.snmp.profiles import (
    SHIPPED_PROFILE_DIR,
    Collected,
    Profile,
    evaluate,
    load_profile_dirs,
    load_profile_file,
    poll_plan,
)
from vigie.probes.snmp.profiles.docs import check_profile_command, profiles_markdown

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
DOCS = Path(__file__).parents[2] / "docs" / "profiles.md"
BEGIN, END = "<!-- BEGIN GENERATED: profiles -->\n", "<!-- END GENERATED: profiles -->\n"
SNMPREC_TYPES = {"2", "4", "4x", "6", "64", "65", "66", "67", "70"}


def profile(text: str) -> Profile:
    """Validate a profile given as YAML text (through the loader, positions included)."""
    from vigie.core.yamlpos import load_yaml

    return Profile.model_validate(load_yaml(textwrap.dedent(text), "t.yaml", {}))


def write_profile(directory: Path, name: str, text: str) -> Path:
    """Write a profile file and return its path."""
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def run(prof: Profile, data: Collected, previous: Any = None) -> tuple[list[Sample], list[str]]:
    """Evaluate one profile; return the samples and the logged event names."""
    events: list[str] = []
    samples, _ = evaluate([prof], data, previous or {}, lambda event, **_: events.append(event))
    return samples, events


def by_name(samples: list[Sample], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Return one family's samples by labels."""
    return {s.labels: s.value for s in samples if s.name == name}


MINIMAL = """
source: test
metrics:
  - {name: up_seconds, oid: 1.3.6.1.2.1.1.3.0, type: gauge, unit: seconds, scale: 0.01,
     help: Uptime.}
"""


# --------------------------------------------------------------------------- shipped data


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


def test_profiles_doc_is_in_sync() -> None:
    """docs/profiles.md carries the reference generated from the shipped profiles."""
    text = DOCS.read_text()
    generated = profiles_markdown(load_profile_dirs([SHIPPED_PROFILE_DIR]))
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if os.environ.get("VIGIE_UPDATE_GOLDEN"):
        DOCS.write_text(head + BEGIN + generated + END + tail)
        return
    assert BEGIN in text and END in text
    assert rest.partition(END)[0] == generated, "regenerate: VIGIE_UPDATE_GOLDEN=1 pytest"


# --------------------------------------------------------------------------- validation


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


def test_check_profile_command_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vigie profile check` prints each error with its place and exits 1; OK files exit 0."""
    bad = write_profile(tmp_path, "bad", "source: s\nmetrics:\n  - {name: g, oid: x}\n")
    assert check_profile_command(bad) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:5: metrics[0].help: required field is missing" in err
    assert re.search(rf"{re.escape(str(bad))}:3:\d+: metrics\[0\]\.oid: String should match", err)
    assert "error(s) in" in err
    good = write_profile(tmp_path, "good", MINIMAL)
    assert check_profile_command(good) == 0
    assert "OK, 1 metric families" in capsys.readouterr().out


def test_profile_dirs_reject_a_duplicate_name(tmp_path: Path) -> None:
    """A profile directory may not redefine a shipped profile's name."""
    write_profile(tmp_path, "system", MINIMAL)
    with pytest.raises(ConfigErrors, match="profile 'system' is already defined"):
        load_profile_dirs([SHIPPED_PROFILE_DIR, tmp_path])


def test_dollar_signs_are_kept_literally(tmp_path: Path) -> None:
    """Profiles are data: `${...}` in a help text is not an environment reference."""
    path = write_profile(tmp_path, "p", MINIMAL.replace("Uptime.", "'Costs ${HOME} $$.'"))
    assert load_profile_file(path).metrics[0].help == "Costs ${HOME} $$."


# --------------------------------------------------------------------------- evaluation


def test_scalar_gauge_is_scaled() -> None:
    """A scalar in hundredths becomes seconds."""
    samples, _ = run(profile(MINIMAL), Collected(scalars={"1.3.6.1.2.1.1.3.0": 12345}))
    assert by_name(samples, "up_seconds") == {(): 123.45}


INDEXES = [
    ("integer", "[{label: i}]", "7", (("i", "7"),)),
    ("string", "[{label: s, type: string}]", "3.97.98.99", (("s", "abc"),)),
    ("implied", "[{label: s, type: implied_string}]", "104.105", (("s", "hi"),)),
    ("ipv4", "[{label: ip, type: ipv4}]", "10.0.0.1", (("ip", "10.0.0.1"),)),
    (
        "two",
        "[{label: a}, {label: b, type: ipv4}]",
        "2.192.168.1.9",
        (("a", "2"), ("b", "192.168.1.9")),
    ),
]


@pytest.mark.parametrize(
    ("spec", "suffix", "labels"), [c[1:] for c in INDEXES], ids=[c[0] for c in INDEXES]
)
def test_table_index_becomes_labels(spec: str, suffix: str, labels: tuple[Any, ...]) -> None:
    """Each index encoding is decoded from the row's OID suffix into labels."""
    prof = profile(f"""
        source: s
        metrics:
          - {{name: g, oid: 1.3.6.1.4.1.9.9.1, type: gauge, help: h, indexes: {spec}}}
        """)
    samples, _ = run(prof, Collected(walks={"1.3.6.1.4.1.9.9.1": {suffix: 5}}))
    assert by_name(samples, "g") == {labels: 5.0}


def test_malformed_index_row_is_skipped_and_logged() -> None:
    """A row whose suffix does not fit the index is dropped, not mislabelled."""
    prof = profile("""
        source: s
        metrics:
          - {name: g, oid: 1.3.6.1.4.1.9.9.1, type: gauge, help: h, indexes: [{label: i}]}
        """)
    samples, events = run(prof, Collected(walks={"1.3.6.1.4.1.9.9.1": {"1.2": 5, "3": 6}}))
    assert by_name(samples, "g") == {(("i", "3"),): 6.0}
    assert "snmp_bad_index" in events


STATESET = """
source: s
metrics:
  - {name: src, oid: 1.3.6.1.2.1.33.1.4.1.0, type: stateset, help: h,
     states: {3: normal, 4: bypass, 5: battery}}
booleans:
  - {name: on_battery, metric: src, in: [battery], help: h}
  - {name: unprotected, metric: src, in: [4, battery], help: h}
"""


@pytest.mark.parametrize(
    ("raw", "states", "on_battery", "unprotected"),
    [
        (3, {"normal": 1.0, "bypass": 0.0, "battery": 0.0}, 0.0, 0.0),
        (4, {"normal": 0.0, "bypass": 1.0, "battery": 0.0}, 0.0, 1.0),
        (5, {"normal": 0.0, "bypass": 0.0, "battery": 1.0}, 1.0, 1.0),
        (9, {"normal": 0.0, "bypass": 0.0, "battery": 0.0}, 0.0, 0.0),
    ],
)
def test_stateset_and_booleans(
    raw: int, states: dict[str, float], on_battery: float, unprotected: float
) -> None:
    """A stateset has one series per state; booleans match state names or raw values."""
    samples, events = run(profile(STATESET), Collected(scalars={"1.3.6.1.2.1.33.1.4.1.0": raw}))
    assert by_name(samples, "src") == {(("state", k),): v for k, v in states.items()}
    assert by_name(samples, "on_battery") == {(): on_battery}
    assert by_name(samples, "unprotected") == {(): unprotected}
    assert ("snmp_unknown_state" in events) == (raw == 9)


ALARMS = """
source: s
metrics:
  - name: alarm
    oid: 1.3.6.1.2.1.33.1.6.2.1.2
    type: stateset
    walk: true
    indexes: [{label: id}]
    drop_indexes: true
    state_label: alarm
    help: h
    states: {1.3.6.1.2.1.33.1.6.3.2: onBattery, 1.3.6.1.2.1.33.1.6.3.3: lowBattery}
booleans:
  - {name: low, metric: alarm, in: [lowBattery], help: h}
"""


@pytest.mark.parametrize(
    ("rows", "expected", "low"),
    [
        ({}, {"onBattery": 0.0, "lowBattery": 0.0}, 0.0),
        ({"4": "1.3.6.1.2.1.33.1.6.3.2"}, {"onBattery": 1.0, "lowBattery": 0.0}, 0.0),
        (
            {"4": "1.3.6.1.2.1.33.1.6.3.2", "9": "1.3.6.1.2.1.33.1.6.3.3"},
            {"onBattery": 1.0, "lowBattery": 1.0},
            1.0,
        ),
    ],
)
def test_alarm_table_merges_into_one_set(
    rows: dict[str, str], expected: dict[str, float], low: float
) -> None:
    """An alarm table (OID values) is one set of named alarms, all 0 when the table is empty."""
    data = Collected(walks={"1.3.6.1.2.1.33.1.6.2.1.2": dict(rows)})
    samples, _ = run(profile(ALARMS), data)
    assert by_name(samples, "alarm") == {(("alarm", k),): v for k, v in expected.items()}
    assert by_name(samples, "low") == {(): low}


def test_lookups_label_rows_and_map_values() -> None:
    """Lookups read another column of the row (text, mapped OID, hex) into labels."""
    prof = profile("""
        source: s
        metrics:
          - name: size_bytes
            oid: 1.3.6.1.2.1.25.2.3.1.5
            type: gauge
            unit: bytes
            help: h
            indexes: [{label: index}]
            factors: [{oid: 1.3.6.1.2.1.25.2.3.1.4}]
            lookups:
              - {label: descr, oid: 1.3.6.1.2.1.25.2.3.1.3}
              - {label: type, oid: 1.3.6.1.2.1.25.2.3.1.2, map: {1.3.6.1.2.1.25.2.1.4: disk}}
              - {label: mac, oid: 1.3.6.1.2.1.2.2.1.6, format: hex}
        """)
    data = Collected(
        walks={
            "1.3.6.1.2.1.25.2.3.1.5": {"31": 1000, "40": 7},
            "1.3.6.1.2.1.25.2.3.1.4": {"31": 4096},
            "1.3.6.1.2.1.25.2.3.1.3": {"31": b"/\x00"},
            "1.3.6.1.2.1.25.2.3.1.2": {"31": "1.3.6.1.2.1.25.2.1.4"},
            "1.3.6.1.2.1.2.2.1.6": {"31": b"\x00\xc0\xff\xee\x00\x01"},
        }
    )
    samples, events = run(prof, data)
    labels = (("index", "31"), ("descr", "/"), ("type", "disk"), ("mac", "00:c0:ff:ee:00:01"))
    assert by_name(samples, "size_bytes") == {labels: 4096000.0}
    assert "snmp_missing_factor" in events  # row 40 has no allocation unit: no sample


SENSOR_STATUS = {"entity_sensor_oper_status", "entity_sensor_failed"}


def test_sensor_scale_precision_and_type_pick_family_and_value() -> None:
    """ENTITY-SENSOR values are scaled by 10^(3(scale-9)) and 10^-precision into typed families."""
    profiles = load_profile_dirs([SHIPPED_PROFILE_DIR])
    col = "1.3.6.1.2.1.99.1.1.1."
    rows = {
        "1": (8, 9, 1, 385, 1),
        "2": (4, 8, 0, 12050, 1),
        "3": (9, 9, 0, 45, 1),
        "4": (12, 9, 0, 1, 1),
        "5": (8, 9, 0, 0, 3),  # nonoperational: its reading is meaningless and left out
    }
    data = Collected(walks={f"{col}{c}": {} for c in (1, 2, 3, 4, 5)})
    for ix, row in rows.items():
        for column, raw in enumerate(row, 1):
            data.walks[f"{col}{column}"][ix] = raw
    samples, _ = run(profiles["entity-sensor"], data)
    got = {
        (s.name, dict(s.labels)["index"]): s.value
        for s in samples
        if s.name.startswith("entity_sensor_") and s.name not in SENSOR_STATUS
    }
    assert got == {
        ("entity_sensor_celsius", "1"): 38.5,
        ("entity_sensor_dc_volts", "2"): 12.05,
        ("entity_sensor_humidity_ratio", "3"): 0.45,
        ("entity_sensor_value", "4"): 1.0,
    }


def test_reset_detects_a_value_going_down() -> None:
    """A reset flag is 0 on the first poll and while the value grows, 1 when it goes down."""
    prof = load_profile_dirs([SHIPPED_PROFILE_DIR])["system"]
    previous: dict[Any, float] = {}
    flags = []
    for uptime in (5000, 9000, 300, 800):
        data = Collected(scalars={"1.3.6.1.2.1.1.3.0": uptime, "1.3.6.1.2.1.1.1.0": b"x"})
        samples, previous = evaluate([prof], data, previous, lambda *_, **__: None)
        flags.append(by_name(samples, "snmp_reboot_detected")[()])
    assert flags == [0.0, 0.0, 1.0, 0.0]


def test_non_numeric_value_is_skipped() -> None:
    """A gauge whose agent returns text that is not a number yields no sample and a log line."""
    samples, events = run(profile(MINIMAL), Collected(scalars={"1.3.6.1.2.1.1.3.0": b"n/a"}))
    assert by_name(samples, "up_seconds") == {}
    assert "snmp_not_numeric" in events


def test_numeric_text_is_accepted() -> None:
    """Some agents send numbers as strings: those are read as numbers."""
    samples, _ = run(profile(MINIMAL), Collected(scalars={"1.3.6.1.2.1.1.3.0": b"250\x00"}))
    assert by_name(samples, "up_seconds") == {(): 2.5}


def test_poll_plan_dedups_and_orders_requests() -> None:
    """The plan asks each OID once, in OID order, and knows which objects must answer."""
    profiles = load_profile_dirs([SHIPPED_PROFILE_DIR])
    plan = poll_plan([profiles["if-mib"], profiles["system"]])
    assert len(plan.walks) == len(set(plan.walks)) == 13
    assert plan.walks[0] == "1.3.6.1.2.1.2.2.1.2"  # ifDescr, a lookup shared by every metric
    assert plan.gets == (
        "1.3.6.1.2.1.1.1.0",
        "1.3.6.1.2.1.1.2.0",
        "1.3.6.1.2.1.1.3.0",
        "1.3.6.1.2.1.1.5.0",
        "1.3.6.1.2.1.1.6.0",
    )
    assert plan.required == (
        ("1.3.6.1.2.1.1.1.0", "snmp_system_info"),
        ("1.3.6.1.2.1.1.3.0", "snmp_uptime_seconds"),
        ("1.3.6.1.2.1.2.2.1.8", "if_oper_status"),  # a walked column: an empty walk fails
    )
    # Every object asked for is counted when missing: the 5 scalars and the 13 columns.
    assert len(plan.counted) == 18


def test_check_profile_command_names_the_required_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`vigie profile check` says which objects a poll cannot do without."""
    assert check_profile_command(SHIPPED_PROFILE_DIR / "ups-mib.yaml") == 0
    out = capsys.readouterr().out
    assert "2 required objects (ups_battery_status, ups_output_source)" in out


@pytest.mark.parametrize(
    ("name", "required"),
    [
        ("ups-mib", {"ups_output_source", "ups_battery_status"}),
        ("apc-ups", {"ups_output_status", "ups_battery_status"}),
        ("system", {"snmp_system_info", "snmp_uptime_seconds"}),
        ("entity-sensor", set()),
    ],
)
def test_shipped_profiles_require_identity_and_key_state_only(
    name: str, required: set[str]
) -> None:
    """Shipped profiles mark required only identity and the state their rules need."""
    profile = load_profile_dirs([SHIPPED_PROFILE_DIR])[name]
    assert {m.name for m in profile.metrics if m.required} == required


def test_missing_objects_count_empty_columns_but_not_an_empty_alarm_table() -> None:
    """An absent scalar or an empty column is missing; an empty alarm table means no alarm."""
    plan = poll_plan([load_profile_dirs([SHIPPED_PROFILE_DIR])["ups-mib"]])
    source, status = "1.3.6.1.2.1.33.1.4.1.0", "1.3.6.1.2.1.33.1.2.1.0"
    data = Collected(
        scalars={source: 3, status: 2},
        walks={"1.3.6.1.2.1.33.1.3.3.1.2": {}, "1.3.6.1.2.1.33.1.6.2.1.2": {}},
    )
    missing = dict(plan.missing(data))
    assert "1.3.6.1.2.1.33.1.3.3.1.2" in missing  # upsInputFrequency: an empty walk
    assert "1.3.6.1.2.1.33.1.4.2.0" in missing  # upsOutputFrequency: not served
    assert "1.3.6.1.2.1.33.1.6.2.1.2" not in missing  # upsAlarmDescr: no alarm
    assert len(missing) == 12  # 14 counted objects (the alarm table is not), 2 served
    assert plan.missing_required(data) == []
    del data.scalars[status]
    assert plan.missing_required(data) == [(status, "ups_battery_status")]
