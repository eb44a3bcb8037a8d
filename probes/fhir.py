"""The fhir probe: read a FHIR server's CapabilityStatement (`GET [base]/metadata`), check the
FHIR version and the resource types it declares, optionally run one search expecting a Bundle.

Requests go through the shared probe session (ctx.session) with the http probe's TLS settings
and authentication (basic, or a bearer token such as a SMART backend-services token). Error
answers are read as OperationOutcome resources and reported with their issue texts, bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.core.secrets import ConfigPath, resolve_secret_field
from vigie.probes.base import Check, ProbeContext
from vigie.probes.http import (
    BasicAuthSettings,
    HttpTiming,
    parse_http_url,
)
from vigie.probes.http import _describe_client_error as describe_client_error
from vigie.probes.tls import SslContextCache, TlsSettings, cert_expiry

__all__ = ["FhirProbe", "FhirSettings", "operation_outcome_text"]

FHIR_JSON = "application/fhir+json"
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,2}$")
_CHUNK = 64 * 1024
# Parse bodies above this size in a thread: a large CapabilityStatement must not stall the loop.
_THREAD_PARSE_BYTES = 256 * 1024
# The probe's own deadline, as a share of the check's timeout, so a slow server is reported as
# such (which request, which phase) rather than as the scheduler's bare timeout.
_OWN_DEADLINE_SHARE = 0.9
_MAX_ISSUES = 3
_SHOWN = 60


class FhirSettings(BaseModel):
    """Settings of a fhir check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fhir_version: str | None = Field(
        None,
        description="Expected CapabilityStatement.fhirVersion, matched by dotted prefix: '4'"
        " or '4.0' accepts 4.0.1 (R4), '4.0.1' only that. Default: any version.",
    )
    resource_types: list[str] = Field(
        default_factory=list,
        description="Resource types the server must declare in rest[mode=server].resource,"
        " e.g. [Patient, Observation].",
    )
    search: str | None = Field(
        None,
        description="A search run after the metadata, relative to the base, e.g."
        " 'Patient?_count=1'; the answer must be a Bundle of type searchset.",
    )
    min_search_entries: int = Field(
        0, ge=0, description="Entries the search Bundle's page must hold at least."
    )
    tls: TlsSettings = Field(
        default_factory=TlsSettings, description="Server verification and client certificate."
    )
    basic_auth: BasicAuthSettings | None = Field(None, description="HTTP basic authentication.")
    bearer_token: SecretStr | None = Field(
        None, description="Bearer token sent as Authorization (prefer bearer_token_file)."
    )
    bearer_token_file: ConfigPath | None = Field(
        None, description="File holding the bearer token, read once at load."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest answer read; a larger CapabilityStatement or Bundle fails the check.",
    )

    @field_validator("fhir_version")
    @classmethod
    def _valid_version(cls, value: str | None) -> str | None:
        """Require a dotted numeric version such as 4, 4.0 or 4.0.1."""
        if value is not None and not _VERSION.match(value):
            raise ValueError(f"must be a dotted version such as 4.0 or 4.0.1, got {value!r}")
        return value

    @field_validator("resource_types")
    @classmethod
    def _valid_types(cls, value: list[str]) -> list[str]:
        """Require FHIR resource type names (PascalCase letters)."""
        for name in value:
            if not _RESOURCE_TYPE.match(name):
                raise ValueError(f"{name!r} is not a FHIR resource type name (e.g. Patient)")
        return value

    @field_validator("search")
    @classmethod
    def _valid_search(cls, value: str | None) -> str | None:
        """Require a relative search such as Patient?_count=1 (no scheme, host or dot segment)."""
        if value is None:
            return None
        path = value.split("?", 1)[0]
        if not path or "://" in value or value.startswith("/") or "#" in value:
            raise ValueError(
                f"must be relative to the base, e.g. 'Patient?_count=1', got {value!r}"
            )
        if any(part in (".", "..") for part in path.split("/")):
            raise ValueError("must not contain '.' or '..' path segments")
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("must not contain spaces or control characters")
        return value

    @model_validator(mode="after")
    def _auth(self) -> Self:
        """Read the bearer token file and reject basic and bearer auth together."""
        bearer = resolve_secret_field(self, "bearer_token")
        if bearer is not None and any(not c.isprintable() for c in bearer.get_secret_value()):
            raise ValueError("bearer_token must not contain control characters")
        if bearer is not None and self.basic_auth is not None:
            raise ValueError("set only one of basic_auth and bearer_token")
        return self

    def authorization(self) -> str | None:
        """Return the Authorization header value, or None without authentication."""
        if self.basic_auth is not None:
            password = self.basic_auth.password
            secret = password.get_secret_value() if password is not None else ""
            return aiohttp.encode_basic_auth(self.basic_auth.username, secret)
        if self.bearer_token is not None:
            return f"Bearer {self.bearer_token.get_secret_value()}"
        return None


class FhirError(Exception):
    """A failed request or an answer that is not what FHIR says; the message is the reason."""


def _text(value: object, limit: int = 200) -> str:
    """Return a value from the peer as bounded, sanitised text."""
    return sanitise(str(value), limit) if value is not None else ""


def operation_outcome_text(resource: dict[str, Any]) -> str:
    """Return the issues of an OperationOutcome as one bounded line: severity, code, text."""
    issues = resource.get("issue")
    if not isinstance(issues, list) or not issues:
        return "OperationOutcome without issues"
    parts: list[str] = []
    for issue in issues[:_MAX_ISSUES]:
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        text = details.get("text") if isinstance(details, dict) else None
        text = text or issue.get("diagnostics") or ""
        head = " ".join(_text(issue.get(k), 20) for k in ("severity", "code") if issue.get(k))
        parts.append(f"{head}: {_text(text)}" if text else head or "issue")
    more = len(issues) - _MAX_ISSUES
    if more > 0:
        parts.append(f"and {more} more issue(s)")
    return "OperationOutcome " + "; ".join(parts)


@dataclass(slots=True)
class _Answer:
    """One request's outcome: status, parsed JSON (None if not JSON) and the reason it is not."""

    status: int
    body: bytes
    resource: dict[str, Any] | None
    not_json: str | None
    seconds: float


def _shown(body: bytes) -> str:
    """Return the start of a body as a short printable text."""
    return sanitise(body[:_SHOWN].decode("utf-8", errors="replace"), _SHOWN)


def _parse(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """Return (the JSON object, None) or (None, why the body is not a JSON object)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        where = f" at byte {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        return None, f"answer is not JSON{where}: starts with {_shown(body)!r}"
    if not isinstance(value, dict):
        return None, f"answer is JSON but not a FHIR resource: starts with {_shown(body)!r}"
    return value, None


def _version_matches(actual: str, expected: str) -> bool:
    """Return whether a FHIR version matches an expected dotted prefix (4.0 matches 4.0.1)."""
    want = expected.split(".")
    return actual.split(".")[: len(want)] == want


def _declared_types(statement: dict[str, Any]) -> set[str]:
    """Return the resource types of the CapabilityStatement's server-mode rest entries."""
    types: set[str] = set()
    rest = statement.get("rest")
    for entry in rest if isinstance(rest, list) else []:
        if not isinstance(entry, dict) or entry.get("mode", "server") != "server":
            continue
        resources = entry.get("resource")
        for resource in resources if isinstance(resources, list) else []:
            if isinstance(resource, dict) and isinstance(resource.get("type"), str):
                types.add(resource["type"])
    return types


def _gauge(name: str, value: float, help: str, labels: tuple[tuple[str, str], ...] = ()) -> Sample:
    """Return a gauge sample."""
    return Sample(name, value, labels, "gauge", help)


def _status_reason(what: str, answer: _Answer) -> str:
    """Return why a non-2xx answer failed, with its OperationOutcome issues when it has one."""
    reason = f"{what}: HTTP {answer.status}"
    if answer.status in (401, 403):
        reason += " (authentication failed)" if answer.status == 401 else " (forbidden)"
    if answer.resource is not None and answer.resource.get("resourceType") == "OperationOutcome":
        return f"{reason}: {operation_outcome_text(answer.resource)}"
    if answer.body:
        return f"{reason}: {_shown(answer.body)!r}"
    return reason


class FhirProbe:
    """Probe kind "fhir": CapabilityStatement checks and an optional search on a FHIR base."""

    kind: ClassVar[str] = "fhir"
    Settings: ClassVar[type[BaseModel]] = FhirSettings

    def __init__(self) -> None:
        """Start with an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()

    def parse_target(self, target: str) -> str:
        """Return the base URL without a trailing slash, query or fragment; or raise ValueError."""
        url = parse_http_url(target, "; use basic_auth or bearer_token_file")
        if url.query_string or url.fragment:
            raise ValueError("the FHIR base URL must not have a query or fragment")
        return str(url).rstrip("/")

    def host_of(self, target: str) -> str:
        """Return the host of the base URL."""
        return URL(target).host or ""

    async def __call__(self, check: Check[FhirSettings], ctx: ProbeContext) -> ProbeResult:
        """Read the metadata, check it, run the search, report."""
        settings = check.settings
        samples: list[Sample] = []
        phases: list[tuple[str, float]] = []
        budget = check.timeout * _OWN_DEADLINE_SHARE
        step = ["metadata"]
        try:
            async with asyncio.timeout(budget):
                error = await self._run(
                    check, settings=settings, ctx=ctx, samples=samples, phases=phases, step=step
                )
        except TimeoutError:
            error = f"timeout after {budget:.3g}s waiting for the {step[0]} answer"
        if error is not None:
            error = bound_text(error)
            ctx.log("fhir_failed", error=error)
        return ProbeResult(
            success=error is None, error=error, samples=tuple(samples), phases=tuple(phases)
        )

    async def _get(
        self,
        url: str,
        settings: FhirSettings,
        ctx: ProbeContext,
        samples: list[Sample] | None,
        phases: list[tuple[str, float]] | None,
    ) -> _Answer:
        """GET one URL as FHIR JSON; record TLS expiry and connect phases when asked."""
        try:
            sslctx = self._ssl_contexts.get(settings.tls)
        except ValueError as exc:
            raise FhirError(f"TLS: {exc}") from None
        headers = {"Accept": FHIR_JSON}
        authorization = settings.authorization()
        if authorization is not None:
            headers["Authorization"] = authorization
        timing = HttpTiming(start=HttpTiming.now())
        ctx.log("fhir_request", url=url)
        try:
            with timing.observe():
                async with ctx.session.get(
                    url, headers=headers, ssl=sslctx, server_hostname=settings.tls.server_name
                ) as resp:
                    timing.on_response()
                    body, complete = await _read_body(resp, settings.max_body_bytes)
                    timing.body_end = timing.now()
                    if not complete:
                        resp.close()
                    status = resp.status
        except aiohttp.ClientError as exc:
            raise FhirError(" ".join(describe_client_error(exc).split())) from None
        ctx.log("fhir_answer", status=status, bytes=len(body), complete=complete)
        if phases is not None:
            split = timing.phases()
            phases.extend((name, split[name]) for name in ("dns", "connect", "tls"))
        if samples is not None:
            der = next((hop.peer_der for hop in timing.hops if hop.peer_der is not None), None)
            expiry = cert_expiry(der) if der is not None else None
            if expiry is not None:
                samples.append(
                    _gauge(
                        "probe_tls_cert_expiry_timestamp_seconds",
                        expiry,
                        "Unix time at which the server's leaf certificate expires (notAfter).",
                    )
                )
        if not complete:
            raise FhirError(f"answer larger than max_body_bytes ({settings.max_body_bytes} bytes)")
        if len(body) > _THREAD_PARSE_BYTES:
            resource, not_json = await asyncio.to_thread(_parse, body)
        else:
            resource, not_json = _parse(body)
        return _Answer(status, body, resource, not_json, timing.total())

    async def _run(
        self,
        check: Check[FhirSettings],
        *,
        settings: FhirSettings,
        ctx: ProbeContext,
        samples: list[Sample],
        phases: list[tuple[str, float]],
        step: list[str],
    ) -> str | None:
        """Do the requests and the checks; return the failure reason or None."""
        try:
            meta = await self._get(f"{check.target}/metadata", settings, ctx, samples, phases)
        except FhirError as exc:
            return f"metadata: {exc}"
        phases.append(("metadata", meta.seconds))
        samples.append(
            _gauge("fhir_metadata_seconds", meta.seconds, "Seconds of the GET [base]/metadata.")
        )
        samples.append(
            _gauge(
                "fhir_http_status_code",
                meta.status,
                "HTTP status code of each request.",
                (("request", "metadata"),),
            )
        )
        error = self._judge_metadata(meta, settings, samples)
        if error is not None or settings.search is None:
            return error
        step[0] = "search"
        url = f"{check.target}/{settings.search}"
        try:
            found = await self._get(url, settings, ctx, None, None)
        except FhirError as exc:
            return f"search {settings.search}: {exc}"
        phases.append(("search", found.seconds))
        samples.append(_gauge("fhir_search_seconds", found.seconds, "Seconds of the search."))
        samples.append(
            _gauge(
                "fhir_http_status_code",
                found.status,
                "HTTP status code of each request.",
                (("request", "search"),),
            )
        )
        return self._judge_search(found, settings, samples)

    @staticmethod
    def _judge_metadata(meta: _Answer, settings: FhirSettings, samples: list[Sample]) -> str | None:
        """Check the CapabilityStatement; add its samples; return the failure reason or None."""
        if not 200 <= meta.status < 300:
            return _status_reason("metadata", meta)
        statement = meta.resource
        if statement is None:
            return f"metadata: {meta.not_json}"
        kind = statement.get("resourceType")
        if kind == "OperationOutcome":
            return f"metadata: {operation_outcome_text(statement)}"
        # DSTU2 servers call it Conformance.
        if kind not in ("CapabilityStatement", "Conformance"):
            return f"metadata: expected a CapabilityStatement, got resourceType {_text(kind, 40)!r}"
        version = statement.get("fhirVersion")
        version_text = _text(version, 20) if isinstance(version, str) else ""
        software = statement.get("software")
        software = software if isinstance(software, dict) else {}
        types = _declared_types(statement)
        samples.append(
            _gauge(
                "fhir_info",
                1.0,
                "Always 1: the server's FHIR version and software, from its CapabilityStatement.",
                (
                    ("fhir_version", version_text),
                    ("software", _text(software.get("name"), 64)),
                    ("software_version", _text(software.get("version"), 32)),
                ),
            )
        )
        samples.append(
            _gauge(
                "fhir_resource_types",
                len(types),
                "Resource types the CapabilityStatement declares for the server.",
            )
        )
        if settings.fhir_version is not None:
            if not version_text:
                return "metadata: the CapabilityStatement has no fhirVersion"
            if not _version_matches(version_text, settings.fhir_version):
                return f"FHIR version {version_text}, expected {settings.fhir_version}"
        missing = [name for name in settings.resource_types if name not in types]
        if missing:
            return (
                f"the CapabilityStatement lacks resource type(s) {', '.join(missing)}"
                f" ({len(types)} declared)"
            )
        return None

    @staticmethod
    def _judge_search(found: _Answer, settings: FhirSettings, samples: list[Sample]) -> str | None:
        """Check the search answer is a searchset Bundle; add its samples; return the reason."""
        what = f"search {settings.search}"
        if not 200 <= found.status < 300:
            return _status_reason(what, found)
        bundle = found.resource
        if bundle is None:
            return f"{what}: {found.not_json}"
        kind = bundle.get("resourceType")
        if kind == "OperationOutcome":
            return f"{what}: {operation_outcome_text(bundle)}"
        if kind != "Bundle":
            return f"{what}: expected a Bundle, got resourceType {_text(kind, 40)!r}"
        if bundle.get("type") != "searchset":
            return (
                f"{what}: expected a searchset Bundle, got type {_text(bundle.get('type'), 40)!r}"
            )
        entries = bundle.get("entry")
        entries = entries if isinstance(entries, list) else []
        samples.append(
            _gauge("fhir_search_entries", len(entries), "Entries in the search Bundle's page.")
        )
        total = bundle.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            samples.append(
                _gauge("fhir_search_total", total, "Bundle.total of the search, when given.")
            )
        # A search may carry warnings as an OperationOutcome entry with search.mode outcome.
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome":
                issues = resource.get("issue")
                severe = isinstance(issues, list) and any(
                    isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues
                )
                if severe:
                    return f"{what}: {operation_outcome_text(resource)}"
        if len(entries) < settings.min_search_entries:
            return (
                f"{what}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'},"
                f" expected at least {settings.min_search_entries}"
            )
        return None


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Read at most limit bytes of the body; return them and whether the body was complete."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await resp.content.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    return body[:limit], size <= limit and resp.content.at_eof()
