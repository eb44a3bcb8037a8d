"""TLS and basic auth for every web endpoint, from an exporter-toolkit `web.yml` file.

Same format as Prometheus exporters (prometheus/exporter-toolkit docs/web-configuration.md), so
a hospital reuses its certificates and password hashes: `tls_server_config` (cert_file,
key_file, client_ca_file, client_auth_type, min_version, max_version) and `basic_auth_users`
(user: bcrypt hash). Relative file paths are taken from the web.yml's directory. As in
exporter-toolkit, everything is behind auth, /-/healthy included.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import bcrypt
import yaml
from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from vigie.core.results import bound_text
from vigie.monitor.web.operators import USER_KEY

ClientAuth = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# exporter-toolkit client_auth_type -> (verify mode, needs client_ca_file)
CLIENT_AUTH: dict[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

MAX_FILE_BYTES = 1024 * 1024
AUTH_CACHE = 256
"""Successful logins remembered, so a wall screen refreshing every 10 s costs no bcrypt each."""

BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
"""A bcrypt hash: version, cost 04-31, then 22 characters of salt and 31 of digest."""


class WebConfigError(ValueError):
    """A web.yml that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    """exporter-toolkit's tls_server_config."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: ClientAuth = "NoClientCert"
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    curve_preferences: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True


class HttpServerConfig(_Strict):
    """exporter-toolkit's http_server_config: only response headers are applied."""

    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)


def _bcrypt_hash(value: str) -> str:
    """Check a bcrypt hash; never echo the value: it is a password hash (or worse, a password)."""
    if not BCRYPT_HASH.fullmatch(value):
        raise ValueError("not a bcrypt hash (make one with htpasswd -nBC 10 <user>)")
    return value


BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]


class WebConfig(_Strict):
    """A parsed web.yml."""

    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    basic_auth_users: dict[str, BcryptHash] = Field(default_factory=dict)


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web.yml; raise WebConfigError naming the file and the field."""
    try:
        raw = path.read_bytes()[:MAX_FILE_BYTES]
        data: Any = yaml.safe_load(raw) or {}
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{path}: not valid YAML: {bound_text(str(exc), 300)}") from None
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: must be a mapping")
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:  # every error, not only the first
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: "
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        ]
        raise WebConfigError(f"{path}: " + "; ".join(problems)) from None
    tls = config.tls_server_config
    if tls is None:
        return config
    base = path.parent
    tls = tls.model_copy(
        update={
            "cert_file": base / tls.cert_file,
            "key_file": base / tls.key_file,
            "client_ca_file": None if tls.client_ca_file is None else base / tls.client_ca_file,
        }
    )
    verifies = tls.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
    if verifies and tls.client_ca_file is None:
        raise WebConfigError(
            f"{path}: tls_server_config.client_ca_file: "
            f"required with client_auth_type {tls.client_auth_type}"
        )
    if TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
        raise WebConfigError(f"{path}: tls_server_config.min_version: above max_version")
    config = config.model_copy(update={"tls_server_config": tls})
    ssl_context(config, path)  # load the files now: a bad key fails at start, not at first use
    return config


def ssl_context(config: WebConfig, path: Path) -> ssl.SSLContext | None:
    """Return the server SSL context of a web.yml (None without TLS)."""
    tls = config.tls_server_config
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise WebConfigError(
            f"{path}: tls_server_config.cert_file/key_file: cannot load "
            f"{tls.cert_file} and {tls.key_file}: {reason}"
        ) from None
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise WebConfigError(
                f"{path}: tls_server_config.client_ca_file: cannot load "
                f"{tls.client_ca_file}: {reason}"
            ) from None
    ctx.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    return ctx


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BasicAuth:
    """aiohttp middleware checking HTTP basic auth against bcrypt hashes."""

    def __init__(self, users: dict[str, str], logger: Any = None) -> None:
        self._users = {u: h.encode() for u, h in users.items()}
        self._ok: dict[bytes, str] = {}
        self._log = logger
        # An unknown user is checked against a hash no password matches, at the highest cost in
        # use, so that answering costs as much as for a known user (as exporter-toolkit does):
        # the time of a 401 does not tell which user names exist.
        costs = [int(m.group(1)) for h in users.values() if (m := BCRYPT_HASH.fullmatch(h))]
        cost = max(costs, default=10)
        self._dummy = f"$2b${cost:02d}${'.' * 53}".encode()

    async def check(self, header: str) -> str | None:
        """Return the user a basic Authorization header proves, else None."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        hashed = self._users.get(user)
        if hashed is None:
            await asyncio.to_thread(bcrypt.checkpw, password.encode(), self._dummy)
            return None
        # keyed digest of the credentials: the cache holds no password
        key = hmac.new(hashed, password.encode(), hashlib.sha256).digest()
        if self._ok.get(key) == user:
            return user
        good = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        if not good:
            return None
        if len(self._ok) >= AUTH_CACHE:
            self._ok.clear()
        self._ok[key] = user
        return user

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer 401 unless the request carries a valid user and password."""
        if request.path.startswith("/ack/"):  # acknowledgement links: the signed token is the
            return await handler(request)  # credential (vigie.monitor.web.ack)
        user = await self.check(request.headers.get("Authorization", ""))
        if user is None:
            if self._log is not None:
                self._log.warning(
                    "web_auth_failed", path=bound_text(request.path, 200), remote=request.remote
                )
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="Vigie", charset="UTF-8"'},
            )
        request[USER_KEY] = user  # who acts, for roles and the audit log (web.operators)
        return await handler(request)


def add_headers(app: web.Application, headers: dict[str, str]) -> None:
    """Add http_server_config.headers to every response, streamed ones (/metrics) included.

    On response prepare, not in a middleware: a streamed response has sent its headers
    before a middleware sees it.
    """

    async def on_prepare(_: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(headers)

    app.on_response_prepare.append(on_prepare)


def apply(app: web.Application, config: WebConfig, logger: Any = None) -> None:
    """Put the web.yml's basic auth and headers in front of every route of app.

    In front of the app's own middlewares: the roles check (web.operators) reads the user.
    """
    if config.http_server_config.headers:
        add_headers(app, dict(config.http_server_config.headers))
    if config.basic_auth_users:
        app.middlewares.insert(0, BasicAuth(dict(config.basic_auth_users), logger).middleware)


def role_warnings(
    roles: Mapping[str, str] | None, web_file: Path | None
) -> list[tuple[tuple[int | str, ...], str]]:
    """Name `web.roles` mappings that nobody can match: a role set with no way to log in.

    Without basic auth or client certificates every visitor is an anonymous viewer, so a
    `roles:` block silently leaves nobody able to act (maintenance, updates, reload).
    """
    if roles is None:
        return []
    where: tuple[int | str, ...] = ("web", "roles")
    problems: list[tuple[tuple[int | str, ...], str]] = []
    if not any(role == "operator" for role in roles.values()):
        problems.append((where, "no user or certificate has the operator role: nobody can act"))
    config: WebConfig | None = None
    if web_file is not None:
        try:
            config = load_web_config(web_file)
        except WebConfigError:
            return problems  # reported as an error of its own
    users = set(config.basic_auth_users) if config is not None else set()
    tls = config.tls_server_config if config is not None else None
    certificates = tls is not None and tls.client_auth_type != "NoClientCert"
    if not users and not certificates:
        problems.append(
            (
                where,
                "web.roles is set but web.config_file asks for neither basic_auth_users nor"
                " client certificates: every visitor is an anonymous viewer and nobody can act",
            )
        )
        return problems
    for name in roles:
        if name in users or (certificates and "=" in name):
            continue
        how = "basic_auth_users" + (" nor a certificate subject (CN=...)" if certificates else "")
        problems.append(((*where, name), f"{name!r} is not in web.yml's {how}: it never matches"))
    return problems
