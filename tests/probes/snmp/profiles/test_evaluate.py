"""Evaluation: a poll's varbinds become samples (labels, scales, states, booleans, resets)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.probes.snmp.profiles.build import MINIMAL, by_name, profile, run
from vigie.probes.snmp.profiles import SHIPPED_PROFILE_DIR, Collected, evaluate, load_profile_dirs


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
