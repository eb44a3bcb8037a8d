"""SNMP trap receiver: a trap becomes an immediate result for its device and a re-poll now.

Traps enter beside the scheduler. A notification (v1 trap, v2c/v3 trap or INFORM) is matched
to the checks of kind snmp whose target is its source address (or, for v1, its agent-addr);
the check's profiles say what the trap OID means (`traps:` of a profile, TrapDef). The
TrapDef's `set:` values are merged over the check's last result and recorded through the
ResultStore, so /metrics and the health engine see the change at once; then the scheduler is
asked to re-poll the device, which confirms (or corrects) the state.

Anyone who reaches the trap port can send anything, so a datagram is screened on the event
loop at a cost that does not depend on its content: its size (read into a fixed buffer, a
larger one is dropped unread), a token bucket per source address, and a parse of the BER
header only (version, community or msgUserName, PDU type). Only what passes is decoded, by
pysnmp 7 on a thread of its own with its own event loop, so even a legitimate but costly
notification never holds the daemon's loop: pysnmp does the protocol work there (community
and USM checks, v1 -> v2 conversion (RFC 3584), INFORM acknowledgements), and hands the
notification back to the loop. pysnmp's own counters (snmpInASNParseErrs,
snmpInBadCommunityNames, usmStats*) are read around each datagram to say why it dropped one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hmac
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter
from pysnmp.carrier.asyncio.dgram import udp, udp6  # type: ignore[import-untyped]
from pysnmp.entity import config as snmp_config  # type: ignore[import-untyped]
from pysnmp.entity import engine as snmp_engine
from pysnmp.entity.rfc3413 import ntfrcv  # type: ignore[import-untyped]
from pysnmp.proto import rfc1902  # type: ignore[import-untyped]

from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.monitor.config import TrapSettings
from vigie.monitor.store import ResultStore
from vigie.probes.base import Check
from vigie.probes.snmp import SnmpAuth, SnmpCheckSettings, parse_target
from vigie.probes.snmp.auth import pysnmp_usm
from vigie.probes.snmp.profiles import Profile, TrapDef

__all__ = [
    "SourceBuckets",
    "TrapHeader",
    "TrapMetrics",
    "TrapReceiver",
    "merge_trap",
    "peek_header",
]

T = TypeVar("T")

SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
SNMP_TRAP_ADDRESS = "1.3.6.1.6.3.18.1.3.0"
MAX_LOGGED_SOURCES = 1024
"""Sources remembered for rate-limited logging: bounded so a spoofing flood cannot grow it."""
READ_BATCH = 64
"""Datagrams read per wake-up of the loop: drains a flood fast, yet lets others run between."""
MAX_BACKLOG = 256
"""Screened datagrams waiting for the decoding thread; beyond, dropped (reason backlog)."""
DISCOVERY_MAX_BYTES = 512
"""An SNMPv3 message with an empty user is an engine ID discovery: small, or it is dropped."""
_MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0)  # Linux: the datagram's real size, not the read
RECEIVE_BUFFER_BYTES = 1 << 21
"""SO_RCVBUF asked for (the kernel caps it at net.core.rmem_max): absorbs bursts."""

RESULTS = ("matched", "unmatched", "malformed", "auth_failed")
DROP_REASONS = ("oversize", "rate", "malformed", "community", "user", "backlog")
# A drop for one of these reasons is also a received notification with this result.
_RECEIVED_AS = {"malformed": "malformed", "community": "auth_failed", "user": "auth_failed"}
_DROP_EVENTS = {r: f"trap_{_RECEIVED_AS.get(r, 'dropped')}" for r in DROP_REASONS}
# The PDU types a notification receiver accepts: v1 Trap; v2 SNMPv2-Trap and InformRequest.
_NOTIFICATION_PDUS = {0: frozenset({0xA4}), 1: frozenset({0xA6, 0xA7})}

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
        self.dropped = Counter(
            "vigie_snmp_traps_dropped",
            "Trap datagrams dropped, by reason: oversize, rate (per-source limit), malformed, "
            "community, user (SNMPv3 USM), backlog (decoding thread full).",
            ["reason"],
            registry=registry,
        )
        # Children resolved once: a flood counts each datagram, labels() would cost each time.
        self.received_by = {r: self.received.labels(result=r) for r in RESULTS}
        self.dropped_by = {r: self.dropped.labels(reason=r) for r in DROP_REASONS}
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


# --------------------------------------------------------------------------- BER header


@dataclass(frozen=True, slots=True)
class TrapHeader:
    """What an SNMP message says before its varbinds: enough to refuse it cheaply."""

    version: int
    """0 for SNMPv1, 1 for SNMPv2c, 3 for SNMPv3."""
    community: bytes = b""
    pdu: int = 0
    """v1/v2c: the PDU's tag (0xA4 Trap, 0xA6 InformRequest, 0xA7 SNMPv2-Trap...)."""
    engine_id: bytes = b""
    """v3: msgAuthoritativeEngineID."""
    user: bytes = b""
    """v3: msgUserName."""


def _tlv(data: bytes | memoryview, pos: int, end: int, want: int, what: str) -> tuple[int, int]:
    """Return the (start, stop) of the body of the TLV at pos, which must have tag `want`."""
    if pos + 2 > end:
        raise ValueError(f"truncated before {what}")
    tag, size = data[pos], data[pos + 1]
    if tag != want:
        raise ValueError(f"{what}: tag 0x{tag:02x}, expected 0x{want:02x}")
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4 or pos + count > end:  # indefinite length is not SNMP's BER
            raise ValueError(f"{what}: bad length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + size > end:
        raise ValueError(f"{what}: longer than the datagram")
    return pos, pos + size


def _small_int(data: bytes | memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """Return an INTEGER of at most 4 octets at pos, and the position after it."""
    start, stop = _tlv(data, pos, end, 0x02, what)
    if not 1 <= stop - start <= 4:
        raise ValueError(f"{what}: bad integer")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def peek_header(data: bytes | memoryview) -> TrapHeader:
    """Parse an SNMP message's header only: version, then community and PDU type (v1/v2c) or
    authoritative engine ID and user name (v3). Costs the same whatever the varbinds hold.

    Raises ValueError, naming the field, for anything that is not one SNMP message.
    """
    start, stop = _tlv(data, 0, len(data), 0x30, "message")
    if stop != len(data):
        raise ValueError("trailing bytes after the message")
    version, pos = _small_int(data, start, stop, "version")
    if version in (0, 1):
        cstart, pos = _tlv(data, pos, stop, 0x04, "community")
        if pos >= stop:
            raise ValueError("truncated before the PDU")
        return TrapHeader(version, community=bytes(data[cstart:pos]), pdu=data[pos])
    if version != 3:
        raise ValueError(f"SNMP version {version}")
    _, pos = _tlv(data, pos, stop, 0x30, "msgGlobalData")
    sstart, sstop = _tlv(data, pos, stop, 0x04, "msgSecurityParameters")
    ustart, ustop = _tlv(data, sstart, sstop, 0x30, "UsmSecurityParameters")
    estart, estop = _tlv(data, ustart, ustop, 0x04, "msgAuthoritativeEngineID")
    _, pos = _small_int(data, estop, ustop, "msgAuthoritativeEngineBoots")
    _, pos = _small_int(data, pos, ustop, "msgAuthoritativeEngineTime")
    nstart, nstop = _tlv(data, pos, ustop, 0x04, "msgUserName")
    return TrapHeader(3, engine_id=bytes(data[estart:estop]), user=bytes(data[nstart:nstop]))


# --------------------------------------------------------------------------- rate limit


class SourceBuckets:
    """A token bucket per source address, for a bounded number of sources.

    Sources are kept in least-recently-seen order. A new source takes the place of the oldest
    only when that one's bucket has refilled (forgetting it then grants nothing); otherwise
    it shares one overflow bucket, so a flood of spoofed addresses cannot reset the buckets
    of the devices already known, nor grow memory.
    """

    def __init__(
        self, rate: float, burst: int, max_sources: int, clock: Callable[[], float]
    ) -> None:
        self.rate, self.burst, self.max_sources = rate, float(burst), max_sources
        self._clock = clock
        self._buckets: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._overflow = [float(burst), clock()]

    def __len__(self) -> int:
        """Return the number of sources with a bucket of their own."""
        return len(self._buckets)

    def allow(self, source: str, cost: float = 1.0) -> bool:
        """Take `cost` tokens from the source's bucket; False when it has fewer."""
        now = self._clock()
        cost = min(cost, self.burst)  # a burst smaller than the cost would refuse it forever
        bucket = self._buckets.get(source)
        if bucket is not None:
            self._buckets.move_to_end(source)
        elif len(self._buckets) < self.max_sources or self._forget_oldest(now):
            bucket = self._buckets[source] = [self.burst, now]
        else:
            bucket = self._overflow
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < cost:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - cost
        return True

    def _forget_oldest(self, now: float) -> bool:
        """Drop the least recently seen source if its bucket is full again; True if dropped."""
        oldest = next(iter(self._buckets))
        tokens, last = self._buckets[oldest]
        if tokens + (now - last) * self.rate < self.burst:
            return False
        del self._buckets[oldest]
        return True


# --------------------------------------------------------------------------- decoding thread


class _EngineThread:
    """A thread running an event loop of its own, where pysnmp's engine lives and decodes.

    pysnmp is not thread-safe: everything touching the engine (creation, credentials,
    datagrams, closing) runs on this thread; results go back through the daemon's loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="vigie-traps", daemon=True)

    def _run(self) -> None:
        """Run the loop until stopped, then finish its tasks and close it."""
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    async def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the thread's loop and return its result."""

        async def run() -> T:
            return fn()

        coro: Coroutine[Any, Any, T] = run()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        """Queue fn(*args) on the thread's loop."""
        self.loop.call_soon_threadsafe(fn, *args)

    async def stop(self) -> None:
        """Stop the loop and wait for the thread to end."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self._thread.join, 10.0)


class _Transport(udp.UdpAsyncioTransport):  # type: ignore[misc]
    """pysnmp's UDP transport over the receiver's socket: the receiver reads, pysnmp only
    sends (INFORM acknowledgements), straight on the non-blocking socket."""

    sock: socket.socket

    def open_server_mode(self, iface: Any = None, sock: Any = None) -> _Transport:
        """Use the receiver's socket; no asyncio endpoint (the receiver reads it)."""
        self.sock = sock
        return self

    def send_message(self, outgoingMessage: bytes, transportAddress: Any) -> None:
        """Send one message; a full socket buffer loses it (an INFORM sender retries)."""
        with contextlib.suppress(OSError):
            self.sock.sendto(outgoingMessage, tuple(transportAddress))


class _Transport6(_Transport):
    """The same over UDP/IPv6."""

    SOCK_FAMILY = socket.AF_INET6
    ADDRESS_TYPE = udp6.Udp6TransportAddress


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray(settings.max_datagram_bytes + 1)
        self._view = memoryview(self._buffer)
        self._buckets = self._new_buckets(settings)
        self._communities: tuple[bytes, ...] = ()
        self._users: frozenset[bytes] = frozenset()
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._thread: _EngineThread | None = None
        # Touched on the decoding thread only:
        self._engine: Any = None
        self._receiver: Any = None
        self._transport: Any = None
        self._registered = _Registered()
        self._current: _Datagram | None = None
        # Touched on the daemon's loop only:
        self._devices: dict[str, list[_Device]] = {}
        self._logged: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self.port: int | None = None
        self.engine_id: str = ""

    def _new_buckets(self, settings: TrapSettings) -> SourceBuckets:
        """Return empty per-source buckets for these settings."""
        return SourceBuckets(
            settings.source_rate, settings.source_burst, settings.max_sources, self._clock
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self, plan: Mapping[str, Check], auths: Mapping[str, SnmpAuth]) -> None:
        """Bind the UDP port, start the decoding thread, register credentials, match checks."""
        host, port = self.settings.host_port()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # a bigger buffer is a comfort, not a need
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._thread = _EngineThread()
        self._thread.start()
        self.engine_id = await self._thread.call(lambda: self._open_engine(sock, family))
        await self.update(plan, auths)
        self._loop.add_reader(sock.fileno(), self._readable)
        self._log.info("traps_listening", listen=f"{host}:{self.port}", engine_id=self.engine_id)

    def _open_engine(self, sock: socket.socket, family: int) -> str:
        """Create pysnmp's engine over the socket (on the decoding thread); return its ID."""
        engine_id = (
            _engine_id(self.settings.engine_id) if self.settings.engine_id is not None else None
        )
        self._engine = snmp_engine.SnmpEngine(snmpEngineID=engine_id)
        transport = _Transport6() if family == socket.AF_INET6 else _Transport()
        domain = udp6.DOMAIN_NAME if family == socket.AF_INET6 else udp.DOMAIN_NAME
        snmp_config.add_transport(self._engine, domain, transport.open_server_mode(sock=sock))
        self._transport = transport
        self._receiver = ntfrcv.NotificationReceiver(self._engine, self._on_notification)
        return str(self._engine.snmpEngineID.asOctets().hex())

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
            old = self.settings
            self.settings = settings.model_copy(
                update={"listen": self.settings.listen, "engine_id": self.settings.engine_id}
            )
            if settings.max_datagram_bytes != old.max_datagram_bytes:
                self._buffer = bytearray(settings.max_datagram_bytes + 1)
                self._view = memoryview(self._buffer)
            limits = ("source_rate", "source_burst", "max_sources")
            if any(getattr(settings, n) != getattr(old, n) for n in limits):
                self._buckets = self._new_buckets(settings)
        accepted = self._trap_auths(plan, auths)
        if self._thread is not None:
            await self._thread.call(lambda: self._register(accepted))
        self._communities = tuple(
            a.community.get_secret_value().encode()
            for a in accepted.values()
            if a.version != 3 and a.community is not None
        )
        self._users = frozenset(
            (a.username or "").encode() for a in accepted.values() if a.version == 3
        )
        self._devices = await self._index(plan)

    async def stop(self) -> None:
        """Stop listening, close the engine and its thread, release the socket."""
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        if self._thread is not None:
            await self._thread.call(self._close_engine)
            await self._thread.stop()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _close_engine(self) -> None:
        """Close pysnmp's receiver and dispatcher (on the decoding thread)."""
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
        """Replace the engine's communities and USM users (on the decoding thread)."""
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

    # ------------------------------------------------------------------ screening (loop)

    def _readable(self) -> None:
        """Read and screen the datagrams waiting on the socket, a bounded batch at a time."""
        sock, buffer, view = self._sock, self._buffer, self._view
        if sock is None:
            return
        for _ in range(READ_BATCH):
            try:
                # A datagram larger than the buffer is truncated by the kernel: it costs
                # len(buffer) to read whatever its size; MSG_TRUNC still returns its size.
                size, address = sock.recvfrom_into(buffer, 0, _MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                self._log_once("?", "trap_receive_error", error=bound_text(str(exc)))
                return
            try:
                self._screen(view, size, address)
            except Exception as exc:  # a bug of ours on some datagram: count it, read on
                source = str(address[0])
                self._drop("malformed", source, error=bound_text(f"{type(exc).__name__}: {exc}"))

    def _screen(self, view: memoryview, size: int, address: tuple[Any, ...]) -> None:
        """Drop a datagram that is too big, too frequent or not for us; pass the rest on."""
        source = str(address[0])
        if size > self.settings.max_datagram_bytes:
            self._drop("oversize", source, size=size)
            return
        # One token per started KiB: decoding costs by the size, and a notification of a
        # real device is well under 1 KiB; so a big one cannot buy more decoding per token.
        if not self._buckets.allow(source, 1 + max(size - 1, 0) // 1024):  # empty: 1 too
            self._drop("rate", source)
            return
        data = view[:size]
        try:
            header = peek_header(data)
        except ValueError as exc:
            self._drop("malformed", source, error=bound_text(str(exc)))
            return
        if header.version == 3:
            if header.user not in self._users and (header.user or size > DISCOVERY_MAX_BYTES):
                self._drop("user", source, **self._v3_fields(header))
                return
        elif not any(hmac.compare_digest(header.community, c) for c in self._communities):
            self._drop("community", source)
            return
        elif header.pdu not in _NOTIFICATION_PDUS[header.version]:
            self._drop("malformed", source, error=f"not a notification PDU (0x{header.pdu:02x})")
            return
        with self._backlog_lock:
            if self._backlog >= MAX_BACKLOG:
                full = True
            else:
                full = False
                self._backlog += 1
        if full:
            self._drop("backlog", source)
            return
        assert self._thread is not None
        self._thread.submit(self._decode, address, bytes(data), header)

    def _v3_fields(self, header: TrapHeader) -> dict[str, str]:
        """Say which engine ID and user a refused SNMPv3 notification came with.

        A v3 TRAP is authenticated with its sender's engine ID, which the receiver must know:
        the commonest cause of a refused v3 trap is an engine ID missing from traps.engine_ids.
        """
        engine_id = bound_text(header.engine_id.hex(), 64)
        user = bound_text(header.user.decode(errors="replace"), 64)
        fields = {"engine_id": engine_id, "user": user}
        known = {e.lower().removeprefix("0x") for e in self.settings.engine_ids}
        if engine_id and engine_id not in known and engine_id != self.engine_id:
            fields["hint"] = (
                f"engine ID {engine_id} is not in traps.engine_ids: add it if this sender "
                "is trusted (or have it send INFORMs)"
            )
        return fields

    def _drop(self, reason: str, source: str, **fields: object) -> None:
        """Count a dropped datagram by reason and log it once per source and log interval."""
        self.metrics.dropped_by[reason].inc()
        result = _RECEIVED_AS.get(reason)
        if result is not None:
            self.metrics.received_by[result].inc()
        event = _DROP_EVENTS[reason]
        if self._may_log(source, event):  # checked first: a flood logs nothing, cheaply
            self._log.warning(event, source=source, reason=reason, **fields)

    def _count(self, result: str, source: str, **fields: object) -> None:
        """Count a notification by result; log one not matched once per source and interval."""
        self.metrics.received_by[result].inc()
        event = f"trap_{result}"
        if result != "matched" and self._may_log(source, event):
            self._log.warning(event, source=source, **fields)

    def _log_once(self, source: str, event: str, **fields: object) -> None:
        """Log an event at most once per source and event per log interval."""
        if self._may_log(source, event):
            self._log.warning(event, source=source, **fields)

    def _may_log(self, source: str, event: str) -> bool:
        """Say whether this source's event may be logged now, and note it if so.

        The table is bounded (MAX_LOGGED_SOURCES), so spoofed sources cannot grow it.
        """
        now = self._clock()
        key = (source, event)
        last = self._logged.get(key)
        if last is not None and now - last < self.settings.log_interval:
            return False
        self._logged[key] = now
        self._logged.move_to_end(key)
        while len(self._logged) > MAX_LOGGED_SOURCES:
            self._logged.popitem(last=False)
        return True

    # ------------------------------------------------------------------ decoding (thread)

    def _counters(self, names: Iterable[tuple[str, str]]) -> int:
        """Return the sum of some of pysnmp's own counters."""
        builder = self._engine.get_mib_builder()
        total = 0
        for module, name in names:
            with contextlib.suppress(Exception):  # a counter missing from this pysnmp
                (symbol,) = builder.import_symbols(module, name)
                total += int(symbol.syntax)
        return total

    def _decode(self, address: tuple[Any, ...], datagram: bytes, header: TrapHeader) -> None:
        """Let pysnmp process one screened datagram (decoding thread); report what it dropped."""
        try:
            self._decode_one(address, datagram, header)
        finally:
            with self._backlog_lock:
                self._backlog -= 1

    def _decode_one(self, address: tuple[Any, ...], datagram: bytes, header: TrapHeader) -> None:
        """Hand the datagram to pysnmp and post a drop to the loop if pysnmp refused it."""
        if self._engine is None or self._transport is None or self._loop is None:
            return
        current = self._current = _Datagram(_normalise_ip(str(address[0])))
        malformed = self._counters(_MALFORMED_COUNTERS)
        auth_failed = self._counters(_AUTH_COUNTERS)
        reason: str | None = None
        fields: dict[str, str] = {}
        try:
            self._transport._callback_function(self._transport, address, datagram)
        except Exception as exc:  # anything a datagram triggers in pysnmp: drop, never raise
            reason, fields = "malformed", {"error": bound_text(type(exc).__name__)}
        finally:
            self._current = None
        if reason is None and not current.handled:
            if self._counters(_MALFORMED_COUNTERS) > malformed:
                reason = "malformed"
            elif self._counters(_AUTH_COUNTERS) > auth_failed:
                reason = "user" if header.version == 3 else "community"
                fields = self._v3_fields(header) if header.version == 3 else {}
            elif header.version != 3 or header.user:  # not an engine ID discovery
                # pysnmp dropped it without a word: still counted, so every datagram is.
                reason, fields = "malformed", {"error": "dropped by the SNMP engine"}
        if reason is not None:
            drop = functools.partial(self._drop, reason, current.source, **fields)
            self._loop.call_soon_threadsafe(drop)

    def _on_notification(self, *args: Any) -> None:
        """Take one authenticated notification (decoding thread; an INFORM is acked already)
        and hand what matters of it to the loop.

        pysnmp calls it with (engine, state reference, context engine ID, context name,
        varbinds, callback context).
        """
        varbinds = args[4]
        current = self._current
        source = current.source if current is not None else "?"
        if current is not None:
            current.handled = True
        assert self._loop is not None
        try:
            values = {str(oid): value for oid, value in varbinds}
            trap_oid = str(values.get(SNMP_TRAP_OID, "")).removeprefix(".")
            candidates = []
            agent = values.get(SNMP_TRAP_ADDRESS)
            if agent is not None:
                with contextlib.suppress(Exception):  # a malformed agent-addr: use the source
                    candidates.append(_normalise_ip(agent.prettyPrint()))
            candidates.append(source)
        except Exception as exc:  # a device's notification never crashes the daemon
            error = bound_text(f"{type(exc).__name__}: {exc}")
            self._loop.call_soon_threadsafe(
                functools.partial(self._drop, "malformed", source, error=error)
            )
            return
        self._loop.call_soon_threadsafe(self._applied, trap_oid, candidates, source)

    # ------------------------------------------------------------------ applying (loop)

    def _applied(self, trap_oid: str, candidates: list[str], source: str) -> None:
        """Apply a decoded notification; whatever it holds, count it, never raise."""
        try:
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
