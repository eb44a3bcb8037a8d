"""web.yml (exporter-toolkit format): TLS, client certificates and basic auth on every endpoint."""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import structlog
import trustme
from structlog.testing import capture_logs

from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.monitor.web.webconfig import BasicAuth, WebConfigError, load_web_config
from vigie.probes.base import ProbeRegistry
from vigie.probes.http import HttpProbe, make_session

PASSWORD = "Tr0ub4dor&3-crisis"
# cost 4 keeps the test fast; production hashes use htpasswd -nBC 10 or more
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@dataclass(frozen=True)
class Certs:
    """A trustme CA, the server's certificate files and a client certificate."""

    ca: trustme.CA
    dir: Path
    client: trustme.LeafCert


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA with a server certificate for 127.0.0.1 written next to the web.yml."""
    ca = trustme.CA()
    root = tmp_path_factory.mktemp("webtls")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    server.private_key_pem.write_to_path(str(root / "server.key"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    return Certs(ca, root, ca.issue_cert("crisis-screen@chu.local"))


def basic(user: str, password: str) -> dict[str, str]:
    """Return an Authorization header for HTTP basic auth."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_ssl(certs: Certs, with_cert: bool = False) -> ssl.SSLContext:
    """A client context trusting the test CA, optionally presenting the client certificate."""
    ctx = ssl.create_default_context()
    certs.ca.configure_trust(ctx)
    if with_cert:
        certs.client.configure_cert(ctx)
    return ctx


@pytest.fixture
async def secured(
    certs: Certs, tmp_path: Path
) -> AsyncIterator[tuple[Daemon, list[MutableMapping[str, Any]]]]:
    """A daemon whose web.yml asks for TLS and basic auth; yields it with its captured logs."""
    web_yml = certs.dir / "web.yml"
    web_yml.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        "  min_version: TLS12\n"
        f"basic_auth_users:\n  alice: '{HASH}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    config = tmp_path / "vigie.yaml"
    config.write_text(f"web: {{listen: '127.0.0.1:0', config_file: '{web_yml}'}}\nchecks: []\n")
    registry = ProbeRegistry([HttpProbe()])
    with capture_logs() as logs:
        async with make_session() as session:
            daemon = Daemon(
                load_config(config, registry, env={}),
                registry,
                session,
                logger=structlog.get_logger(),
            )
            await daemon.start()
            try:
                yield daemon, logs
            finally:
                await daemon.stop()


async def test_every_endpoint_needs_tls_and_the_right_password(
    secured: tuple[Daemon, list[MutableMapping[str, Any]]], certs: Certs
) -> None:
    """Over TLS, no or a wrong password gives 401 on every endpoint; the right one gives 200."""
    daemon, logs = secured
    base = f"https://127.0.0.1:{daemon.listen_port}"
    good = basic("alice", PASSWORD)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl(certs))) as s:
        for path in ("/", "/metrics", "/-/healthy", "/api/v1/sites", "/recovery", "/checks"):
            async with s.get(base + path) as r:
                assert r.status == 401, path
                assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
            async with s.get(base + path, headers=basic("alice", "wrong")) as r:
                assert r.status == 401, path
            async with s.get(base + path, headers=basic("mallory", PASSWORD)) as r:
                assert r.status == 401, path
            async with s.get(base + path, headers=good) as r:
                assert r.status == 200, path
                assert r.headers["X-Frame-Options"] == "deny"
            async with s.get(base + path, headers=good) as r:  # cached: no second bcrypt
                assert r.status == 200, path
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(f"http://127.0.0.1:{daemon.listen_port}/", headers=good) as r:
                assert r.status != 200  # plain HTTP to a TLS port never answers a page
    failures = [e for e in logs if e["event"] == "web_auth_failed"]
    assert len(failures) == 18 and failures[0]["path"] == "/"
    dump = repr(logs)
    assert PASSWORD not in dump and "wrong" not in dump and HASH not in dump


async def test_client_certificate_required(certs: Certs, tmp_path: Path) -> None:
    """With RequireAndVerifyClientCert a client without a certificate from the CA is refused."""
    web_yml = certs.dir / "web-mtls.yml"
    web_yml.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    config = tmp_path / "vigie.yaml"
    config.write_text(f"web: {{listen: '127.0.0.1:0', config_file: '{web_yml}'}}\nchecks: []\n")
    registry = ProbeRegistry([HttpProbe()])
    async with make_session() as session:
        daemon = Daemon(load_config(config, registry, env={}), registry, session)
        await daemon.start()
        try:
            url = f"https://127.0.0.1:{daemon.listen_port}/-/healthy"
            conn = aiohttp.TCPConnector(ssl=client_ssl(certs, with_cert=True))
            async with aiohttp.ClientSession(connector=conn) as s, s.get(url) as r:
                assert r.status == 200
            conn = aiohttp.TCPConnector(ssl=client_ssl(certs))
            async with aiohttp.ClientSession(connector=conn) as s:
                with pytest.raises(aiohttp.ClientError):
                    async with s.get(url) as r:
                        await r.read()
        finally:
            await daemon.stop()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "basic_auth_users: {alice: hunter2}\n",
            "basic_auth_users.alice: not a bcrypt hash",
        ),
        ("basic_auth_user: {}\n", "basic_auth_user: Extra inputs are not permitted"),
        (
            "tls_server_config: {cert_file: server.pem}\n",
            "tls_server_config.key_file: Field required",
        ),
        (
            "tls_server_config: {cert_file: nope.pem, key_file: server.key}\n",
            "tls_server_config.cert_file/key_file: cannot load",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key,"
            " client_auth_type: RequireAndVerifyClientCert}\n",
            "tls_server_config.client_ca_file: required with client_auth_type",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key,"
            " min_version: TLS14}\n",
            "tls_server_config.min_version: Input should be",
        ),
        ("tls_server_config: [\n", "not valid YAML"),
        ("- a\n", "must be a mapping"),
    ],
)
def test_bad_web_yml_names_file_and_field(certs: Certs, content: str, expected: str) -> None:
    """A bad web.yml is refused with its path and the field at fault, never echoing a secret."""
    path = certs.dir / "bad-web.yml"
    path.write_text(content)
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "hunter2" not in message


def test_config_check_reads_the_web_yml(tmp_path: Path) -> None:
    """load_config (`vigie check`, a reload) refuses a web.yml `vigie run` would refuse."""
    (tmp_path / "web.yml").write_text("basic_auth_users:\n  alice: plain\n")
    config = tmp_path / "vigie.yaml"
    config.write_text("web: {listen: '127.0.0.1:0', config_file: web.yml}\nchecks: []\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(config, ProbeRegistry([HttpProbe()]), env={})
    assert [str(e) for e in info.value.errors] == [
        f"{tmp_path / 'web.yml'}:2:3: basic_auth_users.alice: not a bcrypt hash"
        " (make one with htpasswd -nBC 10 <user>)"
    ]
    assert "plain" not in str(info.value)


@pytest.mark.parametrize(
    ("web_yml", "roles", "expected"),
    [
        (
            None,
            "{alice: operator}",
            [
                "web.roles: web.roles is set but web.config_file asks for neither basic_auth_users"
                " nor client certificates: every visitor is an anonymous viewer and nobody can act"
            ],
        ),
        (
            f"basic_auth_users: {{alice: '{HASH}'}}\n",
            "{alice: viewer, bob: operator}",
            ["web.roles.bob: 'bob' is not in web.yml's basic_auth_users: it never matches"],
        ),
        (
            f"basic_auth_users: {{alice: '{HASH}'}}\n",
            "{alice: viewer}",
            ["web.roles: no user or certificate has the operator role: nobody can act"],
        ),
        (f"basic_auth_users: {{alice: '{HASH}'}}\n", "{alice: operator}", []),
    ],
)
def test_roles_nobody_can_match_are_warned(
    tmp_path: Path, web_yml: str | None, roles: str, expected: list[str]
) -> None:
    """`vigie check` warns when web.roles leaves nobody able to act or names an unknown user."""
    web = "web: {listen: '127.0.0.1:0', roles: " + roles
    if web_yml is not None:
        (tmp_path / "web.yml").write_text(web_yml)
        web += ", config_file: web.yml"
    config = tmp_path / "vigie.yaml"
    config.write_text(web + "}\nchecks: []\n")
    loaded = load_config(config, ProbeRegistry([HttpProbe()]), env={})
    assert [f"{w.path}: {w.message}" for w in loaded.warnings] == expected


async def test_daemon_refuses_to_start_with_a_bad_web_yml(tmp_path: Path) -> None:
    """Daemon.start fails before serving when web.config_file went bad after the load."""
    (tmp_path / "web.yml").write_text(f"basic_auth_users: {{alice: '{HASH}'}}\n")
    config = tmp_path / "vigie.yaml"
    config.write_text("web: {listen: '127.0.0.1:0', config_file: web.yml}\nchecks: []\n")
    registry = ProbeRegistry([HttpProbe()])
    loaded = load_config(config, registry, env={})
    assert loaded.config.web.config_file == tmp_path / "web.yml"  # relative to the config file
    (tmp_path / "web.yml").write_text("basic_auth_users: {alice: plain}\n")
    async with make_session() as session:
        daemon = Daemon(loaded, registry, session)
        with pytest.raises(WebConfigError, match=r"web\.yml: basic_auth_users\.alice: not a"):
            await daemon.start()
        assert daemon.listen_port is None


async def test_malformed_authorization_headers_are_refused() -> None:
    """Garbage, other schemes and missing colons never authenticate."""
    auth = BasicAuth({"alice": HASH})
    assert await auth.check("") is None
    assert await auth.check("Bearer abc") is None
    assert await auth.check("Basic !!!") is None
    assert await auth.check("Basic YWxpY2U=") is None  # "alice" without a colon
    good = basic("alice", PASSWORD)["Authorization"]
    assert await auth.check(good) == "alice"


async def test_unknown_user_costs_as_much_as_a_known_one() -> None:
    """A 401 for an unknown user takes as long as for a known user with a wrong password.

    Both run one bcrypt at the users' cost (a dummy hash for the unknown user), so the time of
    a refusal does not reveal which user names exist. Judged on the minimum of a few tries, the
    least disturbed by a loaded machine, with a wide margin (at least 0.3x).
    """
    cost10 = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    auth = BasicAuth({"alice": cost10})

    async def fastest(user: str) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            assert await auth.check(basic(user, "wrong password")["Authorization"]) is None
            times.append(time.perf_counter() - start)
        return min(times)

    known = await fastest("alice")
    unknown = await fastest("mallory")
    assert known > 0.01, f"a cost-10 bcrypt should take well over 10 ms, took {known:.4f}s"
    assert unknown >= 0.3 * known, f"unknown user {unknown:.4f}s vs known user {known:.4f}s"
    # and the dummy hash never lets anyone in
    assert await auth.check(basic("mallory", "")["Authorization"]) is None


def test_malformed_bcrypt_hash_is_refused(certs: Certs) -> None:
    """A hash of the right length and prefix but outside bcrypt's alphabet or cost is refused."""
    path = certs.dir / "bad-hash-web.yml"
    bad = "$2b$10$" + "!" * 53
    path.write_text(f"basic_auth_users: {{alice: '{bad}'}}\n")
    with pytest.raises(WebConfigError, match=r"basic_auth_users\.alice: not a bcrypt hash"):
        load_web_config(path)
    path.write_text(f"basic_auth_users: {{alice: '$2b$99${'.' * 53}'}}\n")
    with pytest.raises(WebConfigError, match=r"basic_auth_users\.alice: not a bcrypt hash"):
        load_web_config(path)
