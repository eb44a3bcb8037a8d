"""The exporter probe: scrape a Prometheus exporter and keep chosen series as the check's samples.

The body (text exposition format 0.0.4) is read up to `max_body_bytes` and parsed with
prometheus_client's parser (about 15 us a sample; bodies over 256 KiB are parsed in a thread
so the event loop stays free). Only series whose name matches one of `metrics` (a regex that
must match the whole sample name, optionally with label regexes) are kept, up to
`max_samples`. Names are kept as the exporter wrote them unless `prefix` is set. Labels that
clash with the check's own (`check`, `kind`, `target` and the config labels) are renamed
`exported_<name>`, as Prometheus does with honor_labels off; series named like Vigie's own
families (`probe_*`, `vigie_*`, e.g. from a blackbox_exporter) get the same prefix.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from dataclasses import dataclass
from typing import ClassVar, Self

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample
from pydantic import BaseModel, ConfigDict, Field, model_validator
from yarl import URL

from vigie.core.results import MetricType, ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.probes.base import Check, ProbeContext
from vigie.probes.http import parse_http_url
from vigie.probes.tls import (
    Regex,
    SslContextCache,
    TlsSettings,
    describe_ssl_error,
    os_error_reason,
)

__all__ = ["ExporterProbe", "ExporterSettings", "MetricSelector", "Scrape", "select_samples"]

ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
_CHUNK = 64 * 1024
_THREAD_PARSE_BYTES = 256 * 1024
_HELP_CHARS = 200
_LABEL_VALUE_CHARS = 1024
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class MetricSelector(BaseModel):
    """Series to keep: a regex on the whole sample name and optional regexes on label values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Regex = Field(description="Regex matching the whole sample name, e.g. node_load1.")
    labels: dict[str, Regex] = Field(
        default_factory=dict,
        description="Label name -> regex matching the whole value (a missing label is '').",
    )

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        """Return whether a sample is selected."""
        if not self.name.fullmatch(name):
            return False
        return all(rx.fullmatch(labels.get(k, "")) for k, rx in self.labels.items())


class ExporterSettings(BaseModel):
    """Settings of an exporter check: which series to keep and the bounds of a scrape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: list[MetricSelector | Regex] = Field(
        min_length=1,
        description="Series to keep: a regex on the whole sample name, or {name, labels}.",
    )
    prefix: str = Field(
        "",
        description="Prepended to every kept name (e.g. `hba_`); empty keeps the exporter's names.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="A larger body (after decompression) fails the scrape.",
    )
    max_samples: int = Field(
        10_000, ge=1, le=1_000_000, description="More kept samples than this fail the scrape."
    )
    tls: TlsSettings = Field(
        default_factory=TlsSettings, description="Server verification and client certificate."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Check the prefix is the start of a valid metric name."""
        if self.prefix and not _METRIC_NAME.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} is not a valid metric name start")
        return self

    def selectors(self) -> list[MetricSelector]:
        """Return every entry of metrics as a MetricSelector."""
        return [
            m if isinstance(m, MetricSelector) else MetricSelector(name=m) for m in self.metrics
        ]


@dataclass(frozen=True, slots=True)
class Scrape:
    """What a parse kept: the samples and the number of samples in the body."""

    samples: list[Sample]
    scraped: int


class ScrapeError(Exception):
    """The body is not a valid exposition or holds too many selected series."""


def select_samples(
    text: str,
    selectors: list[MetricSelector],
    *,
    prefix: str = "",
    reserved_labels: frozenset[str] = frozenset(),
    max_samples: int = 10_000,
) -> Scrape:
    """Parse an exposition and return the selected samples, renamed and relabelled for Vigie."""
    kept: list[Sample] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    scraped = 0
    try:
        for family in text_string_to_metric_families(text):
            help_text = sanitise(family.documentation, _HELP_CHARS)
            for s in family.samples:
                scraped += 1
                if not any(sel.matches(s.name, s.labels) for sel in selectors):
                    continue
                if len(kept) >= max_samples:
                    raise ScrapeError(f"more than max_samples ({max_samples}) series selected")
                out = _sample(s, family.type, help_text, prefix=prefix, reserved=reserved_labels)
                # A series listed twice would make /metrics invalid: the first one wins.
                if (out.name, out.labels) not in seen:
                    seen.add((out.name, out.labels))
                    kept.append(out)
    except ValueError as exc:
        raise ScrapeError(f"invalid exposition: {bound_text(str(exc), 200)}") from None
    return Scrape(kept, scraped)


def _sample(
    scraped: PromSample, family_type: str, help_text: str, *, prefix: str, reserved: frozenset[str]
) -> Sample:
    """Return one exporter sample as a Vigie sample (renamed, clashing labels moved aside)."""
    name = prefix + scraped.name
    if name.startswith(("probe_", "vigie_")):
        name = f"exported_{name}"
    pairs = tuple(
        sorted(
            (f"exported_{k}" if k in reserved else k, sanitise(v, _LABEL_VALUE_CHARS))
            for k, v in scraped.labels.items()
        )
    )
    # Only counter samples named *_total are counters for Vigie; _created and the parts of
    # histograms and summaries are exposed as gauges, which keeps the text format valid.
    mtype: MetricType = (
        "counter" if family_type == "counter" and name.endswith("_total") else "gauge"
    )
    return Sample(
        name, float(scraped.value), pairs, mtype, help_text or "Scraped from an exporter."
    )


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    """Return a short reason for a failed scrape request."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return describe_ssl_error(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return describe_ssl_error(exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS: cannot resolve {exc.host!r}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect to {exc.host}:{exc.port} failed: {os_error_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "exporter closed the connection without a complete response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"reading body failed: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid HTTP response: {exc.message}"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error: {os_error_reason(exc)}"
    return f"{type(exc).__name__}: {exc}"


def _gauge(name: str, value: float, help: str) -> Sample:
    """Return a gauge sample."""
    return Sample(name=name, value=value, type="gauge", help=help)


class ExporterProbe:
    """Probe kind "exporter": scrape an exporter's /metrics and keep the selected series."""

    kind: ClassVar[str] = "exporter"
    Settings: ClassVar[type[BaseModel]] = ExporterSettings

    def __init__(self) -> None:
        """Start with an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()

    def parse_target(self, target: str) -> str:
        """Return the exporter URL, or raise ValueError unless it is http(s) with a host."""
        url = parse_http_url(target)
        return str(url.with_fragment(None))

    def host_of(self, target: str) -> str:
        """Return the host of the URL."""
        return URL(target).host or ""

    async def __call__(self, check: Check[ExporterSettings], ctx: ProbeContext) -> ProbeResult:
        """Scrape the exporter once and keep the selected series."""
        settings = check.settings
        try:
            sslctx: ssl.SSLContext = self._ssl_contexts.get(settings.tls)
        except ValueError as exc:
            return ProbeResult(success=False, error=bound_text(f"TLS: {exc}"))
        limit = settings.max_body_bytes
        ctx.log("exporter_scrape", url=check.target)
        try:
            async with ctx.session.get(
                check.target,
                headers={"Accept": ACCEPT},
                ssl=sslctx,
                server_hostname=settings.tls.server_name,
            ) as resp:
                status = resp.status
                body = bytearray()
                while chunk := await resp.content.read(_CHUNK):
                    body += chunk
                    if len(body) > limit:
                        resp.close()
                        break
        except aiohttp.ClientError as exc:
            return self._fail(" ".join(_describe_client_error(exc).split()), [], ctx)
        samples = [
            _gauge("probe_http_status_code", status, "Status code of the exporter's answer."),
        ]
        if len(body) > limit:
            return self._fail(f"body larger than max_body_bytes ({limit})", samples, ctx)
        samples.append(
            _gauge("probe_exporter_body_bytes", len(body), "Bytes of the exporter's body.")
        )
        if not 200 <= status < 300:
            return self._fail(f"status code {status} not in 2xx", samples, ctx)
        text = body.decode("utf-8", errors="replace")
        reserved = frozenset({"check", "kind", "target", *(k for k, _ in check.labels)})
        parse = functools.partial(
            select_samples,
            text,
            settings.selectors(),
            prefix=settings.prefix,
            reserved_labels=reserved,
            max_samples=settings.max_samples,
        )
        try:
            scrape = await asyncio.to_thread(parse) if len(body) > _THREAD_PARSE_BYTES else parse()
        except ScrapeError as exc:
            return self._fail(str(exc), samples, ctx)
        ctx.log("exporter_parsed", scraped=scrape.scraped, kept=len(scrape.samples))
        samples += [
            _gauge(
                "probe_exporter_samples_scraped",
                scrape.scraped,
                "Samples in the exporter's body.",
            ),
            _gauge(
                "probe_exporter_samples_kept",
                len(scrape.samples),
                "Samples kept by the check's metrics selectors.",
            ),
        ]
        if not scrape.samples:
            return self._fail("no series matched metrics", samples, ctx)
        return ProbeResult(success=True, samples=tuple(samples + scrape.samples))

    @staticmethod
    def _fail(error: str, samples: list[Sample], ctx: ProbeContext) -> ProbeResult:
        """Return a failed result with a bounded reason."""
        error = bound_text(error)
        ctx.log("exporter_failed", error=error)
        return ProbeResult(success=False, error=error, samples=tuple(samples))
