"""A lean HTTP/1.1 client, for measurement only: what the GETs of the http probe would cost
without aiohttp's client machinery (tests/bench/floor.py --mode lean, and --mode raw).

One request per fresh connection on asyncio's Protocol/Transport API: the request written in
one send, the answer parsed incrementally in `data_received`, the caller woken once, when the
answer is complete (Content-Length, chunked or read-to-close bodies, gzip and deflate,
redirects as aiohttp follows them). Everything the target sends is bounded: the status line
and each header line (8190 bytes, aiohttp's limits), the header count (128), the whole head
(64 KiB), chunk-size and trailer lines, and the body (after decompression).

The probe does not use it: measured beside the aiohttp floor in the whole bench's paced
setting it was 1.3x to 1.5x cheaper per GET, short of the 1.6x that would have paid for a
second HTTP client in the product (docs/scaling.md, "The HTTP client floors"). With RAW set,
plain HTTP to an IP literal goes over a bare non-blocking socket (add_writer/add_reader, no
Transport): the least asyncio can do per GET.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import re
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Protocol, cast

from aiohappyeyeballs import start_connection
from yarl import URL

from vigie.probes.tls import describe_ssl_error, os_error_reason

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_LINE",
    "MAX_REDIRECTS",
    "LeanError",
    "LeanResponse",
    "Timing",
    "lean_request",
]

MAX_LINE = 8190
"""Longest status, header, chunk-size or trailer line accepted (aiohttp's max_line_size)."""
MAX_HEADERS = 128
"""Most header (or trailer) lines accepted in one answer (aiohttp's max_headers)."""
MAX_HEAD_BYTES = 64 * 1024
"""Largest status line plus headers accepted."""
MAX_REDIRECTS = 10
"""Redirects followed before failing (aiohttp's default)."""
ACCEPT_ENCODING = "gzip, deflate"
"""What aiohttp advertises without brotli installed; the bodies are decompressed here too."""
_REDIRECTS = frozenset((301, 302, 303, 307, 308))

_STATUS = re.compile(rb"HTTP/(\d)\.(\d) ([1-9]\d\d)(?: [^\r\n]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_DIGITS = re.compile(r"\d{1,18}")

# Parser states.
_HEAD, _LENGTH, _CLOSE, _CH_SIZE, _CH_DATA, _CH_CRLF, _CH_TRAILER, _DONE = range(8)


class LeanError(Exception):
    """A request failed; the message is the probe's reason (bounded by the caller)."""


@dataclass(slots=True)
class LeanResponse:
    """The final answer of a request chain."""

    status: int
    version: tuple[int, int]
    headers: dict[str, str]
    url: URL
    redirects: int
    body: bytes
    complete: bool

    @property
    def charset(self) -> str | None:
        """Return the charset named by Content-Type, if any."""
        ctype = self.headers.get("content-type", "")
        for part in ctype.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "charset":
                return value.strip().strip('"') or None
        return None


class _Exchange(asyncio.Protocol):
    """One request on one connection: parse the answer as it arrives, wake the caller once.

    `done` is resolved when the answer is complete, the body limit is reached, or the
    exchange failed (`error` then says why); the caller closes the transport.
    """

    def __init__(self, done: asyncio.Future[None], head_only: bool, limit: int) -> None:
        self.done = done
        self.head_only = head_only
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.state = _HEAD
        self.buf = bytearray()
        self.status = 0
        self.version = (1, 1)
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.remaining = 0
        self.trailers = 0
        self.decoder: zlib._Decompress | None = None
        self.deflate = False
        self.error: str | None = None
        self.head_at = 0.0
        self.end_at = 0.0

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to write the request on (uvloop's are not asyncio.Transport
        subclasses: the type is taken as the loop gives it)."""
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the bytes to the parser of the current state."""
        if self.state == _HEAD:
            self.buf += data
            self._head()
        elif self.state == _LENGTH:
            self._length(data)
        elif self.state == _CLOSE:
            self._emit(data)
        elif self.state != _DONE:
            self.buf += data
            self._chunked()

    def eof_received(self) -> bool | None:
        """End a read-to-close body; anything else not complete is an error."""
        self._ended(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the exchange if the connection went before the answer was complete."""
        self._ended(exc)

    # ---------------------------------------------------------------- outcome

    def _ended(self, exc: BaseException | None) -> None:
        """The peer closed (or reset) the connection: finish or fail by the state."""
        if self.state == _DONE:
            return
        if self.state == _CLOSE and exc is None:
            self._finish_body()
        elif exc is not None and self.state == _HEAD and not self.buf:
            self._fail(_connection_error(exc))
        elif self.state == _HEAD:
            self._fail("server closed the connection without a complete response")
        elif exc is not None:
            self._fail(_connection_error(exc))
        else:
            self._fail("reading body failed: connection closed before the end of the body")

    def _fail(self, reason: str) -> None:
        """Stop with an error."""
        self.error = reason
        self._stop()

    def _stop(self) -> None:
        """Stop parsing and wake the caller."""
        self.state = _DONE
        self.end_at = time.monotonic()
        if not self.done.done():
            self.done.set_result(None)

    def _finish_body(self) -> None:
        """The body ended: flush the decoder and stop, complete."""
        if self.decoder is not None:
            try:
                tail = self.decoder.flush()
            except zlib.error:
                self._fail("reading body failed: cannot decompress the body")
                return
            room = self.limit - self.size
            if len(tail) > room:
                self._keep(tail[:room])
                self._stop()
                return
            self._keep(tail)
        self.complete = True
        self._stop()

    # ---------------------------------------------------------------- head

    def _head(self) -> None:
        """Parse the status line and headers once they are all in; start the body."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._fail(f"invalid HTTP response: headers over {MAX_HEAD_BYTES} bytes")
            elif b"\r\n" not in buf and len(buf) > MAX_LINE:
                self._fail(f"invalid HTTP response: status line over {MAX_LINE} bytes")
            return
        if end > MAX_HEAD_BYTES:
            self._fail(f"invalid HTTP response: headers over {MAX_HEAD_BYTES} bytes")
            return
        lines = bytes(buf[:end]).split(b"\r\n")
        rest = bytes(buf[end + 4 :])
        buf.clear()
        first = lines[0]
        m = _STATUS.fullmatch(first) if len(first) <= MAX_LINE else None
        if m is None:
            self._fail("invalid HTTP response: bad status line")
            return
        if len(lines) - 1 > MAX_HEADERS:
            self._fail(f"invalid HTTP response: more than {MAX_HEADERS} headers")
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if len(line) > MAX_LINE or not sep or not _TOKEN.fullmatch(name):
                self._fail("invalid HTTP response: bad header line")
                return
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            if key == "content-length" and headers.get(key, text) != text:
                self._fail("invalid HTTP response: conflicting Content-Length headers")
                return
            headers[key] = text
        status = int(m.group(3))
        if status < 200:
            if status == 101:
                self._fail("invalid HTTP response: unexpected 101 Switching Protocols")
                return
            if rest:  # an interim answer (100 Continue, 103 Early Hints): the next one counts
                self.data_received(rest)
            return
        self.status = status
        self.version = (int(m.group(1)), int(m.group(2)))
        self.headers = headers
        self.head_at = time.monotonic()
        self._start_body(rest)

    def _start_body(self, rest: bytes) -> None:
        """Choose how the body is delimited and decoded, then feed what already came."""
        headers = self.headers
        if self.head_only or self.status in (204, 304):
            self.complete = True
            self._stop()
            return
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self.deflate = True  # zlib-wrapped or raw: told by the first byte
        te = headers.get("transfer-encoding")
        if te is not None and te.rsplit(",", 1)[-1].strip().lower() == "chunked":
            self.state = _CH_SIZE
            if rest:
                self.buf += rest
                self._chunked()
            return
        length = headers.get("content-length")
        if te is None and length is not None:
            if not _DIGITS.fullmatch(length):
                self._fail("invalid HTTP response: bad Content-Length")
                return
            self.remaining = int(length)
            if self.remaining == 0:
                self._finish_body()
                return
            self.state = _LENGTH
            if rest:
                self._length(rest)
            return
        self.state = _CLOSE
        if rest:
            self._emit(rest)

    # ---------------------------------------------------------------- body

    def _keep(self, data: bytes) -> None:
        """Append decoded body bytes."""
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def _emit(self, raw: bytes) -> bool:
        """Decode and keep body bytes up to the limit; False once the limit stopped the read."""
        if self.deflate:
            self.deflate = False
            wbits = zlib.MAX_WBITS if raw and raw[0] & 0x0F == 8 else -zlib.MAX_WBITS
            self.decoder = zlib.decompressobj(wbits)
        room = self.limit - self.size
        if self.decoder is None:
            if len(raw) > room:
                self._keep(raw[:room])
                self._stop()
                return False
            self._keep(raw)
            return True
        try:
            out = self.decoder.decompress(raw, room + 1)
        except zlib.error:
            self._fail("reading body failed: cannot decompress the body")
            return False
        if len(out) > room:
            self._keep(out[:room])
            self._stop()
            return False
        self._keep(out)
        return True

    def _length(self, data: bytes) -> None:
        """Take a Content-Length body."""
        if len(data) >= self.remaining:
            data = data[: self.remaining]
            self.remaining = 0
            if self._emit(data):
                self._finish_body()
            return
        self.remaining -= len(data)
        self._emit(data)

    def _chunked(self) -> None:
        """Take as much of a chunked body as the buffer holds."""
        buf = self.buf
        while self.state != _DONE:
            if self.state == _CH_DATA:
                if not buf:
                    return
                take = min(self.remaining, len(buf))
                piece = bytes(buf[:take])
                del buf[:take]
                self.remaining -= take
                if not self._emit(piece):
                    return
                if self.remaining == 0:
                    self.state = _CH_CRLF
                continue
            if self.state == _CH_CRLF:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    self._fail("reading body failed: bad chunk end")
                    return
                del buf[:2]
                self.state = _CH_SIZE
                continue
            i = buf.find(b"\r\n")
            if i < 0:
                if len(buf) > MAX_LINE:
                    self._fail("reading body failed: chunk line too long")
                return
            line = bytes(buf[:i])
            del buf[: i + 2]
            if self.state == _CH_TRAILER:
                if not line:
                    self._finish_body()
                    return
                self.trailers += 1
                if self.trailers > MAX_HEADERS:
                    self._fail(f"reading body failed: more than {MAX_HEADERS} trailers")
                    return
                continue
            size = line.split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size):
                self._fail("reading body failed: invalid chunk size")
                return
            self.remaining = int(size, 16)
            self.state = _CH_DATA if self.remaining else _CH_TRAILER


def _connection_error(exc: BaseException) -> str:
    """Return the reason for a connection that failed after it was opened."""
    if isinstance(exc, ssl.SSLError):
        return describe_ssl_error(exc)
    if isinstance(exc, OSError):
        return f"connection error: {os_error_reason(exc)}"
    return f"connection error: {type(exc).__name__}: {exc}"


def _is_ip(host: str) -> bool:
    """Return whether host is an IP address literal (no name to resolve)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Timing(Protocol):
    """What lean_request tells the probe's timing (probes.http.HttpTiming has these methods)."""

    def on_connect_start(self) -> None:
        """Connecting starts (a second call: the next hop of a redirect)."""
        ...

    def on_dns(self, start: float, end: float) -> None:
        """The name was resolved between start and end."""
        ...

    def on_connection_end(self) -> None:
        """The connection (and TLS handshake) is up."""
        ...

    def on_head(self, at: float) -> None:
        """A response's headers were in at this time."""
        ...


async def _connect(
    loop: asyncio.AbstractEventLoop,
    factory: _Exchange,
    url: URL,
    *,
    sslctx: ssl.SSLContext | None,
    server_name: str | None,
    timing: Timing,
) -> asyncio.Transport:
    """Resolve (unless an IP literal), connect and handshake; raise LeanError saying why not."""
    host = url.raw_host or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    literal = host.strip("[]")
    hostname = (server_name or literal.rstrip(".")) if sslctx is not None else None
    timing.on_connect_start()
    try:
        if _is_ip(literal):
            transport, _ = await loop.create_connection(
                lambda: factory, literal, port, ssl=sslctx, server_hostname=hostname
            )
        else:
            start = time.monotonic()
            try:
                infos = await loop.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
                )
            except socket.gaierror as exc:
                raise LeanError(f"DNS: cannot resolve {host!r}: {exc.strerror or exc}") from None
            finally:
                timing.on_dns(start, time.monotonic())
            sock = await start_connection(infos, happy_eyeballs_delay=0.25, interleave=1)
            try:
                transport, _ = await loop.create_connection(
                    lambda: factory, sock=sock, ssl=sslctx, server_hostname=hostname
                )
            except BaseException:
                sock.close()
                raise
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise LeanError(describe_ssl_error(exc)) from None
    except OSError as exc:
        raise LeanError(f"connect to {host}:{port} failed: {os_error_reason(exc)}") from None
    timing.on_connection_end()
    return transport


def _request_bytes(method: str, url: URL, headers: dict[str, str], body: bytes | None) -> bytes:
    """Return the request head and body as one buffer, with aiohttp's default headers."""
    lower = {k.lower() for k in headers}
    lines = [f"{method} {url.raw_path_qs or '/'} HTTP/1.1"]
    if "host" not in lower:
        lines.append(f"Host: {url.host_port_subcomponent}")
    for name, default in (
        ("Accept", "*/*"),
        ("Accept-Encoding", ACCEPT_ENCODING),
        ("User-Agent", "Vigie/0.1"),
    ):
        if name.lower() not in lower:
            lines.append(f"{name}: {default}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        if "content-type" not in lower:
            lines.append("Content-Type: application/octet-stream")
        if "content-length" not in lower:
            lines.append(f"Content-Length: {len(body)}")
    if "connection" not in lower:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


RAW = False
"""Experiment: plain HTTP to an IP literal on a bare non-blocking socket, no Transport."""


async def _raw_exchange(
    loop: asyncio.AbstractEventLoop,
    exchange: _Exchange,
    ip: str,
    port: int,
    *,
    request: bytes,
    timing: Timing,
) -> None:
    """Connect, send and read on a bare socket with add_writer/add_reader, feeding exchange."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    timing.on_connect_start()
    sock = socket.socket(family, socket.SOCK_STREAM)
    fd = sock.fileno()
    try:
        sock.setblocking(False)
        err = sock.connect_ex((ip, port))
        if err == errno.EINPROGRESS:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _settle, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            reason = os_error_reason(OSError(err, os.strerror(err)))
            raise LeanError(f"connect to {ip}:{port} failed: {reason}")
        timing.on_connection_end()
        sent = sock.send(request)
        if sent < len(request):
            await loop.sock_sendall(sock, request[sent:])

        def readable() -> None:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                exchange.connection_lost(exc)
                return
            if data:
                exchange.data_received(data)
            else:
                exchange.eof_received()

        loop.add_reader(fd, readable)
        try:
            await exchange.done
        finally:
            loop.remove_reader(fd)
    finally:
        sock.close()


def _settle(fut: asyncio.Future[None]) -> None:
    """Settle a future once (a writer callback may fire more than once)."""
    if not fut.done():
        fut.set_result(None)


async def lean_request(
    method: str,
    url: URL,
    *,
    headers: dict[str, str],
    body: bytes | None,
    limit: int,
    follow_redirects: bool,
    sslctx: ssl.SSLContext | None,
    server_name: str | None,
    timing: Timing,
) -> LeanResponse:
    """Send one request (following redirects as aiohttp does) and read at most limit bytes of
    the final body; raise LeanError with the reason when it fails.

    Redirects: 301, 302 and 303 turn a POST (any method but HEAD for 303) into a body-less
    GET, 307 and 308 repeat the request; Authorization is dropped when the origin changes.
    """
    loop = asyncio.get_running_loop()
    redirects = 0
    while True:
        https = url.scheme == "https"
        done: asyncio.Future[None] = loop.create_future()
        exchange = _Exchange(done, method == "HEAD", limit)
        literal = (url.raw_host or "").strip("[]")
        if RAW and not https and _is_ip(literal):
            request = _request_bytes(method, url, headers, body)
            port = url.port or 80
            await _raw_exchange(loop, exchange, literal, port, request=request, timing=timing)
            if exchange.error is not None:
                raise LeanError(exchange.error)
            transport = None
        else:
            transport = await _connect(
                loop,
                exchange,
                url,
                sslctx=sslctx if https else None,
                server_name=server_name,
                timing=timing,
            )
        if transport is not None:
            try:
                transport.write(_request_bytes(method, url, headers, body))
                await done
            finally:
                if exchange.complete and not https:
                    transport.close()
                else:
                    transport.abort()
        if exchange.error is not None:
            raise LeanError(exchange.error)
        timing.on_head(exchange.head_at)
        status = exchange.status
        location = exchange.headers.get("location") or exchange.headers.get("uri")
        if not (follow_redirects and status in _REDIRECTS and location):
            return LeanResponse(
                status,
                exchange.version,
                exchange.headers,
                url,
                redirects,
                b"".join(exchange.chunks),
                exchange.complete,
            )
        redirects += 1
        if redirects >= MAX_REDIRECTS:
            raise LeanError(f"too many redirects ({redirects})")
        try:
            target = url.join(URL(location))
        except (ValueError, TypeError):
            raise LeanError(f"redirect to an invalid or non-HTTP URL: {location[:200]}") from None
        if target.scheme not in ("http", "https") or not target.raw_host:
            raise LeanError(f"redirect to an invalid or non-HTTP URL: {location[:200]}")
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method, body = "GET", None
            headers = {
                k: v
                for k, v in headers.items()
                if k.lower() not in ("content-type", "content-length")
            }
        if target.origin() != url.origin():
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        url = target.with_fragment(None)
