"""The lab servers' BMCs, read by Vigie's real redfish probe over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog

from tests.probes.conftest import make_check
from vigie.core.results import ProbeResult
from vigie.lab.bmc import Bmc
from vigie.lab.hospital import Lab, bmc_env
from vigie.lab.scenarios import get_scenario, run_scenario
from vigie.probes.base import ProbeContext, ProbeLog, ProbeRegistry
from vigie.probes.http import make_session
from vigie.probes.redfish import RedfishProbe, RedfishSettings


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    """A probe context on a fresh session."""
    session: aiohttp.ClientSession
    async with make_session() as session:
        yield ProbeContext(session=session, log=ProbeLog(structlog.get_logger()))


@pytest.fixture
def probe() -> RedfishProbe:
    """The redfish probe, registered as the daemon would."""
    found = ProbeRegistry([RedfishProbe()])["redfish"]
    assert isinstance(found, RedfishProbe)
    return found


def _value(result: ProbeResult, name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    for sample in result.samples:
        if sample.name == name and tuple(sorted(sample.labels)) == want:
            return sample.value
    return None


async def _read(
    lab: Lab, probe: RedfishProbe, ctx: ProbeContext, server: str, password: str | None = None
) -> ProbeResult:
    """Probe one server's BMC as config/demo.yaml does (basic auth, systems and chassis)."""
    check = make_check(
        probe,
        f"http://{lab.env()[bmc_env(server)]}",
        auth="basic",
        username="vigie",
        password=password or lab.bmc_password,
        collect=["systems", "chassis"],
    )
    return await probe(check, ctx)


def _holding(result: ProbeResult) -> set[str]:
    """Return the redfish default rules that hold on a result."""
    rules = RedfishSettings.model_validate({"auth": "none"}).health_rules()
    return {r.name for r in rules if r.condition.evaluate(result.samples)[0] is True}


async def test_lab_bmc_reports_a_healthy_server(
    lab: Lab, probe: RedfishProbe, ctx: ProbeContext
) -> None:
    """A healthy lab server: powered on, both PSUs and redundancy OK, inlet below thresholds."""
    result = await _read(lab, probe, ctx, "srv-dpi")
    assert result.success, result.error
    assert _value(result, "server_power_state", system="1", state="On") == 1
    assert _value(result, "server_power_supply_ok", chassis="1", psu="PSU2") == 1
    redundancy = {"chassis": "1", "group": "PSURedundancy"}
    assert _value(result, "server_power_supply_redundancy_ok", **redundancy) == 1
    sensor = {"chassis": "1", "sensor": "InletTemp"}
    assert _value(result, "server_temperature_celsius", **sensor) == 22
    assert _value(result, "server_temperature_upper_critical_celsius", **sensor) == 45
    assert _holding(result) == set()


async def test_lab_bmc_faults_reach_the_redfish_rules(
    lab: Lab, probe: RedfishProbe, ctx: ProbeContext
) -> None:
    """A PSU failed over POST /lab/fault, a hot inlet and power off trip the redfish rules."""
    async with ctx.session.post(
        f"{lab.url}/lab/fault", json={"server": "srv-labo", "psu": 2, "ok": False}
    ) as response:
        assert response.status == 200, await response.text()
    lab.set_bmc("srv-labo", inlet_celsius=46)
    result = await _read(lab, probe, ctx, "srv-labo")
    assert result.success, result.error
    assert _value(result, "server_power_supply_ok", chassis="1", psu="PSU2") == 0
    assert {"power_supply_failed", "power_redundancy_lost", "temperature_critical"} <= _holding(
        result
    )
    assert _holding(await _read(lab, probe, ctx, "srv-dpi")) == set()  # only srv-labo
    lab.set_bmc("srv-labo", power="Off")
    assert "server_powered_off" in _holding(await _read(lab, probe, ctx, "srv-labo"))
    lab.reset()
    assert _holding(await _read(lab, probe, ctx, "srv-labo")) == set()


async def test_lab_bmc_refuses_a_wrong_password_and_bad_faults(
    lab: Lab, probe: RedfishProbe, ctx: ProbeContext
) -> None:
    """A wrong password fails the check without showing it; a bad fault is a clear 400."""
    result = await _read(lab, probe, ctx, "srv-dpi", password="not-the-password")
    assert not result.success
    assert "401" in (result.error or "") and "not-the-password" not in (result.error or "")
    for body, reason in (
        ({"server": "srv-nope", "psu": 1}, "srv-nope"),
        ({"server": "srv-dpi", "psu": 3, "ok": False}, "psu must be 1 to 2"),
        ({"server": "srv-dpi", "power": "Maybe"}, "power must be On or Off"),
    ):
        async with ctx.session.post(f"{lab.url}/lab/fault", json=body) as response:
            assert response.status == 400
            assert reason in await response.text()


async def test_server_crash_powers_the_server_off_in_redfish(
    lab: Lab, probe: RedfishProbe, ctx: ProbeContext
) -> None:
    """server-crash: srv-dpi's BMC still answers and says PowerState Off."""
    await run_scenario(lab, get_scenario("server-crash"), speed=10_000)
    result = await _read(lab, probe, ctx, "srv-dpi")
    assert result.success, result.error
    assert _value(result, "server_power_state", system="1", state="Off") == 1


async def test_power_off_site_silences_its_bmcs(
    lab: Lab, probe: RedfishProbe, ctx: ProbeContext
) -> None:
    """Batteries exhausted at Nord: Nord BMCs stop answering, Bellevue's still do."""
    lab.power_off_site("nord")
    assert not (await _read(lab, probe, ctx, "srv-dpi")).success
    assert (await _read(lab, probe, ctx, "srv-intranet")).success


def test_bmc_psu_numbers_are_checked() -> None:
    """A PSU number outside the bays is an error naming the server."""
    with pytest.raises(ValueError, match="srv-x: psu must be 1 to 2, got 0"):
        Bmc("srv-x").set_psu(0, False)
