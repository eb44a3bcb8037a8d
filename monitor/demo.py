"""`vigie demo`: the simulated hospital (lab/) and the daemon watching it, until Ctrl-C.

Needs nothing but the Python package: the lab's SNMP agent, web services, mail banner, DICOM
archive, DNS and LDAP run on free loopback ports, config/demo.yaml takes them from environment
variables, and the daemon keeps its state in a temporary directory. No Alertmanager: incidents
show on the status page and the JSON API, and page the on-call through the lab's SMS gateway,
whose page lists the SMS it received (with the acknowledgement link).

With `--ha`, two replicas watch the lab on one config (docs/ha.md), Vigie Nord in Datacenter
Nord and Vigie Bellevue in Datacenter Bellevue; when the lab's Nord loses power, the Nord
replica goes down with it, and Bellevue pages the power cut, naming the lost replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from vigie.core.shipped import shipped
from vigie.core.yamlpos import ConfigErrors
from vigie.lab.feed import SILENCE as FEED_WINDOW
from vigie.lab.hospital import SERVERS, Lab
from vigie.lab.scenarios import SCENARIOS, ScenarioController
from vigie.lab.sms_gateway import SmsGateway
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.probes import default_registry
from vigie.probes.http import make_session

DEMO_CONFIG = shipped("demo.yaml")
"""The demo hospital's topology, found relative to the package as the shipped profiles are."""


def _listen_address(listen: str) -> str:
    """Return listen, or the same host on a free port when that port is taken (or 0).

    The port is known before the daemon starts: the acknowledgement links in SMS point to it.
    """
    host, _, port = listen.rpartition(":")
    with socket.socket() as sock:
        try:
            sock.bind((host, int(port)))
        except OSError:
            sock.bind((host, 0))
        return f"{host}:{sock.getsockname()[1]}"


def demo_env(
    lab: Lab, state_dir: Path, listen: str, sms: str = "http://127.0.0.1:9"
) -> dict[str, str]:
    """Return the variables config/demo.yaml needs: the lab's ports, state dir and listen,
    the SMS gateway's URL, and a fresh acknowledgement key written in the state dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    key = state_dir / "ack.key"
    if not key.exists():
        key.touch(mode=0o600)
        key.write_text(secrets.token_urlsafe(48))
    return {
        **lab.env(),
        "VIGIE_DEMO_STATE_DIR": str(state_dir),
        "VIGIE_DEMO_LISTEN": listen,
        "VIGIE_DEMO_URL": f"http://{listen}",
        "VIGIE_DEMO_SMS": sms,
        "VIGIE_DEMO_ACK_KEY": str(key),
    }


@dataclass
class Demo:
    """A running demo: the lab, the daemon watching it, and the scenario player."""

    lab: Lab
    daemon: Daemon
    controller: ScenarioController
    url: str
    sms: SmsGateway | None = None
    """The lab's SMS gateway: its /sms page lists the pages the on-call received."""
    replicas: dict[str, str] | None = None
    """With --ha: each replica's URL by name (daemon and url are Bellevue's, the survivor)."""


HA_NAMES = ("bellevue", "nord")
"""The demo's replicas, one per lab datacenter; Bellevue sends the SMS while it lives."""


def ha_config(listens: dict[str, str], directory: Path) -> Path:
    """Write config/demo.yaml with a `replicas:` block for the two demo replicas."""
    members = "".join(
        f'    - {{name: {name}, url: "http://{listens[name]}", site: {name}}}\n'
        for name in HA_NAMES
    )
    path = directory / "demo-ha.yaml"
    path.write_text(
        DEMO_CONFIG.read_text(encoding="utf-8")
        + "\nreplicas:\n  instance: ${VIGIE_INSTANCE}\n  members:\n"
        + members
        + "  interval: 5s\n  timeout: 2s\n  handoff: 20s\n  lost_hold: 30s\n",
        encoding="utf-8",
    )
    return path


def nord_dark(lab: Lab) -> bool:
    """Whether the lab's Datacenter Nord lost power (its servers' BMCs are silent)."""
    return all(not bmc.answering for name, bmc in lab.bmcs.items() if SERVERS.get(name) == "nord")


async def _fall_with_nord(lab: Lab, daemons: dict[str, Daemon]) -> None:
    """Stop the Nord replica when its datacenter loses power, as its host would (it leaves
    `daemons`, so the demo's end does not stop it twice)."""
    while True:  # the lab has no event to wait on: look twice a second
        if nord_dark(lab):
            break
        await asyncio.sleep(0.5)
    print("Datacenter Nord is dark: Vigie Nord goes down with it.", file=sys.stderr, flush=True)
    await asyncio.shield(daemons.pop("nord").stop())


@contextlib.asynccontextmanager
async def running_ha_demo(listen: str, speed: float = 1.0) -> AsyncIterator[Demo]:
    """Start the lab and two replicas (listen and the next free port); stop all on exit."""
    lab = Lab(feed_window=FEED_WINDOW / speed)
    await lab.start()
    sms = SmsGateway()
    await sms.start()
    controller = ScenarioController(lab)
    daemons: dict[str, Daemon] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="vigie-demo-ha-") as tmp:
            first = _listen_address(listen)
            host = first.rpartition(":")[0]
            listens = {"bellevue": first, "nord": _listen_address(f"{host}:0")}
            config = ha_config(listens, Path(tmp))
            registry = default_registry()
            async with make_session() as session:
                for name in HA_NAMES:
                    env = {
                        **demo_env(lab, Path(tmp) / name, listens[name], sms.url),
                        "VIGIE_INSTANCE": name,
                    }
                    loaded = load_config(config, registry, env=env)
                    daemons[name] = Daemon(
                        loaded, registry, session, env=env, logger=structlog.get_logger(name)
                    )
                    await daemons[name].start()
                watcher = asyncio.create_task(_fall_with_nord(lab, daemons))
                try:
                    urls = {n: f"http://{listens[n]}" for n in HA_NAMES}
                    yield Demo(lab, daemons["bellevue"], controller, urls["bellevue"], sms, urls)
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                    await controller.stop()
                    for daemon in daemons.values():
                        await daemon.stop()
    finally:
        await controller.stop()
        await sms.stop()
        await lab.stop()


@contextlib.asynccontextmanager
async def running_demo(listen: str, speed: float = 1.0) -> AsyncIterator[Demo]:
    """Start the lab and the daemon on config/demo.yaml; stop both on exit.

    speed compresses the lab feed's silence window (30 minutes at speed 1) as scenarios do.

    Raises ConfigErrors when the demo config does not load.
    """
    lab = Lab(feed_window=FEED_WINDOW / speed)
    await lab.start()
    sms = SmsGateway()
    await sms.start()
    controller = ScenarioController(lab)
    try:
        with tempfile.TemporaryDirectory(prefix="vigie-demo-") as tmp:
            env = demo_env(lab, Path(tmp), _listen_address(listen), sms.url)
            registry = default_registry()
            loaded = load_config(DEMO_CONFIG, registry, env=env)
            async with make_session() as session:
                daemon = Daemon(loaded, registry, session, env=env, logger=structlog.get_logger())
                await daemon.start()
                try:
                    host = loaded.config.web.host_port()[0]
                    url = f"http://{host}:{daemon.listen_port}"
                    yield Demo(lab, daemon, controller, url, sms)
                finally:
                    await controller.stop()
                    await daemon.stop()
    finally:
        await controller.stop()
        await sms.stop()
        await lab.stop()


async def run_demo(
    listen: str, scenario: str | None = None, speed: float = 1.0, ha: bool = False
) -> int:
    """Start the lab and the daemon, print the URLs, play the scenario, stop all on Ctrl-C."""
    if scenario is not None and scenario not in SCENARIOS:
        print(
            f"vigie demo: unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    if not 0 < speed <= 10_000:
        print(f"vigie demo: --speed must be in (0, 10000], got {speed:g}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        start = running_ha_demo if ha else running_demo
        async with start(listen, speed) as demo:
            url, lab = demo.url, demo.lab
            if demo.replicas is not None:
                print(
                    "\nTwo replicas (docs/ha.md): "
                    + ", ".join(f"Vigie {n.capitalize()} {u}/" for n, u in demo.replicas.items())
                    + "; the URLs below are Bellevue's, the one that survives a power cut.",
                    file=sys.stderr,
                    flush=True,
                )
            print(
                f"\nVigie demo: a simulated hospital (2 datacenters, UPSes, PDUs, Isilon SAN"
                f" arrays, servers with Redfish BMCs and sshd, 6 clinical applications, a DICOM"
                f" PACS, the directory's DNS and LDAP) watched by Vigie.\n"
                f"  Status:    {url}/\n"
                f"  Metrics:   {url}/metrics\n"
                f"  Incidents: {url}/api/v1/incidents\n"
                f"  SMS:       {demo.sms.url if demo.sms else ''}/sms  (the on-call's phone)\n"
                f"  On-call:   {url}/escalations  (acknowledged or not, per team)\n"
                f"  Lab:       {lab.url}/lab/state  (POST {lab.url}/lab/scenario/NAME"
                f"?speed=X, POST {lab.url}/lab/reset)\n"
                f"  Scenarios: {', '.join(SCENARIOS)}\n"
                f"  Config:    {DEMO_CONFIG}\nPress Ctrl-C to stop.\n",
                file=sys.stderr,
                flush=True,
            )
            if scenario is not None:
                # Let every check run once first, so the outage starts from a known state.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(demo.daemon.scheduler.first_round_done.wait(), 30)
                demo.controller.start(scenario, speed)
                print(f"Playing scenario {scenario} at speed {speed:g}.", file=sys.stderr)
            await stop.wait()
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    print("Vigie demo stopped.", file=sys.stderr)
    return 0
