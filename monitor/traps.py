"""The trap receiver: a notification becomes an immediate result for its device and a re-poll now.

Traps enter beside the scheduler. The receiver is protocol-neutral: it owns the UDP socket,
the size bound, a token bucket per source address, its metrics and the dispatch; decoding is
the business of the probe kind that receives notifications (vigie.probes.traps.TrapDecoder,
given by a TrapProbe: snmp's). A decoded notification is matched to the checks whose host is
its sender's address (or, for SNMPv1, its agent-addr); the check's settings say what it means
(a TrapSource: for snmp, `traps:` of its profiles). The meaning's `set:` values are merged
over the check's last result and recorded through the ResultStore, so /metrics and the
health engine see the change at once; then the scheduler is asked to re-poll the device,
which confirms (or corrects) the state.

Anyone who reaches the trap port can send anything, so a datagram is screened on the event
loop at a cost that does not depend on its content: its size (read into a fixed buffer, a
larger one is dropped unread), a token bucket per source address, and the decoder's header
screen. Only what passes is decoded, on a thread of its own with its own event loop, so even
a legitimate but costly notification never holds the daemon's loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.monitor.config import TrapSettings
from vigie.monitor.store import ResultStore
from vigie.probes.base import Check
from vigie.probes.traps import (
    TrapDecoder,
    TrapMeaning,
    TrapNotification,
    TrapRefusal,
    TrapSource,
    normalise_ip,
)

__all__ = [
    "DROP_REASONS",
    "SourceBuckets",
    "TrapMetrics",
    "TrapReceiver",
    "merge_trap",
]

T = TypeVar("T")

MAX_LOGGED_SOURCES = 1024
"""Sources remembered for rate-limited logging: bounded so a spoofing flood cannot grow it."""
READ_BATCH = 64
"""Datagrams read per wake-up of the loop: drains a flood fast, yet lets others run between."""
MAX_BACKLOG = 256
"""Screened datagrams waiting for the decoding thread; beyond, dropped (reason backlog)."""
_MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0)  # Linux: the datagram's real size, not the read
RECEIVE_BUFFER_BYTES = 1 << 21
"""SO_RCVBUF asked for (the kernel caps it at net.core.rmem_max): absorbs bursts."""

RESULTS = ("matched", "unmatched", "malformed", "auth_failed")
DROP_REASONS = ("oversize", "rate", "malformed", "community", "user", "backlog")
# A drop for one of these reasons is also a received notification with this result.
_RECEIVED_AS = {"malformed": "malformed", "community": "auth_failed", "user": "auth_failed"}
_DROP_EVENTS = {r: f"trap_{_RECEIVED_AS.get(r, 'dropped')}" for r in DROP_REASONS}


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
    """One check a notification can apply to: its id and what its notifications set."""

    check_id: str
    traps: Mapping[str, TrapMeaning]
    helps: Mapping[str, str]


def merge_trap(
    last: ProbeResult | None,
    trap: TrapMeaning,
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
    """A thread running an event loop of its own, where the decoder lives and decodes.

    A decoder need not be thread-safe (pysnmp is not): everything touching it but `screen`
    (opening, credentials, datagrams, closing) runs on this thread; results go back through
    the daemon's loop.
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


class TrapReceiver:
    """Listen for notifications, apply them to the checks they match and re-poll those."""

    def __init__(
        self,
        settings: TrapSettings,
        store: ResultStore,
        trigger: Callable[[str], bool],
        metrics: TrapMetrics,
        *,
        decoder: TrapDecoder,
        logger: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._store = store
        self._trigger = trigger
        self.metrics = metrics
        self._decoder = decoder
        self._log = logger if logger is not None else structlog.get_logger()
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray(settings.max_datagram_bytes + 1)
        self._view = memoryview(self._buffer)
        self._buckets = self._new_buckets(settings)
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._thread: _EngineThread | None = None
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

    async def start(self, plan: Mapping[str, Check], section: BaseModel | None) -> None:
        """Bind the UDP port, start the decoding thread, register credentials, match checks.

        section is the config block of the decoder's probe kind (`snmp:`, its auths).
        """
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
        settings = self.settings
        self.engine_id = await self._thread.call(lambda: self._decoder.open(sock, family, settings))
        await self.update(plan, section)
        self._loop.add_reader(sock.fileno(), self._readable)
        self._log.info("traps_listening", listen=f"{host}:{self.port}", engine_id=self.engine_id)

    async def update(
        self,
        plan: Mapping[str, Check],
        section: BaseModel | None,
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
        options = self.settings
        if self._thread is not None:
            await self._thread.call(lambda: self._decoder.configure(plan, section, options))
        else:
            self._decoder.configure(plan, section, options)
        self._devices = await self._index(plan)

    async def stop(self) -> None:
        """Stop listening, close the decoder and its thread, release the socket."""
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        if self._thread is not None:
            await self._thread.call(self._decoder.close)
            await self._thread.stop()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ------------------------------------------------------------------ configuration

    async def _index(self, plan: Mapping[str, Check]) -> dict[str, list[_Device]]:
        """Map the address of each check whose notifications mean something to those meanings."""
        devices: dict[str, list[_Device]] = {}
        loop = asyncio.get_running_loop()
        for check in plan.values():
            settings = check.settings
            if not isinstance(settings, TrapSource):
                continue
            host = check.host
            addresses = {normalise_ip(host)}
            try:
                ipaddress.ip_address(host)
            except ValueError:
                try:
                    async with asyncio.timeout(2.0):
                        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
                    addresses = {normalise_ip(str(info[4][0])) for info in infos}
                except (OSError, TimeoutError) as exc:
                    self._log.warning(
                        "trap_source_unresolved",
                        check=check.id,
                        target=check.target,
                        error=str(exc),
                    )
                    continue
            device = _Device(check.id, settings.trap_meanings(), settings.family_helps())
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
        refusal = self._decoder.screen(data)
        if refusal is not None:
            self._drop(refusal.reason, source, **refusal.fields)
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
        self._thread.submit(self._decode, address, bytes(data))

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

    def _decode(self, address: tuple[Any, ...], datagram: bytes) -> None:
        """Let the decoder process one screened datagram (decoding thread); post the outcome."""
        try:
            outcome = self._decode_one(address, datagram)
        finally:
            with self._backlog_lock:
                self._backlog -= 1
        if outcome is None or self._loop is None:
            return
        source = normalise_ip(str(address[0]))
        if isinstance(outcome, TrapRefusal):
            drop = functools.partial(self._drop, outcome.reason, source, **outcome.fields)
            self._loop.call_soon_threadsafe(drop)
        else:
            self._loop.call_soon_threadsafe(
                self._applied, outcome.key, list(outcome.addresses), source
            )

    def _decode_one(
        self, address: tuple[Any, ...], datagram: bytes
    ) -> TrapNotification | TrapRefusal | None:
        """Return what the decoder made of a datagram; a decoder's bug only drops it."""
        try:
            return self._decoder.decode(address, datagram)
        except Exception as exc:  # whatever a datagram triggers: drop, never raise
            return TrapRefusal("malformed", {"error": bound_text(type(exc).__name__)})

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
