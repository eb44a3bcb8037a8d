"""The poll plan of profiles: what to ask a device for, what counts as missing."""

from __future__ import annotations

import pytest

from vigie.probes.snmp.profiles import SHIPPED_PROFILE_DIR, Collected, load_profile_dirs, poll_plan


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
