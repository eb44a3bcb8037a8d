"""`vigie demo`: the simulated hospital (lab/) and the daemon watching it, until Ctrl-C.

Needs nothing but the Python package: the lab's SNMP agent, web services and mail banner run
on free loopback ports, config/demo.yaml takes them from environment variables, and the
daemon keeps its state in a temporary directory. No Alertmanager: incidents show on the
status page and the JSON API, and page the on-call through the lab's SMS gateway, whose page
lists the SMS it received (with the acknowledgement link).
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
from vigie.lab.hospital import Lab
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


async def run_demo(listen: str, scenario: str | None = None, speed: float = 1.0) -> int:
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
        async with running_demo(listen, speed) as demo:
            url, lab = demo.url, demo.lab
            print(
                f"\nVigie demo: a simulated hospital (2 datacenters, UPSes, PDUs, Isilon SAN"
                f" arrays, servers with Redfish BMCs and sshd, 6 clinical applications)"
                f" watched by Vigie.\n"
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
