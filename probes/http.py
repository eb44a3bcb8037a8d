"""The http probe: one request (following redirects), status and body checks, phase timings."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Self

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from yarl import URL

from vigie.core.results import ProbeResult, Sample, bound_text, seconds
from vigie.core.secrets import ConfigPath, resolve_secret_field
from vigie.probes.base import Check, ProbeContext
from vigie.probes.extract import ExtractError, ExtractSpec, extract
from vigie.probes.tls import (
    Regex,
    SslContextCache,
    TlsSettings,
    cert_expiry,
    describe_ssl_error,
    os_error_reason,
    peer_cert_der,
    reset_tls_observer,
    set_tls_observer,
)

__all__ = ["BasicAuthSettings", "HttpProbe", "HttpSettings", "HttpTiming", "make_session"]

USER_AGENT = "Vigie/0.1"
_PARSE_INLINE = 64 * 1024
"""Answers up to this size are extracted on the event loop; larger ones in a thread."""
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CHUNK = 64 * 1024


# --------------------------------------------------------------------------- timing


@dataclass(slots=True)
class _Hop:
    """Timestamps (monotonic clock) of one request of a redirect chain."""

    conn_start: float | None = None
    dns_start: float | None = None
    dns_end: float | None = None
    tls_start: float | None = None
    conn_end: float | None = None
    response: float | None = None
    ssl_object: ssl.SSLObject | None = None
    peer_der: bytes | None = None


@dataclass(slots=True)
class HttpTiming:
    """Phase timestamps of one probe run, filled by the session's connector and resolver.

    Run the request inside ``timing.observe()`` on a session from make_session: the connector
    and resolver then note connect and DNS times in it, and the TLS handshake is timed apart
    from the TCP connect (see probes.tls.observe_tls). Call ``on_response`` when the final
    response's headers are in, and set ``body_end`` when the body is read.
    """

    start: float
    hops: list[_Hop] = field(default_factory=lambda: [_Hop()])
    body_end: float | None = None

    @staticmethod
    def now() -> float:
        """Return the clock the timestamps use."""
        return time.monotonic()

    @property
    def hop(self) -> _Hop:
        """Return the request of the redirect chain in progress."""
        return self.hops[-1]

    def observe(self) -> _Observed:
        """Return a context manager under which this task's request fills this timing."""
        return _Observed(self)

    def on_connect_start(self) -> None:
        """Record the start of connecting; a second connect means a redirect's next hop."""
        now = time.monotonic()
        hop = self.hops[-1]
        if hop.conn_start is not None:
            if hop.response is None:
                hop.response = now  # the redirect response was read just before
            hop = _Hop()
            self.hops.append(hop)
        hop.conn_start = now

    def on_dns(self, start: float, end: float) -> None:
        """Record the name resolution of the hop in progress."""
        hop = self.hops[-1]
        hop.dns_start, hop.dns_end = start, end

    def on_tls_start(self, ssl_object: ssl.SSLObject) -> None:
        """Record that TCP connect ended and the TLS handshake starts."""
        hop = self.hops[-1]
        hop.tls_start = time.monotonic()
        hop.ssl_object = ssl_object

    def on_connection_end(self) -> None:
        """Record the end of connect (and TLS handshake) and keep the peer certificate."""
        hop = self.hops[-1]
        hop.conn_end = time.monotonic()
        if hop.ssl_object is not None:
            hop.peer_der = peer_cert_der(hop.ssl_object)
            hop.ssl_object = None

    def on_response(self) -> None:
        """Record that the final response's headers are in."""
        self.hops[-1].response = time.monotonic()

    def phases(self) -> dict[str, float]:
        """Return the seconds spent in each phase, summed over the redirect chain.

        processing runs from the connection being ready (the request is written at once) to
        the response headers being read.
        """
        dns_sum = connect = tls = processing = transfer = 0.0
        for hop in self.hops:
            dns = 0.0
            if hop.dns_start is not None and hop.dns_end is not None:
                dns = max(0.0, hop.dns_end - hop.dns_start)
            dns_sum += dns
            conn_end = hop.conn_end
            connected = hop.tls_start if hop.tls_start is not None else conn_end
            if hop.conn_start is not None and connected is not None:
                connect += max(0.0, connected - hop.conn_start - dns)
            if hop.tls_start is not None and conn_end is not None:
                tls += max(0.0, conn_end - hop.tls_start)
            if conn_end is not None and hop.response is not None:
                processing += max(0.0, hop.response - conn_end)
        last = self.hops[-1].response
        if last is not None and self.body_end is not None:
            transfer = max(0.0, self.body_end - last)
        return {
            "dns": seconds(dns_sum),
            "connect": seconds(connect),
            "tls": seconds(tls),
            "processing": seconds(processing),
            "transfer": seconds(transfer),
        }

    def total(self) -> float:
        """Return the seconds from the start of the request to the end of the body (or now)."""
        end = self.body_end if self.body_end is not None else time.monotonic()
        return seconds(max(0.0, end - self.start))


_TIMING: ContextVar[HttpTiming | None] = ContextVar("vigie_http_timing", default=None)


class _Observed:
    """Make a timing the current task's, for the connector, the resolver and TLS contexts."""

    __slots__ = ("_timing", "_tokens")

    def __init__(self, timing: HttpTiming) -> None:
        self._timing = timing

    def __enter__(self) -> None:
        self._tokens = (_TIMING.set(self._timing), set_tls_observer(self._timing.on_tls_start))

    def __exit__(self, *_: object) -> None:
        timing_token, tls_token = self._tokens
        _TIMING.reset(timing_token)
        reset_tls_observer(tls_token)


class _TimedConnector(aiohttp.TCPConnector):
    """A connector that notes when connecting (DNS, TCP, TLS) starts and ends in the timing.

    A subclass hook instead of aiohttp's request traces: those build a parameters object and
    await a callback per event and per request, a fifth of Vigie's CPU per probe. The shared
    session's connector also owns the kept-alive session of `reuse_connections` checks
    (made on first use, closed with it).
    """

    keepalive: aiohttp.ClientSession | None = None

    async def close(self, *, abort_ssl: bool = False) -> None:
        """Close the kept-alive session too, then this connector."""
        if self.keepalive is not None:
            await self.keepalive.close()
        await super().close(abort_ssl=abort_ssl)

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:
        """Open the connection, noting its start and end in the current task's timing."""
        timing = _TIMING.get()
        if timing is None:
            return await super().connect(req, traces, timeout)
        timing.on_connect_start()
        conn = await super().connect(req, traces, timeout)
        timing.on_connection_end()
        return conn


class _TimedResolver(aiohttp.ThreadedResolver):
    """The system resolver (getaddrinfo in a thread), timed into the current task's timing."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve host and note how long it took."""
        timing = _TIMING.get()
        start = time.monotonic()
        try:
            return await super().resolve(host, port, family)
        finally:
            if timing is not None:
                timing.on_dns(start, time.monotonic())


KEEPALIVE_S = 300.0
"""How long a `reuse_connections` check's idle connection is kept (longer than intervals)."""


def make_session(*, limit: int = 0, reuse: bool = False) -> aiohttp.ClientSession:
    """Return the shared probe session: fresh connection per request, no cookies, phase timing.

    Call it from a running event loop and close it on shutdown. ``limit`` caps concurrent
    connections (0: no cap, the scheduler limits concurrency). DNS is not cached, so every
    probe measures name resolution; aiohttp's own timeouts are off, the scheduler's applies.
    With ``reuse`` connections are kept alive between requests instead (idle up to
    KEEPALIVE_S); checks get that one through `kept_alive`.
    """
    connector = _TimedConnector(
        force_close=not reuse,
        keepalive_timeout=KEEPALIVE_S if reuse else None,
        limit=limit,
        use_dns_cache=False,
        resolver=_TimedResolver(),
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
    )


def kept_alive(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """Return the kept-alive sibling of a probe session from make_session (made on first use).

    A session not from make_session, or one that already keeps connections, is returned as is.
    """
    connector = session.connector
    if not isinstance(connector, _TimedConnector) or not connector.force_close:
        return session
    if connector.keepalive is None or connector.keepalive.closed:
        connector.keepalive = make_session(limit=connector.limit, reuse=True)
    return connector.keepalive


# --------------------------------------------------------------------------- settings


class BasicAuthSettings(BaseModel):
    """HTTP basic authentication; the password is given inline or read from a file at load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(description="User name; must not contain ':'.")
    password: SecretStr | None = Field(None, description="Password (prefer password_file).")
    password_file: ConfigPath | None = Field(
        None, description="File holding the password, read once at load."
    )

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        """Check the user name and read the password from its file into password."""
        if ":" in self.username:
            raise ValueError("username must not contain ':'")
        resolve_secret_field(self, "password")
        return self


StatusCode = Annotated[int, Field(ge=100, le=599)]


class HttpSettings(BaseModel):
    """Settings of an http check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field("GET", description="HTTP method, e.g. GET, HEAD, POST.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (not for secrets: use auth)."
    )
    body: str | None = Field(None, description="Request body, sent as UTF-8.")
    valid_status_codes: list[StatusCode] = Field(
        default_factory=list, description="Accepted status codes; empty means any 2xx."
    )
    fail_if_body_matches_regexp: list[Regex] = Field(
        default_factory=list, description="Fail if the body matches any of these regexes."
    )
    fail_if_body_not_matches_regexp: list[Regex] = Field(
        default_factory=list, description="Fail unless the body matches every one of these."
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1,
        le=64 * 1024 * 1024,
        description="Read at most this many bytes of the body; regexes see only those.",
    )
    follow_redirects: bool = Field(True, description="Follow 3xx redirects (at most 10).")
    reuse_connections: bool = Field(
        False,
        description="Keep the connection open between runs (cheaper; connect and TLS are then"
        " measured only when it is reopened). Default: a fresh connection every run, as"
        " blackbox_exporter does.",
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
    extract: list[ExtractSpec] = Field(
        default_factory=list,
        max_length=32,
        description="Values read from a JSON or XML answer into samples (counters for rate()"
        " and increase() rules), e.g. [{name: mirth_channel_received_total, json:"
        " '$.list.channelStatistics[*].received', labels: {channel:"
        " '$.list.channelStatistics[*].channelId'}, type: counter}]. An answer that does not"
        " give them fails the check, saying which.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Check the method and headers, read the bearer token file, reject clashing auth."""
        if not _TOKEN.match(self.method):
            raise ValueError(f"method must be an HTTP method name, got {self.method!r}")
        for name, value in self.headers.items():
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r} value must not contain line breaks")
        bearer = resolve_secret_field(self, "bearer_token")
        if bearer is not None and any(not c.isprintable() for c in bearer.get_secret_value()):
            raise ValueError("bearer_token must not contain control characters")
        has_authz = any(name.lower() == "authorization" for name in self.headers)
        sources = [
            n
            for n, on in (
                ("basic_auth", self.basic_auth is not None),
                ("bearer_token", bearer is not None),
                ("an Authorization header", has_authz),
            )
            if on
        ]
        if len(sources) > 1:
            raise ValueError(f"set only one of {' and '.join(sources)}")
        return self


# --------------------------------------------------------------------------- probe


def _secret(value: SecretStr | None) -> str:
    """Return the value of a secret, empty if unset."""
    return value.get_secret_value() if value is not None else ""


def _gauge(name: str, value: float, help: str, labels: tuple[tuple[str, str], ...] = ()) -> Sample:
    """Return a gauge sample."""
    return Sample(name, value, labels, "gauge", help)


_PHASE_HELP = "Seconds spent in each phase of the HTTP request, summed over redirects."


_PHASE_LABELS = {
    name: (("phase", name),) for name in ("dns", "connect", "tls", "processing", "transfer")
}


def _phase_samples(phases: dict[str, float], total: float) -> list[Sample]:
    """Return the probe_http_duration_seconds samples, one per phase and the total."""
    samples = [
        Sample("probe_http_duration_seconds", v, _PHASE_LABELS[k], "gauge", _PHASE_HELP)
        for k, v in phases.items()
    ]
    samples.append(
        Sample("probe_http_duration_seconds", total, (("phase", "total"),), "gauge", _PHASE_HELP)
    )
    return samples


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    """Return a short reason for a failed request; target-supplied text is bounded by the caller."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return describe_ssl_error(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return describe_ssl_error(exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        os_error = exc.os_error
        return f"DNS: cannot resolve {exc.host!r}: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        return f"connect to {exc.host}:{exc.port} failed: {os_error_reason(os_error)}"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects ({len(exc.history)})"
    if isinstance(exc, aiohttp.RedirectClientError):
        return f"redirect to an invalid or non-HTTP URL: {exc}"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return f"invalid or non-HTTP URL: {exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection without a complete response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"reading body failed: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid HTTP response: {exc.message}"
    if isinstance(exc, aiohttp.ClientOSError):
        if isinstance(exc.__cause__, ssl.SSLError):
            return describe_ssl_error(exc.__cause__)
        return f"connection error: {os_error_reason(exc)}"
    return f"{type(exc).__name__}: {exc}"


def _body_checks(
    text: str, must_not: list[re.Pattern[str]], must: list[re.Pattern[str]]
) -> str | None:
    """Return why the body fails the regex checks, or None."""
    for pattern in must_not:
        if pattern.search(text):
            return f"body matched fail_if_body_matches_regexp {pattern.pattern!r}"
    for pattern in must:
        if not pattern.search(text):
            return f"body did not match fail_if_body_not_matches_regexp {pattern.pattern!r}"
    return None


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Read at most limit bytes of the body; return them and whether the body was complete."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(min(_CHUNK, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), resp.content.at_eof()


async def _extract(specs: list[ExtractSpec], body: bytes, charset: str | None) -> list[Sample]:
    """Read the extractions; a large answer is parsed in a thread, off the event loop."""
    if len(body) > _PARSE_INLINE:
        return await asyncio.to_thread(extract, specs, body, charset)
    return extract(specs, body, charset)


def _version(resp: aiohttp.ClientResponse) -> str:
    """Return the HTTP version of a response as text, e.g. "1.1"."""
    v = resp.version
    return f"{v.major}.{v.minor}" if v is not None else "0.0"


def _decode(body: bytes, charset: str | None) -> str:
    """Return the body as text, in its declared charset if known, else UTF-8."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def parse_http_url(target: str, credentials_hint: str = "") -> URL:
    """Return target as an http(s) URL with a host and no credentials, or raise ValueError."""
    shown = bound_text(target, 200)
    try:
        url = URL(target.strip())
        host = url.host
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid URL {shown!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not host:
        raise ValueError(f"must be an http or https URL with a host, got {shown!r}")
    if url.user is not None or url.password is not None:
        raise ValueError(f"must not contain credentials in the URL{credentials_hint}")
    return url


class HttpProbe:
    """Probe kind "http": request a URL, check the status and body, time each phase.

    Phases: dns and connect come from aiohttp's connection traces; the TLS handshake is split
    from the TCP connect by noting when asyncio creates the SSL object (ObservedSSLContext,
    public SSLContext.wrap_bio), which happens once the TCP connection is up and before the
    first handshake message. processing runs from the request being written to the response
    headers being read, transfer from there to the end of the (bounded) body.
    """

    kind: ClassVar[str] = "http"
    Settings: ClassVar[type[BaseModel]] = HttpSettings

    def __init__(self) -> None:
        """Start with an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()

    def parse_target(self, target: str) -> str:
        """Return the URL, or raise ValueError unless it is an http(s) URL with a host."""
        url = parse_http_url(target, "; use basic_auth")
        if url.fragment:
            url = url.with_fragment(None)
        return str(url)

    def host_of(self, target: str) -> str:
        """Return the host of the URL."""
        return URL(target).host or ""

    def ssl_context(self, tls: TlsSettings) -> ssl.SSLContext:
        """Return the cached SSL context for these TLS settings (rebuilt if a file changed)."""
        return self._ssl_contexts.get(tls)

    async def __call__(self, check: Check[HttpSettings], ctx: ProbeContext) -> ProbeResult:
        """Run one request and judge it."""
        settings = check.settings
        try:
            sslctx = self.ssl_context(settings.tls)
        except ValueError as exc:
            return ProbeResult(success=False, error=bound_text(f"TLS: {exc}"))

        headers: dict[str, str] = dict(settings.headers)
        # aiohttp drops Authorization when a redirect leaves the origin.
        if settings.basic_auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(
                settings.basic_auth.username, _secret(settings.basic_auth.password)
            )
        elif settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {_secret(settings.bearer_token)}"

        timing = HttpTiming(start=HttpTiming.now())
        ctx.log("http_request", method=settings.method, url=check.target)
        body = b""
        complete = True
        der: bytes | None = None
        try:
            with timing.observe():
                session = kept_alive(ctx.session) if settings.reuse_connections else ctx.session
                async with session.request(
                    settings.method,
                    check.target,
                    headers=headers,
                    data=settings.body.encode() if settings.body is not None else None,
                    allow_redirects=settings.follow_redirects,
                    ssl=sslctx,
                    server_hostname=settings.tls.server_name,
                ) as resp:
                    timing.on_response()
                    der = self._response_cert(resp, timing)
                    if ctx.log.enabled:
                        ctx.log(
                            "http_response",
                            status=resp.status,
                            version=_version(resp),
                            redirects=len(resp.history),
                            url=resp.url,
                        )
                    body, complete = await _read_body(resp, settings.max_body_bytes)
                    timing.body_end = timing.now()
                    if not complete:
                        resp.close()  # drop the rest instead of draining it
        except aiohttp.ClientError as exc:
            reason = bound_text(" ".join(_describe_client_error(exc).split()))
            ctx.log("http_error", error=reason)
            phases = timing.phases()
            return ProbeResult(
                success=False,
                error=reason,
                samples=tuple(_phase_samples(phases, timing.total())),
                phases=tuple(phases.items()),
            )
        ctx.log("http_body", bytes=len(body), complete=complete)

        error: str | None = None
        regex_failed = False
        valid = settings.valid_status_codes
        if valid and resp.status not in valid:
            error = f"status code {resp.status} not in {valid}"
        elif not valid and not 200 <= resp.status < 300:
            error = f"status code {resp.status} not in 2xx"
        elif settings.fail_if_body_matches_regexp or settings.fail_if_body_not_matches_regexp:
            text = _decode(body, resp.charset)
            # In a thread: a costly regex on a large body must not stall the event loop.
            error = await asyncio.to_thread(
                _body_checks,
                text,
                settings.fail_if_body_matches_regexp,
                settings.fail_if_body_not_matches_regexp,
            )
            regex_failed = error is not None
        extracted: list[Sample] = []
        if error is None and settings.extract:
            if not complete:
                error = f"answer over max_body_bytes ({settings.max_body_bytes}): not extracted"
            else:
                try:
                    extracted = await _extract(settings.extract, body, resp.charset)
                except ExtractError as exc:
                    error = str(exc)

        phases = timing.phases()
        samples = _phase_samples(phases, timing.total())
        samples += extracted
        samples += [
            _gauge("probe_http_status_code", resp.status, "Status code of the final response."),
            _gauge(
                "probe_http_content_length",
                len(body),
                "Bytes of body read (decompressed), at most max_body_bytes.",
            ),
            _gauge("probe_http_redirects", len(resp.history), "Number of redirects followed."),
            _gauge(
                "probe_http_ssl",
                1.0 if resp.url.scheme == "https" else 0.0,
                "1 if the final request used TLS, else 0.",
            ),
            _gauge(
                "probe_http_version",
                float(_version(resp)),
                "HTTP version of the final response, e.g. 1.1.",
            ),
        ]
        expiry = cert_expiry(der) if der is not None else None
        if expiry is not None:
            samples.append(
                _gauge(
                    "probe_tls_cert_expiry_timestamp_seconds",
                    expiry,
                    "Unix time at which the server's leaf certificate expires (notAfter).",
                )
            )
        samples.append(
            _gauge(
                "probe_failed_due_to_regex",
                1.0 if regex_failed else 0.0,
                "1 if the probe failed because of a body regex check, else 0.",
            )
        )
        if error is not None:
            error = bound_text(error)
            ctx.log("http_failed", error=error)
        return ProbeResult(
            success=error is None,
            error=error,
            samples=tuple(samples),
            phases=tuple(phases.items()),
        )

    @staticmethod
    def _response_cert(resp: aiohttp.ClientResponse, timing: HttpTiming) -> bytes | None:
        """Return the DER of the final response's server certificate, if it came over TLS."""
        if resp.url.scheme != "https":
            return None
        conn = resp.connection
        transport = conn.transport if conn is not None else None
        if transport is not None:
            der = peer_cert_der(transport.get_extra_info("ssl_object"))
            if der is not None:
                return der
        # The connection is already released when the body was empty: use the handshake's.
        return timing.hops[-1].peer_der
