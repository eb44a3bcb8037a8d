"""SNMPv3 polls that name a context, through pysnmp 7: gufo-snmp 0.13 only sends the empty one.

Agents that serve several MIB instances (a proxy agent fronting UPS cards, virtual fabrics of an
FC switch, Cisco's per-VLAN bridge MIB) pick the instance by the SNMPv3 contextName. The snmp
probe sends checks whose auth has a `context_name` here; every other check keeps the faster
gufo-snmp path. Both paths share the poll plan, walk grouping, walk_cap and failure wording
(polling.py, failures.py), and this module turns pysnmp's values into exactly the Python
types gufo-snmp returns, so profiles give the same samples whichever path polled.

pysnmp's engine is costly to build: the probe keeps one per set of v3 credentials (built on the
first poll that needs it, released by `close`). Retries and timeouts are run here, not by
pysnmp, so `retries`, `request_timeout` and the check's deadline mean what they mean on the
gufo path; pysnmp only does engine discovery, USM and BER.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyasn1.type import univ  # type: ignore[import-untyped]
from pysnmp import error as pysnmp_error  # type: ignore[import-untyped]
from pysnmp.carrier.asyncio.dgram import udp, udp6  # type: ignore[import-untyped]
from pysnmp.carrier.asyncio.dispatch import AsyncioDispatcher  # type: ignore[import-untyped]
from pysnmp.entity import config as snmp_config  # type: ignore[import-untyped]
from pysnmp.entity.engine import SnmpEngine  # type: ignore[import-untyped]
from pysnmp.entity.rfc3413 import cmdgen  # type: ignore[import-untyped]
from pysnmp.proto import errind, rfc1902, rfc1905  # type: ignore[import-untyped]

from vigie.probes.snmp.auth import SnmpAuth, pysnmp_usm
from vigie.probes.snmp.client import parse_target, resolve
from vigie.probes.snmp.failures import SnmpFailure, report_reason, stopped_mid_walk
from vigie.probes.snmp.polling import PollStats, WalkRows, walk_groups
from vigie.probes.snmp.profiles.plan import Collected, Value
from vigie.probes.snmp.settings import SnmpCheckSettings
from vigie.probes.snmp.usm import UsmCheck, usm_check

__all__ = ["ContextPoller", "convert_value"]

Log = Callable[..., None]

# pysnmp's error indications for the USM reports an agent sends -> the report OID, so both
# paths word them with REPORT_REASONS.
_REPORTS: tuple[tuple[type[Exception], str], ...] = (
    (errind.UnsupportedSecurityLevel, "1.3.6.1.6.3.15.1.1.1.0"),
    (errind.NotInTimeWindow, "1.3.6.1.6.3.15.1.1.2.0"),
    (errind.UnknownUserName, "1.3.6.1.6.3.15.1.1.3.0"),
    (errind.UnknownEngineID, "1.3.6.1.6.3.15.1.1.4.0"),
    (errind.WrongDigest, "1.3.6.1.6.3.15.1.1.5.0"),
    (errind.DecryptionError, "1.3.6.1.6.3.15.1.1.6.0"),
)
_UNKNOWN_CONTEXT = "1.3.6.1.6.3.12.1.5.0"
_UNSUPPORTED_LEVEL = "1.3.6.1.6.3.15.1.1.1.0"
_UNAVAILABLE_CONTEXT = "1.3.6.1.6.3.12.1.4.0"
_OID_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)+")

# error-status values of a Response (RFC 3416).
_ERROR_STATUS = {
    1: "tooBig",
    2: "noSuchName",
    3: "badValue",
    4: "readOnly",
    5: "genErr",
    6: "noAccess",
    16: "authorizationError",
}

_PARAMS = "vigie"  # the one target-parameters entry of an engine (one user per engine)
_TIMER_RESOLUTION = 0.5  # pysnmp's timers only expire abandoned requests: timeouts are ours
_NULL = univ.Null("")
_END_OF_MIB = rfc1905.EndOfMibView.tagSet
_SKIP = object()  # a varbind gufo-snmp leaves out: NULL, noSuchObject, noSuchInstance


def convert_value(value: Any) -> Value | object:
    """Return a pysnmp value as gufo-snmp returns it, or _SKIP where gufo-snmp drops it.

    Integers of every kind (Integer32, Counter32/64, Gauge32, TimeTicks) -> int, OCTET STRING
    and Opaque (and BITS) -> bytes, OBJECT IDENTIFIER -> dotted str, IpAddress -> dotted str.
    """
    if isinstance(value, univ.Integer):
        return int(value)
    if isinstance(value, rfc1902.IpAddress):
        return ".".join(str(b) for b in value.asOctets())
    if isinstance(value, univ.Null):  # before OctetString: pyasn1's Null derives from it
        return _SKIP  # NULL, noSuchObject, noSuchInstance (and endOfMibView)
    if isinstance(value, univ.OctetString):
        return bytes(value.asOctets())
    if isinstance(value, univ.ObjectIdentifier):
        return ".".join(str(arc) for arc in value.asTuple())
    return _SKIP


class NoAnswer(Exception):
    """No answer to a request within the request timeout and retries (or the deadline)."""

    def __init__(self, tries: int) -> None:
        super().__init__(tries)
        self.tries = tries


@dataclass
class _Engine:
    """A pysnmp engine with one USM user, its transports, targets and sent-PDU counts."""

    engine: Any
    loop: asyncio.AbstractEventLoop
    get: Any = field(default_factory=cmdgen.GetCommandGenerator)
    bulk: Any = field(default_factory=cmdgen.BulkCommandGeneratorSingleRun)
    domains: set[tuple[int, ...]] = field(default_factory=set)
    targets: dict[tuple[tuple[int, ...], str, int, int], str] = field(default_factory=dict)
    # Request PDUs pysnmp sent (discovery and its resends included) by (ip, port, context).
    sent: dict[tuple[str, int, bytes], int] = field(default_factory=dict)

    def count(self, _engine: Any, _point: str, variables: dict[str, Any], _ctx: Any) -> None:
        """Count a request PDU leaving the engine (observer of `rfc3412.sendPdu`)."""
        address = variables["transportAddress"]
        key = (str(address[0]), int(address[1]), bytes(variables["contextName"]))
        self.sent[key] = self.sent.get(key, 0) + 1

    def target(self, ip: str, port: int, request_timeout: float) -> str:
        """Return the engine's target name for ip:port, adding transport and target on first use."""
        v6 = ":" in ip
        domain = udp6.DOMAIN_NAME if v6 else udp.DOMAIN_NAME
        if domain not in self.domains:
            transport = (udp6.Udp6AsyncioTransport if v6 else udp.UdpAsyncioTransport)()
            snmp_config.add_transport(self.engine, domain, transport.open_client_mode())
            self.domains.add(domain)
        # pysnmp's own timeout (hundredths) only expires requests this module gave up on.
        hundredths = int(request_timeout * 100) + 100
        key = (domain, ip, port, hundredths)
        name = self.targets.get(key)
        if name is None:
            name = f"t{len(self.targets)}"
            snmp_config.add_target_address(
                self.engine, name, domain, (ip, port), _PARAMS, hundredths, 0
            )
            self.targets[key] = name
        return name

    def close(self) -> None:
        """Close the engine's sockets and stop its timer."""
        with contextlib.suppress(Exception):  # its loop may be closed already
            self.engine.close_dispatcher()


def _engine_key(auth: SnmpAuth) -> tuple[object, ...]:
    """Return what makes two auths need distinct engines: the user and its keys, not the context."""
    return (
        auth.username,
        auth.security_level,
        auth.auth_protocol,
        auth.auth_password,
        auth.priv_protocol,
        auth.priv_password,
    )


def _build_engine(auth: SnmpAuth, loop: asyncio.AbstractEventLoop) -> _Engine:
    """Return a pysnmp engine for one v3 user, with a slow timer (timeouts are ours)."""
    engine = SnmpEngine()
    snmp_config.add_v3_user(engine, auth.username, *pysnmp_usm(auth))
    snmp_config.add_target_parameters(engine, _PARAMS, auth.username, auth.security_level, 3)
    engine.register_transport_dispatcher(AsyncioDispatcher(timeout=_TIMER_RESOLUTION, loop=loop))
    built = _Engine(engine, loop)
    engine.observer.register_observer(built.count, "rfc3412.sendPdu")
    return built


class ContextPoller:
    """Poll SNMPv3 agents in a named context with pysnmp; one engine per set of credentials."""

    def __init__(self) -> None:
        self._engines: dict[tuple[object, ...], _Engine] = {}

    def _engine(self, auth: SnmpAuth) -> _Engine:
        """Return the engine of auth's user, building it (again, if the loop changed)."""
        loop = asyncio.get_running_loop()
        key = _engine_key(auth)
        found = self._engines.get(key)
        if found is not None and found.loop is not loop:
            found.close()
            found = None
        if found is None:
            found = self._engines[key] = _build_engine(auth, loop)
        return found

    def keep_engines_for(self, auths: Iterable[SnmpAuth]) -> None:
        """Close the engines no auth of `auths` needs any more (a password rotated by a reload)."""
        keep = {_engine_key(auth) for auth in auths}
        for key in [k for k in self._engines if k not in keep]:
            self._engines.pop(key).close()

    def close(self) -> None:
        """Release every engine."""
        engines, self._engines = list(self._engines.values()), {}
        for built in engines:
            built.close()

    async def poll(
        self,
        target: str,
        settings: SnmpCheckSettings,
        stats: PollStats,
        log: Log,
        *,
        request_timeout: float,
        deadline: float,
    ) -> Collected:
        """Run the check's poll plan in its auth's context; raise SnmpFailure on failure."""
        auth = settings.resolved_auth
        host, port = parse_target(target)
        ip, port = parse_target(await resolve(host, port))
        built = self._engine(auth)
        context = auth.context_name.encode()
        run = _Run(
            built,
            built.target(ip, port, request_timeout),
            context,
            settings,
            stats,
            request_timeout,
            deadline,
            (ip, port),
        )
        key = (ip, port, context)
        before = built.sent.get(key, 0)
        try:
            return await run.collect(log)
        except NoAnswer as exc:
            raise await explain_silence(exc, run, target=target) from None
        finally:
            stats.pdus += built.sent.get(key, 0) - before
            if run.silence is not None and not run.silence.done():
                run.silence.cancel()  # answered after all: the explanation is not needed


@dataclass
class _Run:
    """One poll's conversation through an engine: requests with retries under the deadline."""

    built: _Engine
    target: str
    context: bytes
    settings: SnmpCheckSettings
    stats: PollStats
    request_timeout: float
    deadline: float
    address: tuple[str, int]
    answered: int = 0
    # Started at the first silent try when nothing was answered yet, so the classification
    # (unknown context, privacy) has the rest of the deadline, not what retries leave of it.
    silence: asyncio.Task[UsmCheck] | None = None

    def explain_silence_early(self) -> None:
        """Start asking the agent in plaintext why it is silent, beside the remaining tries."""
        if self.silence is not None or self.answered:
            return
        remaining = self.deadline - time.monotonic()
        if remaining < 0.05:
            return
        ip, port = self.address
        self.silence = asyncio.ensure_future(
            usm_check(ip, port, self.settings.resolved_auth, remaining, context=self.context)
        )

    async def collect(self, log: Log) -> Collected:
        """GET the plan's scalars in chunks of max_varbinds, then walk its columns."""
        plan, data = self.settings.plan, Collected()
        gets, step = list(plan.gets), self.settings.max_varbinds
        for start in range(0, len(gets), step):
            chunk = gets[start : start + step]
            varbinds = await self.request(
                self.built.get.send_varbinds,
                ([(oid, _NULL) for oid in chunk],),
                f"GET of {chunk[0]}",
            )
            values: dict[str, Value] = {}
            for name, raw in varbinds:
                value = convert_value(raw)
                if value is not _SKIP:
                    values[str(name)] = value  # type: ignore[assignment]
            self.stats.varbinds += len(values)
            data.scalars.update(values)
            log("snmp_get", oids=len(chunk), values=len(values))
        for subtree, columns in walk_groups(plan.walks):
            began = time.monotonic()
            try:
                walked = await self.walk(subtree, columns)
            finally:
                self.stats.walk_seconds += time.monotonic() - began
            data.walks.update(walked)
            for column in columns:
                log("snmp_walk", oid=column, rows=len(walked[column]))
        return data

    async def walk(self, subtree: str, columns: Sequence[str]) -> dict[str, dict[str, Value]]:
        """Walk a column, or the entry holding columns, with GETBULK (see WalkRows)."""
        rows = WalkRows(subtree, columns, self.settings.walk_cap)
        after = univ.ObjectIdentifier(subtree)
        while True:
            try:
                varbinds = await self.request(
                    self.built.bulk.send_varbinds,
                    (0, self.settings.max_repetitions, [(after, _NULL)]),
                    f"walk of {subtree}",
                )
            except NoAnswer as exc:
                if rows.received or self.answered:
                    raise stopped_mid_walk(
                        subtree, rows.received, exc.tries, self.request_timeout
                    ) from None
                raise
            batch: list[tuple[str, Value] | None] = []
            ended = not varbinds
            for name, raw in varbinds:
                if raw.tagSet == _END_OF_MIB:
                    ended = True
                    break
                if name <= after:
                    raise SnmpFailure(
                        "malformed",
                        f"malformed SNMP answer: OID not increasing in walk of {subtree} "
                        f"({name} after {after})",
                    )
                after = name
                value = convert_value(raw)
                if value is not _SKIP:
                    batch.append((str(name), value))  # type: ignore[arg-type]
            if rows.take(batch, self.stats) or ended:
                return rows.out

    async def request(
        self, send: Callable[..., Any], args: tuple[Any, ...], what: str
    ) -> Sequence[tuple[Any, Any]]:
        """Send a request with a pysnmp command generator's send_varbinds and return its varbinds.

        Resend on silence; raise NoAnswer after retries + 1 silent tries, SnmpFailure on a
        report or an error-status.
        """
        loop = asyncio.get_running_loop()
        retries = self.settings.retries
        for attempt in range(retries + 1):
            if time.monotonic() >= self.deadline:
                raise NoAnswer(attempt)
            future: asyncio.Future[Any] = loop.create_future()
            try:
                send(self.built.engine, self.target, None, self.context, *args, _answer, future)
            except pysnmp_error.PySnmpError as exc:
                raise SnmpFailure("snmp_error", f"SNMP engine error: {exc}") from None
            end = min(time.monotonic() + self.request_timeout, self.deadline)
            try:
                async with asyncio.timeout(max(0.0, end - time.monotonic())):
                    indication, status, index, varbinds = await future
            except TimeoutError:
                self.explain_silence_early()
                continue
            if isinstance(indication, errind.RequestTimedOut):
                self.explain_silence_early()
                continue
            if indication:
                raise _indication_failure(indication, self.settings.resolved_auth)
            self.answered += 1
            if status:
                raise _status_failure(int(status), int(index), varbinds, what, self)
            return varbinds  # type: ignore[no-any-return]
        raise NoAnswer(retries + 1)


def _answer(
    _engine: Any,
    _handle: Any,
    indication: Any,
    status: Any,
    index: Any,
    varbinds: Any,
    future: asyncio.Future[Any],
) -> None:
    """pysnmp's callback: hand the answer to the waiting request (unless it gave up)."""
    if not future.done():
        future.set_result((indication, status, index, varbinds))


def _indication_failure(indication: Any, auth: SnmpAuth) -> SnmpFailure:
    """Return the failure for a pysnmp error indication (a USM or context report, mostly)."""
    for cls, oid in _REPORTS:
        if isinstance(indication, cls):
            return SnmpFailure(*report_reason(oid, auth))
    if isinstance(indication, errind.ReportPduReceived):
        found = _OID_TEXT.search(str(indication))
        reported = found.group(0) if found else None
        if reported in (_UNKNOWN_CONTEXT, _UNAVAILABLE_CONTEXT):
            return _context_failure(auth, reported == _UNAVAILABLE_CONTEXT)
        return SnmpFailure(*report_reason(reported, auth))
    return SnmpFailure("snmp_error", f"SNMP engine error: {indication}")


def _context_failure(auth: SnmpAuth, unavailable: bool = False, why: str = "") -> SnmpFailure:
    """Return the unknown (or unavailable) context failure."""
    if unavailable:
        return SnmpFailure(
            "unavailable_context",
            f"SNMPv3 context {auth.context_name!r} unavailable: the agent knows it but cannot "
            "serve it now (proxied device down?)",
        )
    return SnmpFailure(
        "unknown_context",
        f"SNMPv3 unknown context {auth.context_name!r}: the agent serves no such context{why}",
    )


def _status_failure(
    status: int, index: int, varbinds: Sequence[tuple[Any, Any]], what: str, run: _Run
) -> SnmpFailure:
    """Return the failure for a Response whose error-status is set."""
    name = _ERROR_STATUS.get(status, f"error-status {status}")
    oid = f" at {varbinds[index - 1][0]}" if 0 < index <= len(varbinds) else ""
    if status == 16:
        auth = run.settings.resolved_auth
        return SnmpFailure(
            "authorization_error",
            f"SNMPv3 authorizationError: the agent's access control gives user "
            f"{auth.username!r} no read access to context {auth.context_name!r}",
        )
    return SnmpFailure("error_status", f"agent answered {name}{oid} to the {what}")


async def explain_silence(exc: NoAnswer, run: _Run, *, target: str) -> SnmpFailure:
    """Classify a poll that got no answer: ask the agent in plaintext, in the same context.

    Some agents (snmpsim) drop a request for an unknown context without a report. When the
    agent answers discovery, gives no USM error to an authenticated request in the context
    (an authPriv user asked at authNoPriv may get unsupportedSecLevel: its user and auth key
    are right all the same) and nothing of this poll was answered, the context is refused.
    A Response in the context proves the context right: then privacy is what fails. The
    plaintext check normally started at the first silent try (see _Run.explain_silence_early).
    """
    auth = run.settings.resolved_auth
    tries = (
        f"after {exc.tries} tries of {run.request_timeout:.3g}s"
        if exc.tries
        else "within the check's timeout"
    )
    remaining = run.deadline - time.monotonic()
    if not run.answered and (run.silence is not None or remaining >= 0.05):
        if run.silence is not None:
            usm = await run.silence  # bounded: it ends by the deadline
        else:
            ip, port = run.address
            usm = await usm_check(
                ip, port, auth, min(remaining, run.request_timeout), context=run.context
            )
        authenticated = usm.report == _UNSUPPORTED_LEVEL and auth.security_level == "authPriv"
        if usm.report in (_UNKNOWN_CONTEXT, _UNAVAILABLE_CONTEXT):
            return _context_failure(auth, usm.report == _UNAVAILABLE_CONTEXT)
        if usm.report is not None and not authenticated:
            return SnmpFailure(*report_reason(usm.report, auth))
        if usm.accepted and auth.security_level == "authPriv":
            return SnmpFailure(*report_reason("1.3.6.1.6.3.15.1.1.6.0", auth))
        if usm.discovered and not usm.accepted:
            return _context_failure(
                auth,
                why=" (it answers SNMPv3 discovery and accepts the user, but drops every "
                "request in this context)",
            )
    return SnmpFailure("timeout", f"timeout: no answer from {target} {tries}")
