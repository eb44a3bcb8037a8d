"""SNMP trap receiver: a trap becomes an immediate result for its device and a re-poll now.

Traps enter beside the scheduler. A notification (v1 trap, v2c/v3 trap or INFORM) is matched
to the checks of kind snmp whose target is its source address (or, for v1, its agent-addr);
the check's profiles say what the trap OID means (`traps:` of a profile, TrapDef). The
TrapDef's `set:` values are merged over the check's last result and recorded through the
ResultStore, so /metrics and the health engine see the change at once; then the scheduler is
asked to re-poll the device, which confirms (or corrects) the state.

pysnmp 7 does the protocol work: community and USM checks, v1 -> v2 conversion (RFC 3584),
and INFORM acknowledgements. Around it, a datagram hook counts what pysnmp dropped, by
reading its own MIB counters (snmpInASNParseErrs, snmpInBadCommunityNames, usmStats*) before
and after each datagram, so a bad community or a garbage datagram is counted, never raised.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from pysnmp.carrier.asyncio.dgram import udp, udp6  # type: ignore[import-untyped]
from pysnmp.entity import config as snmp_config  # type: ignore[import-untyped]
from pysnmp.entity import engine as snmp_engine
from pysnmp.entity.rfc3413 import ntfrcv  # type: ignore[import-untyped]
from pysnmp.proto import rfc1902  # type: ignore[import-untyped]

from monitor.config import TrapSettings
from monitor.results import ProbeResult, ResultStore, Sample, bound_text
from probes.base import Check
from probes.snmp import SnmpAuth, SnmpCheckSettings, parse_target, v3_sender
from probes.snmp_context import pysnmp_usm
from probes.snmp_profiles import Profile, TrapDef

__all__ = ["TrapMetrics", "TrapReceiver", "merge_trap"]

SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
SNMP_TRAP_ADDRESS = "1.3.6.1.6.3.18.1.3.0"
MAX_LOGGED_SOURCES = 1024
"""Sources remembered for rate-limited logging: bounded so a spoofing flood cannot grow it."""

RESULTS = ("matched", "unmatched", "malformed", "auth_failed")

# pysnmp's own counters, read around each datagram to say why it was dropped.
_MALFORMED_COUNTERS = (
    ("__SNMPv2-MIB", "snmpInASNParseErrs"),
    ("__SNMPv2-MIB", "snmpInBadVersions"),
    ("__SNMP-MPD-MIB", "snmpInvalidMsgs"),
    ("__SNMP-MPD-MIB", "snmpUnknownSecurityModels"),
)
_AUTH_COUNTERS = (
    ("__SNMPv2-MIB", "snmpInBadCommunityNames"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsUnknownUserNames"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsWrongDigests"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsDecryptionErrors"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsNotInTimeWindows"),
    ("__SNMP-USER-BASED-SM-MIB", "usmStatsUnsupportedSecLevels"),
)


class TrapMetrics:
    """The trap receiver's own metrics, registered in the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "vigie_snmp_traps_received",
            "SNMP notifications received, by result: matched (applied to a check), unmatched "
            "(unknown device or trap), malformed, auth_failed (bad community or USM).",
            ["result"],
            registry=registry,
        )
        for result in RESULTS:
            self.received.labels(result=result)
        self.repolls = Counter(
            "vigie_snmp_trap_repolls",
            "Re-polls of a device asked by one of its traps.",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class _Device:
    """One snmp check a trap can apply to: its id and what its profiles' traps set."""

    check_id: str
    traps: Mapping[str, TrapDef]
    helps: Mapping[str, str]


@dataclass(slots=True)
class _Datagram:
    """What the hook knows of the datagram being processed, for the notification callback."""

    source: str
    handled: bool = False


@dataclass(slots=True)
class _Registered:
    """USM and community entries added to the engine, to remove them on reload."""

    communities: list[str] = field(default_factory=list)
    users: list[tuple[str, Any]] = field(default_factory=list)


def _family_helps(profile: Profile) -> dict[str, str]:
    """Return the HELP text of every family of a profile (for samples a trap adds)."""
    helps = {f[0]: f[2] for m in profile.metrics for f in m.families()}
    helps.update({b.name: b.help for b in profile.booleans})
    helps.update({r.name: r.help for r in profile.resets})
    return helps


def merge_trap(
    last: ProbeResult | None,
    trap: TrapDef,
    helps: Mapping[str, str],
    source: str,
    now: float,
) -> ProbeResult:
    """Return the last result with the trap's `set:` values merged over its samples.

    Every series of a family the trap sets takes the value; a family the last result lacks
    (no poll yet, or a failed one) is added without labels. Success and error stay the poll's.
    """
    sets = dict(trap.set)
    samples: list[Sample] = []
    seen: set[str] = set()
    for sample in last.samples if last is not None else ():
        if sample.name in sets:
            seen.add(sample.name)
            samples.append(sample._replace(value=sets[sample.name]))
        else:
            samples.append(sample)
    for name, value in sets.items():
        if name not in seen:
            samples.append(Sample(name, value, (), "gauge", helps.get(name, "")))
    line = bound_text(f"snmp_trap trap={trap.name} oid={trap.oid} source={source}")
    if last is None:
        return ProbeResult(success=True, samples=tuple(samples), logs=(line,), timestamp=now)
    return replace(last, samples=tuple(samples), logs=(*last.logs[-20:], line), timestamp=now)


def _engine_id(text: str) -> Any:
    """Return a pysnmp OctetString of a hex engine ID (validated by the config)."""
    return rfc1902.OctetString(hexValue=text.lower().removeprefix("0x"))


def _normalise_ip(text: str) -> str:
    """Return an address as text, IPv4-mapped IPv6 addresses as IPv4."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class _Transport(udp.UdpAsyncioTransport):  # type: ignore[misc]
    """pysnmp's UDP transport, with each datagram handed to the receiver's hook."""

    hook: Callable[[Any, tuple[Any, ...], bytes], None]

    def datagram_received(self, datagram: bytes, address: Any) -> None:
        """Queue the datagram for the hook (as pysnmp queues it for its dispatcher)."""
        self.loop.call_soon(self.hook, self, address, datagram)


class _Transport6(udp6.Udp6AsyncioTransport):  # type: ignore[misc]
    """pysnmp's UDP/IPv6 transport, with each datagram handed to the receiver's hook."""

    hook: Callable[[Any, tuple[Any, ...], bytes], None]

    def datagram_received(self, datagram: bytes, address: Any) -> None:
        """Queue the datagram for the hook (as pysnmp queues it for its dispatcher)."""
        self.loop.call_soon(self.hook, self, address, datagram)


class TrapReceiver:
    """Listen for SNMP notifications, apply them to matching snmp checks and re-poll those."""

    def __init__(
        self,
        settings: TrapSettings,
        store: ResultStore,
        trigger: Callable[[str], bool],
        metrics: TrapMetrics,
        *,
        logger: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._store = store
        self._trigger = trigger
        self.metrics = metrics
        self._log = logger if logger is not None else structlog.get_logger()
        self._clock = clock
        self._engine: Any = None
        self._receiver: Any = None
        self._transport: Any = None
        self._devices: dict[str, list[_Device]] = {}
        self._registered = _Registered()
        self._current: _Datagram | None = None
        self._logged: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self.port: int | None = None
        self.engine_id: str = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self, plan: Mapping[str, Check], auths: Mapping[str, SnmpAuth]) -> None:
        """Bind the UDP port, register credentials and match the plan's snmp checks."""
        host, port = self.settings.host_port()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        engine_id = (
            _engine_id(self.settings.engine_id) if self.settings.engine_id is not None else None
        )
        self._engine = snmp_engine.SnmpEngine(snmpEngineID=engine_id)
        self.engine_id = self._engine.snmpEngineID.asOctets().hex()
        transport = _Transport6() if family == socket.AF_INET6 else _Transport()
        transport.hook = self._on_datagram
        domain = udp6.DOMAIN_NAME if family == socket.AF_INET6 else udp.DOMAIN_NAME
        snmp_config.add_transport(self._engine, domain, transport.open_server_mode(sock=sock))
        await transport._lport  # the endpoint is created by a task: wait for it to listen
        self._transport = transport
        self._receiver = ntfrcv.NotificationReceiver(self._engine, self._on_notification)
        await self.update(plan, auths)
        self._log.info("traps_listening", listen=f"{host}:{self.port}", engine_id=self.engine_id)

    async def update(
        self,
        plan: Mapping[str, Check],
        auths: Mapping[str, SnmpAuth],
        settings: TrapSettings | None = None,
    ) -> None:
        """Re-match checks and re-register credentials (on start and on every reload).

        New settings apply except `listen` and `engine_id`, which need a restart.
        """
        if settings is not None:
            if (settings.listen, settings.engine_id) != (
                self.settings.listen,
                self.settings.engine_id,
            ):
                self._log.warning("config_traps_listen_change_needs_restart")
            self.settings = settings.model_copy(
                update={"listen": self.settings.listen, "engine_id": self.settings.engine_id}
            )
        self._register(self._trap_auths(plan, auths))
        self._devices = await self._index(plan)

    async def stop(self) -> None:
        """Stop listening and release the engine."""
        if self._receiver is not None:
            self._receiver.close(self._engine)
            self._receiver = None
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None
        self._transport = None

    # ------------------------------------------------------------------ configuration

    def _trap_auths(
        self, plan: Mapping[str, Check], auths: Mapping[str, SnmpAuth]
    ) -> dict[str, SnmpAuth]:
        """Return the credentials traps are accepted with: configured, else those of checks."""
        if self.settings.auths:
            return {name: auths[name] for name in self.settings.auths if name in auths}
        used: dict[str, SnmpAuth] = {}
        for check in plan.values():
            if isinstance(check.settings, SnmpCheckSettings):
                used[check.settings.auth] = check.settings.resolved_auth
        return used

    def _register(self, auths: Mapping[str, SnmpAuth]) -> None:
        """Replace the engine's communities and USM users with these credentials."""
        engine = self._engine
        for index in self._registered.communities:
            snmp_config.delete_v1_system(engine, index)
        for user, engine_id in self._registered.users:
            snmp_config.delete_v3_user(engine, user, securityEngineId=engine_id)
        registered = _Registered()
        # v3 traps are authenticated with the sender's engine ID; INFORMs with ours.
        engine_ids = [None, *(_engine_id(e) for e in self.settings.engine_ids)]
        for name, auth in sorted(auths.items()):
            if auth.version != 3:
                assert auth.community is not None  # checked by SnmpAuth
                index = f"vigie-{name}"
                snmp_config.add_v1_system(engine, index, auth.community.get_secret_value())
                registered.communities.append(index)
                continue
            auth_proto, auth_key, priv_proto, priv_key = pysnmp_usm(auth)
            for engine_id in engine_ids:
                snmp_config.add_v3_user(
                    engine,
                    auth.username,
                    auth_proto,
                    auth_key,
                    priv_proto,
                    priv_key,
                    securityEngineId=engine_id,
                )
                registered.users.append((auth.username or "", engine_id))
        self._registered = registered

    async def _index(self, plan: Mapping[str, Check]) -> dict[str, list[_Device]]:
        """Map each snmp check's address to what its profiles' traps mean."""
        devices: dict[str, list[_Device]] = {}
        loop = asyncio.get_running_loop()
        for check in plan.values():
            settings = check.settings
            if not isinstance(settings, SnmpCheckSettings):
                continue
            traps: dict[str, TrapDef] = {}
            helps: dict[str, str] = {}
            for profile in settings.resolved_profiles:
                traps.update({t.oid: t for t in profile.traps})
                helps.update(_family_helps(profile))
            host, port = parse_target(check.target)
            addresses = {_normalise_ip(host)}
            try:
                ipaddress.ip_address(host)
            except ValueError:
                try:
                    async with asyncio.timeout(2.0):
                        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                    addresses = {_normalise_ip(str(info[4][0])) for info in infos}
                except (OSError, TimeoutError) as exc:
                    self._log.warning(
                        "trap_source_unresolved",
                        check=check.id,
                        target=check.target,
                        error=str(exc),
                    )
                    continue
            device = _Device(check.id, traps, helps)
            for address in addresses:
                devices.setdefault(address, []).append(device)
        return devices

    # ------------------------------------------------------------------ receiving

    def _counters(self, names: Iterable[tuple[str, str]]) -> int:
        """Return the sum of some of pysnmp's own counters."""
        builder = self._engine.get_mib_builder()
        total = 0
        for module, name in names:
            with contextlib.suppress(Exception):  # a counter missing from this pysnmp
                (symbol,) = builder.import_symbols(module, name)
                total += int(symbol.syntax)
        return total

    def _on_datagram(self, transport: Any, address: tuple[Any, ...], datagram: bytes) -> None:
        """Let pysnmp process one datagram; count it when pysnmp dropped it."""
        if self._engine is None:
            return
        current = self._current = _Datagram(_normalise_ip(str(address[0])))
        malformed = self._counters(_MALFORMED_COUNTERS)
        auth_failed = self._counters(_AUTH_COUNTERS)
        try:
            transport._callback_function(transport, address, datagram)
        except Exception as exc:  # anything a datagram triggers in pysnmp: drop, never raise
            self._count("malformed", current.source, error=bound_text(f"{type(exc).__name__}"))
            return
        finally:
            self._current = None
        if current.handled:
            return
        if self._counters(_MALFORMED_COUNTERS) > malformed:
            self._count("malformed", current.source)
        elif self._counters(_AUTH_COUNTERS) > auth_failed:
            self._count("auth_failed", current.source, **self._v3_hint(datagram))

    def _v3_hint(self, datagram: bytes) -> dict[str, str]:
        """Say which engine ID and user a refused SNMPv3 notification came with.

        A v3 TRAP is authenticated with its sender's engine ID, which the receiver must know:
        the commonest cause of a refused v3 trap is an engine ID missing from traps.engine_ids.
        """
        sender = v3_sender(datagram)
        if sender is None:
            return {}
        engine_id, user = bound_text(sender[0], 64), bound_text(sender[1], 64)
        fields = {"engine_id": engine_id, "user": user}
        known = {e.lower().removeprefix("0x") for e in self.settings.engine_ids}
        if engine_id and engine_id not in known and engine_id != self.engine_id:
            fields["hint"] = (
                f"engine ID {engine_id} is not in traps.engine_ids: add it if this sender "
                "is trusted (or have it send INFORMs)"
            )
        return fields

    def _count(self, result: str, source: str, **fields: object) -> None:
        """Count a notification and log it once per source and result per log interval."""
        self.metrics.received.labels(result=result).inc()
        if result == "matched":
            return
        now = self._clock()
        key = (source, result)
        last = self._logged.get(key)
        if last is not None and now - last < self.settings.log_interval:
            return
        self._logged[key] = now
        self._logged.move_to_end(key)
        while len(self._logged) > MAX_LOGGED_SOURCES:
            self._logged.popitem(last=False)
        self._log.warning(f"trap_{result}", source=source, **fields)

    def _on_notification(self, *args: Any) -> None:
        """Handle one authenticated notification (pysnmp has already acked an INFORM).

        pysnmp calls it with (engine, state reference, context engine ID, context name,
        varbinds, callback context).
        """
        varbinds = args[4]
        current = self._current
        source = current.source if current is not None else "?"
        if current is not None:
            current.handled = True
        try:
            values = {str(oid): value for oid, value in varbinds}
            trap_oid = str(values.get(SNMP_TRAP_OID, "")).removeprefix(".")
            candidates = []
            agent = values.get(SNMP_TRAP_ADDRESS)
            if agent is not None:
                with contextlib.suppress(Exception):  # a malformed agent-addr: use the source
                    candidates.append(_normalise_ip(agent.prettyPrint()))
            candidates.append(source)
            self._apply(trap_oid, candidates, source)
        except Exception as exc:  # a device's notification never crashes the daemon
            self._count("malformed", source, error=bound_text(f"{type(exc).__name__}: {exc}"))

    def _apply(self, trap_oid: str, candidates: list[str], source: str) -> None:
        """Apply a trap to the checks of the first candidate address that knows it."""
        for address in candidates:
            devices = [d for d in self._devices.get(address, ()) if trap_oid in d.traps]
            if not devices:
                continue
            now = time.time()
            for device in devices:
                trap = device.traps[trap_oid]
                if trap.set:
                    last = self._store.latest(device.check_id)
                    merged = merge_trap(last, trap, device.helps, address, now)
                    self._store.update(device.check_id, merged)
                if self._trigger(device.check_id):
                    self.metrics.repolls.inc()
                self._log.info("trap_applied", check=device.check_id, trap=trap.name, source=source)
            self._count("matched", source)
            return
        known = any(address in self._devices for address in candidates)
        self._count(
            "unmatched",
            source,
            trap_oid=bound_text(trap_oid, 128),
            reason="unknown trap for this device" if known else "no snmp check for this address",
        )
