"""The three real outages (and the recovery after them) as timed steps on the simulated hospital.

A scenario is a table of steps at scenario times (seconds, as the outage unfolded); `speed`
compresses time: at speed 60 a 10-minute battery drain lasts 10 s. Steps marked `fault` are
the moments a monitoring system should notice: the end-to-end tests measure detection from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from vigie.lab.hospital import APPS, SAN_NORMAL_LATENCY, SERVERS, Lab
from vigie.lab.san_host import PATHS

Action = Callable[[Lab, float], None]
"""A step's action: the lab and the speed factor (to compress periods such as flapping)."""


@dataclass(frozen=True)
class Step:
    """One change to the hospital at a scenario time."""

    at: float
    what: str
    action: Action
    fault: bool = False


@dataclass(frozen=True)
class Scenario:
    """A named outage: its steps in time order."""

    name: str
    description: str
    steps: tuple[Step, ...]

    @property
    def duration(self) -> float:
        """Scenario time of the last step."""
        return self.steps[-1].at if self.steps else 0.0


@dataclass
class ScenarioRun:
    """What a run did: when (wall clock) each step was applied."""

    scenario: str
    speed: float
    started: float = 0.0
    applied: list[tuple[float, str]] = field(default_factory=list)
    fault_at: float | None = None
    finished: bool = False


async def run_scenario(
    lab: Lab,
    scenario: Scenario,
    speed: float = 1.0,
    *,
    run: ScenarioRun | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ScenarioRun:
    """Apply the scenario's steps at their (compressed) times; return what was done when."""
    if speed <= 0:
        raise ValueError(f"scenario {scenario.name}: speed must be > 0, got {speed}")
    run = run or ScenarioRun(scenario.name, speed)
    start = clock()
    run.started = lab.clock()
    lab.note(f"scenario {scenario.name} started at speed {speed:g}")
    for step in scenario.steps:
        # Sleep to the step's absolute time, so steps never drift however long actions take.
        delay = start + step.at / speed - clock()
        if delay > 0:
            await sleep(delay)
        step.action(lab, speed)
        now = lab.clock()
        run.applied.append((now, step.what))
        lab.note(step.what)
        if step.fault and run.fault_at is None:
            run.fault_at = now
    run.finished = True
    lab.note(f"scenario {scenario.name} finished")
    return run


# --------------------------------------------------------------------------- power cut

NORD = "nord"
NORD_SERVERS = tuple(s for s, site in SERVERS.items() if site == NORD)
BATTERY_MINUTES = 12.0
APP_LAG = 120.0
"""Scenario seconds between a server's fall and its applications' (their clients time out)."""


def _drain(minutes_left: float, elapsed: float) -> Action:
    def act(lab: Lab, _: float) -> None:
        for ups in lab.ups_ids(NORD):
            lab.set_ups(
                ups, on_battery=True, runtime_minutes=minutes_left, seconds_on_battery=elapsed
            )

    return act


def power_cut() -> Scenario:
    """Nord loses mains: UPSes on battery, runtime falling, then servers and applications fall."""
    steps = [
        Step(
            0,
            "mains lost at Datacenter Nord: UPSes on battery",
            lambda lab, _: lab.set_mains(NORD, on=False, runtime_minutes=BATTERY_MINUTES),
            fault=True,
        )
    ]
    for t in range(30, int(BATTERY_MINUTES * 60), 30):
        left = BATTERY_MINUTES - t / 60
        steps.append(Step(t, f"battery runtime {left:.1f} min", _drain(left, t)))
    steps += [
        Step(
            BATTERY_MINUTES * 60,
            "batteries exhausted: Nord servers, SAN and PDUs fall",
            lambda lab, _: lab.power_off_site(NORD),
        ),
        # Health pages are seen failing after their servers: a client notices a dead server
        # when its own timeout expires.
        Step(
            BATTERY_MINUTES * 60 + APP_LAG,
            "Nord applications unreachable",
            lambda lab, _: lab.apps_down(NORD, "server powered off"),
        ),
    ]
    return Scenario("power-cut", power_cut.__doc__ or "", tuple(steps))


# --------------------------------------------------------------------------- SAN degradation

SAN_RATIO = 3.0
"""Latency / baseline above which dell-isilon's storage_latency_degraded rule fires."""
SAN_CURVE = (
    (0, SAN_NORMAL_LATENCY),  # normal for a few polls: the baseline is learnt from them
    (180, 0.003),
    (300, 0.005),
    (420, 0.009),
    (540, 0.02),
    (600, 0.05),
    (660, 0.15),
    (720, 0.3),
)
NORD_SAN_APPS = tuple(a for a, servers in APPS.items() if all(s in NORD_SERVERS for s in servers))
NORD_SAN_SERVERS = NORD_SERVERS
APP_SLOW_LATENCY = 0.7
"""Seconds a slow application takes to answer: above the app_slow rule, below probe timeouts."""


def _latency(seconds: float) -> Action:
    return lambda lab, _: lab.set_san_latency("san-nord", seconds)


def _paths_failing(lab: Lab, _: float) -> None:
    for server in NORD_SAN_SERVERS:
        lab.set_failed_paths(server, PATHS // 2)


def _servers_unstable(lab: Lab, _: float) -> None:
    for server in NORD_SAN_SERVERS:
        lab.set_service(server, up=False, latency=0.2, reason="I/O timeouts, hung tasks")
        lab.set_failed_paths(server, PATHS)


def _apps_slow(lab: Lab, _: float) -> None:
    for app in NORD_SAN_APPS:
        lab.set_service(app, latency=APP_SLOW_LATENCY, reason="slow")


def _apps_stop(lab: Lab, _: float) -> None:
    for app in NORD_SAN_APPS:
        lab.set_service(app, up=False, reason="database I/O error")


def san_degradation() -> Scenario:
    """SAN Nord latency climbs for minutes; servers turn unstable, applications slow, then stop."""
    steps = [
        Step(
            t,
            f"san-nord latency {lat * 1000:.0f} ms",
            _latency(lat),
            fault=lat > SAN_RATIO * SAN_NORMAL_LATENCY,
        )
        for t, lat in SAN_CURVE
    ]
    steps += [
        # Hosts suffer well after the array degrades, so that the demo (at --speed 10, real
        # `for` durations) shows the SAN DEGRADED before the servers fall.
        Step(840, "Nord servers see half their SAN paths fail", _paths_failing),
        Step(960, "Nord servers unstable: I/O timeouts, every SAN path failed", _servers_unstable),
        Step(1080, "Nord applications slow", _apps_slow),
        Step(1260, "Nord applications stop", _apps_stop),
    ]
    steps.sort(key=lambda s: s.at)
    return Scenario("san-degradation", san_degradation.__doc__ or "", tuple(steps))


# --------------------------------------------------------------------------- server crash


def _crash_dpi(lab: Lab, _: float) -> None:
    lab.set_service("srv-dpi", up=False, reason="kernel panic")
    lab.set_bmc("srv-dpi", power="Off")  # the watchdog powered it off: its BMC says so


def server_crash() -> Scenario:
    """The server behind the patient record dies at 01:30; nobody is in the building."""
    return Scenario(
        "server-crash",
        server_crash.__doc__ or "",
        (
            Step(
                0,
                "01:30 srv-dpi crashes (kernel panic)",
                _crash_dpi,
                fault=True,
            ),
            Step(
                APP_LAG,
                "patient record unreachable",
                lambda lab, _: lab.set_service("dpi", up=False, reason="server unreachable"),
            ),
        ),
    )


# --------------------------------------------------------------------------- recovery

RECOVERY_ORDER = ("dpi", "labo", "pacs", "rdv")
FLAPPING_APP = "rdv"


def _aftermath(lab: Lab, _: float) -> None:
    lab.set_mains(NORD, on=False, runtime_minutes=0)
    lab.power_off_site(NORD)
    lab.apps_down(NORD, "server powered off")


def _mains_back(lab: Lab, _: float) -> None:
    lab.set_mains(NORD, on=True)
    for device in lab.devices.values():
        device.answering = True
    for bmc in lab.bmcs.values():
        bmc.answering = True  # standby power: the BMCs answer, the servers are still off


def _servers_back(lab: Lab, _: float) -> None:
    for server in NORD_SERVERS:
        lab.set_service(server)
        lab.set_bmc(server, power="On")


def _app_back(app: str) -> Action:
    def act(lab: Lab, speed: float) -> None:
        if app == FLAPPING_APP:
            lab.set_service(app, flap_period=20 / speed, reason="database reconnecting")
        else:
            lab.set_service(app)

    return act


def recovery() -> Scenario:
    """After the power cut: mains back, servers boot, applications return one by one, rdv flaps."""
    steps = [
        Step(0, "aftermath of the power cut: Nord dark", _aftermath),
        Step(120, "mains restored at Nord; UPSes, PDUs and SAN answer", _mains_back),
        Step(240, "Nord servers booted", _servers_back),
    ]
    for i, app in enumerate(RECOVERY_ORDER):
        what = f"{app} back" + (" but flapping" if app == FLAPPING_APP else "")
        steps.append(Step(300 + 60 * i, what, _app_back(app)))
    return Scenario("recovery", recovery.__doc__ or "", tuple(steps))


# --------------------------------------------------------------------------- silent lab feed


def lab_feed_silent() -> Scenario:
    """The lab's results stop flowing at 10:00; every server, port and health page stays up."""
    return Scenario(
        "lab-feed-silent",
        lab_feed_silent.__doc__ or "",
        (
            Step(
                0,
                "10:00 the lab's analysers stop sending results: the interface engine, its"
                " MLLP port and every health page stay up",
                lambda lab, _: lab.set_feed(False),
                fault=True,
            ),
        ),
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "power-cut": power_cut,
    "san-degradation": san_degradation,
    "server-crash": server_crash,
    "recovery": recovery,
    "lab-feed-silent": lab_feed_silent,
}


def get_scenario(name: str) -> Scenario:
    """Return a scenario by name; KeyError naming the known ones."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]()


class ScenarioController:
    """Runs one scenario at a time on a lab, as tasks; what POST /lab/scenario/NAME calls."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.task: asyncio.Task[ScenarioRun] | None = None
        self.run: ScenarioRun | None = None
        lab.scenario_runner = self.start

    def start(self, name: str, speed: float = 1.0) -> ScenarioRun:
        """Start a scenario now (cancelling one in progress); KeyError if unknown."""
        scenario = get_scenario(name)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.run = ScenarioRun(name, speed)
        self.task = asyncio.create_task(
            run_scenario(self.lab, scenario, speed, run=self.run), name=f"scenario-{name}"
        )
        return self.run

    async def stop(self) -> None:
        """Cancel a scenario in progress."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
