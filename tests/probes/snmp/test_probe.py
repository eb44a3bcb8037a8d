"""The snmp probe against real agents on loopback: net-snmp snmpd, snmpsim, tiny UDP agents."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
import structlog.testing
from prometheus_client import CollectorRegistry

from tests.probes.snmp.polls import poll, render, v2
from tests.snmp_peers import (
    FIXTURES,
    UPS_ON_BATTERY,
    UPS_ONLINE,
    UPS_SUBSET_ON_BATTERY,
    V3_USERS,
    Snmpd,
    Snmpsim,
    free_udp_port,
    running_snmpd,
    snmp_check,
    start_snmpsim,
    v3_auth,
    value,
    values,
)
from tests.waiting import wait_for
from vigie.core.results import ProbeResult
from vigie.monitor.health.engine import ComponentStatus, HealthEngine, Topology
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import ComponentSpec, SiteSpec
from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
from vigie.monitor.store import ResultStore
from vigie.probes.base import Check, ProbeContext, ProbeRegistry
from vigie.probes.snmp import SnmpCheckSettings, SnmpProbe
from vigie.probes.snmp.profiles import SHIPPED_PROFILE_DIR, load_profile_dirs

SHIPPED = sorted(p.stem for p in SHIPPED_PROFILE_DIR.glob("*.yaml"))


async def test_v2c_ups_on_mains_then_on_battery(
    probe: SnmpProbe, own_agent: Snmpd, ctx: ProbeContext
) -> None:
    """Polling snmpd's UPS-MIB shows mains, then battery once the UPS switches over."""
    check = snmp_check(
        own_agent.target(), auths=v2(own_agent), auth="lab", profiles=("system", "ups-mib")
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert value(result, "ups_on_battery") == 0.0
    assert value(result, "ups_output_source", state="normal") == 1.0
    assert value(result, "ups_battery_runtime_seconds") == 34 * 60
    assert value(result, "ups_input_voltage_volts", line="1") == 231.0
    assert value(result, "ups_alarm", alarm="upsAlarmOnBattery") == 0.0
    # 1 GET + 3 walks: the input and output tables each in one walk of their entry
    assert value(result, "snmp_scrape_pdus_sent") == 4
    own_agent.set_ups(UPS_ON_BATTERY)

    async def on_battery() -> bool:
        """Poll again (snmpd may cache pass answers briefly); True once on battery shows."""
        nonlocal result
        result = await poll(probe, check, ctx)
        assert result.success, result.error
        return value(result, "ups_on_battery") == 1.0

    await wait_for(on_battery, "the UPS to show as on battery", every=0.2)
    assert value(result, "ups_output_source", state="battery") == 1.0
    assert value(result, "ups_battery_runtime_seconds") == 9 * 60
    assert value(result, "ups_alarm", alarm="upsAlarmOnBattery") == 1.0
    own_agent.set_ups(UPS_ONLINE)


@pytest.mark.parametrize("user", sorted(V3_USERS))
async def test_v3_security_levels_and_protocols(
    probe: SnmpProbe, agent: Snmpd, ctx: ProbeContext, user: str
) -> None:
    """Every v3 level and auth/priv protocol pair net-snmp and gufo-snmp share works."""
    check = snmp_check(agent.target(), auths={"v3": v3_auth(user)}, auth="v3")
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert value(result, "snmp_uptime_seconds") > 0
    assert value(result, "snmp_scrape_pdus_sent") == 3  # discovery, time sync, one GET


async def test_ipv6_target(probe: SnmpProbe, agent: Snmpd, ctx: ProbeContext) -> None:
    """An [::1]:port target is polled over IPv6."""
    if not agent.ipv6:
        pytest.skip("no IPv6 loopback here")
    check = snmp_check(agent.target(ipv6=True), auths=v2(agent), auth="lab")
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert (
        value(
            result,
            "snmp_system_info",
            descr="Vigie test snmpd",
            name="vigie-test-agent",
            object_id="1.3.6.1.4.1.8072.3.2.10",
            location="Vigie test bench",
        )
        == 1.0
    )


async def test_reboot_detected_when_uptime_goes_down(
    probe: SnmpProbe, own_agent: Snmpd, ctx: ProbeContext
) -> None:
    """sysUpTime going down between two polls of a check sets snmp_reboot_detected."""
    check = snmp_check(own_agent.target(), auths=v2(own_agent), auth="lab")
    first = await poll(probe, check, ctx)

    async def up_half_a_second() -> bool:
        """Poll again; True once the agent's sysUpTime reached 0.5 s."""
        nonlocal first
        first = await poll(probe, check, ctx)
        assert first.success, first.error
        return value(first, "snmp_uptime_seconds") >= 0.5

    await wait_for(up_half_a_second, "the agent's sysUpTime to reach 0.5 s", every=0.1)
    assert value(first, "snmp_reboot_detected") == 0.0
    own_agent.stop()
    own_agent.start()
    second = await poll(probe, check, ctx)
    assert second.success, second.error
    assert value(second, "snmp_uptime_seconds") < value(first, "snmp_uptime_seconds")
    assert value(second, "snmp_reboot_detected") == 1.0
    third = await poll(probe, check, ctx)
    assert value(third, "snmp_reboot_detected") == 0.0


async def test_scheduler_keeps_the_probe_reason(
    own_agent: Snmpd, session: aiohttp.ClientSession
) -> None:
    """Run by the scheduler, a silent agent fails with the probe's reason before its timeout."""
    probe = SnmpProbe()
    check = snmp_check(
        own_agent.target(),
        auths={"x": {"version": 2, "community": "nope"}},
        auth="x",
        timeout=1.0,
        probe=probe,
    )
    scheduler = Scheduler(
        ProbeRegistry([probe]), ResultStore(), session, SchedulerMetrics(CollectorRegistry())
    )
    result = await scheduler.run(check)
    assert result.error is not None and "wrong community" in result.error, result.error
    assert result.duration < 1.0


@pytest.mark.parametrize("name", SHIPPED)
async def test_golden_metrics(probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext, name: str) -> None:
    """Polling a recorded device renders exactly the golden metrics of its profile."""
    profiles = ("system", name) if name != "system" else ("system",)
    check = snmp_check(
        sim.target(),
        auths={"rec": {"version": 2, "community": name}},
        auth="rec",
        profiles=profiles,
        check_id=name,
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    text = render(check, result)
    golden = FIXTURES / f"{name}.prom"
    if os.environ.get("VIGIE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


async def test_apc_ups_on_battery(probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext) -> None:
    """The APC recording during an outage reads on battery, 12 minutes left, replace battery."""
    check = snmp_check(
        sim.target(),
        auths={"rec": {"community": "apc-ups-on-battery"}},
        auth="rec",
        profiles=("apc-ups",),
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert value(result, "ups_on_battery") == 1.0
    assert value(result, "ups_output_status", state="onBattery") == 1.0
    assert value(result, "ups_battery_runtime_seconds") == 432.0
    assert value(result, "ups_time_on_battery_seconds") == 410.0
    assert value(result, "ups_battery_low") == 1.0
    assert value(result, "ups_battery_replace_needed") == 1.0
    assert value(result, "ups_last_transfer_cause", state="blackout") == 1.0


async def test_ups_mib_alarm_table(probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext) -> None:
    """UPS-MIB alarm rows (OID values) become named alarms; others stay 0."""
    check = snmp_check(
        sim.target(),
        auths={"rec": {"community": "ups-mib-on-battery"}},
        auth="rec",
        profiles=("ups-mib",),
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    alarms = {dict(lb)["alarm"]: v for lb, v in values(result, "ups_alarm").items()}
    assert {a for a, v in alarms.items() if v} == {"upsAlarmOnBattery", "upsAlarmLowBattery"}
    assert len(alarms) == 24
    assert value(result, "ups_on_battery") == 1.0
    assert value(result, "ups_battery_runtime_seconds") == 480.0


async def test_pdu_phases_and_outlets(probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext) -> None:
    """The rPDU2 recording gives phase current in amperes, power in watts, outlet states."""
    check = snmp_check(
        sim.target(), auths={"rec": {"community": "apc-rpdu2"}}, auth="rec", profiles=("apc-rpdu2",)
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert value(result, "pdu_phase_current_amperes", phase="1") == 9.4
    assert value(result, "pdu_power_watts", module="1") == 2120.0
    assert value(result, "pdu_outlet_off", outlet="4", outlet_name="spare") == 1.0
    assert (
        value(result, "pdu_outlet_state", outlet="1", outlet_name="srv-pacs-01 PSU1", state="on")
        == 1.0
    )


NOSUCH = """source: test
metrics:
  - {name: present, oid: 1.3.6.1.2.1.1.7.0, type: gauge, help: h}
  - {name: absent, oid: 1.3.6.1.2.1.1.8.0, type: gauge, help: h}
"""


@pytest.mark.parametrize("version", [1, 2])
async def test_no_such_object(
    probe: SnmpProbe, sim: Snmpsim, tmp_path: Path, ctx: ProbeContext, version: int
) -> None:
    """A scalar the agent lacks is skipped and counted; marked required, it fails the poll."""
    (tmp_path / "opt.yaml").write_text(NOSUCH)
    (tmp_path / "req.yaml").write_text(
        NOSUCH.replace("type: gauge, help: h}\n", "type: gauge, help: h, required: true}\n")
    )
    auths = {"rec": {"version": version, "community": "system"}}
    check = snmp_check(
        sim.target(), auths=auths, auth="rec", profiles=("opt",), profile_dirs=(tmp_path,)
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert value(result, "present") == 72.0
    assert values(result, "absent") == {}
    assert value(result, "snmp_objects_missing") == 1.0
    check = snmp_check(
        sim.target(), auths=auths, auth="rec", profiles=("req",), profile_dirs=(tmp_path,)
    )
    result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error == (
        f"{sim.target()} does not serve required 1.3.6.1.2.1.1.8.0 (absent) (noSuchObject, "
        "noSuchInstance, endOfMibView or an empty table)"
    )
    assert values(result, "present") == {}


ISILON = "1.3.6.1.4.1.12124"
NFS3 = ".".join(str(b) for b in b"nfs3")  # IMPLIED protocolName index


def isilon_state(latency_us: int, used: int) -> dict[str, tuple[str, int | str]]:
    """ISILON-MIB values a pass_persist script serves: one node, nfs3 at this latency."""
    return {
        f"{ISILON}.1.1.1.0": ("string", "chu-isilon"),
        f"{ISILON}.1.1.2.0": ("integer", 0),
        f"{ISILON}.1.3.1.0": ("counter64", 1_000_000_000_000),
        f"{ISILON}.1.3.2.0": ("counter64", used),
        f"{ISILON}.2.1.1.0": ("string", "chu-isilon-1"),
        f"{ISILON}.2.1.2.0": ("integer", 0),
        f"{ISILON}.2.2.10.1.1.{NFS3}": ("string", "nfs3"),
        f"{ISILON}.2.2.10.1.3.{NFS3}": ("gauge", 4200),
        f"{ISILON}.2.2.10.1.16.{NFS3}": ("gauge", latency_us),
    }


@pytest.fixture
def isilon_agent(tmp_path: Path) -> Iterator[Snmpd]:
    """A net-snmp snmpd whose pass_persist script serves ISILON-MIB from a JSON file."""
    if not Path("/usr/sbin/snmpd").exists():
        pytest.skip("snmpd not installed")
    agent = Snmpd(tmp_path, free_udp_port(), "vigie-ro", ipv6=False)
    agent.set_ups(isilon_state(2000, 500_000_000_000))
    conf = agent.write_config()
    conf.write_text(
        conf.read_text().replace("pass_persist .1.3.6.1.2.1.33 ", f"pass_persist .{ISILON} ")
    )
    agent.start()
    yield agent
    agent.stop()


async def test_rising_latency_flags_the_array_before_it_fails(
    isilon_agent: Snmpd, ctx: ProbeContext
) -> None:
    """Latency rising on a real agent drives the baseline ratio past the rule's 3 for 5 minutes."""
    now = [1_000_000.0]
    probe = SnmpProbe(clock=lambda: now[0])
    check = snmp_check(
        isilon_agent.target(),
        auths=v2(isilon_agent),
        auth="lab",
        profiles=("dell-isilon",),
        probe=probe,
    )
    rule = next(
        r
        for r in load_profile_dirs([SHIPPED_PROFILE_DIR])["dell-isilon"].rules
        if r.name == "storage_latency_degraded"
    )
    assert rule.expr == "storage_latency_baseline_ratio > 3" and rule.for_ == 300
    ratios: list[float] = []
    fills: list[float] = []
    above_since: float | None = None
    fired_at: float | None = None
    # One poll a minute (fake clock): an hour at 2 ms, then +15 % a minute, as a failing SAN.
    for minute in range(80):
        latency_us = 2000 if minute < 60 else int(2000 * 1.15 ** (minute - 59))
        isilon_agent.set_ups(isilon_state(latency_us, 500_000_000_000 + minute * 2_000_000_000))
        result = await poll(probe, check, ctx)
        assert result.success, result.error
        ratio = value(result, "storage_latency_baseline_ratio", protocol="nfs3")
        ratios.append(ratio)
        if minute >= 2:
            fills.append(value(result, "storage_pool_full_in_seconds", pool="chu-isilon"))
        above_since = (above_since or now[0]) if ratio > 3 else None
        if fired_at is None and above_since is not None and now[0] - above_since >= rule.for_:
            fired_at = now[0]
        now[0] += 60.0
    assert all(r == pytest.approx(1.0) for r in ratios[:60])
    assert ratios[60:] == sorted(ratios[60:]) and ratios[-1] > 10
    assert fired_at is not None, ratios
    # 0.2 % of the pool a minute from 50 %: full in about 250 minutes, well inside a day.
    assert fills[-1] == pytest.approx((1 - 0.658) / 0.002 * 60, rel=0.01)
    probe.keep_only({"another-check"})  # the check left the plan: its baselines go with it
    second = await poll(probe, check, ctx)
    assert value(second, "storage_latency_baseline_ratio", protocol="nfs3") == 1.0


async def test_baselines_survive_a_restart_mid_degradation(
    isilon_agent: Snmpd, ctx: ProbeContext
) -> None:
    """State saved and loaded over a restart keeps the latency baseline and forecast points.

    Without it the restarted probe would take the degraded latency as its new normal (ratio
    1) and need three polls before forecasting the pool again.
    """
    now = [1_000_000.0]
    probe = SnmpProbe(clock=lambda: now[0])
    check = snmp_check(
        isilon_agent.target(), auths=v2(isilon_agent), auth="lab", profiles=("dell-isilon",)
    )
    for _ in range(30):  # half an hour at 2 ms, one poll a minute
        assert (await poll(probe, check, ctx)).success
        now[0] += 60.0
    isilon_agent.set_ups(isilon_state(20_000, 500_000_000_000))  # the SAN is 10x slower
    slow = await poll(probe, check, ctx)
    assert value(slow, "storage_latency_baseline_ratio", protocol="nfs3") == pytest.approx(10)
    saved = json.loads(json.dumps(probe.save_state()))  # as the daemon writes it
    now[0] += 600.0  # Vigie was down ten minutes
    restarted = SnmpProbe(clock=lambda: now[0])
    restarted.load_state(saved)
    after = await poll(restarted, check, ctx)
    # Above k the baseline learns slowly (above_half_life): ten minutes move it a little.
    assert value(after, "storage_latency_baseline_ratio", protocol="nfs3") == pytest.approx(
        10, rel=0.02
    )
    assert values(after, "storage_pool_full_in_seconds") == {(("pool", "chu-isilon"),): math.inf}
    amnesic = await poll(SnmpProbe(clock=lambda: now[0]), check, ctx)
    assert value(amnesic, "storage_latency_baseline_ratio", protocol="nfs3") == 1.0
    assert values(amnesic, "storage_pool_full_in_seconds") == {}


async def test_profile_rules_set_the_component_state(
    probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext
) -> None:
    """The rules an APC UPS profile carries make a UPS polled during an outage DOWN (runtime)."""
    from vigie.monitor.health.engine import HealthEngine, Topology
    from vigie.monitor.health.states import State
    from vigie.monitor.health.topology import ComponentSpec, SiteSpec

    check = snmp_check(
        sim.target(),
        auths={"rec": {"community": "apc-ups-on-battery"}},
        auth="rec",
        profiles=("apc-ups",),
        check_id="ups-1-snmp",
    )
    assert isinstance(check.settings, SnmpCheckSettings)
    severities = {r.name: r.severity for r in check.settings.health_rules()}
    assert severities["on_battery"] == "warning"
    assert severities["runtime_low"] == "down"  # critical in the profile
    topology = Topology(
        [SiteSpec(id="nord")],
        [ComponentSpec(id="ups-1", kind="ups", site="nord", checks=["ups-1-snmp"])],
    )
    engine = HealthEngine(topology, clock=lambda: 1_790_000_000.0)
    engine.set_plan({check.id: check}, [])
    engine.observe(check.id, await poll(probe, check, ctx))
    status = engine.evaluate().components["ups-1"]
    assert status.state is State.DOWN
    assert any("ups_battery_runtime_seconds (432) < 600" in r for r in status.reasons), status


APC = "1.3.6.1.4.1.318.1.1.1."
# An APC card without model, battery temperature or frequencies, on battery.
APC_LACKS = {APC + "1.1.1.0", APC + "2.2.2.0", APC + "3.2.4.0", APC + "4.2.2.0"}
# upsBasicOutputStatus, the state the APC rules cannot do without.
APC_OUTPUT_STATUS = APC + "4.1.1.0"
LONG_COLUMN, LONG_ROWS = "1.3.6.1.2.1.2.2.1.2", 40  # ifDescr


@pytest.fixture(scope="module")
def trimmed_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    """snmpsim serving APC subsets: `apc-trimmed` (no model, temperature, frequencies) and
    `apc-no-status` (no upsBasicOutputStatus either), cut from the recorded APC card; and
    `long-rows`, a table of 40 rows of 250-character descriptions."""
    root = tmp_path_factory.mktemp("snmpsim-trimmed")
    data = root / "data"
    data.mkdir()
    lines = (FIXTURES / "apc-ups.snmprec").read_text().splitlines()
    kept = [
        f"{APC_OUTPUT_STATUS}|2|3" if line.startswith(APC_OUTPUT_STATUS + "|") else line
        for line in lines
        if line.split("|")[0] not in APC_LACKS
    ]
    (data / "apc-trimmed.snmprec").write_text("\n".join(kept) + "\n")
    no_status = [line for line in kept if not line.startswith(APC_OUTPUT_STATUS + "|")]
    (data / "apc-no-status.snmprec").write_text("\n".join(no_status) + "\n")
    (data / "long-rows.snmprec").write_text(
        "1.3.6.1.2.1.1.1.0|4|long rows\n"
        + "".join(f"{LONG_COLUMN}.{i}|4|{i:03d}{'d' * 247}\n" for i in range(1, LONG_ROWS + 1))
    )
    server = start_snmpsim(data, root)
    yield server.wait_ready("apc-trimmed")
    server.stop()


def component_status(check: Check, result: ProbeResult) -> ComponentStatus:
    """Return what the health engine makes of one result for a UPS component of the check."""
    topology = Topology(
        [SiteSpec(id="nord")],
        [ComponentSpec(id="ups", kind="ups", site="nord", checks=[check.id])],
    )
    engine = HealthEngine(topology, clock=lambda: 1_790_000_000.0)
    engine.set_plan({check.id: check}, [])
    engine.observe(check.id, result)
    return engine.evaluate().components["ups"]


def firing(check: Check, result: ProbeResult) -> dict[str, bool | None]:
    """Return each profile rule's verdict on a result: True fires, None lacks its metric."""
    assert isinstance(check.settings, SnmpCheckSettings)
    return {
        rule.name: rule.condition.evaluate(result.samples)[0]
        for rule in check.settings.health_rules()
    }


async def test_ups_serving_only_the_mandatory_rfc1628_groups(
    tmp_path: Path, ctx: ProbeContext
) -> None:
    """A UPS-MIB agent with only RFC 1628's mandatory groups is still seen on battery.

    Its ten absent objects are counted in snmp_objects_missing (on /metrics with the check's
    labels), logged once for the check and target (not again on the next poll), and the
    rules on absent metrics (runtime_low, overload) neither fire nor fail.
    """
    with running_snmpd(tmp_path / "snmpd", ups=UPS_SUBSET_ON_BATTERY) as subset:
        check = snmp_check(
            subset.target(),
            auths=v2(subset),
            auth="lab",
            profiles=("system", "ups-mib"),
            check_id="ups-subset",
        )
        with structlog.testing.capture_logs() as logs:
            probe = SnmpProbe(logger=structlog.get_logger())
            result = await poll(probe, check, ctx)
            again = await poll(probe, check, ctx)
    assert result.success, result.error
    assert again.success, again.error
    assert value(result, "ups_on_battery") == 1.0
    assert value(result, "ups_battery_low") == 1.0
    assert value(result, "ups_time_on_battery_seconds") == 120.0
    assert value(result, "ups_alarm", alarm="upsAlarmOnBattery") == 1.0
    for absent in ("ups_battery_runtime_seconds", "ups_output_frequency_hertz", "ups_load_ratio"):
        assert values(result, absent) == {}, absent
    assert value(result, "snmp_objects_missing") == 10.0
    assert value(again, "snmp_objects_missing") == 10.0
    shown = 'snmp_objects_missing{check="ups-subset",kind="snmp",target="device"} 10\n'
    assert shown in render(check, result)
    told = [e for e in logs if e["event"] == "snmp_objects_missing" and e["log_level"] == "warning"]
    assert len(told) == 1, told
    assert told[0]["check"] == "ups-subset"
    assert told[0]["target"] == subset.target()
    assert told[0]["count"] == 10
    assert "1.3.6.1.2.1.33.1.2.3.0 (ups_battery_runtime_seconds)" in told[0]["objects"]
    assert "1.3.6.1.2.1.33.1.4.2.0 (ups_output_frequency_hertz)" in told[0]["objects"]
    verdicts = firing(check, result)
    assert verdicts["on_battery"] is True
    assert verdicts["battery_low"] is True
    assert verdicts["runtime_low"] is None
    assert verdicts["overload"] is None
    status = component_status(check, result)
    assert status.state is State.DOWN  # battery_low is critical
    assert any("ups_battery_low (1) == 1" in r for r in status.reasons), status.reasons
    assert not any("runtime" in r or "load_ratio" in r for r in status.reasons), status.reasons


async def test_ups_without_its_output_source_fails_naming_it(
    tmp_path: Path, probe: SnmpProbe, ctx: ProbeContext
) -> None:
    """A UPS-MIB agent lacking upsOutputSource (required) fails naming the object and target."""
    lacking = dict(UPS_SUBSET_ON_BATTERY)
    del lacking["1.3.6.1.2.1.33.1.4.1.0"]
    with running_snmpd(tmp_path / "snmpd", ups=lacking) as agent:
        check = snmp_check(agent.target(), auths=v2(agent), auth="lab", profiles=("ups-mib",))
        result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith(
        f"{agent.target()} does not serve required 1.3.6.1.2.1.33.1.4.1.0 (ups_output_source) "
    ), result.error
    assert values(result, "ups_on_battery") == {}


async def test_apc_card_without_model_temperature_or_frequency(
    trimmed_sim: Snmpsim, ctx: ProbeContext
) -> None:
    """An APC card lacking model, temperature and frequencies still shows on battery.

    The four absent objects are counted and their metrics absent; ups_info is absent rather
    than carrying an empty model.
    """
    probe = SnmpProbe()
    check = snmp_check(
        trimmed_sim.target(),
        auths={"rec": {"community": "apc-trimmed"}},
        auth="rec",
        profiles=("apc-ups",),
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    assert value(result, "ups_on_battery") == 1.0
    assert value(result, "ups_output_status", state="onBattery") == 1.0
    assert value(result, "ups_battery_runtime_seconds") == 2520.0
    for absent in (
        "ups_info",
        "ups_battery_temperature_celsius",
        "ups_input_frequency_hertz",
        "ups_output_frequency_hertz",
    ):
        assert values(result, absent) == {}, absent
    assert value(result, "snmp_objects_missing") == 4.0
    verdicts = firing(check, result)
    assert verdicts["on_battery"] is True
    assert verdicts["runtime_low"] is False


async def test_apc_card_without_output_status_fails_naming_it(
    trimmed_sim: Snmpsim, probe: SnmpProbe, ctx: ProbeContext
) -> None:
    """An APC card lacking upsBasicOutputStatus (required) fails naming it and the target."""
    check = snmp_check(
        trimmed_sim.target(),
        auths={"rec": {"community": "apc-no-status"}},
        auth="rec",
        profiles=("apc-ups",),
    )
    result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error is not None
    expected = f"does not serve required {APC_OUTPUT_STATUS} (ups_output_status) "
    assert result.error.startswith(f"{trimmed_sim.target()} {expected}"), result.error


async def test_walk_answers_over_4_kib_are_asked_again_with_fewer_rows(
    trimmed_sim: Snmpsim, probe: SnmpProbe, tmp_path: Path, ctx: ProbeContext
) -> None:
    """25 rows of 250 characters exceed the 4 KiB gufo-snmp reads: the walk asks fewer rows
    per GETBULK instead of failing, and every row is read."""
    (tmp_path / "descr.yaml").write_text(
        "source: test\nmetrics:\n"
        f"  - {{name: if_descr_info, oid: {LONG_COLUMN}, type: info, label: descr, help: h,"
        " indexes: [{label: index}]}\n"
    )
    check = snmp_check(
        trimmed_sim.target(),
        auths={"rec": {"community": "long-rows"}},
        auth="rec",
        profiles=("descr",),
        profile_dirs=(tmp_path,),
    )
    result = await poll(probe, check, ctx)
    assert result.success, result.error
    rows = values(result, "if_descr_info")
    assert len(rows) == LONG_ROWS
    assert (("index", "7"), ("descr", "007" + "d" * 247)) in rows
    assert value(result, "snmp_objects_missing") == 0.0
