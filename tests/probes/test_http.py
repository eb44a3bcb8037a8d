"""The http probe against real loopback HTTP(S) servers, and its settings validation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError

from tests.probes.conftest import Pki, make_check, refused_port, sample, serve_http
from vigie.core.results import MAX_ERROR_CHARS
from vigie.probes.base import ProbeContext
from vigie.probes.http import HttpProbe, HttpSettings
from vigie.probes.tls import TlsSettings

BIG = 10 * 1024 * 1024
PASSWORD = "s3cret-pw"
TOKEN = "tok-123"
PHASES = ("dns", "connect", "tls", "processing", "transfer")
BIG_ABORTED = web.AppKey("big_aborted", asyncio.Event)


async def ok(_: web.Request) -> web.Response:
    """Answer a health page."""
    return web.Response(text="status: OK\n")


async def error(_: web.Request) -> web.Response:
    """Answer a 500 with an error body."""
    return web.Response(status=500, text="ERROR: database down\n")


async def created(_: web.Request) -> web.Response:
    """Answer 201."""
    return web.Response(status=201, text="created")


async def empty(_: web.Request) -> web.Response:
    """Answer 204 with no body."""
    return web.Response(status=204)


async def redirect(_: web.Request) -> web.Response:
    """Redirect to /ok."""
    raise web.HTTPFound("/ok")


async def slow_redirect(_: web.Request) -> web.Response:
    """Take 0.1 s, then redirect to /slow."""
    await asyncio.sleep(0.1)
    raise web.HTTPFound("/slow")


async def slow(_: web.Request) -> web.Response:
    """Take 0.15 s to answer."""
    await asyncio.sleep(0.15)
    return web.Response(text="status: OK\n")


async def big(request: web.Request) -> web.StreamResponse:
    """Stream 10 MB, ending with END, until the client goes away."""
    resp = web.StreamResponse()
    resp.content_length = BIG
    await resp.prepare(request)
    chunk = b"x" * 65536
    sent = 0
    try:
        while sent < BIG - 3:
            part = chunk[: BIG - 3 - sent]
            await resp.write(part)
            sent += len(part)
        await resp.write(b"END")
    except ConnectionError:
        request.app[BIG_ABORTED].set()
    return resp


async def basic(request: web.Request) -> web.Response:
    """Accept only basic auth alice:PASSWORD."""
    want = aiohttp.encode_basic_auth("alice", PASSWORD)
    if request.headers.get("Authorization") != want:
        return web.Response(status=401, text="who are you")
    return web.Response(text="hello alice")


async def bearer(request: web.Request) -> web.Response:
    """Accept only the bearer token TOKEN."""
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.Response(status=401)
    return web.Response(text="ok")


async def echo(request: web.Request) -> web.Response:
    """Answer with the method, a request header and the body."""
    body = await request.text()
    return web.Response(text=f"{request.method} {request.headers.get('X-Probe')} {body}")


async def client_cert(request: web.Request) -> web.Response:
    """Answer whether the client presented a verified certificate."""
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    return web.Response(text="client cert" if peer else "no client cert")


def make_app() -> web.Application:
    """Return the test application."""
    app = web.Application()
    app[BIG_ABORTED] = asyncio.Event()
    app.router.add_get("/ok", ok)
    app.router.add_get("/error", error)
    app.router.add_get("/created", created)
    app.router.add_get("/empty", empty)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/slow-redirect", slow_redirect)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    app.router.add_get("/basic", basic)
    app.router.add_get("/bearer", bearer)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/client-cert", client_cert)
    return app


@pytest.fixture
def app() -> web.Application:
    """The test application."""
    return make_app()


@pytest.fixture
async def base(app: web.Application) -> AsyncIterator[str]:
    """Base URL of the plain HTTP test server."""
    async with serve_http(app) as url:
        yield url


@pytest.fixture
async def tls_base(app: web.Application, pki: Pki) -> AsyncIterator[str]:
    """Base URL of the HTTPS test server (certificate from the test CA)."""
    async with serve_http(app, pki.server_context()) as url:
        yield url


@pytest.fixture
def probe() -> HttpProbe:
    """A fresh http probe."""
    return HttpProbe()


def phase(result: object, name: str) -> float:
    """Return one probe_http_duration_seconds phase."""
    return sample(result, "probe_http_duration_seconds", phase=name)


# --------------------------------------------------------------------------- plain HTTP


async def test_200_is_success_with_samples(probe: HttpProbe, ctx: ProbeContext, base: str) -> None:
    """A 200 succeeds and reports status, length, redirects, ssl, version and regex samples."""
    result = await probe(make_check(probe, f"{base}/ok"), ctx)
    assert result.success and result.error is None
    assert sample(result, "probe_http_status_code") == 200
    assert sample(result, "probe_http_content_length") == len("status: OK\n")
    assert sample(result, "probe_http_redirects") == 0
    assert sample(result, "probe_http_ssl") == 0
    assert sample(result, "probe_http_version") == 1.1
    assert sample(result, "probe_failed_due_to_regex") == 0
    assert not [s for s in result.samples if s.name == "probe_tls_cert_expiry_timestamp_seconds"]
    assert all(s.type == "gauge" and s.help for s in result.samples)
    assert result.duration == 0.0
    assert any(line.startswith("http_response status=200") for line in ctx.log.lines)


async def test_500_fails_naming_the_status(probe: HttpProbe, ctx: ProbeContext, base: str) -> None:
    """A 500 fails with a reason naming the status and the accepted range."""
    result = await probe(make_check(probe, f"{base}/error"), ctx)
    assert not result.success
    assert result.error == "status code 500 not in 2xx"
    assert sample(result, "probe_http_status_code") == 500


async def test_valid_status_codes_replace_2xx(
    probe: HttpProbe, ctx: ProbeContext, base: str
) -> None:
    """valid_status_codes lists the accepted codes, replacing the 2xx default."""
    strict = await probe(make_check(probe, f"{base}/created", valid_status_codes=[200]), ctx)
    assert strict.error == "status code 201 not in [200]"
    accepted = await probe(make_check(probe, f"{base}/error", valid_status_codes=[500]), ctx)
    assert accepted.success


async def test_fail_if_body_matches(probe: HttpProbe, ctx: ProbeContext, base: str) -> None:
    """A body matching fail_if_body_matches_regexp fails and sets probe_failed_due_to_regex."""
    check = make_check(
        probe, f"{base}/error", valid_status_codes=[500], fail_if_body_matches_regexp=["ERROR"]
    )
    result = await probe(check, ctx)
    assert result.error == "body matched fail_if_body_matches_regexp 'ERROR'"
    assert sample(result, "probe_failed_due_to_regex") == 1


async def test_fail_if_body_not_matches(probe: HttpProbe, ctx: ProbeContext, base: str) -> None:
    """fail_if_body_not_matches_regexp passes when the body matches and fails otherwise."""
    good = make_check(probe, f"{base}/ok", fail_if_body_not_matches_regexp=[r"status:\s+OK"])
    assert (await probe(good, ctx)).success
    bad = make_check(probe, f"{base}/ok", fail_if_body_not_matches_regexp=["healthy"])
    result = await probe(bad, ctx)
    assert result.error == "body did not match fail_if_body_not_matches_regexp 'healthy'"
    assert sample(result, "probe_failed_due_to_regex") == 1


async def test_status_failure_skips_body_regex(
    probe: HttpProbe, ctx: ProbeContext, base: str
) -> None:
    """A bad status is the reason even if a body regex would also fail."""
    check = make_check(probe, f"{base}/error", fail_if_body_matches_regexp=["ERROR"])
    result = await probe(check, ctx)
    assert result.error == "status code 500 not in 2xx"
    assert sample(result, "probe_failed_due_to_regex") == 0


async def test_body_read_is_bounded(
    probe: HttpProbe, ctx: ProbeContext, base: str, app: web.Application
) -> None:
    """Of a 10 MB body only max_body_bytes are read; regexes see only that part."""
    limit = 64 * 1024
    check = make_check(
        probe, f"{base}/big", max_body_bytes=limit, fail_if_body_not_matches_regexp=["END"]
    )
    result = await probe(check, ctx)
    assert sample(result, "probe_http_content_length") <= limit
    assert result.error == "body did not match fail_if_body_not_matches_regexp 'END'"
    await asyncio.wait_for(app[BIG_ABORTED].wait(), 5)  # the connection was dropped
    assert any("complete=False" in line for line in ctx.log.lines)


async def test_redirect_followed(probe: HttpProbe, ctx: ProbeContext, base: str) -> None:
    """Redirects are followed by default and counted."""
    result = await probe(make_check(probe, f"{base}/redirect"), ctx)
    assert result.success
    assert sample(result, "probe_http_redirects") == 1
    assert sample(result, "probe_http_status_code") == 200


async def test_redirect_not_followed(probe: HttpProbe, ctx: ProbeContext, base: str) -> None:
    """With follow_redirects false the 302 itself is judged."""
    result = await probe(make_check(probe, f"{base}/redirect", follow_redirects=False), ctx)
    assert result.error == "status code 302 not in 2xx"
    assert sample(result, "probe_http_redirects") == 0
    ok_302 = make_check(probe, f"{base}/redirect", follow_redirects=False, valid_status_codes=[302])
    assert (await probe(ok_302, ctx)).success


async def test_basic_auth_from_password_file(
    probe: HttpProbe, ctx: ProbeContext, base: str, tmp_path: Path
) -> None:
    """Basic auth sends the password read from password_file."""
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    check = make_check(
        probe, f"{base}/basic", basic_auth={"username": "alice", "password_file": str(secret)}
    )
    result = await probe(check, ctx)
    assert result.success, result.error


async def test_wrong_password_fails_without_leaking_it(
    probe: HttpProbe, ctx: ProbeContext, base: str
) -> None:
    """A rejected password fails on the status and appears in no error, log or repr."""
    check = make_check(
        probe, f"{base}/basic", basic_auth={"username": "alice", "password": "hunter2-wrong"}
    )
    result = await probe(check, ctx)
    assert result.error == "status code 401 not in 2xx"
    shown = " ".join([result.error or "", *ctx.log.lines, repr(check), str(result)])
    assert "hunter2-wrong" not in shown


async def test_bearer_token_from_file(
    probe: HttpProbe, ctx: ProbeContext, base: str, tmp_path: Path
) -> None:
    """The bearer token read from bearer_token_file is sent as Authorization."""
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    result = await probe(make_check(probe, f"{base}/bearer", bearer_token_file=str(secret)), ctx)
    assert result.success, result.error
    assert TOKEN not in " ".join(ctx.log.lines)


async def test_method_headers_and_body_are_sent(
    probe: HttpProbe, ctx: ProbeContext, base: str
) -> None:
    """method, headers and body settings shape the request."""
    check = make_check(
        probe,
        f"{base}/echo",
        method="POST",
        headers={"X-Probe": "vigie"},
        body="ping",
        fail_if_body_not_matches_regexp=["^POST vigie ping$"],
    )
    result = await probe(check, ctx)
    assert result.success, result.error


async def test_connection_refused_is_a_clear_failure(probe: HttpProbe, ctx: ProbeContext) -> None:
    """A closed port fails with 'connection refused', not an exception."""
    port = refused_port()
    result = await probe(make_check(probe, f"http://127.0.0.1:{port}/"), ctx)
    assert not result.success
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


async def test_phases_are_reported_and_fit_in_total(
    probe: HttpProbe, ctx: ProbeContext, base: str
) -> None:
    """All phases are reported; their sum does not exceed the total; DNS is timed for names."""
    url = base.replace("127.0.0.1", "localhost")
    result = await probe(make_check(probe, f"{url}/ok"), ctx)
    assert result.success, result.error
    values = {name: phase(result, name) for name in PHASES}
    total = phase(result, "total")
    assert all(v >= 0 and round(v, 6) == v for v in [*values.values(), total])  # to the µs
    assert sum(values.values()) <= total + 3e-6  # each rounded to the µs on its own
    assert values["dns"] > 0 and values["connect"] > 0 and values["processing"] > 0
    assert values["tls"] == 0
    assert dict(result.phases) == pytest.approx(values)


async def test_phases_sum_over_a_redirect_chain(
    probe: HttpProbe, ctx: ProbeContext, base: str
) -> None:
    """Each hop of a redirect chain is timed: both servers' 0.1 s and 0.15 s are in processing."""
    result = await probe(make_check(probe, f"{base}/slow-redirect"), ctx)
    assert result.success, result.error
    assert sample(result, "probe_http_redirects") == 1
    values = {name: phase(result, name) for name in PHASES}
    assert values["processing"] >= 0.25
    assert values["connect"] > 0
    assert sum(values.values()) <= phase(result, "total") + 1e-6


# --------------------------------------------------------------------------- HTTPS


async def test_https_verified_with_ca_file(
    probe: HttpProbe, ctx: ProbeContext, tls_base: str, pki: Pki
) -> None:
    """HTTPS verified against ca_file succeeds and reports the certificate's notAfter."""
    check = make_check(probe, f"{tls_base}/ok", tls={"ca_file": str(pki.ca_file)})
    result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "probe_http_ssl") == 1
    assert sample(result, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()
    assert phase(result, "tls") > 0 and phase(result, "connect") > 0
    assert sum(phase(result, p) for p in PHASES) <= phase(result, "total") + 1e-6


async def test_https_expiry_reported_for_empty_body(
    probe: HttpProbe, ctx: ProbeContext, tls_base: str, pki: Pki
) -> None:
    """The certificate expiry is reported even when the connection is released at once (204)."""
    check = make_check(probe, f"{tls_base}/empty", tls={"ca_file": str(pki.ca_file)})
    result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()


async def test_https_unknown_ca_fails_verification(
    probe: HttpProbe, ctx: ProbeContext, tls_base: str
) -> None:
    """Without the test CA the certificate does not verify and the reason says so."""
    result = await probe(make_check(probe, f"{tls_base}/ok"), ctx)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith("TLS: certificate verify failed: ")
    assert "issuer" in result.error


async def test_https_verify_false_accepts_unknown_ca(
    probe: HttpProbe, ctx: ProbeContext, tls_base: str, pki: Pki
) -> None:
    """verify: false skips verification and still reports the expiry."""
    result = await probe(make_check(probe, f"{tls_base}/ok", tls={"verify": False}), ctx)
    assert result.success, result.error
    assert sample(result, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()


async def test_https_server_name_is_verified(
    probe: HttpProbe, ctx: ProbeContext, tls_base: str, pki: Pki
) -> None:
    """server_name is the name checked against the certificate."""
    good = {"ca_file": str(pki.ca_file), "server_name": "localhost"}
    assert (await probe(make_check(probe, f"{tls_base}/ok", tls=good), ctx)).success
    bad = {"ca_file": str(pki.ca_file), "server_name": "wrong.example"}
    result = await probe(make_check(probe, f"{tls_base}/ok", tls=bad), ctx)
    assert result.error is not None
    assert result.error.startswith("TLS: certificate verify failed: Hostname mismatch")


async def test_client_certificate_when_server_requires_it(
    probe: HttpProbe, ctx: ProbeContext, app: web.Application, pki: Pki
) -> None:
    """A server requiring a client certificate accepts cert_file/key_file and refuses none."""
    async with serve_http(app, pki.server_context(require_client_cert=True)) as url:
        tls = {
            "ca_file": str(pki.ca_file),
            "cert_file": str(pki.client_cert_file),
            "key_file": str(pki.client_key_file),
        }
        check = make_check(
            probe, f"{url}/client-cert", tls=tls, fail_if_body_not_matches_regexp=["^client cert$"]
        )
        result = await probe(check, ctx)
        assert result.success, result.error
        without = make_check(probe, f"{url}/client-cert", tls={"ca_file": str(pki.ca_file)})
        refused = await probe(without, ctx)
        assert not refused.success and refused.error


async def test_missing_ca_file_fails_the_run(
    probe: HttpProbe, ctx: ProbeContext, tmp_path: Path
) -> None:
    """A ca_file missing when the check runs gives a failure naming the file."""
    missing = tmp_path / "nope.pem"
    result = await probe(
        make_check(probe, "https://127.0.0.1:1/", tls={"ca_file": str(missing)}), ctx
    )
    assert result.error == f"TLS: cannot load ca_file {str(missing)!r}: No such file or directory"


def test_ssl_context_is_cached_and_rebuilt_when_a_file_changes(
    probe: HttpProbe, pki: Pki, tmp_path: Path
) -> None:
    """One SSL context per TLS settings, rebuilt only when a file is replaced."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pki.ca_file.read_bytes())
    tls = TlsSettings(ca_file=ca_file)
    first = probe.ssl_context(tls)
    assert probe.ssl_context(TlsSettings(ca_file=ca_file)) is first
    st = ca_file.stat()
    os.utime(ca_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert probe.ssl_context(tls) is not first


# --------------------------------------------------------------------------- settings


def test_default_settings_are_valid() -> None:
    """Settings() is valid and its JSON schema builds."""
    settings = HttpSettings()
    assert settings.method == "GET" and settings.max_body_bytes == 1024 * 1024
    schema = HttpSettings.model_json_schema()
    assert "fail_if_body_matches_regexp" in schema["properties"]


def test_bad_regex_is_rejected_with_reason() -> None:
    """A regex that does not compile is a validation error giving the reason."""
    with pytest.raises(ValidationError, match=r"invalid regular expression '\(': missing \)"):
        HttpSettings.model_validate({"fail_if_body_matches_regexp": ["("]})


def test_password_and_password_file_together_rejected(tmp_path: Path) -> None:
    """basic_auth with both password and password_file is rejected."""
    secret = tmp_path / "pw"
    secret.write_text("x")
    auth = {"username": "a", "password": "x", "password_file": str(secret)}
    with pytest.raises(ValidationError, match="set either password or password_file, not both"):
        HttpSettings.model_validate({"basic_auth": auth})


def test_missing_password_file_names_the_path(tmp_path: Path) -> None:
    """A missing password_file fails at load naming the file."""
    missing = tmp_path / "absent"
    with pytest.raises(ValidationError, match=f"cannot read secret file '{missing}'"):
        HttpSettings.model_validate(
            {"basic_auth": {"username": "a", "password_file": str(missing)}}
        )


def test_password_file_is_read_at_load_and_round_trips(tmp_path: Path) -> None:
    """password_file is read into password at load; the dump validates to equal settings."""
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    settings = HttpSettings.model_validate(
        {"basic_auth": {"username": "a", "password_file": str(secret)}}
    )
    assert settings.basic_auth is not None
    assert settings.basic_auth.password == SecretStr("from-file")
    assert "from-file" not in repr(settings)
    assert HttpSettings.model_validate(settings.model_dump()) == settings


def test_two_auth_methods_rejected() -> None:
    """basic_auth, bearer_token and an Authorization header exclude each other."""
    with pytest.raises(ValidationError, match="set only one of basic_auth and bearer_token"):
        HttpSettings.model_validate(
            {"basic_auth": {"username": "a", "password": "b"}, "bearer_token": "t"}
        )
    with pytest.raises(ValidationError, match="bearer_token and an Authorization header"):
        HttpSettings.model_validate({"bearer_token": "t", "headers": {"authorization": "x"}})


def test_bad_method_and_header_rejected() -> None:
    """A method or header that would break the request line is rejected at load."""
    with pytest.raises(ValidationError, match="method must be an HTTP method name"):
        HttpSettings.model_validate({"method": "GET /x"})
    with pytest.raises(ValidationError, match="must not contain line breaks"):
        HttpSettings.model_validate({"headers": {"X-A": "a\r\nX-B: b"}})


def test_key_file_needs_cert_file() -> None:
    """A client key without its certificate is rejected."""
    with pytest.raises(ValidationError, match="key_file needs cert_file"):
        TlsSettings.model_validate({"key_file": "/k.pem"})


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ftp://x", "must be an http or https URL with a host, got 'ftp://x'"),
        ("http://", "must be an http or https URL with a host, got 'http://'"),
        ("dpi.local/health", "must be an http or https URL with a host"),
        ("http://u:p@host/", "must not contain credentials in the URL"),
        ("http://host:99999/", "invalid URL 'http://host:99999/'"),
    ],
)
def test_parse_target_rejects_bad_urls(target: str, message: str) -> None:
    """parse_target explains why a target is not a usable URL."""
    with pytest.raises(ValueError, match=message.replace("?", r"\?")) as info:
        HttpProbe().parse_target(target)
    assert len(str(info.value)) <= MAX_ERROR_CHARS


def test_parse_target_and_host_of() -> None:
    """A good URL is kept and its host extracted."""
    probe = HttpProbe()
    assert probe.parse_target("https://dpi.chu.local/health?x=1") == (
        "https://dpi.chu.local/health?x=1"
    )
    assert probe.host_of("https://dpi.chu.local:8443/health") == "dpi.chu.local"
    assert probe.host_of("http://[::1]:8080/") == "::1"
