"""Two Vigie replicas as real `vigie run` processes, a two-member Alertmanager cluster, targets.

Everything is real and on loopback: the replicas are separate processes (so SIGKILL is a
replica's death), the Alertmanagers are Debian's prometheus-alertmanager gossiping on free
ports, and the receiver records both Alertmanager's notifications (/am/<member>) and Vigie's
own webhook sink (/direct). The targets are one aiohttp server whose paths answer 503 while
their site is "down". Time is compressed: checks every 0.5 s, the peer watch every 0.5 s.

`start_pair(..., relayed=True)` puts a `Relay` (an asyncio TCP relay the test cuts and heals)
between the datacenters: each replica reaches its peer through one, and itself directly (each
process's environment says which port reaches whom, as DNS or routes would on two hosts). With
`split_alertmanagers=True` too, am0 stands in Bellevue and am1 in Nord: each replica reaches the
other datacenter's member through a relay, and the members gossip through TCP+UDP relays (each
advertises its relay's address), so cutting the relays splits the cluster as well.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.alerting.conftest import (
    ALERTMANAGER,
    Alertmanager,
    AlertmanagerFactory,
    Receiver,
    alertmanagers,
    receiver,
    session,
)
from tests.conftest import free_port, require_binary
from tests.waiting import wait_for

__all__ = [
    "Pair",
    "Relay",
    "alertmanagers",
    "cluster_size",
    "pair",
    "receiver",
    "session",
    "start_pair",
]

ROOT = Path(__file__).resolve().parents[2]
SITES = {"bellevue": "Datacenter Bellevue", "nord": "Datacenter Nord"}
NAMES = ("bellevue", "nord")
"""Replica names, in the order that decides the direct-sink sender (bellevue first)."""
HOME = {"am0": "bellevue", "am1": "nord"}
"""The datacenter of each Alertmanager member, when the partition splits them."""

AM_HA_CONFIG = """
route:
  receiver: hook
  group_by: [alertname, site, root_cause]
  group_wait: 1s
  group_interval: 3s
  repeat_interval: 1h
  routes:
    - matchers: ['alertname = "VigieWatchdog"']
      receiver: none
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
  - name: none
"""


class Targets:
    """One HTTP server standing for every site's devices: a site's paths fail while it is down."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Serve on a free loopback port."""

        async def handle(request: web.Request) -> web.Response:
            site = request.match_info["site"]
            return web.Response(status=503 if site in self.down else 200, text=site)

        app = web.Application()
        app.router.add_get("/{site}/{device}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        tcp = web.TCPSite(self._runner, "127.0.0.1", 0)
        await tcp.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()


class Relay:
    """A link between the datacenters: relays TCP (and UDP) from a free loopback port to a target.

    `cut()` is a partition as a firewall makes it: open connections are reset, new ones are
    accepted and then hear nothing (the peer's probe times out), datagrams are dropped.
    `heal()` lets traffic through again. The port is the same for TCP and UDP, as the
    Alertmanager gossip (memberlist) uses both on one advertised address.
    """

    def __init__(self, name: str, target: int, *, udp: bool = False) -> None:
        self.name = name
        self.target = target
        self.udp = udp
        self.port = 0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._front: asyncio.DatagramTransport | None = None
        self._upstreams: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on a port free for TCP (and UDP, if relayed) on 127.0.0.1."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            if not self.udp:
                self._server, self.port = server, port
                return
            try:
                front, _ = await loop.create_datagram_endpoint(
                    partial(_UdpFront, self), local_addr=("127.0.0.1", port)
                )
            except OSError:  # that port is taken for UDP: try another
                server.close()
                await server.wait_closed()
                continue
            self._server, self._front, self.port = server, front, port
            return
        pytest.fail(f"no port free for both TCP and UDP for relay {self.name}")

    def cut(self) -> None:
        """Partition: reset open connections, blackhole new ones, drop datagrams."""
        self.is_cut = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        """Let traffic through again (the connections held silent are reset)."""
        self.is_cut = False
        for writer in list(self._held):
            writer.transport.abort()
        self._held.clear()

    async def stop(self) -> None:
        """Close everything the relay opened."""
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for transport in [self._front, *self._upstreams.values()]:
            if transport is not None:
                transport.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one connection, or hold it silent while cut."""
        self._writers.add(writer)
        try:
            if self.is_cut:  # blackhole: what the client sends goes nowhere, nothing comes back
                self._held.add(writer)
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                if self.is_cut:
                    return
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self._writers.discard(writer)
            self._held.discard(writer)
            writer.transport.abort()

    def from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram to the target: through this client's own upstream socket."""
        if self.is_cut:
            return
        upstream = self._upstreams.get(addr)
        if upstream is not None:
            upstream.sendto(data)
            return
        queued = self._pending.get(addr)
        if queued is not None:
            queued.append(data)
            return
        self._pending[addr] = [data]
        self._spawn(self._open_upstream(addr))

    async def _open_upstream(self, addr: tuple[str, int]) -> None:
        """Open the socket relaying one client's datagrams, so replies find their way back."""
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_datagram_endpoint(
            partial(_UdpBack, self, addr), remote_addr=("127.0.0.1", self.target)
        )
        self._upstreams[addr] = upstream
        for data in self._pending.pop(addr, []):
            upstream.sendto(data)

    def to_client(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram back from the target to the client it answers."""
        if not self.is_cut and self._front is not None:
            self._front.sendto(data, addr)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a relayed connection until it ends."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class _UdpFront(asyncio.DatagramProtocol):
    """The relay's UDP port: datagrams from clients."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Relay to the target."""
        self._relay.from_client(data, addr)


class _UdpBack(asyncio.DatagramProtocol):
    """One client's upstream socket: the target's replies to that client."""

    def __init__(self, relay: Relay, client: tuple[str, int]) -> None:
        self._relay = relay
        self._client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Relay back to the client."""
        self._relay.to_client(data, self._client)


def ha_config(
    targets: str, ports: Mapping[str, int | str], ams: list[str], hook: str
) -> dict[str, Any]:
    """The one config both replicas run: two datacenters, three devices and an app in each.

    A port may be `${VAR}`: each process's environment then says where it reaches that member.
    """
    checks: list[dict[str, Any]] = []
    components: list[dict[str, Any]] = []
    for site in SITES:
        for device in ("srv1", "srv2", "db"):
            cid = f"{site}-{device}"
            checks.append({"id": cid, "kind": "http", "target": f"{targets}/{site}/{device}"})
            components.append(
                {"id": cid, "kind": "server", "site": site, "checks": [cid], "name": cid}
            )
        checks.append({"id": f"{site}-app", "kind": "http", "target": f"{targets}/{site}/app"})
        components.append(
            {
                "id": f"{site}-app",
                "kind": "application",
                "site": site,
                "name": f"Dossier {site}",
                "criticality": 1,
                "checks": [f"{site}-app"],
                "depends_on": [f"{site}-srv1"],
            }
        )
    return {
        "defaults": {"interval": "500ms", "timeout": "400ms"},
        "web": {"listen": "127.0.0.1:${VIGIE_PORT}"},
        "state_dir": "${VIGIE_STATE}",
        "sites": [{"id": s, "name": n} for s, n in SITES.items()],
        "components": components,
        "checks": checks,
        # Longer than the two replicas' skew (a check interval): neither re-fires the other's
        # resolved incident with a late update.
        "health": {"resolve_hold": "2s", "confirm_max": "2s"},
        "replicas": {
            "instance": "${VIGIE_INSTANCE}",
            "members": [
                {"name": n, "url": f"http://127.0.0.1:{ports[n]}", "site": n} for n in NAMES
            ],
            "interval": "500ms",
            "timeout": "400ms",
            "max_heartbeat_age": "5s",
            "handoff": "4s",
            "startup_grace": "15s",
            "lost_hold": "3s",
        },
        "alerting": {
            "alertmanagers": ams,
            "webhooks": [{"url": f"{hook}/direct", "name": "direct"}],
            "resend_interval": "30s",
            "backoff_initial": "50ms",
            "backoff_max": "300ms",
            "group_wait": "1s",
            "flush_timeout": "1s",
        },
    }


@dataclass
class Replica:
    """One `vigie run` process of the pair."""

    name: str
    port: int
    config: Path
    state: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment: where this process reaches its peers, when relayed."""
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Its web server."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the process (same state_dir as before, if restarted)."""
        env = {
            **os.environ,
            "VIGIE_INSTANCE": self.name,
            "VIGIE_PORT": str(self.port),
            "VIGIE_STATE": str(self.state),
            **self.env,
        }
        self.state.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(self.config)),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )

    def kill(self) -> None:
        """SIGKILL: the replica dies as with its datacenter's power, nothing flushed."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM and wait (killed after 10 s)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its JSON log events of that name."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    out.append(event)
        return out


@dataclass
class Pair:
    """Two replicas, the Alertmanager cluster they post to, the targets and the receiver."""

    replicas: dict[str, Replica]
    ams: list[Alertmanager]
    targets: Targets
    receiver: Receiver
    session: aiohttp.ClientSession
    tails: list[str] = field(default_factory=list)
    links: list[Relay] = field(default_factory=list)
    """The relays between the datacenters (empty unless started relayed)."""

    def partition(self) -> None:
        """Cut every link between the datacenters."""
        for link in self.links:
            link.cut()

    def heal(self) -> None:
        """Restore every link between the datacenters."""
        for link in self.links:
            link.heal()

    async def replica_status(self, name: str) -> dict[str, Any] | None:
        """A replica's /-/replica answer, None while it does not answer."""
        try:
            async with self.session.get(f"{self.replicas[name].url}/-/replica") as response:
                if response.status != 200:
                    return None
                body: dict[str, Any] = await response.json()
                return body
        except aiohttp.ClientError:
            return None

    async def page(self, name: str) -> str:
        """A replica's status page (the overview), as HTML."""
        async with self.session.get(f"{self.replicas[name].url}/") as response:
            assert response.status == 200
            return await response.text()

    async def sees_alive(self, name: str, peer: str, alive: bool = True) -> bool:
        """Whether replica `name` answers and sees `peer` alive (or dead)."""
        status = await self.replica_status(name)
        if status is None:
            return False
        return any(m["name"] == peer and m["alive"] is alive for m in status["members"])

    def am_notifications(self, alertname: str, status: str) -> list[dict[str, Any]]:
        """Alerts notified by the Alertmanager cluster (any member) with that name and status."""
        return [
            alert
            for body in self.receiver.on("/am/am0") + self.receiver.on("/am/am1")
            for alert in body["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["status"] == status
        ]

    def direct(self, alertname: str, status: str) -> list[dict[str, Any]]:
        """Alerts Vigie's own webhook sink delivered with that name and status."""
        return [
            alert
            for body in self.receiver.on("/direct")
            for alert in body["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["status"] == status
        ]

    async def held(self, alertname: str) -> list[dict[str, Any]]:
        """The alerts of that name each Alertmanager member holds (concatenated)."""
        found = []
        for am in self.ams:
            found += [
                a for a in await am.alerts(self.session) if a["labels"]["alertname"] == alertname
            ]
        return found

    async def settled(self) -> bool:
        """Every member flushed every group twice since its last receipt (nothing more due)."""
        return all([await am.settled(self.session) for am in self.ams])


async def cluster_size(am: Alertmanager, session: aiohttp.ClientSession) -> int:
    """How many members (itself included) an Alertmanager sees in its cluster."""
    async with session.get(f"{am.url}/api/v2/status") as response:
        status = await response.json()
    return len(status["cluster"].get("peers") or [])


async def _clustered(am: Alertmanager, session: aiohttp.ClientSession) -> bool:
    return await cluster_size(am, session) == 2


class GossipRelayedAlertmanager(Alertmanager):
    """An Alertmanager member advertising a relay's address: its peers gossip through it.

    It tries to rejoin a lost peer every second (10 s by default), as a healed partition
    would see it sooner or later.
    """

    advertise: int | None = None

    def args(self) -> list[str]:
        """The command line, with the advertised gossip address."""
        extra = ["--cluster.reconnect-interval=1s"]
        if self.advertise is not None:
            extra.append(f"--cluster.advertise-address=127.0.0.1:{self.advertise}")
        return [*super().args(), *extra]


@asynccontextmanager
async def start_pair(
    tmp_path: Path,
    alertmanagers: AlertmanagerFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    *,
    relayed: bool = False,
    split_alertmanagers: bool = False,
) -> AsyncIterator[Pair]:
    """Run both replicas (relayed: through relays between the datacenters, see the module)."""
    links: list[Relay] = []
    own: list[Alertmanager] = []
    replicas: dict[str, Replica] = {}
    targets = Targets()
    try:
        if split_alertmanagers:
            binary = require_binary(ALERTMANAGER, "prometheus-alertmanager")
            ams: list[Alertmanager] = [
                GossipRelayedAlertmanager(
                    binary, tmp_path / f"am{i}", f"{receiver.url}/am/am{i}", ("alertname",)
                )
                for i in range(2)
            ]
            own = ams
        else:
            ams = [alertmanagers(f"am{i}") for i in range(2)]
        ports = [free_port(), free_port()]
        gossip = [ports[1], ports[0]]  # whom each member joins
        for i, am in enumerate(ams):
            am.config.write_text(AM_HA_CONFIG.format(url=f"{receiver.url}/am/am{i}"))
            am.cluster_port = ports[i]
            if isinstance(am, GossipRelayedAlertmanager):
                link = Relay(f"gossip to am{i}", ports[i], udp=True)
                await link.start()
                links.append(link)
                am.advertise = gossip[1 - i] = link.port
        for i, am in enumerate(ams):
            am.peers = [gossip[i]]
        for am in ams:  # one after the other: started in the same instant, two members were
            await am.start(session)  # seen to draw the same node name (then never cluster)
        await wait_for(lambda: _clustered(ams[0], session), "the Alertmanagers to form a cluster")
        await targets.start()
        web_ports = {n: free_port() for n in NAMES}
        env: dict[str, dict[str, str]] = {n: {} for n in NAMES}
        reach: dict[str, int | str] = dict(web_ports)
        am_urls = [am.url for am in ams]
        if relayed:
            for n in NAMES:
                reach[n] = f"${{VIGIE_REACH_{n.upper()}}}"
                link = Relay(f"to {n}", web_ports[n])
                await link.start()
                links.append(link)
                for m in NAMES:
                    env[m][f"VIGIE_REACH_{n.upper()}"] = str(web_ports[n] if m == n else link.port)
        if split_alertmanagers:
            for i, am in enumerate(ams):
                home = HOME[f"am{i}"]
                am_urls[i] = f"http://127.0.0.1:${{VIGIE_REACH_AM{i}}}"
                link = Relay(f"to am{i}", am.port)
                await link.start()
                links.append(link)
                for m in NAMES:
                    env[m][f"VIGIE_REACH_AM{i}"] = str(am.port if m == home else link.port)
        config = tmp_path / "vigie.yaml"
        config.write_text(
            yaml.safe_dump(ha_config(targets.url, reach, am_urls, receiver.url), sort_keys=False)
        )
        replicas = {
            n: Replica(
                n, web_ports[n], config, tmp_path / f"state-{n}", tmp_path / f"{n}.log", env[n]
            )
            for n in NAMES
        }
        p = Pair(replicas, ams, targets, receiver, session, links=links)
        for replica in replicas.values():
            await replica.start()
        for a, b in (NAMES, NAMES[::-1]):
            await wait_for(partial(p.sees_alive, a, b), f"{a} to see {b} alive", 30)
        yield p
    finally:
        for replica in replicas.values():
            await replica.stop()
        await targets.stop()
        for am in own:
            await am.stop()
        for link in links:
            await link.stop()


@pytest.fixture
async def pair(
    tmp_path: Path,
    alertmanagers: AlertmanagerFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
) -> AsyncIterator[Pair]:
    """Both replicas running and seeing each other alive, all sites healthy."""
    async with start_pair(tmp_path, alertmanagers, receiver, session) as p:
        yield p
