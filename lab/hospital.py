"""The simulated hospital: SNMP UPSes, PDUs and SAN arrays, servers and applications on loopback.

One UDP port serves every SNMP device (the community picks it), one aiohttp server serves every
server's and application's health page by path, the DPI's FHIR API under /fhir/R4/ and the
control surface under /lab/, and one TCP port answers like the mail relay (banner, EHLO, QUIT).
The PACS archive answers DICOM associations (pynetdicom's SCP in a thread, lab/pacs.py); the
directory's domain controllers serve the `chu.lab` DNS zone and LDAP (lab/directory.py).
Each server's BMC serves Redfish on its own port (lab/bmc.py), and one SSH port answers
`multipathd show maps json` for every server, the user name picking it (lab/san_host.py).
Faults are injected through the methods of `Lab` (the scenarios use them) or over HTTP
(`POST /lab/scenario/power-cut`, `POST /lab/fault`...).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from vigie.lab.bmc import NORMAL_INLET_CELSIUS, Bmc, BmcServer
from vigie.lab.directory import DNS_FAULTS, LDAP_FAULTS, DnsResponder, LdapResponder
from vigie.lab.feed import SILENCE, Feed, MllpEngine, feed_routes
from vigie.lab.pacs import PACS_FAULTS, PacsScp
from vigie.lab.san_host import PATHS, SanHostSsh
from vigie.lab.snmp_agent import Device, SnmpAgent, read_snmprec, start_agent

DATA = Path(__file__).resolve().parent / "data"

# The lab's SAN arrays answer as Dell Isilon clusters (the shipped `dell-isilon` profile):
# the one place that maps the lab's SAN onto a profile (change it with config/demo.yaml).
SAN_PROFILE = "dell-isilon"
SAN_RECORDING = "dell-isilon.snmprec"
_ISILON = "1.3.6.1.4.1.12124."
_PROTOCOL_LATENCY_US = _ISILON + "2.2.10.1.16."  # latencyAverage, INDEX IMPLIED protocolName
SAN_OIDS = {
    "status": _ISILON + "1.1.2.0",  # clusterHealth: 0 ok, 1 attn, 2 down
    "node_status": _ISILON + "2.1.2.0",  # nodeHealth of the polled node
    "nfs3_latency_us": _PROTOCOL_LATENCY_US + "110.102.115.51",  # "nfs3"
    "smb2_latency_us": _PROTOCOL_LATENCY_US + "115.109.98.50",  # "smb2"
}
SAN_NORMAL_LATENCY = 0.0024
"""Seconds: the lab's recorded nfs3 and smb2 latency, the baseline the profile learns."""
SAN_STATUS = {"ok": 0, "degraded": 1, "failed": 2}

# How each UPS recording says "on battery": output source, runtime, charge, input voltage.
_UPS_MIB = "1.3.6.1.2.1.33.1."
_APC = "1.3.6.1.4.1.318.1.1.1."


@dataclass(frozen=True)
class UpsModel:
    """Where a UPS profile keeps the values a power cut changes, and how to encode them."""

    recording: str
    source: str  # output source OID
    online: int
    on_battery: int
    runtime: str
    runtime_per_minute: int  # raw units per minute of runtime
    charge: str
    input_voltage: str
    seconds_on_battery: str
    seconds_per_second: int
    battery_status: str
    battery_ok: int
    battery_low: int


UPS_MODELS = {
    "ups-mib": UpsModel(
        recording="ups-mib.snmprec",
        source=_UPS_MIB + "4.1.0",
        online=3,
        on_battery=5,
        runtime=_UPS_MIB + "2.3.0",
        runtime_per_minute=1,
        charge=_UPS_MIB + "2.4.0",
        input_voltage=_UPS_MIB + "3.3.1.3.1",
        seconds_on_battery=_UPS_MIB + "2.2.0",
        seconds_per_second=1,
        battery_status=_UPS_MIB + "2.1.0",
        battery_ok=2,
        battery_low=3,
    ),
    "apc-ups": UpsModel(
        recording="apc-ups.snmprec",
        source=_APC + "4.1.1.0",
        online=2,
        on_battery=3,
        runtime=_APC + "2.2.3.0",
        runtime_per_minute=6000,  # TimeTicks
        charge=_APC + "2.2.1.0",
        input_voltage=_APC + "3.2.1.0",
        seconds_on_battery=_APC + "2.1.2.0",
        seconds_per_second=100,
        battery_status=_APC + "2.1.1.0",
        battery_ok=2,
        battery_low=3,
    ),
}


@dataclass(frozen=True)
class SnmpSpec:
    """One SNMP device of the lab: its component id, site and profile."""

    id: str
    site: str
    profile: str


# The hospital's devices. config/demo.yaml describes the same ones as components.
SNMP_DEVICES = (
    SnmpSpec("ups-nord-1", "nord", "ups-mib"),
    SnmpSpec("ups-nord-2", "nord", "apc-ups"),
    SnmpSpec("ups-bellevue-1", "bellevue", "ups-mib"),
    SnmpSpec("pdu-nord-1", "nord", "apc-rpdu2"),
    SnmpSpec("pdu-bellevue-1", "bellevue", "apc-rpdu2"),
    SnmpSpec("san-nord", "nord", SAN_PROFILE),
    SnmpSpec("san-bellevue", "bellevue", SAN_PROFILE),
)
SERVERS = {  # server -> site
    "srv-dpi": "nord",
    "srv-labo": "nord",
    "srv-rdv": "nord",
    "srv-pacs": "nord",
    "srv-mail-1": "nord",
    "srv-ad-1": "nord",
    "srv-mail-2": "bellevue",
    "srv-intranet": "bellevue",
    "srv-ad-2": "bellevue",
}
APPS = {  # application -> server it runs on (mail runs on both mail servers)
    "dpi": ("srv-dpi",),
    "labo": ("srv-labo",),
    "rdv": ("srv-rdv",),
    "pacs": ("srv-pacs",),
    "mail": ("srv-mail-1", "srv-mail-2"),
    "intranet": ("srv-intranet",),
    "annuaire": ("srv-ad-1", "srv-ad-2"),  # the directory (LDAP and DNS): one DC per datacenter
}
NORMAL_RUNTIME_MINUTES = 34


@dataclass(frozen=True)
class Protocol:
    """A protocol port of an application: what it does with the application down or dark."""

    app: str
    faults: tuple[str, ...]
    down: str  # its fault while the application is down (its servers on)
    dark: str  # its fault while every server of the application is powered off


PROTOCOLS = {
    "dicom": Protocol("pacs", PACS_FAULTS, down="rejected", dark="closed"),
    "dns": Protocol("annuaire", DNS_FAULTS, down="SERVFAIL", dark="silent"),
    "ldap": Protocol("annuaire", LDAP_FAULTS, down="unavailable", dark="closed"),
}
"""The PACS's DICOM port and the directory's DNS and LDAP: each can be faulted on its own
(`POST /lab/fault {"protocol": "dns", "fault": "REFUSED"}`) and follows its application."""


def bmc_env(server: str) -> str:
    """Return the variable config/demo.yaml takes a server's BMC address from."""
    return "VIGIE_LAB_BMC_" + server.upper().replace("-", "_")


# The DPI's FHIR API (R4): what the demo's fhir check reads and searches.
FHIR_CAPABILITY: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "date": "2025-01-01",
    "kind": "instance",
    "software": {"name": "Vigie lab DPI", "version": "1.0"},
    "fhirVersion": "4.0.1",
    "format": ["application/fhir+json"],
    "rest": [
        {
            "mode": "server",
            "resource": [
                {"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}]}
                for t in ("Patient", "Encounter", "Observation", "DiagnosticReport")
            ],
        }
    ],
}
FHIR_SEARCHSET: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "searchset",
    "total": 1,
    "entry": [
        {
            "resource": {
                "resourceType": "Patient",
                "id": "vigie-test",
                "name": [{"family": "TEST"}],
            },
            "search": {"mode": "match"},
        }
    ],
}

MAX_EVENTS = 1000


@dataclass
class Service:
    """A server's or application's health endpoint: up or down, latency, optional flapping."""

    up: bool = True
    latency: float = 0.0
    flap_period: float = 0.0  # > 0: alternates up and down every flap_period seconds
    reason: str = ""

    def healthy(self, now: float) -> bool:
        """Return whether it answers OK now."""
        if not self.up:
            return False
        if self.flap_period > 0:
            return int(now / self.flap_period) % 2 == 0
        return True


@dataclass
class LabEvent:
    """Something the lab did: a fault injected or cleared (wall time, for detection latency)."""

    at: float
    what: str


def _name(device: Device, profile: str) -> None:
    """Name a device after its component, so each SAN's pool and node are told apart."""
    device.set("1.3.6.1.2.1.1.5.0", device.name)  # sysName
    if profile == SAN_PROFILE:
        device.update({_ISILON + "1.1.1.0": device.name, _ISILON + "2.1.1.0": f"{device.name}-1"})


@dataclass
class Lab:
    """The simulated hospital; start() binds its ports, the methods inject faults."""

    host: str = "127.0.0.1"
    clock: Callable[[], float] = time.time
    devices: dict[str, Device] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    events: list[LabEvent] = field(default_factory=list)
    http_port: int = 0
    snmp_port: int = 0
    smtp_port: int = 0
    scenario_runner: Callable[[str, float], Any] | None = None
    bmcs: dict[str, Bmc] = field(default_factory=dict)
    bmc_ports: dict[str, int] = field(default_factory=dict)
    ssh_port: int = 0
    failed_paths: dict[str, int] = field(default_factory=dict)
    ssh_dir: Path | None = None
    _ssh: SanHostSsh | None = None
    _own_ssh_dir: bool = False
    bmc_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    _bmc_servers: dict[str, BmcServer] = field(default_factory=dict)
    _power_lost_at: dict[str, float] = field(default_factory=dict)
    _agent: SnmpAgent | None = None
    _udp: asyncio.DatagramTransport | None = None
    _runner: web.AppRunner | None = None
    _smtp: asyncio.Server | None = None
    feed: Feed = field(default_factory=Feed)
    """The lab-results HL7 feed: its counter (the engine's REST API) grows while the lab sends."""
    feed_window: float = SILENCE
    """Seconds of silence config/demo.yaml's lab_feed_silent rule waits: 30 minutes, divided
    by the demo's --speed (VIGIE_LAB_FEED_WINDOW)."""
    hl7_port: int = 0
    _mllp: MllpEngine | None = None
    dicom_port: int = 0
    dns_port: int = 0
    ldap_port: int = 0
    ldap_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    """The directory's monitoring account's password (random, per lab run)."""
    protocol_faults: dict[str, str] = field(default_factory=dict)
    """A fault set on a protocol port itself (PROTOCOLS), whatever its application's state."""
    _pacs: PacsScp | None = None
    _dns: DnsResponder | None = None
    _ldap: LdapResponder | None = None

    def __post_init__(self) -> None:
        for spec in SNMP_DEVICES:
            recording = (
                UPS_MODELS[spec.profile].recording
                if spec.profile in UPS_MODELS
                else (SAN_RECORDING if spec.profile == SAN_PROFILE else f"{spec.profile}.snmprec")
            )
            device = Device(spec.id, spec.id, read_snmprec(DATA / recording))
            _name(device, spec.profile)
            self.devices[spec.id] = device
        for name in [*SERVERS, *APPS]:
            self.services[name] = Service()
        for server in SERVERS:
            self.bmcs[server] = Bmc(server)
            self.failed_paths[server] = 0
        self._ssh = SanHostSsh(self.failed_paths, lambda s: self.bmcs[s].answering, self.host)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind every port: SNMP, HTTP, SMTP, MLLP, BMCs, SSH, DICOM, DNS, LDAP (free if unset)."""
        self._udp, self._agent = await start_agent(self.devices.values(), self.host, self.snmp_port)
        self.snmp_port = self._udp.get_extra_info("sockname")[1]
        self._runner = web.AppRunner(self.web_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.http_port)
        await site.start()
        self.http_port = self._runner.addresses[0][1]
        self._smtp = await asyncio.start_server(self._smtp_session, self.host, self.smtp_port)
        self.smtp_port = self._smtp.sockets[0].getsockname()[1]
        self._mllp = MllpEngine(self.host)
        await self._mllp.start(self.hl7_port)
        self.hl7_port = self._mllp.port
        self.feed.set_sending(True, self.clock())
        for server, bmc in self.bmcs.items():
            self._bmc_servers[server] = BmcServer(bmc, self.bmc_password, self.host)
            await self._bmc_servers[server].start()
            self.bmc_ports[server] = self._bmc_servers[server].port
        assert self._ssh is not None
        await self._ssh.start(self.ssh_port)
        self.ssh_port = self._ssh.port
        self.write_ssh_files()
        self._pacs = PacsScp(lambda: self.protocol_state("dicom"), self.host)
        await asyncio.to_thread(self._pacs.start, self.dicom_port)
        self.dicom_port = self._pacs.port
        self._dns = DnsResponder(lambda: self.protocol_state("dns"), self.host)
        await self._dns.start(self.dns_port)
        self.dns_port = self._dns.port
        self._ldap = LdapResponder(
            lambda: self.protocol_state("ldap"), self.ldap_password, self.host
        )
        await self._ldap.start(self.ldap_port)
        self.ldap_port = self._ldap.port

    async def stop(self) -> None:
        """Close every port it opened."""
        if self._pacs is not None:
            await asyncio.to_thread(self._pacs.stop)
        if self._dns is not None:
            await self._dns.stop()
        if self._ldap is not None:
            await self._ldap.stop()
        for bmc_server in self._bmc_servers.values():
            await bmc_server.stop()
        if self._ssh is not None:
            await self._ssh.stop()
        if self._own_ssh_dir and self.ssh_dir is not None:
            shutil.rmtree(self.ssh_dir, ignore_errors=True)
        if self._mllp is not None:
            await self._mllp.stop()
        if self._smtp is not None:
            self._smtp.close()
            await self._smtp.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._udp is not None:
            self._udp.close()

    def write_ssh_files(self, directory: Path | None = None) -> None:
        """Write the daemon's SSH client key and known_hosts (into a temp dir unless given)."""
        if directory is None and self.ssh_dir is None:
            self.ssh_dir = Path(tempfile.mkdtemp(prefix="vigie-lab-ssh-"))
            self._own_ssh_dir = True
        elif directory is not None:
            self.ssh_dir = directory
        assert self._ssh is not None and self.ssh_dir is not None
        self._ssh.port = self.ssh_port
        self._ssh.write_files(self.ssh_dir)

    def env(self) -> dict[str, str]:
        """Return the variables config/demo.yaml takes its ports from."""
        return {
            "VIGIE_LAB_HTTP": f"{self.host}:{self.http_port}",
            "VIGIE_LAB_SNMP": f"{self.host}:{self.snmp_port}",
            "VIGIE_LAB_SMTP": f"{self.host}:{self.smtp_port}",
            "VIGIE_LAB_BMC_PASSWORD": self.bmc_password,
            "VIGIE_LAB_SSH": f"{self.host}:{self.ssh_port}",
            "VIGIE_LAB_SSH_DIR": str(self.ssh_dir or ""),
            "VIGIE_LAB_HL7": f"{self.host}:{self.hl7_port}",
            "VIGIE_LAB_FEED_WINDOW": f"{self.feed_window:g}s",
            "VIGIE_LAB_DICOM": f"{self.host}:{self.dicom_port}",
            "VIGIE_LAB_DNS": f"{self.host}:{self.dns_port}",
            "VIGIE_LAB_LDAP": f"{self.host}:{self.ldap_port}",
            "VIGIE_LAB_LDAP_PASSWORD": self.ldap_password,
            **{bmc_env(s): f"{self.host}:{self.bmc_ports.get(s, 0)}" for s in SERVERS},
        }

    @property
    def url(self) -> str:
        """Return the base URL of the lab's web server."""
        return f"http://{self.host}:{self.http_port}"

    # ------------------------------------------------------------------ faults

    def note(self, what: str) -> None:
        """Record an event (scenarios mark fault injections with it)."""
        self.events.append(LabEvent(self.clock(), what))
        del self.events[:-MAX_EVENTS]  # a demo runs for days: keep the recent history only

    def reset(self) -> None:
        """Back to a healthy hospital."""
        for spec in SNMP_DEVICES:
            device = self.devices[spec.id]
            device.reset()
            _name(device, spec.profile)
        for name in self.services:
            self.services[name] = Service()
        for bmc in self.bmcs.values():
            # In place: the BMC servers hold these objects.
            bmc.powered_on, bmc.answering, bmc.inlet_celsius = True, True, NORMAL_INLET_CELSIUS
            bmc.psu_ok[:] = [True] * len(bmc.psu_ok)
        for server in self.failed_paths:
            self.failed_paths[server] = 0
        self._power_lost_at.clear()
        self.protocol_faults.clear()
        self.feed.set_sending(True, self.clock())
        self.note("reset")

    def ups_ids(self, site: str) -> list[str]:
        """Return the UPSes of a site."""
        return [s.id for s in SNMP_DEVICES if s.site == site and s.profile in UPS_MODELS]

    def set_mains(self, site: str, on: bool, runtime_minutes: float | None = None) -> None:
        """Cut or restore the mains of a site: its UPSes go on battery or back online."""
        for ups in self.ups_ids(site):
            self.set_ups(ups, on_battery=not on, runtime_minutes=runtime_minutes)
        if on:
            self._power_lost_at.pop(site, None)
        else:
            self._power_lost_at.setdefault(site, self.clock())
        self.note(f"mains {'restored' if on else 'lost'} at {site}")

    def set_ups(
        self,
        ups: str,
        *,
        on_battery: bool,
        runtime_minutes: float | None = None,
        seconds_on_battery: float = 0.0,
    ) -> None:
        """Put one UPS on battery (with this runtime left) or back on mains."""
        spec = next(s for s in SNMP_DEVICES if s.id == ups)
        model = UPS_MODELS[spec.profile]
        device = self.devices[ups]
        minutes = NORMAL_RUNTIME_MINUTES if runtime_minutes is None else runtime_minutes
        device.update(
            {
                model.source: model.on_battery if on_battery else model.online,
                model.runtime: int(minutes * model.runtime_per_minute),
                model.charge: max(0, min(100, int(minutes * 100 / NORMAL_RUNTIME_MINUTES))),
                model.input_voltage: 0 if on_battery else 231,
                model.seconds_on_battery: int(seconds_on_battery * model.seconds_per_second),
                model.battery_status: model.battery_low
                if on_battery and minutes < 5
                else (model.battery_ok),
            }
        )

    def set_san_latency(self, array: str, seconds: float) -> None:
        """Set a SAN array's average nfs3 and smb2 latency."""
        device = self.devices[array]
        micro = int(seconds * 1_000_000)
        device.update({SAN_OIDS["nfs3_latency_us"]: micro, SAN_OIDS["smb2_latency_us"]: micro})

    def set_san_status(self, array: str, status: str) -> None:
        """Set a SAN array's cluster and node health: ok, degraded (attention) or failed (down)."""
        code = SAN_STATUS[status]
        self.devices[array].update({SAN_OIDS["status"]: code, SAN_OIDS["node_status"]: code})

    def set_device_answering(self, device: str, answering: bool) -> None:
        """Make an SNMP device silent (powered off, card dead) or answering again."""
        self.devices[device].answering = answering

    def set_service(
        self,
        name: str,
        *,
        up: bool = True,
        latency: float = 0.0,
        flap_period: float = 0.0,
        reason: str = "",
    ) -> None:
        """Set a server's or application's health: up/down, latency, flapping."""
        if name not in self.services:
            raise KeyError(f"unknown server or application {name!r}")
        self.services[name] = Service(up, latency, flap_period, reason)

    def set_bmc(
        self,
        server: str,
        *,
        psu: int | None = None,
        ok: bool = True,
        power: object = None,
        inlet_celsius: object = None,
    ) -> None:
        """Change what a server's BMC reports: a PSU's health, the power state, the inlet."""
        bmc = self.bmcs.get(server)
        if bmc is None:
            raise KeyError(f"unknown server {server!r}")
        if psu is not None:
            bmc.set_psu(psu, ok)
        if power is not None:
            if power not in ("On", "Off"):
                raise ValueError(f"{server}: power must be On or Off")
            bmc.powered_on = power == "On"
        if inlet_celsius is not None:
            if isinstance(inlet_celsius, bool) or not isinstance(inlet_celsius, int | float):
                raise ValueError(f"{server}: inlet_celsius must be a number")
            bmc.inlet_celsius = float(inlet_celsius)

    def set_failed_paths(self, server: str, failed: int) -> None:
        """Fail the first `failed` of a server's SAN paths (0: all healthy)."""
        if server not in self.failed_paths:
            raise KeyError(f"unknown server {server!r}")
        if not 0 <= failed <= PATHS:
            raise ValueError(f"{server}: failed paths must be 0 to {PATHS}, got {failed}")
        self.failed_paths[server] = failed

    def set_feed(self, sending: bool) -> None:
        """Start or stop the lab's result messages (the engine and its ports stay up)."""
        self.feed.set_sending(sending, self.clock())

    def set_protocol(self, name: str, fault: str) -> None:
        """Fault a protocol port on its own (see PROTOCOLS), or clear it with ""."""
        protocol = PROTOCOLS.get(name)
        if protocol is None:
            raise KeyError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
        if fault and fault not in protocol.faults:
            raise ValueError(f"{name}: fault must be one of {', '.join(protocol.faults)} or ''")
        if fault:
            self.protocol_faults[name] = fault
        else:
            self.protocol_faults.pop(name, None)

    def protocol_state(self, name: str) -> str:
        """Return a protocol port's fault now ("" healthy): its own, or its application's.

        A powered-off server answers nothing; an application down on a live server refuses.
        """
        protocol = PROTOCOLS[name]
        if name in self.protocol_faults:
            return self.protocol_faults[name]
        if not any(self.bmcs[s].powered_on for s in APPS[protocol.app]):
            return protocol.dark
        if not self.services[protocol.app].healthy(self.clock()):
            return protocol.down
        return ""

    def power_off_site(self, site: str) -> None:
        """Batteries exhausted: the site's servers, SAN arrays and PDUs go dark."""
        for server, server_site in SERVERS.items():
            if server_site == site:
                self.set_service(server, up=False, reason="powered off")
                self.bmcs[server].powered_on = False
                self.bmcs[server].answering = False  # the BMC's standby power is gone too
        for spec in SNMP_DEVICES:
            if spec.site == site and spec.profile not in UPS_MODELS:
                self.devices[spec.id].answering = False
        self.note(f"site {site} powered off")

    def apps_down(self, site: str, reason: str) -> None:
        """Every application running only on this site's servers fails."""
        for app, servers in APPS.items():
            if all(SERVERS[s] == site for s in servers):
                self.set_service(app, up=False, reason=reason)

    def state(self) -> dict[str, Any]:
        """Return the lab's current state (the control endpoint shows it)."""
        now = self.clock()
        return {
            "ports": {
                "http": self.http_port,
                "snmp": self.snmp_port,
                "smtp": self.smtp_port,
                "bmc": dict(self.bmc_ports),
                "ssh": self.ssh_port,
                "dicom": self.dicom_port,
                "dns": self.dns_port,
                "ldap": self.ldap_port,
            },
            "protocols": {name: self.protocol_state(name) for name in PROTOCOLS},
            "services": {
                n: {**asdict(s), "healthy": s.healthy(now)} for n, s in self.services.items()
            },
            "devices": {
                n: {"answering": d.answering, "overrides": len(d.overrides)}
                for n, d in self.devices.items()
            },
            "bmcs": {n: asdict(b) for n, b in self.bmcs.items()},
            "failed_paths": dict(self.failed_paths),
            "feed": {
                "sending": self.feed.sending,
                "received": self.feed.received(now),
                "hl7_port": self.hl7_port,
            },
            "events": [asdict(e) for e in self.events[-50:]],
        }

    # ------------------------------------------------------------------ services

    async def _health(self, request: web.Request) -> web.Response:
        """A server's or application's health page."""
        name = request.match_info["name"]
        service = self.services.get(name)
        if service is None:
            raise web.HTTPNotFound(text="unknown service\n")
        if service.latency > 0:
            await asyncio.sleep(service.latency)
        if service.healthy(self.clock()):
            return web.Response(text=f"status: OK {name}\n")
        reason = service.reason or "unavailable"
        return web.Response(status=503, text=f"status: ERROR {name} {reason}\n")

    async def _smtp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer like the mail relay: banner, EHLO, NOOP, QUIT; 421 when mail is down."""
        try:
            if not self.services["mail"].healthy(self.clock()):
                writer.write(b"421 mail.chu.lab service not available\r\n")
                await writer.drain()
                return
            writer.write(b"220 mail.chu.lab ESMTP ready\r\n")
            await writer.drain()
            for _ in range(20):  # a prober says a few things, then QUIT
                async with asyncio.timeout(10):
                    line = await reader.readline()
                verb = line[:4].upper()
                if not line or verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                elif verb == b"EHLO":
                    writer.write(b"250-mail.chu.lab\r\n250-SIZE 10485760\r\n250 8BITMIME\r\n")
                elif verb in (b"HELO", b"NOOP", b"RSET"):
                    writer.write(b"250 OK\r\n")
                else:
                    writer.write(b"502 5.5.2 not implemented in the lab\r\n")
                await writer.drain()
                if not line or verb == b"QUIT":
                    break
        except (OSError, ValueError, TimeoutError):
            pass  # the prober went away or sent an overlong line: nothing to answer
        finally:
            writer.close()

    async def _fhir(self, request: web.Request) -> web.Response:
        """The DPI's FHIR R4 API: CapabilityStatement and a one-patient search, with the DPI."""
        service = self.services["dpi"]
        if service.latency > 0:
            await asyncio.sleep(service.latency)
        if not service.healthy(self.clock()):
            issue = {
                "severity": "fatal",
                "code": "transient",
                "details": {"text": f"DPI unavailable: {service.reason or 'down'}"},
            }
            return web.json_response(
                {"resourceType": "OperationOutcome", "issue": [issue]},
                status=503,
                content_type="application/fhir+json",
            )
        if request.match_info["what"] == "metadata":
            return web.json_response(FHIR_CAPABILITY, content_type="application/fhir+json")
        return web.json_response(FHIR_SEARCHSET, content_type="application/fhir+json")

    # ------------------------------------------------------------------ control

    async def _control_state(self, _: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _control_scenario(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            speed = float(request.query.get("speed", "1"))
        except ValueError:
            raise web.HTTPBadRequest(text="speed: not a number\n") from None
        if not 0 < speed <= 10_000:
            raise web.HTTPBadRequest(text="speed: must be in (0, 10000]\n")
        if self.scenario_runner is None:
            raise web.HTTPServiceUnavailable(text="no scenario runner attached\n")
        try:
            self.scenario_runner(name, speed)
        except KeyError as exc:
            raise web.HTTPNotFound(text=f"{exc.args[0]}\n") from None
        return web.json_response({"scenario": name, "speed": speed, "started": True})

    async def _control_reset(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _control_fault(self, request: web.Request) -> web.Response:
        """Apply one fault from JSON, e.g. {"service": "dpi", "up": false}, {"mains": "nord"}."""
        try:
            body = json.loads(await request.content.read(16 * 1024))
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            if "service" in body:
                self.set_service(
                    str(body["service"]),
                    up=bool(body.get("up", True)),
                    latency=float(body.get("latency", 0.0)),
                    flap_period=float(body.get("flap_period", 0.0)),
                    reason=str(body.get("reason", ""))[:200],
                )
            elif "mains" in body:
                self.set_mains(str(body["mains"]), bool(body.get("on", True)))
            elif "server" in body:
                self.set_bmc(
                    str(body["server"]),
                    psu=int(body["psu"]) if "psu" in body else None,
                    ok=bool(body.get("ok", True)),
                    power=body.get("power"),
                    inlet_celsius=body.get("inlet_celsius"),
                )
            elif "paths_failed" in body:
                self.set_failed_paths(str(body.get("host")), int(body["paths_failed"]))
            elif "protocol" in body:
                self.set_protocol(str(body["protocol"]), str(body.get("fault", "")))
            elif "feed" in body:
                self.set_feed(bool(body["feed"]))
            elif "san" in body:
                self.set_san_latency(str(body["san"]), float(body.get("latency", 0.002)))
            else:
                raise ValueError(
                    "expected one of: service, mains, server, paths_failed, protocol, feed, san"
                )
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"fault: {exc}\n") from None
        self.note(f"fault {json.dumps(body)[:200]}")
        return web.json_response({"applied": True})

    def web_app(self) -> web.Application:
        """Return the lab's aiohttp application: health pages and control surface."""
        app = web.Application()
        app.router.add_get("/srv/{name}/health", self._health)
        app.router.add_get("/app/{name}/health", self._health)
        app.router.add_get("/fhir/R4/{what:metadata|Patient}", self._fhir)
        feed_routes(app, self.feed, self.clock)
        app.router.add_get("/lab/state", self._control_state)
        app.router.add_post("/lab/scenario/{name}", self._control_scenario)
        app.router.add_post("/lab/reset", self._control_reset)
        app.router.add_post("/lab/fault", self._control_fault)
        return app
