"""The redfish probe: server hardware (DMTF Redfish BMCs) and storage (SNIA Swordfish) health.

One run reads the service root, then Systems (health, power state, storage), Chassis (power
supplies and their redundancy, fans, temperatures with thresholds; the older Power/Thermal
resources or the newer PowerSubsystem/ThermalSubsystem/Sensors), and Swordfish storage
(StorageServices or the service-level Storage collection: pools and volumes with capacity).
Collections are read with `$expand` when the service root says it is supported, otherwise
member by member; either way a run is bounded in requests and bytes. Everything the BMC sends
is untrusted: links must stay on the target, label values are cut, numbers are checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from yarl import URL

from vigie.core.expr import parse_condition
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.rules import Rule, Severity
from vigie.core.sanitise import sanitise
from vigie.core.secrets import ConfigPath, resolve_secret_field
from vigie.probes.base import Check, ProbeContext
from vigie.probes.http import parse_http_url
from vigie.probes.tls import SslContextCache, TlsSettings, describe_ssl_error, os_error_reason

__all__ = ["HEALTH_CODES", "RedfishProbe", "RedfishSettings", "default_rules"]

ROOT = "/redfish/v1"
HEALTH_CODES = {"OK": 0.0, "Warning": 1.0, "Critical": 2.0}
"""Redfish Status.Health -> the value of redfish_health (absent or unknown: no sample)."""
POWER_STATES = ("On", "Off", "PoweringOn", "PoweringOff", "Paused")
EXPAND = "$expand=.($levels=1)"
MAX_LABEL_CHARS = 64
MAX_PATH_CHARS = 512
MAX_ITEMS = 1024
"""Bound on the entries read from one inline array (PowerSupplies, Temperatures...)."""
MAX_TOKEN_CHARS = 4096
LOGOUT_TIMEOUT = 5.0
MAX_ERRORS = 20
"""Error texts kept per run (all are counted in redfish_probe_errors)."""
_CHUNK = 64 * 1024
_THREAD_PARSE = 1024 * 1024

Json = dict[str, Any]

_HELP = {
    "redfish_up": "1 if the Redfish service root answered, else 0.",
    "redfish_health": "Status.Health of a system, chassis or storage: 0 OK, 1 Warning, 2 Critical.",
    "redfish_health_rollup": "Status.HealthRollup (the resource and what it contains): 0 OK, "
    "1 Warning, 2 Critical.",
    "redfish_probe_requests": "HTTP requests made to the service in the last run.",
    "redfish_probe_response_bytes": "Bytes of response bodies read in the last run.",
    "redfish_probe_errors": "Resources that could not be read or understood in the last run.",
    "redfish_expand": "1 if the last run read collections with $expand, else 0.",
    "server_power_state": "Power state of a computer system (1 for the current state).",
    "server_power_supply_ok": "1 if the power supply reports health OK, else 0.",
    "server_power_supply_redundancy_ok": "1 if the power supply redundancy group reports "
    "health OK, else 0.",
    "server_fan_ok": "1 if the fan reports health OK, else 0.",
    "server_fan_speed_rpm": "Fan speed in revolutions per minute.",
    "server_fan_speed_ratio": "Fan speed as a ratio of its maximum (0-1).",
    "server_temperature_celsius": "Temperature reading.",
    "server_temperature_upper_warning_celsius": "Upper non-critical threshold of the sensor.",
    "server_temperature_upper_critical_celsius": "Upper critical threshold of the sensor.",
    "server_temperature_upper_fatal_celsius": "Upper fatal threshold of the sensor.",
    "server_temperature_alert_level": "0 normal, 1 at or above the warning threshold (or "
    "health Warning), 2 at or above critical (or health Critical), 3 at or above fatal.",
    "storage_controller_ok": "1 if the storage controller reports health OK, else 0.",
    "storage_drive_ok": "1 if the drive reports health OK, else 0.",
    "storage_drive_capacity_bytes": "Drive capacity.",
    "storage_volume_ok": "1 if the volume reports health OK, else 0.",
    "storage_volume_capacity_bytes": "Volume capacity (CapacityBytes).",
    "storage_volume_used_bytes": "Bytes of the volume consumed (Capacity.Data.ConsumedBytes).",
    "storage_pool_ok": "1 if the storage pool reports health OK, else 0.",
    "storage_pool_capacity_bytes": "Bytes allocated to the pool (Capacity.Data.AllocatedBytes).",
    "storage_pool_used_bytes": "Bytes of the pool consumed (Capacity.Data.ConsumedBytes).",
    "storage_pool_used_ratio": "Consumed over allocated bytes of the pool (0-1).",
}

# (name, expr, severity, for seconds, description): the rules every redfish check gets.
_RULES: tuple[tuple[str, str, Severity, float, str], ...] = (
    ("server_health_critical", 'redfish_health{type="System"} == 2', "down", 0.0,
     "The system reports Critical health."),
    ("server_health_warning", 'redfish_health{type="System"} == 1', "warning", 0.0,
     "The system reports Warning health."),
    ("server_powered_off", 'server_power_state{state="Off"} == 1', "down", 0.0,
     "The server is powered off."),
    ("chassis_health_critical", 'redfish_health{type="Chassis"} == 2', "warning", 0.0,
     "The chassis reports Critical health."),
    ("power_supply_failed", "server_power_supply_ok == 0", "warning", 0.0,
     "A power supply failed; the server runs on the others."),
    ("power_redundancy_lost", "server_power_supply_redundancy_ok == 0", "degraded", 0.0,
     "Power supply redundancy is lost: one more failure stops the server."),
    ("fan_failed", "server_fan_ok == 0", "warning", 0.0, "A fan failed."),
    ("temperature_warning", "server_temperature_alert_level >= 1", "warning", 0.0,
     "A temperature is at or above its warning threshold."),
    ("temperature_critical", "server_temperature_alert_level >= 2", "down", 0.0,
     "A temperature is at or above its critical threshold: the BMC may power the server off."),
    ("storage_controller_failed", "storage_controller_ok == 0", "warning", 0.0,
     "A storage controller is not healthy (its partner may carry the load)."),
    ("drive_failed", "storage_drive_ok == 0", "warning", 0.0,
     "A drive failed; RAID protection may be reduced (the volume rules say if data is hit)."),
    ("volume_failed", "storage_volume_ok == 0", "down", 0.0, "A volume is not healthy."),
    ("pool_failed", "storage_pool_ok == 0", "down", 0.0, "A storage pool is not healthy."),
    ("storage_health_critical", 'redfish_health{type="Storage"} == 2', "degraded", 0.0,
     "A storage subsystem or service reports Critical health."),
    ("pool_nearly_full", "storage_pool_used_ratio > 0.9", "warning", 600.0,
     "A storage pool is more than 90% used for 10 minutes."),
    ("redfish_partial_read", "redfish_probe_errors > 0", "warning", 0.0,
     "The BMC answers, but some resources could not be read (the check's error names them)."),
)  # fmt: skip


# The rules in plain words (en, fr), shown as the reason when one holds (pages and alerts).
_TEXTS: dict[str, tuple[tuple[str, str], ...]] = {
    "server_health_critical": (("en", "server health critical"),
                               ("fr", "santé du serveur critique")),
    "server_health_warning": (("en", "server health warning"),
                              ("fr", "santé du serveur en alerte")),
    "server_powered_off": (("en", "server powered off"), ("fr", "serveur éteint")),
    "chassis_health_critical": (("en", "chassis health critical"),
                                ("fr", "santé du châssis critique")),
    "power_supply_failed": (("en", "a power supply failed"),
                            ("fr", "une alimentation est en panne")),
    "power_redundancy_lost": (("en", "power supplies without redundancy"),
                              ("fr", "alimentations sans redondance")),
    "fan_failed": (("en", "a fan failed"), ("fr", "un ventilateur est en panne")),
    "temperature_warning": (("en", "temperature above its warning level"),
                            ("fr", "température au-dessus du seuil d'alerte")),
    "temperature_critical": (("en", "temperature above its critical level"),
                             ("fr", "température au-dessus du seuil critique")),
    "storage_controller_failed": (("en", "a storage controller failed"),
                                  ("fr", "un contrôleur de stockage est en panne")),
    "drive_failed": (("en", "a drive failed"), ("fr", "un disque est en panne")),
    "volume_failed": (("en", "a volume failed"), ("fr", "un volume est en panne")),
    "pool_failed": (("en", "a storage pool failed"), ("fr", "un pool de stockage est en panne")),
    "storage_health_critical": (("en", "storage health critical"),
                                ("fr", "santé du stockage critique")),
    "pool_nearly_full": (("en", "a storage pool is {value:.0%} full (alert above {threshold:.0%})"),
                         ("fr", "un pool de stockage est plein à {value:.0%} (alerte au-delà de "
                                "{threshold:.0%})")),
    "redfish_partial_read": (("en", "the BMC answers but some resources could not be read"),
                             ("fr", "le BMC répond mais certaines ressources sont illisibles")),
}  # fmt: skip


def default_rules() -> list[tuple[str, str, Severity, float, str]]:
    """Return the default rules as (name, expr, severity, for seconds, description), for docs."""
    return list(_RULES)


# --------------------------------------------------------------------------- settings

Collect = Literal["systems", "chassis", "storage"]
COLLECT: tuple[Collect, ...] = ("systems", "chassis", "storage")


class RedfishSettings(BaseModel):
    """Settings of a redfish check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auth: Literal["session", "basic", "none"] = Field(
        "session",
        description="session: log in once (SessionService) and reuse X-Auth-Token; basic: "
        "HTTP basic auth on every request; none: no credentials.",
    )
    username: str | None = Field(None, description="BMC user name.")
    password: SecretStr | None = Field(None, description="Password (prefer password_file).")
    password_file: ConfigPath | None = Field(
        None, description="File holding the password, read once at load."
    )
    tls: TlsSettings = Field(
        default_factory=TlsSettings,
        description="Server verification; BMCs often have self-signed certificates: give "
        "their CA in ca_file rather than verify: false.",
    )
    max_concurrency: int = Field(
        2, ge=1, le=8, description="Requests in flight to the BMC at once within one run."
    )
    max_requests: int = Field(
        1000, ge=1, le=100_000, description="Requests per run at most; the run fails beyond."
    )
    max_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Response bytes per run at most; the run fails beyond.",
    )
    expand: bool = Field(
        True, description="Use $expand on collections when the service root supports it."
    )
    collect: list[Collect] = Field(
        default_factory=lambda: list(COLLECT),
        description="What to read: systems (with their storage), chassis (power, thermal), "
        "storage (Swordfish StorageServices and /redfish/v1/Storage).",
    )
    default_rules: bool = Field(
        True,
        description="Apply the shipped health rules (power supplies, fans, temperatures,"
        " drives, volumes, pools) to this check.",
    )

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        """Read the password file and check that credentials go with the auth mode."""
        password = resolve_secret_field(self, "password")
        if self.auth != "none" and (self.username is None or password is None):
            raise ValueError(f"auth {self.auth} needs username and password (or password_file)")
        if self.username is not None and (":" in self.username or not self.username.isprintable()):
            raise ValueError("username must be printable and must not contain ':'")
        return self

    def health_rules(self) -> list[Rule]:
        """Return the shipped health rules for this check (the health engine collects them)."""
        if not self.default_rules:
            return []
        return [
            Rule(
                name=name,
                condition=parse_condition(expr),
                clear=None,
                severity=severity,
                for_=for_,
                clear_for=0.0,
                text=_TEXTS[name],
            )
            for name, expr, severity, for_, _ in _RULES
        ]


# --------------------------------------------------------------------------- helpers


def _label(value: object, fallback: str = "") -> str:
    """Return a bounded, printable label value from untrusted data."""
    if isinstance(value, str) and value:
        return sanitise(value, MAX_LABEL_CHARS)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return fallback


def _num(value: object) -> float | None:
    """Return value as a finite float, or None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def _dict(value: object) -> Json:
    """Return value if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _status(doc: Json) -> tuple[str | None, str | None, str | None]:
    """Return (Health, HealthRollup, State) of a resource's Status, each None if absent."""
    status = _dict(doc.get("Status"))
    out = [status.get(k) for k in ("Health", "HealthRollup", "State")]
    health, rollup, state = (v if isinstance(v, str) else None for v in out)
    return health, rollup, state


def _ok(doc: Json) -> float | None:
    """Return 1 if healthy, 0 if not, None when absent (empty bay) or unknown."""
    health, _, state = _status(doc)
    if state == "Absent":
        return None
    if health is not None and health in HEALTH_CODES:
        return 1.0 if health == "OK" else 0.0
    if state == "Enabled":
        return 1.0
    if state in ("UnavailableOffline", "Quiesced"):
        return 0.0
    return None


def _odata_id(doc: object) -> str | None:
    """Return the @odata.id of a reference or resource, if it is a string."""
    ref = _dict(doc).get("@odata.id")
    return ref if isinstance(ref, str) else None


def _short(path: str) -> str:
    """Return a resource path without the service root prefix, as a bounded label value."""
    return _label(path.removeprefix(ROOT).strip("/"), "root")


def _ident(doc: Json, path: str, fallback: str = "") -> str:
    """Return the Id of a resource, else the last segment of its path."""
    return _label(doc.get("Id"), _label(path.rstrip("/").rpartition("/")[2], fallback))


def _items(doc: Json, key: str) -> list[Json]:
    """Return the JSON objects of an inline array (bounded); a non-list gives none."""
    value = doc.get(key)
    if not isinstance(value, list):
        return []
    return [v for v in value[:MAX_ITEMS] if isinstance(v, dict)]


def _member_name(item: Json, index: int) -> str:
    """Return a label for an inline array entry: MemberId, Name or its position."""
    return _label(item.get("MemberId"), _label(item.get("Name"), str(index)))


def _safe_path(path: str) -> str | None:
    """Return path if it is a link under the service root of the target, else None."""
    if (
        len(path) > MAX_PATH_CHARS
        or not path.startswith(ROOT)
        or not path.isprintable()
        or any(c in path for c in " ?#\\")
        or "/../" in path + "/"
    ):
        return None
    return path.rstrip("/") or ROOT


class _Samples:
    """The samples of one run, without duplicate series (a BMC may repeat an Id)."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

    def add(self, name: str, value: float | None, *labels: tuple[str, str]) -> None:
        """Add a gauge sample unless value is None or the series is already there."""
        if value is None:
            return
        key = (name, labels)
        if key in self._seen:
            return
        self._seen.add(key)
        self.samples.append(Sample(name=name, value=value, labels=labels, help=_HELP[name]))

    def stateset(
        self, name: str, current: str, states: Iterable[str], *labels: tuple[str, str]
    ) -> None:
        """Add one sample per known state, 1 for the current one."""
        for state in states:
            key = (name, (*labels, ("state", state)))
            if key in self._seen:
                continue
            self._seen.add(key)
            self.samples.append(
                Sample(
                    name=name,
                    value=1.0 if state == current else 0.0,
                    labels=key[1],
                    type="stateset",
                    help=_HELP[name],
                )
            )


@dataclass(slots=True)
class _Session:
    """A Redfish session of one (target, user): its token and where to delete it."""

    token: str
    location: str | None
    session: aiohttp.ClientSession
    base: str
    ssl: ssl.SSLContext | bool


class LoginError(Exception):
    """Logging in to the SessionService failed; the message says why (never the password)."""


# --------------------------------------------------------------------------- one run


@dataclass(slots=True)
class _Run:
    """The state of one probe run: budget, concurrency, errors, samples, auth."""

    probe: RedfishProbe
    check: Check
    settings: RedfishSettings
    ctx: ProbeContext
    base: str
    sslctx: ssl.SSLContext | bool
    sem: asyncio.Semaphore
    out: _Samples = field(default_factory=_Samples)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    requests: int = 0
    bytes_read: int = 0
    stopped: str | None = None
    expand: bool = False
    visited: set[str] = field(default_factory=set)
    sessions_link: str | None = None

    def error(self, path: str, reason: str) -> None:
        """Record that a resource could not be read or understood."""
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:  # a hostile collection could yield one per member
            text = bound_text(f"{_short(path) if path.startswith(ROOT) else path}: {reason}", 200)
            self.errors.append(text)
            self.ctx.log("redfish_resource_error", error=text)

    def _headers(self, token: str | None) -> dict[str, str]:
        """Return the request headers with the credentials of the auth mode."""
        headers = {"Accept": "application/json", "OData-Version": "4.0"}
        if self.settings.auth == "basic":
            headers["Authorization"] = aiohttp.encode_basic_auth(
                self.settings.username or "", _secret(self.settings.password)
            )
        elif token is not None:
            headers["X-Auth-Token"] = token
        return headers

    async def get(self, raw_path: str, expand: bool = False) -> Json | None:
        """GET a resource as a JSON object; None (error recorded) if it cannot be had."""
        path = _safe_path(raw_path)
        if path is None:
            self.error(bound_text(raw_path, 100), "link outside the service root, ignored")
            return None
        for attempt in (1, 2):
            if self.stopped is not None:
                return None
            token = None
            if self.settings.auth == "session" and path != ROOT:
                try:
                    token = await self.probe.token(self)
                except LoginError as exc:
                    self.stop(str(exc))
                    return None
            status, body = await self._request(path, expand, token)
            if status is None:
                return None
            if status == 401 and token is not None and attempt == 1:
                # The session expired or the BMC restarted: log in again once.
                self.probe.forget(self, token)
                self.ctx.log("redfish_session_expired", path=path)
                continue
            if status == 401:
                # Wrong credentials: nothing else will be readable, the run fails.
                self.stop(f"{_short(path)}: status 401 (the BMC refuses the credentials)")
                return None
            if status != 200:
                self.error(path, f"status {status}")
                return None
            try:
                # Large bodies (expanded collections) are parsed off the event loop.
                doc = (
                    await asyncio.to_thread(json.loads, body)
                    if len(body) > _THREAD_PARSE
                    else json.loads(body)
                )
            except (ValueError, RecursionError) as exc:  # RecursionError: nesting bomb
                self.error(path, f"not JSON ({exc.__class__.__name__})")
                return None
            if not isinstance(doc, dict):
                self.error(path, f"not a JSON object but {type(doc).__name__}")
                return None
            return doc
        return None

    async def _request(
        self, path: str, expand: bool, token: str | None
    ) -> tuple[int | None, bytes]:
        """Do one bounded GET; return (status, body) or (None, b"") when it failed."""
        async with self.sem:
            if self.stopped is not None:
                return None, b""
            if self.requests >= self.settings.max_requests:
                self.stop(
                    f"stopped after {self.requests} requests (max_requests); raise it or "
                    "narrow collect"
                )
                return None, b""
            self.requests += 1
            url = URL(self.base + path + ("?" + EXPAND if expand else ""), encoded=True)
            try:
                async with self.ctx.session.get(
                    url, headers=self._headers(token), ssl=self.sslctx, allow_redirects=False
                ) as resp:
                    if resp.status != 200:
                        return resp.status, b""
                    body = await self._read(resp)
            except aiohttp.ClientError as exc:
                self._client_error(path, exc)
                return None, b""
            except OSError as exc:
                self.error(path, f"connection error: {os_error_reason(exc)}")
                return None, b""
        if body is None:
            return None, b""
        return 200, body

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """Read a body within the run's byte budget; None (run stopped) beyond it."""
        chunks: list[bytes] = []
        while True:
            chunk = await resp.content.read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            self.bytes_read += len(chunk)
            if self.bytes_read > self.settings.max_bytes:
                resp.close()
                self.stop(
                    f"stopped after reading {self.settings.max_bytes} bytes (max_bytes) at "
                    f"{_short(resp.url.path)}"
                )
                return None
            chunks.append(chunk)

    def _client_error(self, path: str, exc: aiohttp.ClientError) -> None:
        """Record a failed request; connection-level failures stop the run."""
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            self.stop(describe_ssl_error(exc.certificate_error))
        elif isinstance(exc, aiohttp.ClientConnectorSSLError):
            self.stop(describe_ssl_error(exc.os_error))
        elif isinstance(exc, aiohttp.ClientConnectorError):
            self.stop(f"connect to {exc.host}:{exc.port} failed: {os_error_reason(exc.os_error)}")
        elif isinstance(exc, aiohttp.ServerDisconnectedError):
            self.error(path, "server closed the connection without a complete response")
        else:
            self.error(path, bound_text(f"{type(exc).__name__}: {exc}", 150))

    def stop(self, reason: str) -> None:
        """Stop the run: no more requests; the result fails with reason."""
        if self.stopped is None:
            self.stopped = bound_text(reason)
            self.ctx.log("redfish_stopped", reason=self.stopped)

    async def members(self, doc: Json | None, key: str) -> list[tuple[str, Json]]:
        """Return (path, resource) of each member of the collection doc[key] links to."""
        link = _odata_id(_dict(doc).get(key)) if doc is not None else None
        if link is None:
            return []
        return await self.collection(link)

    async def collection(self, link: str) -> list[tuple[str, Json]]:
        """Read a collection and its members (inline when expanded, else one GET each)."""
        coll = await self.get(link, expand=self.expand)
        if coll is None:
            return []
        members = coll.get("Members")
        if not isinstance(members, list):
            self.error(link, "Members is missing or not a list")
            return []
        found: list[tuple[str, Json]] = []
        to_fetch: list[str] = []
        for member in members:
            ref = _odata_id(member)
            if ref is None:
                self.error(link, "a member has no @odata.id")
                continue
            if ref in self.visited:
                continue
            self.visited.add(ref)
            if self.expand and isinstance(member, dict) and len(member) > 1:
                found.append((ref, member))  # expanded inline
            else:
                to_fetch.append(ref)
        # Past the request budget the run stops anyway: do not build a task per member.
        to_fetch = to_fetch[: max(0, self.settings.max_requests - self.requests) + 1]
        docs = await asyncio.gather(*(self.get(ref) for ref in to_fetch))
        found += [(ref, d) for ref, d in zip(to_fetch, docs, strict=True) if d is not None]
        return found

    async def linked(self, doc: Json, key: str) -> tuple[str, Json] | None:
        """Read the single resource doc[key] links to, if any."""
        link = _odata_id(doc.get(key))
        if link is None:
            return None
        found = await self.get(link)
        return (link, found) if found is not None else None


def _secret(value: SecretStr | None) -> str:
    """Return the value of a secret, empty if unset."""
    return value.get_secret_value() if value is not None else ""


# --------------------------------------------------------------------------- readers


def _health(run: _Run, kind: str, path: str, doc: Json) -> None:
    """Add redfish_health and redfish_health_rollup of a top-level resource."""
    health, rollup, _ = _status(doc)
    labels = (("type", kind), ("resource", _short(path)))
    run.out.add("redfish_health", HEALTH_CODES.get(health or ""), *labels)
    run.out.add("redfish_health_rollup", HEALTH_CODES.get(rollup or ""), *labels)


async def _systems(run: _Run, root: Json) -> None:
    """Read every computer system: health, power state, and its storage."""
    systems = await run.members(root, "Systems")
    tasks = []
    for path, doc in systems:
        system = _ident(doc, path)
        _health(run, "System", path, doc)
        power = doc.get("PowerState")
        if isinstance(power, str) and power in POWER_STATES:
            run.out.stateset("server_power_state", power, POWER_STATES, ("system", system))
        elif power is not None:
            run.error(path, f"unknown PowerState {bound_text(str(power), 40)!r}")
        tasks += [_storage(run, p, d) for p, d in await run.members(doc, "Storage")]
    await asyncio.gather(*tasks)


async def _chassis(run: _Run, root: Json) -> None:
    """Read every chassis: power supplies, redundancy, fans and temperatures."""
    tasks: list[Awaitable[None]] = []
    for path, doc in await run.members(root, "Chassis"):
        _health(run, "Chassis", path, doc)
        chassis = _ident(doc, path)
        if _odata_id(doc.get("PowerSubsystem")) is not None:
            tasks.append(_power_subsystem(run, chassis, doc))
        elif _odata_id(doc.get("Power")) is not None:
            tasks.append(_power(run, chassis, doc))
        if _odata_id(doc.get("ThermalSubsystem")) is not None:
            tasks.append(_thermal_subsystem(run, chassis, doc))
        elif _odata_id(doc.get("Thermal")) is not None:
            tasks.append(_thermal(run, chassis, doc))
    await asyncio.gather(*tasks)


def _redundancy(run: _Run, chassis: str, groups: list[Json]) -> None:
    """Add server_power_supply_redundancy_ok for each redundancy group."""
    for i, group in enumerate(groups):
        name = _label(group.get("MemberId"), _label(group.get("Name"), str(i)))
        run.out.add(
            "server_power_supply_redundancy_ok", _ok(group), ("chassis", chassis), ("group", name)
        )


async def _power(run: _Run, chassis: str, doc: Json) -> None:
    """Read the older Power resource: PowerSupplies and Redundancy inline."""
    found = await run.linked(doc, "Power")
    if found is None:
        return
    path, power = found
    if not isinstance(power.get("PowerSupplies", []), list):
        run.error(path, "PowerSupplies is not a list")
    for i, psu in enumerate(_items(power, "PowerSupplies")):
        run.out.add(
            "server_power_supply_ok", _ok(psu), ("chassis", chassis), ("psu", _member_name(psu, i))
        )
    _redundancy(run, chassis, _items(power, "Redundancy"))


async def _power_subsystem(run: _Run, chassis: str, doc: Json) -> None:
    """Read the newer PowerSubsystem: its PowerSupplies collection and redundancy groups."""
    found = await run.linked(doc, "PowerSubsystem")
    if found is None:
        return
    _, sub = found
    for path, psu in await run.members(sub, "PowerSupplies"):
        run.out.add(
            "server_power_supply_ok", _ok(psu), ("chassis", chassis), ("psu", _ident(psu, path))
        )
    _redundancy(run, chassis, _items(sub, "PowerSupplyRedundancy"))


def _fan(run: _Run, chassis: str, name: str, fan: Json) -> None:
    """Add a fan's health and speed (RPM or percent, as the BMC reports it)."""
    labels = (("chassis", chassis), ("fan", name))
    run.out.add("server_fan_ok", _ok(fan), *labels)
    speed = _dict(fan.get("SpeedPercent"))  # newer Fan resource
    if speed:
        percent = _num(speed.get("Reading"))
        run.out.add(
            "server_fan_speed_ratio", percent / 100 if percent is not None else None, *labels
        )
        run.out.add("server_fan_speed_rpm", _num(speed.get("SpeedRPM")), *labels)
        return
    reading = _num(fan.get("Reading"))
    if fan.get("ReadingUnits") == "Percent":
        run.out.add(
            "server_fan_speed_ratio", reading / 100 if reading is not None else None, *labels
        )
    else:
        run.out.add("server_fan_speed_rpm", reading, *labels)


def _temperature(
    run: _Run,
    chassis: str,
    name: str,
    doc: Json,
    *,
    reading: float | None,
    thresholds: tuple[float | None, float | None, float | None],
) -> None:
    """Add a temperature, its thresholds and its alert level."""
    if _status(doc)[2] == "Absent":
        return
    labels = (("chassis", chassis), ("sensor", name))
    warn, crit, fatal = thresholds
    run.out.add("server_temperature_celsius", reading, *labels)
    run.out.add("server_temperature_upper_warning_celsius", warn, *labels)
    run.out.add("server_temperature_upper_critical_celsius", crit, *labels)
    run.out.add("server_temperature_upper_fatal_celsius", fatal, *labels)
    level = {"Warning": 1.0, "Critical": 2.0}.get(_status(doc)[0] or "", 0.0)
    if reading is not None:
        for threshold, value in ((warn, 1.0), (crit, 2.0), (fatal, 3.0)):
            if threshold is not None and reading >= threshold:
                level = max(level, value)
    if reading is not None or level > 0:
        run.out.add("server_temperature_alert_level", level, *labels)


async def _thermal(run: _Run, chassis: str, doc: Json) -> None:
    """Read the older Thermal resource: Temperatures and Fans inline."""
    found = await run.linked(doc, "Thermal")
    if found is None:
        return
    path, thermal = found
    for key in ("Temperatures", "Fans"):
        if not isinstance(thermal.get(key, []), list):
            run.error(path, f"{key} is not a list")
    for i, temp in enumerate(_items(thermal, "Temperatures")):
        thresholds = (
            _num(temp.get("UpperThresholdNonCritical")),
            _num(temp.get("UpperThresholdCritical")),
            _num(temp.get("UpperThresholdFatal")),
        )
        _temperature(
            run,
            chassis,
            _member_name(temp, i),
            temp,
            reading=_num(temp.get("ReadingCelsius")),
            thresholds=thresholds,
        )
    for i, fan in enumerate(_items(thermal, "Fans")):
        if _status(fan)[2] != "Absent":
            _fan(run, chassis, _member_name(fan, i), fan)


async def _thermal_subsystem(run: _Run, chassis: str, doc: Json) -> None:
    """Read the newer ThermalSubsystem fans and the chassis' temperature Sensors."""
    found = await run.linked(doc, "ThermalSubsystem")
    if found is not None:
        for path, fan in await run.members(found[1], "Fans"):
            if _status(fan)[2] != "Absent":
                _fan(run, chassis, _ident(fan, path), fan)
    for path, sensor in await run.members(doc, "Sensors"):
        if sensor.get("ReadingType") != "Temperature":
            continue
        limits = _dict(sensor.get("Thresholds"))
        thresholds = tuple(
            _num(_dict(limits.get(k)).get("Reading"))
            for k in ("UpperCaution", "UpperCritical", "UpperFatal")
        )
        _temperature(
            run,
            chassis,
            _ident(sensor, path),
            sensor,
            reading=_num(sensor.get("Reading")),
            thresholds=(thresholds[0], thresholds[1], thresholds[2]),
        )


def _capacity(doc: Json, key: str) -> float | None:
    """Return Capacity.Data.<key> of a Swordfish resource."""
    return _num(_dict(_dict(doc.get("Capacity")).get("Data")).get(key))


async def _storage(run: _Run, path: str, doc: Json) -> None:
    """Read one Storage (or Swordfish StorageService): controllers, drives, volumes, pools."""
    storage = _short(path)
    _health(run, "Storage", path, doc)
    controllers = _items(doc, "StorageControllers")  # older inline form
    for i, ctl in enumerate(controllers):
        run.out.add(
            "storage_controller_ok",
            _ok(ctl),
            ("storage", storage),
            ("controller", _member_name(ctl, i)),
        )
    drive_refs = [r for r in (_odata_id(d) for d in _items(doc, "Drives")) if r is not None]

    async def controllers_coll() -> None:
        for cpath, ctl in await run.members(doc, "Controllers"):
            run.out.add(
                "storage_controller_ok",
                _ok(ctl),
                ("storage", storage),
                ("controller", _ident(ctl, cpath)),
            )

    async def drive(ref: str) -> None:
        if ref in run.visited:
            return
        run.visited.add(ref)
        found = await run.get(ref)
        if found is not None:
            _drive(run, storage, ref, found)

    async def drives_coll() -> None:
        for dpath, found in await run.members(doc, "Drives"):
            _drive(run, storage, dpath, found)

    async def volumes() -> None:
        for vpath, vol in await run.members(doc, "Volumes"):
            labels = (("storage", storage), ("volume", _ident(vol, vpath)))
            run.out.add("storage_volume_ok", _ok(vol), *labels)
            capacity = _num(vol.get("CapacityBytes"))
            if capacity is None:
                capacity = _capacity(vol, "AllocatedBytes")
            run.out.add("storage_volume_capacity_bytes", capacity, *labels)
            run.out.add("storage_volume_used_bytes", _capacity(vol, "ConsumedBytes"), *labels)

    async def pools() -> None:
        for ppath, pool in await run.members(doc, "StoragePools"):
            labels = (("storage", storage), ("pool", _ident(pool, ppath)))
            run.out.add("storage_pool_ok", _ok(pool), *labels)
            allocated = _capacity(pool, "AllocatedBytes")
            used = _capacity(pool, "ConsumedBytes")
            run.out.add("storage_pool_capacity_bytes", allocated, *labels)
            run.out.add("storage_pool_used_bytes", used, *labels)
            if allocated and used is not None:
                run.out.add("storage_pool_used_ratio", used / allocated, *labels)

    jobs: list[Awaitable[None]] = [controllers_coll(), volumes(), pools()]
    if drive_refs:
        jobs += [drive(ref) for ref in drive_refs]
    elif isinstance(doc.get("Drives"), dict):
        jobs.append(drives_coll())
    await asyncio.gather(*jobs)


def _drive(run: _Run, storage: str, path: str, doc: Json) -> None:
    """Add a drive's health and capacity."""
    labels = (("storage", storage), ("drive", _ident(doc, path)))
    run.out.add("storage_drive_ok", _ok(doc), *labels)
    run.out.add("storage_drive_capacity_bytes", _num(doc.get("CapacityBytes")), *labels)


async def _swordfish(run: _Run, root: Json) -> None:
    """Read Swordfish storage: StorageServices and the service-level Storage collection."""
    found = [*await run.members(root, "StorageServices"), *await run.members(root, "Storage")]
    await asyncio.gather(*(_storage(run, path, doc) for path, doc in found))


def _expand_supported(root: Json) -> bool:
    """Whether the service root says `$expand=.($levels=1)` is supported."""
    expand = _dict(_dict(root.get("ProtocolFeaturesSupported")).get("ExpandQuery"))
    return expand.get("NoLinks") is True and expand.get("Levels") is True


# --------------------------------------------------------------------------- probe


class RedfishProbe:
    """Probe kind "redfish": server and storage hardware health from a BMC or array.

    Sessions (auth: session) are kept per target and user across runs and reused until the
    BMC answers 401; `close()` deletes them on shutdown so BMCs, which hold few sessions, do
    not run out.
    """

    kind: ClassVar[str] = "redfish"
    Settings: ClassVar[type[BaseModel]] = RedfishSettings

    def __init__(self) -> None:
        """Start with no sessions and an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def parse_target(self, target: str) -> str:
        """Return the service's base URL (scheme://host[:port]) or raise ValueError."""
        url = parse_http_url(target, "; use username/password")
        shown = bound_text(target, 200)
        if url.path not in ("", "/", ROOT, ROOT + "/") or url.query_string:
            raise ValueError(f"must be the BMC's base URL (path empty or {ROOT}), got {shown!r}")
        return str(url.origin())

    def host_of(self, target: str) -> str:
        """Return the host of the URL."""
        return URL(target).host or ""

    async def __call__(self, check: Check[RedfishSettings], ctx: ProbeContext) -> ProbeResult:
        """Read the service and report its hardware."""
        settings = check.settings
        sslctx: ssl.SSLContext | bool = False
        if check.target.startswith("https:"):
            try:
                sslctx = self._ssl_contexts.get(settings.tls)
            except ValueError as exc:
                return ProbeResult(success=False, error=bound_text(f"TLS: {exc}"))
        run = _Run(
            probe=self,
            check=check,
            settings=settings,
            ctx=ctx,
            base=check.target,
            sslctx=sslctx,
            sem=asyncio.Semaphore(settings.max_concurrency),
        )
        ctx.log("redfish_start", target=check.target, auth=settings.auth)
        root = await run.get(ROOT)
        run.out.add("redfish_up", 1.0 if root is not None else 0.0)
        if root is not None:
            run.sessions_link = _odata_id(_dict(root.get("Links")).get("Sessions"))
            run.expand = settings.expand and _expand_supported(root)
            jobs: list[Callable[[_Run, Json], Awaitable[None]]] = []
            if "systems" in settings.collect:
                jobs.append(_systems)
            if "chassis" in settings.collect:
                jobs.append(_chassis)
            if "storage" in settings.collect:
                jobs.append(_swordfish)
            await asyncio.gather(*(job(run, root) for job in jobs))
        run.out.add("redfish_expand", 1.0 if run.expand else 0.0)
        run.out.add("redfish_probe_requests", float(run.requests))
        run.out.add("redfish_probe_response_bytes", float(run.bytes_read))
        run.out.add("redfish_probe_errors", float(run.error_count))
        # The run fails when the BMC cannot be read at all (no service root, login refused,
        # budget exceeded). One unreadable resource only makes it partial: the server is not
        # DOWN for a 500 on its Thermal page (redfish_partial_read makes it WARNING), and the
        # error still names what could not be read.
        error = run.stopped
        if error is None and root is None:
            error = "cannot read the service root"
        success = error is None
        if run.errors:
            shown = "; ".join(run.errors[:3])
            n = run.error_count
            more = f" (+{n - 3} more)" if n > 3 else ""
            counted = f"{n} error{'s' if n > 1 else ''}: {shown}{more}"
            error = f"{error}; {shown}{more}" if error else f"partial read, {counted}"
        if error is not None:
            error = bound_text(error)
        ctx.log("redfish_done", requests=run.requests, bytes=run.bytes_read, errors=run.error_count)
        return ProbeResult(success=success, error=error, samples=tuple(run.out.samples))

    # ----------------------------------------------------------------------- sessions

    async def token(self, run: _Run) -> str:
        """Return the session token of the run's target and user, logging in if needed."""
        key = (run.base, run.settings.username or "")
        current = self._sessions.get(key)
        if current is not None:
            return current.token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            current = self._sessions.get(key)
            if current is None:
                current = await self._login(run)
                self._sessions[key] = current
        return current.token

    def forget(self, run: _Run, token: str) -> None:
        """Drop a session the BMC refused (401), unless another task already replaced it."""
        key = (run.base, run.settings.username or "")
        current = self._sessions.get(key)
        if current is not None and current.token == token:
            del self._sessions[key]

    async def _login(self, run: _Run) -> _Session:
        """POST the credentials to the SessionService; raise LoginError saying why it failed."""
        link = run.sessions_link or f"{ROOT}/SessionService/Sessions"
        path = _safe_path(link) or f"{ROOT}/SessionService/Sessions"
        body = {"UserName": run.settings.username, "Password": _secret(run.settings.password)}
        run.ctx.log("redfish_login", path=path, user=run.settings.username)
        run.requests += 1
        try:
            async with run.ctx.session.post(
                URL(run.base + path, encoded=True),
                json=body,
                headers={"Accept": "application/json", "OData-Version": "4.0"},
                ssl=run.sslctx,
                allow_redirects=False,
            ) as resp:
                token = resp.headers.get("X-Auth-Token", "")
                location = resp.headers.get("Location")
                status = resp.status
        except aiohttp.ClientError as exc:
            raise LoginError(f"login to {_short(path)} failed: {type(exc).__name__}") from None
        except OSError as exc:
            raise LoginError(f"login to {_short(path)} failed: {os_error_reason(exc)}") from None
        if status not in (200, 201):
            raise LoginError(f"login to {_short(path)} failed: status {status}")
        if (
            not token
            or len(token) > MAX_TOKEN_CHARS
            or not token.isascii()
            or not token.isprintable()
        ):
            raise LoginError(f"login to {_short(path)} gave no usable X-Auth-Token")
        session_path = None
        if location:
            loc = URL(location)
            if not loc.is_absolute() or str(loc.origin()) == run.base:
                session_path = _safe_path(loc.path)
        return _Session(token, session_path, run.ctx.session, run.base, run.sslctx)

    async def close(self) -> None:
        """Log out of every session (DELETE, bounded in time); errors are ignored."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for sess in sessions:
            if sess.location is None or sess.session.closed:
                continue
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with asyncio.timeout(LOGOUT_TIMEOUT):
                    async with sess.session.delete(
                        URL(sess.base + sess.location, encoded=True),
                        headers={"X-Auth-Token": sess.token},
                        ssl=sess.ssl,
                        allow_redirects=False,
                    ) as resp:
                        await resp.read()
