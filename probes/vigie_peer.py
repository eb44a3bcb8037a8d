"""The vigie probe: one Vigie replica watching another (its /-/healthy and its heartbeat).

A replica answering /-/healthy proves its web server runs; its heartbeat, the wall time of its
last health evaluation read from /-/replica, proves its health loop runs too (a stuck loop
detects nothing). The heartbeat's age is taken on the peer's own clock (its `now` minus its
`heartbeat`), so clock skew between two datacenters does not count. The replica answering
must be the one expected: a URL pointing at the wrong replica fails the check.

Replicas started together come up a few seconds apart: a peer that has not answered since
this process started is not judged during `startup_grace` (the run succeeds, its error saying
so), rather than paged as lost while it boots. Once it answered, every failure counts.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from yarl import URL

from vigie.core.durations import Duration
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.core.secrets import ConfigPath, resolve_secret_field
from vigie.probes.base import Check, ProbeContext
from vigie.probes.http import parse_http_url
from vigie.probes.tls import SslContextCache, TlsSettings, describe_ssl_error

__all__ = ["REPLICA_PATH", "VigiePeerProbe", "VigiePeerSettings"]

REPLICA_PATH = "/-/replica"
"""Where a Vigie serves who it is and its heartbeat, as JSON (monitor.replicas builds it)."""
MAX_BODY_BYTES = 64 * 1024
"""A replica's answer is a few hundred bytes: anything larger is not a Vigie's."""
MAX_RESOLVED = 100
"""Alerts a peer resolved lately, kept as samples: the most recent ones, at most."""
RESOLVED = "vigie_peer_resolved_timestamp_seconds"
"""One sample per alert the peer resolved lately (label `alert`: its key): monitor.replicas
holds this replica's keep-alives of them, which would re-fire them at Alertmanager."""


class VigiePeerSettings(BaseModel):
    """Settings of a vigie check: which replica must answer, how old its heartbeat may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: str | None = Field(
        None, description="Name the replica must answer with; default: any."
    )
    max_heartbeat_age: Duration = Field(
        30.0, description="Oldest heartbeat (last health evaluation) accepted, on its clock."
    )
    username: str | None = Field(None, description="Basic auth user (the peer's web.yml).")
    password: SecretStr | None = Field(None, description="Basic auth password (prefer the file).")
    password_file: ConfigPath | None = Field(None, description="File holding the password.")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="Verification for https.")
    startup_grace: Duration | Literal[0] = Field(
        60.0, description="After this Vigie starts, a peer that never answered is not judged."
    )

    @model_validator(mode="after")
    def _resolve(self) -> VigiePeerSettings:
        """Read the password from its file; a user and a password go together."""
        resolve_secret_field(self, "password")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password (or password_file), or neither")
        return self


def _gauge(name: str, value: float, help: str) -> Sample:
    return Sample(name=name, value=value, type="gauge", help=help)


class VigiePeerProbe:
    """Probe kind "vigie": a peer replica's liveness, heartbeat and identity."""

    kind: ClassVar[str] = "vigie"
    Settings: ClassVar[type[BaseModel]] = VigiePeerSettings

    def __init__(self) -> None:
        """Start with an empty SSL context cache; no peer has answered yet."""
        self._ssl_contexts = SslContextCache()
        self._started = time.monotonic()
        self._answered: set[str] = set()

    def parse_target(self, target: str) -> str:
        """Return the peer's base URL (http or https, no credentials, no trailing slash)."""
        url = parse_http_url(target, ": use username and password_file")
        return str(url.with_query(None).with_fragment(None)).rstrip("/")

    def host_of(self, target: str) -> str:
        """Return the host of the URL."""
        return URL(target).host or ""

    async def _get(
        self, url: str, settings: VigiePeerSettings, sslctx: ssl.SSLContext, ctx: ProbeContext
    ) -> tuple[int, bytes]:
        """GET a URL of the peer; return its status and body (at most MAX_BODY_BYTES + 1)."""
        auth = None
        if settings.username is not None and settings.password is not None:
            auth = aiohttp.BasicAuth(settings.username, settings.password.get_secret_value())
        async with ctx.session.get(
            url,
            auth=auth,
            ssl=sslctx,
            server_hostname=settings.tls.server_name,
            allow_redirects=False,
        ) as resp:
            return resp.status, await resp.content.read(MAX_BODY_BYTES + 1)

    async def __call__(self, check: Check[VigiePeerSettings], ctx: ProbeContext) -> ProbeResult:
        """Probe the peer; a failure is forgiven while it may still be starting (see above)."""
        result = await self._probe(check, ctx)
        if result.success:
            self._answered.add(check.id)
        elif (
            check.id not in self._answered
            and time.monotonic() - self._started < check.settings.startup_grace
        ):
            return ProbeResult(
                success=True,
                samples=result.samples,
                error=bound_text(f"not judged yet (startup grace): {result.error}"),
            )
        return result

    async def _probe(self, check: Check[VigiePeerSettings], ctx: ProbeContext) -> ProbeResult:
        """Ask the peer whether it is healthy, then who it is and when it last evaluated."""
        settings = check.settings
        try:
            sslctx = self._ssl_contexts.get(settings.tls)
        except ValueError as exc:
            return ProbeResult(success=False, error=bound_text(f"TLS: {exc}"))
        samples: list[Sample] = []
        try:
            status, _ = await self._get(f"{check.target}/-/healthy", settings, sslctx, ctx)
            ctx.log("vigie_healthy", status=status)
            samples.append(
                _gauge("vigie_peer_healthy", status == 200, "Whether /-/healthy answered 200.")
            )
            if status != 200:
                return _fail(f"/-/healthy answered HTTP {status}", samples)
            status, body = await self._get(f"{check.target}{REPLICA_PATH}", settings, sslctx, ctx)
        except ssl.SSLError as exc:
            return _fail(describe_ssl_error(exc), samples)
        except (aiohttp.ClientError, OSError) as exc:
            return _fail(f"{type(exc).__name__}: {exc}", samples)
        if status != 200:
            return _fail(f"{REPLICA_PATH} answered HTTP {status}: not a replica", samples)
        if len(body) > MAX_BODY_BYTES:
            return _fail(f"{REPLICA_PATH} answer larger than {MAX_BODY_BYTES} bytes", samples)
        try:
            data: Any = json.loads(body)
            name = str(data["instance"])
            age = float(data["now"]) - float(data["heartbeat"])
            sender = bool(data.get("sender", False))
            resolved = _resolved(data.get("resolved"))
        except (ValueError, KeyError, TypeError) as exc:
            return _fail(f"{REPLICA_PATH}: not a replica's answer ({type(exc).__name__})", samples)
        shown = sanitise(name, 64)
        ctx.log("vigie_replica", instance=shown, heartbeat_age=round(age, 3), sender=sender)
        samples += [
            _gauge(
                "vigie_peer_heartbeat_age_seconds",
                age,
                "Age of the peer's last health evaluation, on the peer's clock.",
            ),
            _gauge("vigie_peer_sender", sender, "Whether the peer sends to direct sinks."),
            *(
                Sample(
                    RESOLVED,
                    at,
                    (("alert", key),),
                    help="When the peer resolved each alert lately (its key in `alert`).",
                )
                for key, at in resolved
            ),
        ]
        if settings.instance is not None and name != settings.instance:
            return _fail(f"replica {shown!r} answered, expected {settings.instance!r}", samples)
        if age > settings.max_heartbeat_age:
            return _fail(
                f"Vigie {shown}: last health evaluation {age:.0f}s ago (health loop stuck)",
                samples,
            )
        return ProbeResult(success=True, samples=tuple(samples))


def _resolved(data: object) -> list[tuple[str, float]]:
    """The peer's recent resolves (key -> wall time), the latest MAX_RESOLVED, keys bounded."""
    if data is None:
        return []
    if not isinstance(data, dict):
        raise TypeError("resolved is not a mapping")
    found = [(sanitise(str(k), 200), float(v)) for k, v in data.items()]
    return sorted(found, key=lambda kv: kv[1])[-MAX_RESOLVED:]


def _fail(reason: str, samples: list[Sample]) -> ProbeResult:
    """Return a failed result with the samples gathered so far."""
    return ProbeResult(success=False, samples=tuple(samples), error=bound_text(reason))
