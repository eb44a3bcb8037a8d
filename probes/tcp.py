"""The tcp probe: connect (optionally TLS), then run send/expect steps on the connection."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vigie.core.hostport import HostPortTarget, split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.probes.base import Check, ProbeContext
from vigie.probes.tls import (
    Regex,
    SslContextCache,
    TlsSettings,
    cert_expiry,
    describe_ssl_error,
    os_error_reason,
    peer_cert_der,
)

__all__ = ["QueryStep", "TcpProbe", "TcpSettings", "split_host_port"]

_CHUNK = 4096
_CLOSE_GRACE = 2.0
_LINE_ENDINGS = {"crlf": b"\r\n", "lf": b"\n", "none": b""}


class QueryStep(BaseModel):
    """One step of a conversation: first wait for a line matching expect, then send."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expect: Regex | None = Field(
        None, description="Read lines until one matches this regex; done before send."
    )
    send: str | None = Field(
        None,
        description="Text to send (UTF-8), then line_ending unless it ends with a newline;"
        " done after expect.",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        """Reject a step that does nothing."""
        if self.expect is None and self.send is None:
            raise ValueError("a query_response step needs expect or send")
        return self


class TcpSettings(BaseModel):
    """Settings of a tcp check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_response: list[QueryStep] = Field(
        default_factory=list, description="Steps run in order once connected."
    )
    tls: bool = Field(False, description="Do a TLS handshake once connected.")
    tls_config: TlsSettings = Field(
        default_factory=TlsSettings,
        description="Server verification and client certificate, when tls is true.",
    )
    line_ending: Literal["crlf", "lf", "none"] = Field(
        "crlf",
        description="What is added to a send that does not end with a newline: CR LF, LF or"
        " nothing.",
    )
    max_read_bytes: int = Field(
        64 * 1024,
        ge=1,
        le=16 * 1024 * 1024,
        description="Read at most this many bytes in all while waiting for expect.",
    )


def _gauge(name: str, value: float, help: str) -> Sample:
    """Return a gauge sample."""
    return Sample(name=name, value=value, type="gauge", help=help)


class _LineReader:
    """Reads lines from a stream, at most limit bytes in all."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        """Read from reader, at most limit bytes."""
        self._reader = reader
        self._limit = limit
        self._buf = b""
        self._read = 0
        self._eof = False
        self.last_line: str | None = None

    def _take_line(self, final: bool) -> str | None:
        """Pop the next complete line of the buffer (or the partial rest if final)."""
        i = self._buf.find(b"\n")
        if i < 0:
            if not final or not self._buf:
                return None
            i = len(self._buf) - 1
        raw, self._buf = self._buf[: i + 1], self._buf[i + 1 :]
        self.last_line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        return self.last_line

    async def expect(self, pattern: re.Pattern[str]) -> str | None:
        """Read lines until one matches; return None then, else why it did not."""
        while True:
            final = self._eof or self._read >= self._limit
            while (line := self._take_line(final)) is not None:
                if pattern.search(line):
                    return None
            if self._eof:
                return f"connection closed before expect {pattern.pattern!r} matched"
            if self._read >= self._limit:
                return f"expect {pattern.pattern!r} not matched in {self._limit} bytes read"
            chunk = await self._reader.read(min(_CHUNK, self._limit - self._read))
            if chunk:
                self._read += len(chunk)
                self._buf += chunk
            else:
                self._eof = True


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close the connection, waiting briefly for a clean close, then abort it."""
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()
    except BaseException:
        writer.transport.abort()
        raise


class TcpProbe(HostPortTarget):
    """Probe kind "tcp": open a TCP connection, optionally TLS, and run send/expect steps.

    probe_tcp_connect_duration_seconds covers name resolution and the TCP connect; the TLS
    handshake is done afterwards (StreamWriter.start_tls) and reported as its own phase.
    """

    kind: ClassVar[str] = "tcp"
    Settings: ClassVar[type[BaseModel]] = TcpSettings

    def __init__(self) -> None:
        """Start with an empty SSL context cache."""
        self._ssl_contexts = SslContextCache()

    def ssl_context(self, tls: TlsSettings) -> ssl.SSLContext:
        """Return the cached SSL context for these TLS settings (rebuilt if a file changed)."""
        return self._ssl_contexts.get(tls)

    async def __call__(self, check: Check[TcpSettings], ctx: ProbeContext) -> ProbeResult:
        """Connect, run the steps, and report."""
        settings = check.settings
        host, port = split_host_port(check.target)
        sslctx: ssl.SSLContext | None = None
        if settings.tls:
            try:
                sslctx = self.ssl_context(settings.tls_config)
            except ValueError as exc:
                return ProbeResult(success=False, error=bound_text(f"TLS: {exc}"))

        ctx.log("tcp_connect", host=host, port=port, tls=settings.tls)
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except socket.gaierror as exc:
            return ProbeResult(
                success=False, error=bound_text(f"DNS: cannot resolve {host!r}: {exc.strerror}")
            )
        except OSError as exc:
            return ProbeResult(
                success=False,
                error=bound_text(f"connect to {check.target} failed: {os_error_reason(exc)}"),
            )
        connect = time.monotonic() - start
        ctx.log("tcp_connected", seconds=round(connect, 6))
        samples = [
            _gauge(
                "probe_tcp_connect_duration_seconds",
                connect,
                "Seconds to resolve the host and open the TCP connection (TLS excluded).",
            )
        ]
        phases: list[tuple[str, float]] = [("connect", connect)]
        try:
            if sslctx is not None:
                tls_start = time.monotonic()
                try:
                    await writer.start_tls(
                        sslctx, server_hostname=settings.tls_config.server_name or host
                    )
                except ssl.SSLError as exc:
                    return self._fail(describe_ssl_error(exc), samples, phases, ctx)
                except OSError as exc:
                    return self._fail(
                        f"TLS handshake failed: {os_error_reason(exc)}", samples, phases, ctx
                    )
                phases.append(("tls", time.monotonic() - tls_start))
                der = peer_cert_der(writer.get_extra_info("ssl_object"))
                expiry = cert_expiry(der) if der is not None else None
                ctx.log("tls_done", seconds=round(phases[-1][1], 6))
                if expiry is not None:
                    samples.append(
                        _gauge(
                            "probe_tls_cert_expiry_timestamp_seconds",
                            expiry,
                            "Unix time at which the server's leaf certificate expires (notAfter).",
                        )
                    )
            error, regex_failed = await self._run_steps(settings, reader, writer, ctx)
            if settings.query_response:
                phases.append(("query", time.monotonic() - start - sum(v for _, v in phases)))
        finally:
            await close_writer(writer)
        samples.append(
            _gauge(
                "probe_failed_due_to_regex",
                1.0 if regex_failed else 0.0,
                "1 if the probe failed because an expect regex did not match, else 0.",
            )
        )
        if error is not None:
            return self._fail(error, samples, phases, ctx)
        return ProbeResult(success=True, samples=tuple(samples), phases=tuple(phases))

    @staticmethod
    def _fail(
        error: str, samples: list[Sample], phases: list[tuple[str, float]], ctx: ProbeContext
    ) -> ProbeResult:
        """Return a failed result with a bounded reason."""
        error = bound_text(error)
        ctx.log("tcp_failed", error=error)
        return ProbeResult(success=False, error=error, samples=tuple(samples), phases=tuple(phases))

    @staticmethod
    async def _run_steps(
        settings: TcpSettings,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ctx: ProbeContext,
    ) -> tuple[str | None, bool]:
        """Run the query_response steps; return (failure reason or None, failed on a regex)."""
        lines = _LineReader(reader, settings.max_read_bytes)
        ending = _LINE_ENDINGS[settings.line_ending]
        for n, step in enumerate(settings.query_response, start=1):
            try:
                if step.expect is not None:
                    why = await lines.expect(step.expect)
                    if why is not None:
                        last = lines.last_line
                        seen = f"last line {last!r}" if last is not None else "nothing received"
                        return f"step {n}: {why}; {seen}", True
                    ctx.log("expect_matched", step=n, line=lines.last_line)
                if step.send is not None:
                    data = step.send.encode()
                    if not data.endswith(b"\n"):
                        data += ending
                    writer.write(data)
                    await writer.drain()
                    ctx.log("sent", step=n, bytes=len(data))  # not the text: it may hold a secret
            except ssl.SSLError as exc:
                return f"step {n}: {describe_ssl_error(exc)}", False
            except OSError as exc:
                return f"step {n}: connection error: {os_error_reason(exc)}", False
        return None, False
