"""The ldap probe against a real slapd on loopback (clear, StartTLS, LDAPS), and raw peers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import free_port, require_binary
from tests.probes.conftest import Pki, make_check, refused_port, sample, serve_tcp
from tests.waiting import wait_for_sync
from vigie.probes.base import Check, ProbeContext
from vigie.probes.ldap import LdapProbe, LdapSettings, encode_filter

SUFFIX = "dc=chu,dc=test"
ADMIN_PASSWORD = "admin-secret"
USER_PASSWORD = "vigie-s3cret"
SLAPD_CONF = """
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {root}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {root}/ca.pem
TLSCertificateFile {root}/server.pem
TLSCertificateKeyFile {root}/server.key
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw {admin_password}
directory {root}/db
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""
LDIF = """dn: {suffix}
objectClass: dcObject
objectClass: organization
dc: chu
o: CHU test

dn: ou=people,{suffix}
objectClass: organizationalUnit
ou: people

dn: uid=vigie,ou=people,{suffix}
objectClass: inetOrgPerson
uid: vigie
cn: Vigie Probe
sn: Probe
mail: vigie@chu.test
userPassword: {user_password}

dn: uid=dr.house,ou=people,{suffix}
objectClass: inetOrgPerson
uid: dr.house
cn: Gregory (House)
sn: House
"""


@dataclasses.dataclass(frozen=True)
class Slapd:
    """A running slapd: its plain (StartTLS-capable) port, its LDAPS port, its files."""

    port: int
    ldaps_port: int
    root: Path


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Slapd]:
    """A real slapd (slapd.conf with -f, directory loaded with slapadd) on 127.0.0.1."""
    binary = require_binary("/usr/sbin/slapd", "slapd")
    slapadd = require_binary("/usr/sbin/slapadd", "slapd")
    root = tmp_path_factory.mktemp("slapd")
    (root / "db").mkdir()
    pki.ca.cert_pem.write_to_path(str(root / "ca.pem"))
    pki.server_cert.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    pki.server_cert.private_key_pem.write_to_path(str(root / "server.key"))
    conf = root / "slapd.conf"
    conf.write_text(SLAPD_CONF.format(root=root, suffix=SUFFIX, admin_password=ADMIN_PASSWORD))
    (root / "data.ldif").write_text(LDIF.format(suffix=SUFFIX, user_password=USER_PASSWORD))
    subprocess.run(
        [slapadd, "-f", str(conf), "-l", str(root / "data.ldif")],
        check=True,
        capture_output=True,
    )
    port, ldaps_port = free_port(), free_port()
    urls = f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/"
    argv = [binary, "-d", "0", "-f", str(conf), "-h", urls]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            """Return whether both ports accept connections (fail at once if slapd exited)."""
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"slapd exited {proc.returncode}: {out[-2000:]}")
            for p in (port, ldaps_port):
                try:
                    with socket.create_connection(("127.0.0.1", p), 0.5):
                        pass
                except OSError:
                    return False
            return True

        wait_for_sync(ready, "slapd to listen")
        yield Slapd(port, ldaps_port, root)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def probe() -> LdapProbe:
    """A fresh ldap probe."""
    return LdapProbe()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    """The user's password in a file, as a deployment would hold it."""
    path = tmp_path / "ldap.pass"
    path.write_text(USER_PASSWORD + "\n")
    return path


def user_search(**extra: Any) -> dict[str, Any]:
    """Return settings binding as uid=vigie and searching people for it."""
    return {
        "bind_dn": f"uid=vigie,ou=people,{SUFFIX}",
        "search_base": f"ou=people,{SUFFIX}",
        "search_scope": "sub",
        "search_filter": "(&(objectClass=inetOrgPerson)(uid=vigie))",
        **extra,
    }


async def test_anonymous_root_dse(probe: LdapProbe, ctx: ProbeContext, slapd: Slapd) -> None:
    """The defaults: an anonymous bind and a read of the root DSE, timed per phase."""
    result = await probe(make_check(probe, f"127.0.0.1:{slapd.port}"), ctx)
    assert result.success, result.error
    assert [name for name, _ in result.phases] == ["connect", "bind", "search"]
    assert sample(result, "ldap_search_entries") == 1
    assert 0 < sample(result, "ldap_bind_seconds") < 5
    assert 0 < sample(result, "ldap_search_seconds") < 5


async def test_simple_bind_from_secret_file(
    probe: LdapProbe, ctx: ProbeContext, slapd: Slapd, password_file: Path
) -> None:
    """A simple bind with the password read from a file, then a subtree search finding one entry."""
    check = make_check(
        probe, f"127.0.0.1:{slapd.port}", **user_search(password_file=str(password_file))
    )
    result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "ldap_search_entries") == 1
    assert USER_PASSWORD not in repr(check.settings)


@pytest.mark.parametrize(
    ("search_filter", "entries"),
    [
        ("(uid=*)", 2),
        ("(cn=Gregory \\28House\\29)", 1),
        ("(|(sn=Hou*)(mail=*@chu.test))", 2),
        ("(!(uid=vigie))", 1),
        ("(createTimestamp>=20000101000000Z)", 2),
        ("sn=*OUS*", 1),
    ],
)
async def test_filters(
    probe: LdapProbe, ctx: ProbeContext, slapd: Slapd, search_filter: str, entries: int
) -> None:
    """RFC 4515 filters (escapes, or, not, substrings, ordering) select what slapd finds."""
    check = make_check(
        probe,
        f"127.0.0.1:{slapd.port}",
        search_base=f"ou=people,{SUFFIX}",
        search_scope="one",
        search_filter=search_filter,
        min_entries=entries,
    )
    result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "ldap_search_entries") == entries


async def test_no_entry(probe: LdapProbe, ctx: ProbeContext, slapd: Slapd) -> None:
    """A search finding nothing fails saying so; min_entries 0 accepts it."""
    settings = {
        "search_base": SUFFIX,
        "search_scope": "sub",
        "search_filter": "(uid=nobody)",
    }
    target = f"127.0.0.1:{slapd.port}"
    empty = await probe(make_check(probe, target, **settings), ctx)
    allowed = await probe(make_check(probe, target, **settings, min_entries=0), ctx)
    assert empty.error == (
        f"search (uid=nobody) under '{SUFFIX}' returned 0 entries, expected at least 1"
    )
    assert sample(empty, "ldap_search_entries") == 0
    assert allowed.success, allowed.error


async def test_no_such_base(probe: LdapProbe, ctx: ProbeContext, slapd: Slapd) -> None:
    """A base DN that does not exist fails with the server's result code."""
    check = make_check(probe, f"127.0.0.1:{slapd.port}", search_base=f"ou=gone,{SUFFIX}")
    result = await probe(check, ctx)
    assert str(result.error).startswith(
        f"search (objectClass=*) under 'ou=gone,{SUFFIX}' failed: 32 noSuchObject"
    )


async def test_wrong_password(probe: LdapProbe, ctx: ProbeContext, slapd: Slapd) -> None:
    """A wrong password fails the bind with invalidCredentials, the password nowhere."""
    check = make_check(probe, f"127.0.0.1:{slapd.port}", **user_search(password="wrong-pw"))
    result = await probe(check, ctx)
    assert result.error == (f"bind as 'uid=vigie,ou=people,{SUFFIX}' failed: 49 invalidCredentials")
    assert [name for name, _ in result.phases] == ["connect", "bind"]
    assert "wrong-pw" not in " ".join(ctx.log.lines)


async def test_starttls(
    probe: LdapProbe, ctx: ProbeContext, slapd: Slapd, pki: Pki, password_file: Path
) -> None:
    """StartTLS on the plain port, then the bind and search inside TLS."""
    check = make_check(
        probe,
        f"127.0.0.1:{slapd.port}",
        **user_search(
            password_file=str(password_file),
            tls="starttls",
            tls_config={"ca_file": str(pki.ca_file)},
        ),
    )
    result = await probe(check, ctx)
    assert result.success, result.error
    assert [name for name, _ in result.phases] == ["connect", "tls", "bind", "search"]
    assert sample(result, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()


async def test_ldaps(probe: LdapProbe, ctx: ProbeContext, slapd: Slapd, pki: Pki) -> None:
    """LDAPS: TLS from the first byte on the ldaps port."""
    check = make_check(
        probe,
        f"127.0.0.1:{slapd.ldaps_port}",
        tls="ldaps",
        tls_config={"ca_file": str(pki.ca_file)},
    )
    result = await probe(check, ctx)
    assert result.success, result.error
    assert [name for name, _ in result.phases] == ["connect", "tls", "bind", "search"]


async def test_ldaps_untrusted(probe: LdapProbe, ctx: ProbeContext, slapd: Slapd) -> None:
    """A server certificate from an unknown CA fails the handshake, said as a TLS error."""
    check = make_check(probe, f"127.0.0.1:{slapd.ldaps_port}", tls="ldaps")
    result = await probe(check, ctx)
    assert str(result.error).startswith("TLS: certificate verify failed"), result.error


async def test_starttls_on_ldaps_port(
    probe: LdapProbe, ctx: ProbeContext, slapd: Slapd, pki: Pki
) -> None:
    """StartTLS sent to a TLS port: the server's TLS bytes are a protocol error, not a hang."""
    check = make_check(
        probe,
        f"127.0.0.1:{slapd.ldaps_port}",
        tls="starttls",
        tls_config={"ca_file": str(pki.ca_file)},
    )
    result = await probe(check, ctx)
    assert str(result.error).startswith("protocol error waiting for the StartTLS answer: "), (
        result.error
    )


async def test_refused(probe: LdapProbe, ctx: ProbeContext) -> None:
    """Nothing listening: the connect failure names target and reason."""
    port = refused_port()
    result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


def _with_timeout(check: Check[Any], timeout: float) -> Check[Any]:
    """Return check with another timeout."""
    return dataclasses.replace(check, timeout=timeout)


async def test_timeout(probe: LdapProbe, ctx: ProbeContext) -> None:
    """A listener that accepts and never answers: a timeout naming the bind as what hung."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read until the client leaves, never answer."""
        await reader.read()
        writer.close()

    async with serve_tcp(silent) as port:
        result = await probe(_with_timeout(make_check(probe, f"127.0.0.1:{port}"), 1.0), ctx)
    assert result.error == "timeout after 0.9s waiting for the bind answer"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "answer is not LDAP: starts with b'HT'"),
        (b"\x30\x84\x7f\xff\xff\xff", "a 2147483647-byte message, more than max_message_bytes"),
        (b"\x30\x05\x02\x01\x01\x61", "connection closed after 4 of a 5-byte message"),
        (b"\x30\x06\x02\x01\x01\x61\x05\x0a", "element of 5 bytes overruns its container"),
        (b"\x30\x05\x02\x01\x07\x61\x00", "answer to message 7, expected 1"),
        (b"", "connection closed without an answer"),
    ],
)
async def test_bad_answers(probe: LdapProbe, ctx: ProbeContext, payload: bytes, error: str) -> None:
    """Garbage, huge, truncated, overrunning or mismatched answers are bounded protocol errors."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer the bind request with payload, then close."""
        with contextlib.suppress(ConnectionError):
            await reader.read(1024)
            writer.write(payload)
            await writer.drain()
        writer.close()

    async with serve_tcp(handler) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert str(result.error).startswith(f"protocol error waiting for the bind answer: {error}"), (
        result.error
    )


async def test_notice_of_disconnection(probe: LdapProbe, ctx: ProbeContext) -> None:
    """An unsolicited notice of disconnection (message id 0) is reported with its result."""
    notice = bytes.fromhex("3011020100780c0a0134040004054275737921")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send the notice, then close."""
        with contextlib.suppress(ConnectionError):
            await reader.read(1024)
            writer.write(notice)
            await writer.drain()
        writer.close()

    async with serve_tcp(handler) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.error == (
        "protocol error waiting for the bind answer: the server disconnected us:"
        " 52 unavailable: Busy!"
    )


@pytest.mark.parametrize(
    ("text", "hex_ber"),
    [
        ("(uid=vigie)", "a30c040375696404057669676965"),
        ("objectClass=*", "870b6f626a656374436c617373"),
        ("(cn=a\\2a)", "a3080402636e0402612a"),
        ("(sn=a*b*c)", "a40f0402736e3009800161810162820163"),
        ("(&(a=1)(!(b>=2)))", "a012a306040161040131a208a506040162040132"),
    ],
)
def test_filter_encoding(text: str, hex_ber: str) -> None:
    """Filters encode to the RFC 4511 BER (checked by hand against the ASN.1)."""
    assert encode_filter(text).hex() == hex_ber


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("(uid=vigie", "unbalanced"),
        ("(uid)", "has no '='"),
        ("(cn:dn:=x)", "extensible match"),
        ("(!(a=1)(b=2))", "exactly one"),
        ("(&)", "at least one"),
        ("(a=\\zz)", "bad escape"),
        ("(a=1)(b=2)", "unexpected text"),
        ("(" * 30 + "a=1" + ")" * 30, "expected"),
    ],
)
def test_filter_rejected(text: str, error: str) -> None:
    """Bad filters are refused at load saying why."""
    with pytest.raises(ValueError, match=error):
        encode_filter(text)


@pytest.mark.parametrize(
    "settings",
    [
        {"bind_dn": "cn=x"},
        {"password": "p"},
        {"bind_dn": "cn=x", "password": "p", "password_file": "/etc/hostname"},
        {"bind_dn": "cn=x", "password_file": "/nonexistent/pw"},
        {"tls": "ssl"},
        {"search_filter": "(uid=a"},
        {"bogus": 1},
    ],
)
def test_settings_rejected(settings: dict[str, object]) -> None:
    """Half credentials, unreadable secrets, bad TLS modes and filters are config errors."""
    with pytest.raises(ValidationError):
        LdapSettings.model_validate(settings)


def test_targets(probe: LdapProbe) -> None:
    """Targets are host[:port], port 389 by default (LDAPS's 636 is written out)."""
    assert probe.parse_target("DC1.chu.local") == "dc1.chu.local:389"
    assert probe.parse_target("[fd00::1]") == "[fd00::1]:389"
    assert probe.parse_target("dc1.chu.local:636") == "dc1.chu.local:636"
    assert probe.host_of("dc1.chu.local") == "dc1.chu.local"
