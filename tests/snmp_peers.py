"""Real SNMP agents on loopback for the snmp probe tests: net-snmp snmpd, snmpsim, tiny UDP agents.

Every agent gets a free port and its own directory; nothing uses fixed ports or system config.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from gufo.snmp.sync.client import SnmpSession

from tests.conftest import require_binary
from tests.waiting import wait_for_sync
from vigie.core.results import ProbeResult
from vigie.probes.base import Check
from vigie.probes.snmp import SnmpCheckSettings, SnmpProbe, SnmpSection, SnmpSettings
from vigie.probes.snmp.ber import (
    ber_decode_int,
    ber_decode_oid,
    ber_int,
    ber_items,
    ber_oid,
    ber_seq,
    ber_tlv,
)

FIXTURES = Path(__file__).parent / "fixtures" / "snmp"
SNMPD = "/usr/sbin/snmpd"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"

# name -> (Vigie auth_protocol, net-snmp's, Vigie priv_protocol, net-snmp's); None: not used.
V3_USERS: dict[str, tuple[str | None, str | None, str | None, str | None]] = {
    "noauth": (None, None, None, None),
    "md5": ("MD5", "MD5", None, None),
    "sha224": ("SHA224", "SHA-224", None, None),
    "md5_des": ("MD5", "MD5", "DES", "DES"),
    "sha_aes": ("SHA", "SHA", "AES", "AES"),
    "sha_aes192": ("SHA", "SHA", "AES192", "AES-192"),
    "sha_aes256": ("SHA", "SHA", "AES256", "AES-256"),
    "sha_aes256c": ("SHA", "SHA", "AES256C", "AES-256-C"),
    "md5_aes192c": ("MD5", "MD5", "AES192C", "AES-192-C"),
    "sha256_aes": ("SHA256", "SHA-256", "AES", "AES"),
    "sha384_aes192": ("SHA384", "SHA-384", "AES192", "AES-192"),
    "sha512_aes256": ("SHA512", "SHA-512", "AES256", "AES-256"),
}


def auth_password(user: str) -> str:
    """Return the test auth password of a v3 user."""
    return f"{user}-auth-pw"


def priv_password(user: str) -> str:
    """Return the test privacy password of a v3 user."""
    return f"{user}-priv-pw"


def v3_auth(user: str, **override: Any) -> dict[str, Any]:
    """Return the `snmp.auths` entry for one of V3_USERS (fields may be overridden)."""
    auth_proto, _, priv_proto, _ = V3_USERS[user]
    entry: dict[str, Any] = {"version": 3, "username": user}
    if auth_proto is not None:
        entry.update(auth_protocol=auth_proto, auth_password=auth_password(user))
    if priv_proto is not None:
        entry.update(priv_protocol=priv_proto, priv_password=priv_password(user))
    entry.update(override)
    return entry


def snmpd_user(user: str) -> tuple[str, str]:
    """Return snmpd.conf's `createUser` line of one of V3_USERS and its level (priv, auth...)."""
    _, auth, _, priv = V3_USERS[user]
    create = f"createUser {user}"
    if auth is not None:
        create += f" {auth} {auth_password(user)}"
    if priv is not None:
        create += f" {priv} {priv_password(user)}"
    return create, "priv" if priv else "auth" if auth else "noauth"


def free_udp_port(host: str = "127.0.0.1") -> int:
    """Return a UDP port free on host now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ipv6_loopback() -> bool:
    """Return whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def answers(host: str, port: int, community: str, oid: str = SYS_UPTIME) -> bool:
    """Return whether a v2c agent answers a GET of oid with this community."""
    try:
        with SnmpSession(addr=host, port=port, community=community, timeout=0.2) as session:
            session.get(oid)
    except Exception:  # not ready yet, whatever the reason
        return False
    return True


# --------------------------------------------------------------------------- snmpd

# UPS-MIB values served by the pass_persist script: a UPS on mains, 34 minutes of battery.
U = "1.3.6.1.2.1.33.1."
UPS_ONLINE: dict[str, tuple[str, int | str]] = {
    U + "1.1.0": ("string", "EATON"),
    U + "1.2.0": ("string", "Eaton 9PX 3000i RT2U"),
    U + "2.1.0": ("integer", 2),
    U + "2.2.0": ("integer", 0),
    U + "2.3.0": ("integer", 34),
    U + "2.4.0": ("integer", 100),
    U + "2.5.0": ("integer", 818),
    U + "2.7.0": ("integer", 24),
    U + "3.3.1.2.1": ("integer", 500),
    U + "3.3.1.3.1": ("integer", 231),
    U + "4.1.0": ("integer", 3),
    U + "4.2.0": ("integer", 500),
    U + "4.4.1.2.1": ("integer", 230),
    U + "4.4.1.3.1": ("integer", 57),
    U + "4.4.1.5.1": ("integer", 42),
    U + "6.1.0": ("gauge", 0),
}
# Only the mandatory groups of RFC 1628 (upsSubsetCompliance: ident, upsBatteryStatus and
# upsSecondsOnBattery, upsInputLineBads, upsOutputSource, alarms), as small independent UPS
# agents serve them: no runtime, charge, voltages, frequencies or line tables. On battery.
UPS_SUBSET_ON_BATTERY: dict[str, tuple[str, int | str]] = {
    U + "1.1.0": ("string", "ACME"),
    U + "1.2.0": ("string", "ACME 1500"),
    U + "1.3.0": ("string", "1.0"),
    U + "1.5.0": ("string", "ups-subset"),
    U + "1.6.0": ("string", "racks A1-A4"),
    U + "2.1.0": ("integer", 3),
    U + "2.2.0": ("integer", 120),
    U + "3.1.0": ("counter", 4),
    U + "4.1.0": ("integer", 5),
    U + "6.1.0": ("gauge", 1),
    U + "6.2.1.2.1": ("objectid", "1.3.6.1.2.1.33.1.6.3.2"),
    U + "6.2.1.3.1": ("timeticks", 4242),
}
UPS_ON_BATTERY: dict[str, tuple[str, int | str]] = {
    **UPS_ONLINE,
    U + "2.2.0": ("integer", 95),
    U + "2.3.0": ("integer", 9),
    U + "3.3.1.2.1": ("integer", 0),
    U + "3.3.1.3.1": ("integer", 0),
    U + "4.1.0": ("integer", 5),
    U + "6.1.0": ("gauge", 1),
    U + "6.2.1.2.1": ("objectid", "1.3.6.1.2.1.33.1.6.3.2"),
}

_PASS_PERSIST = r"""
import json
import sys

STATE = sys.argv[1]


def key(oid):
    return tuple(int(p) for p in oid.strip().strip(".").split("."))


def rows():
    with open(STATE) as fh:
        data = json.load(fh)
    return sorted((key(oid), oid, kind, value) for oid, (kind, value) in data.items())


for line in sys.stdin:
    command = line.strip()
    if command == "PING":
        print("PONG", flush=True)
    elif command in ("get", "getnext"):
        wanted = key(sys.stdin.readline())
        match = [r for r in rows() if (r[0] == wanted if command == "get" else r[0] > wanted)]
        if match:
            _, oid, kind, value = match[0]
            print(f".{oid}\n{kind}\n{value}", flush=True)
        else:
            print("NONE", flush=True)
    elif command == "set":
        sys.stdin.readline()
        sys.stdin.readline()
        print("not-writable", flush=True)
    elif not command:
        break
"""


@dataclass
class Snmpd:
    """A net-snmp snmpd on loopback with a v2c community, v3 users and a UPS-MIB pass script."""

    directory: Path
    port: int
    community: str
    ipv6: bool
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "snmpd.log"

    @property
    def state_file(self) -> Path:
        """The JSON file the UPS-MIB pass script serves."""
        return self.directory / "ups-state.json"

    def target(self, ipv6: bool = False) -> str:
        """Return the agent as a check target."""
        return f"[::1]:{self.port}" if ipv6 else f"127.0.0.1:{self.port}"

    def set_ups(self, values: Mapping[str, tuple[str, int | str]]) -> None:
        """Replace the UPS-MIB values the agent serves (atomically)."""
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.replace(self.state_file)

    def write_config(self) -> Path:
        """Write snmpd.conf, the pass_persist script and its wrapper; return the conf path."""
        script = self.directory / "ups_pass.py"
        script.write_text(_PASS_PERSIST)
        wrapper = self.directory / "ups_pass.sh"
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {script} {self.state_file}\n")
        wrapper.chmod(0o755)
        addresses = f"udp:127.0.0.1:{self.port}" + (f",udp6:[::1]:{self.port}" if self.ipv6 else "")
        lines = [
            f"agentAddress {addresses}",
            f"rocommunity {self.community} 127.0.0.1",
            *([f"rocommunity6 {self.community} ::1"] if self.ipv6 else []),
            "sysName vigie-test-agent",
            "sysLocation Vigie test bench",
            "sysDescr Vigie test snmpd",
            f"pass_persist .1.3.6.1.2.1.33 {wrapper}",
        ]
        for user in V3_USERS:
            create, level = snmpd_user(user)
            lines += [create, f"rouser {user} {level}"]
        conf = self.directory / "snmpd.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        """Start snmpd in the foreground and wait until it answers."""
        conf = self.directory / "snmpd.conf"
        persist = self.directory / "persist"
        persist.mkdir(exist_ok=True)
        # MIBS= : Debian's snmp package ships no MIB files; SNMP_PERSISTENT_DIR: createUser is
        # read from (and engine boots kept in) a directory of our own.
        env = {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(persist)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SNMPD, "-f", "-Lo", "-C", "-c", str(conf), "-p", str(self.directory / "pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            wait_for_sync(self._ready, f"snmpd on port {self.port}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"snmpd did not start:\n{self.log.read_text()[-2000:]}") from None

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"snmpd exited:\n{self.log.read_text()[-2000:]}")
        return answers("127.0.0.1", self.port, self.community)

    def stop(self) -> None:
        """Stop snmpd and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@contextmanager
def running_snmpd(
    directory: Path, ups: Mapping[str, tuple[str, int | str]] = UPS_ONLINE
) -> Iterator[Snmpd]:
    """Run an snmpd in directory, its UPS-MIB pass script serving ups, for the block."""
    require_binary(SNMPD, "snmpd")
    directory.mkdir(parents=True, exist_ok=True)
    agent = Snmpd(directory, free_udp_port(), "vigie-ro", ipv6=ipv6_loopback())
    agent.set_ups(ups)
    agent.write_config()
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


# --------------------------------------------------------------------------- snmpsim


@dataclass
class Snmpsim:
    """An snmpsim command responder serving the .snmprec files of a directory."""

    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]

    def target(self) -> str:
        """Return the simulator as a check target (the community picks the recording)."""
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, community: str, deadline: float = 60.0) -> Snmpsim:
        """Wait until the simulator answers for community (it indexes files first)."""

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"snmpsim exited with {self.process.returncode}")
            return answers("127.0.0.1", self.port, community, "1.3.6.1.2.1.1.1.0")

        wait_for_sync(up, f"snmpsim on port {self.port}", deadline)
        return self

    def stop(self) -> None:
        """Terminate the simulator and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def snmpsim_binary() -> str:
    """Return the snmpsim responder installed next to this Python."""
    path = Path(sys.executable).parent / "snmpsim-command-responder"
    found = str(path) if path.exists() else shutil.which("snmpsim-command-responder")
    if found is None:
        raise AssertionError("snmpsim-command-responder missing: pip install -e '.[test]'")
    return found


# Vigie's privacy protocol names -> snmpsim's (snmpsim's AES192/256 are the Reeder/Cisco key
# extension, its *BLMT the Blumenthal one that Vigie calls AES192/AES256).
SNMPSIM_PRIV = {
    "DES": "DES",
    "AES": "AES",
    "AES192": "AES192BLMT",
    "AES256": "AES256BLMT",
    "AES192C": "AES192",
    "AES256C": "AES256",
}


def snmpsim_v3_args(users: Sequence[str]) -> list[str]:
    """Return snmpsim options declaring V3_USERS entries (contexts = data file names)."""
    args: list[str] = []
    for user in users:
        auth_proto, _, priv_proto, _ = V3_USERS[user]
        args.append(f"--v3-user={user}")
        if auth_proto is not None:
            args += [f"--v3-auth-key={auth_password(user)}", f"--v3-auth-proto={auth_proto}"]
        if priv_proto is not None:
            args += [
                f"--v3-priv-key={priv_password(user)}",
                f"--v3-priv-proto={SNMPSIM_PRIV[priv_proto]}",
            ]
    return args


def start_snmpsim(data_dir: Path, cache_dir: Path, v3_users: Sequence[str] = ()) -> Snmpsim:
    """Start snmpsim on a free port without waiting: call wait_ready before using it.

    v3_users (names of V3_USERS) also serve SNMPv3, each data file's name (relative to
    data_dir, without .snmprec, at most 32 characters) being its context name.
    """
    port = free_udp_port()
    env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}
    with (cache_dir / "snmpsim.log").open("ab") as log:
        process = subprocess.Popen(
            [
                snmpsim_binary(),
                f"--data-dir={data_dir}",
                f"--cache-dir={cache_dir}",
                f"--agent-udpv4-endpoint=127.0.0.1:{port}",
                "--log-level=error",
                *snmpsim_v3_args(v3_users),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return Snmpsim(data_dir, port, process)


@contextmanager
def running_context_proxy(
    directory: Path, upstream_port: int, contexts: Sequence[str], user: str = "sha_aes"
) -> Iterator[Snmpd]:
    """Run a net-snmp snmpd serving each of contexts by proxying it (v2c, community = context).

    The v3 user reads every context (VACM `prefix ""`); the default context is snmpd's own.
    It listens on ::1 too when the host has IPv6 loopback.
    """
    require_binary(SNMPD, "snmpd")
    directory.mkdir(parents=True, exist_ok=True)
    agent = Snmpd(directory, free_udp_port(), "vigie-ro", ipv6=ipv6_loopback())
    create, level = snmpd_user(user)
    lines = [
        f"agentAddress udp:127.0.0.1:{agent.port}"
        + (f",udp6:[::1]:{agent.port}" if agent.ipv6 else ""),
        f"rocommunity {agent.community} 127.0.0.1",
        "sysDescr Vigie context proxy",
        create,
        f"group ctx usm {user}",
        "view all included .1",
        f'access ctx "" usm {level} prefix all none none',
        *(f"proxy -Cn {c} -v 2c -c {c} 127.0.0.1:{upstream_port} .1.3" for c in contexts),
    ]
    (directory / "snmpd.conf").write_text("\n".join(lines) + "\n")
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def write_big_table(path: Path, rows: int, column: str = "1.3.6.1.2.1.2.2.1.2") -> None:
    """Write a recording with a sysDescr and an ifDescr-like column of `rows` rows."""
    with path.open("w") as fh:
        fh.write("1.3.6.1.2.1.1.1.0|4|switch with a huge table\n")
        fh.write("1.3.6.1.2.1.1.3.0|67|4242\n")
        fh.writelines(f"{column}.{i}|4|port{i}\n" for i in range(1, rows + 1))


# --------------------------------------------------------------------------- tiny agents


class HalfWalkAgent(asyncio.DatagramProtocol):
    """A v2c agent serving a column of `rows` integers that answers `answers` requests only.

    With answers=1 it answers the first GETBULK of a walk then goes silent, as an agent that
    stops mid-walk; with answers=0 it is a port that swallows everything.
    """

    def __init__(self, column: str, rows: int, answers: int) -> None:
        self.column = column
        self.rows = rows
        self.answers = answers
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer with."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Answer a GET/GETNEXT/GETBULK on the column while answers remain."""
        self.received += 1
        if self.received > self.answers or self.transport is None:
            return
        version, community, (pdu_tag, pdu) = ber_items(ber_items(data)[0][1])
        request_id, _, max_rep, (_, varbinds) = ber_items(pdu)
        start = ber_decode_oid(ber_items(ber_items(varbinds)[0][1])[0][1])
        count = ber_decode_int(max_rep[1]) if pdu_tag == 0xA5 else 1
        first = 1 if start == self.column else int(start.rsplit(".", 1)[1]) + 1
        binds = [
            ber_seq(ber_oid(f"{self.column}.{i}"), ber_int(i))
            for i in range(first, min(first + count, self.rows + 1))
        ]
        reply = ber_seq(
            ber_tlv(0x02, version[1]),
            ber_tlv(0x04, community[1]),
            ber_seq(
                ber_tlv(0x02, request_id[1]), ber_int(0), ber_int(0), ber_seq(*binds), tag=0xA2
            ),
        )
        self.transport.sendto(reply, addr)


class ReportingV3Agent(asyncio.DatagramProtocol):
    """An SNMPv3 agent answering engine discovery, then every request with a Report of `report`.

    It reads plaintext messages only (noAuth or auth, never priv) and does not check digests:
    it stands for an agent whose USM rejects the request for the reason `report` names.
    """

    ENGINE_ID = bytes.fromhex("80001f8880") + b"vigie-test"
    UNKNOWN_ENGINE_ID = "1.3.6.1.6.3.15.1.1.4.0"

    def __init__(self, report: str) -> None:
        self.report = report
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer with."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Answer with a Report echoing the message and request ids."""
        self.received += 1
        _, header, params, scoped = ber_items(ber_items(data)[0][1])[:4]
        msg_id = ber_items(header[1])[0][1]
        usm = ber_items(ber_items(params[1])[0][1])
        if scoped[0] != 0x30 or self.transport is None:
            return  # encrypted: this agent cannot read it
        request_id = ber_items(ber_items(scoped[1])[2][1])[0][1]
        oid = self.report if usm[0][1] else self.UNKNOWN_ENGINE_ID
        report = ber_seq(
            ber_tlv(0x02, request_id),
            ber_int(0),
            ber_int(0),
            ber_seq(ber_seq(ber_oid(oid), ber_int(1, tag=0x41))),
            tag=0xA8,
        )
        security = ber_seq(
            ber_tlv(0x04, self.ENGINE_ID),
            ber_int(1),
            ber_int(100),
            ber_tlv(0x04, usm[3][1]),
            ber_tlv(0x04, b""),
            ber_tlv(0x04, b""),
        )
        reply = ber_seq(
            ber_int(3),
            ber_seq(ber_tlv(0x02, msg_id), ber_int(65507), ber_tlv(0x04, b"\x00"), ber_int(3)),
            ber_tlv(0x04, security),
            ber_seq(ber_tlv(0x04, self.ENGINE_ID), ber_tlv(0x04, b""), report),
        )
        self.transport.sendto(reply, addr)


async def serve_udp(agent: asyncio.DatagramProtocol) -> tuple[asyncio.DatagramTransport, int]:
    """Serve a datagram protocol on 127.0.0.1 on a free port; return transport and port."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: agent, local_addr=("127.0.0.1", 0))
    port: int = transport.get_extra_info("sockname")[1]
    return transport, port


# --------------------------------------------------------------------------- checks


def snmp_check(
    target: str,
    *,
    auths: Mapping[str, Any] | None = None,
    auth: str = "public_v2",
    profiles: tuple[str, ...] = ("system",),
    profile_dirs: tuple[Path, ...] = (),
    timeout: float = 3.0,
    check_id: str = "test",
    probe: SnmpProbe | None = None,
    **settings: Any,
) -> Check[SnmpCheckSettings]:
    """Return a bound snmp Check as the plan would build it."""
    probe = probe or SnmpProbe()
    section = SnmpSection.model_validate(
        {"auths": dict(auths or {}), "profile_dirs": [str(d) for d in profile_dirs]}
    )
    raw = SnmpSettings.model_validate({"auth": auth, "profiles": list(profiles), **settings})
    bound = probe.bind(raw, section, Path("."))
    assert isinstance(bound, SnmpCheckSettings)
    parsed = probe.parse_target(target)
    return Check(
        id=check_id,
        kind="snmp",
        target=parsed,
        interval=timeout * 2,
        timeout=timeout,
        settings=bound,
        host=probe.host_of(parsed),
    )


def values(result: ProbeResult, name: str, /) -> dict[tuple[tuple[str, str], ...], float]:
    """Return a result's samples of one family by their labels."""
    return {s.labels: s.value for s in result.samples if s.name == name}


def value(result: ProbeResult, name: str, /, **labels: str) -> float:
    """Return the value of the one sample with this name and exactly these labels."""
    want = tuple(sorted(labels.items()))
    found = [v for lb, v in values(result, name).items() if tuple(sorted(lb)) == want]
    assert len(found) == 1, f"{name}{labels}: {values(result, name)} (error: {result.error})"
    return found[0]
