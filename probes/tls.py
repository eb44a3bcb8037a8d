"""Helpers shared by the http and tcp probes: TLS settings, cached SSL contexts, regexes."""

from __future__ import annotations

import contextlib
import os
import re
import ssl
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from typing import Annotated, Any, Self

from cryptography import x509
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from vigie.core.secrets import ConfigPath


def compile_regex(value: Any) -> re.Pattern[str]:
    """Return value compiled as a regular expression or raise ValueError with the reason."""
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a regular expression string, got {type(value).__name__}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


Regex = Annotated[
    re.Pattern[str],
    BeforeValidator(compile_regex),
    PlainSerializer(lambda p: p.pattern, return_type=str),
    WithJsonSchema({"type": "string", "format": "regex"}),
]
"""A regular expression in the config, compiled (and so validated) at load."""


class TlsSettings(BaseModel):
    """How to verify the server and which client certificate to present."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verify: bool = Field(True, description="Verify the server certificate chain and host name.")
    ca_file: ConfigPath | None = Field(
        None,
        description="PEM file of CA certificates to trust instead of the system ones.",
    )
    cert_file: ConfigPath | None = Field(
        None, description="PEM client certificate (may also hold the key) for mutual TLS."
    )
    key_file: ConfigPath | None = Field(
        None, description="PEM private key of cert_file, if not inside it; must not be encrypted."
    )
    server_name: str | None = Field(
        None,
        description="Name sent in SNI and checked against the certificate; default: the host.",
    )

    @model_validator(mode="after")
    def _check_key(self) -> Self:
        """Reject a key without a certificate; the files themselves are loaded on first use."""
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class TlsConfigError(ValueError):
    """A TLS file that cannot be loaded; the message names the file and the reason."""


class _EncryptedKeyError(Exception):
    """Raised from the password callback: encrypted keys would need an interactive prompt."""


def _no_password() -> bytes:
    """Refuse to decrypt a key: OpenSSL would otherwise prompt on the terminal."""
    raise _EncryptedKeyError


def _ssl_reason(exc: ssl.SSLError) -> str:
    """Return the short OpenSSL reason of an SSL error, readable."""
    if exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    text = str(exc.strerror or exc)
    if "PEM lib" in text:
        return "not valid PEM data"
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)


def _load_files(ctx: ssl.SSLContext, settings: TlsSettings) -> None:
    """Load the CA and client certificate files of settings into ctx."""
    if settings.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=settings.ca_file)
        except OSError as exc:
            reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else exc.strerror
            raise TlsConfigError(
                f"cannot load ca_file {str(settings.ca_file)!r}: {reason}"
            ) from None
    if settings.cert_file is not None:
        files = repr(str(settings.cert_file))
        if settings.key_file is not None:
            files += f" / key_file {str(settings.key_file)!r}"
        try:
            ctx.load_cert_chain(settings.cert_file, settings.key_file, password=_no_password)
        except _EncryptedKeyError:
            raise TlsConfigError(
                f"cannot load cert_file {files}: the key is encrypted, which is not supported"
            ) from None
        except OSError as exc:
            reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else exc.strerror
            raise TlsConfigError(f"cannot load cert_file {files}: {reason}") from None


TlsObserver = Callable[[ssl.SSLObject], None]
_TLS_OBSERVER: ContextVar[TlsObserver | None] = ContextVar("vigie_tls_observer", default=None)


def set_tls_observer(observer: TlsObserver) -> Token[TlsObserver | None]:
    """Make observer see the SSL objects this task creates; return the token to reset it.

    asyncio creates the SSL object with SSLContext.wrap_bio right after the TCP connection is
    established and before the first handshake message, in the task that connects (or a
    child task, which inherits the context variable). So the call marks the end of TCP
    connect and the start of the TLS handshake.
    """
    return _TLS_OBSERVER.set(observer)


def reset_tls_observer(token: Token[TlsObserver | None]) -> None:
    """Restore the observer that was current before set_tls_observer."""
    _TLS_OBSERVER.reset(token)


@contextlib.contextmanager
def observe_tls(observer: TlsObserver) -> Iterator[None]:
    """Call observer with each SSL object this task creates (see set_tls_observer)."""
    token = set_tls_observer(observer)
    try:
        yield
    finally:
        reset_tls_observer(token)


class ObservedSSLContext(ssl.SSLContext):
    """An SSLContext that reports the SSL objects it creates to the task's observe_tls."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Create the SSL object as usual and tell the current observer, if any."""
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        observer = _TLS_OBSERVER.get()
        if observer is not None:
            observer(obj)
        return obj


def build_ssl_context(settings: TlsSettings) -> ssl.SSLContext:
    """Return a client SSL context for settings; raise TlsConfigError if a file is bad."""
    ctx = ObservedSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.verify:
        if settings.ca_file is None:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    _load_files(ctx, settings)
    return ctx


_FileSignature = tuple[tuple[int, int, int] | None, ...]


def _files_signature(settings: TlsSettings) -> _FileSignature:
    """Return the identity of the TLS files, to rebuild a context when one is replaced."""
    sig: list[tuple[int, int, int] | None] = []
    for path in (settings.ca_file, settings.cert_file, settings.key_file):
        if path is None:
            sig.append(None)
            continue
        try:
            st = os.stat(path)
        except OSError:
            sig.append(None)
        else:
            sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sig)


class SslContextCache:
    """SSL contexts keyed by TLS settings, built on first use and when a file changes."""

    def __init__(self, max_entries: int = 256) -> None:
        """Keep at most max_entries contexts."""
        self._entries: dict[TlsSettings, tuple[_FileSignature, ssl.SSLContext]] = {}
        self._max_entries = max_entries

    def get(self, settings: TlsSettings) -> ssl.SSLContext:
        """Return the context for settings; raise TlsConfigError if a file cannot be loaded."""
        sig = _files_signature(settings)
        entry = self._entries.get(settings)
        if entry is not None and entry[0] == sig:
            return entry[1]
        ctx = build_ssl_context(settings)
        self._entries.pop(settings, None)
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[settings] = (sig, ctx)
        return ctx


def cert_expiry(der: bytes) -> float | None:
    """Return the notAfter of a DER certificate as unix time, or None if it cannot be parsed."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    return cert.not_valid_after_utc.timestamp()


def peer_cert_der(ssl_object: object) -> bytes | None:
    """Return the DER of the leaf certificate the peer sent on an SSL object, if any."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    try:
        return ssl_object.getpeercert(binary_form=True)
    except ValueError:  # handshake not done
        return None


def os_error_reason(exc: OSError) -> str:
    """Return the short reason of an OS error, e.g. "Connection refused"."""
    if exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError) and not str(exc):
        return "connection closed by the peer"
    return " ".join(str(exc).split()) or type(exc).__name__


def describe_ssl_error(exc: BaseException) -> str:
    """Return a short 'TLS: ...' reason for a handshake failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _ssl_reason(exc)
        return f"TLS: certificate verify failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {_ssl_reason(exc)}"
    return f"TLS: {exc}"
