"""Scenario timing and effects: steps land at their compressed times and change the hospital."""

from __future__ import annotations

import time

import pytest

from tests.waiting import wait_for
from vigie.lab.hospital import Lab
from vigie.lab.scenarios import (
    SCENARIOS,
    Action,
    Scenario,
    ScenarioController,
    Step,
    get_scenario,
    run_scenario,
)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_are_ordered_and_mark_their_fault(name: str) -> None:
    """Each scenario's steps are in time order; every outage marks the moment of its fault."""
    scenario = get_scenario(name)
    times = [s.at for s in scenario.steps]
    assert times == sorted(times) and times[0] == 0
    assert scenario.description
    if name != "recovery":
        assert any(s.fault for s in scenario.steps)


async def test_steps_land_at_their_compressed_times() -> None:
    """At speed 100 a step at scenario time 50 s lands 0.5 s after the start, without drift."""
    lab = Lab()
    marks: list[str] = []

    def mark(at: int) -> Action:
        return lambda _lab, _speed: marks.append(f"{at}")

    scenario = Scenario(
        "timing",
        "steps at 0, 20, 50 s",
        tuple(Step(at, f"step {at}", mark(at), fault=at == 20) for at in (0, 20, 50)),
    )
    start = time.time()
    run = await run_scenario(lab, scenario, speed=100)
    offsets = [at - start for at, _ in run.applied]
    assert marks == ["0", "20", "50"]
    for got, want in zip(offsets, (0.0, 0.2, 0.5), strict=True):
        assert want - 0.01 <= got <= want + 0.2, offsets
    assert run.fault_at == run.applied[1][0]
    assert run.finished


async def test_steps_use_absolute_times_with_a_fake_clock() -> None:
    """The runner sleeps to each step's absolute time: a slow action does not shift later steps."""
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    def slow(_: Lab, __: float) -> None:
        now[0] += 3  # an action that takes 3 s of scenario-clock time

    scenario = Scenario("abs", "", (Step(0, "a", slow), Step(60, "b", slow), Step(120, "c", slow)))
    await run_scenario(Lab(), scenario, speed=10, clock=lambda: now[0], sleep=sleep)
    assert slept == [3.0, 3.0]  # 6 s to step b after a's 3 s, 12 s to c after b's 3 s


async def test_speed_must_be_positive() -> None:
    """A zero speed is refused with the scenario's name."""
    with pytest.raises(ValueError, match="scenario server-crash: speed must be > 0"):
        await run_scenario(Lab(), get_scenario("server-crash"), speed=0)


def test_unknown_scenario_names_the_known_ones() -> None:
    """An unknown name is a KeyError listing the scenarios."""
    with pytest.raises(KeyError, match="unknown scenario 'meteor'; known: power-cut"):
        get_scenario("meteor")


async def test_power_cut_drains_the_batteries_then_darkens_nord() -> None:
    """Played fast, the power cut puts Nord's UPSes on battery, drains them, then Nord falls."""
    lab = Lab()
    run = await run_scenario(lab, get_scenario("power-cut"), speed=10_000)
    ups1, ups2 = lab.devices["ups-nord-1"], lab.devices["ups-nord-2"]
    assert ups1.value("1.3.6.1.2.1.33.1.4.1.0") == 5  # upsOutputSource battery
    assert ups1.value("1.3.6.1.2.1.33.1.2.3.0") == 0  # minutes left
    assert ups2.value("1.3.6.1.4.1.318.1.1.1.4.1.1.0") == 3  # APC onBattery
    assert lab.devices["ups-bellevue-1"].value("1.3.6.1.2.1.33.1.4.1.0") == 3
    assert not lab.devices["san-nord"].answering and lab.devices["san-bellevue"].answering
    now = lab.clock()
    assert not lab.services["srv-dpi"].healthy(now) and not lab.services["dpi"].healthy(now)
    assert lab.services["mail"].healthy(now)  # its second server is at Bellevue
    assert lab.services["intranet"].healthy(now)
    assert run.fault_at == run.applied[0][0]


async def test_recovery_brings_applications_back_one_by_one_with_one_flapping() -> None:
    """Recovery restores mains and servers, then applications in order, rdv flapping."""
    lab = Lab()
    run = await run_scenario(lab, get_scenario("recovery"), speed=10_000)
    backs = [what for _, what in run.applied if what.endswith(("back", "flapping"))]
    assert backs == ["dpi back", "labo back", "pacs back", "rdv back but flapping"]
    assert all(d.answering for d in lab.devices.values())
    assert lab.services["rdv"].flap_period > 0
    assert lab.services["dpi"].healthy(lab.clock())


async def test_controller_replaces_a_running_scenario() -> None:
    """Starting a scenario cancels the one in progress; stop() cancels the last one."""
    lab = Lab()
    controller = ScenarioController(lab)
    first = controller.start("power-cut", speed=1)
    first_task = controller.task
    assert first_task is not None
    await wait_for(lambda: bool(first.applied), "the power cut's first step")
    second = controller.start("server-crash", speed=1)
    await wait_for(first_task.done, "the power cut to end")
    assert first_task.cancelled() and not first.finished
    await wait_for(lambda: second.fault_at is not None, "the server crash's fault")
    await controller.stop()
    assert controller.task is not None and controller.task.done()
