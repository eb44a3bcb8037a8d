"""The ssh probe against a real asyncssh server on loopback replaying recorded SAN outputs.

Real multipath needs a kernel device-mapper and FC HBAs, which this machine lacks: the test
server answers the allowlisted commands with the recorded outputs of tests/fixtures/ssh (a
fake only for that); SSH itself (key exchange, host key check, public key auth) is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import structlog
from pydantic import ValidationError

from tests.probes.conftest import make_check, refused_port, sample
from tests.waiting import wait_for
from vigie.core.results import ProbeResult
from vigie.monitor.config import load_config
from vigie.probes.base import Check, ProbeContext, ProbeRegistry
from vigie.probes.san_host import FC_HOST_COMMAND, MULTIPATH_COMMAND
from vigie.probes.ssh import KeyCache, SshProbe, SshSettings, decrypt_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ssh"
PASSPHRASE = "correct horse battery staple"


@dataclass
class Keys:
    """Host and client keys generated for the test, written to files as an admin would."""

    root: Path
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey
    client_key_file: Path
    passphrase_file: Path

    def known_hosts(self, port: int, key: asyncssh.SSHKey | None = None) -> Path:
        """Write a known_hosts file trusting key (default: the server's) for the port."""
        path = self.root / f"known_hosts-{port}{'-other' if key is not None else ''}"
        public = (key or self.host_key).export_public_key().decode().strip()
        path.write_text(f"[127.0.0.1]:{port} {public}\n")
        return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """An ed25519 host key and an ed25519 client key encrypted with a passphrase."""
    root = tmp_path_factory.mktemp("ssh")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519", comment="vigie@monitoring")
    key_file = root / "id_ed25519"
    # Few bcrypt rounds keep the test fast; the format is the one ssh-keygen writes.
    client_key.write_private_key(key_file, passphrase=PASSPHRASE, rounds=50)
    secret = root / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    return Keys(root, host_key, client_key, key_file, secret)


@dataclass
class Server:
    """A running test SSH server: its port and the commands it received."""

    port: int
    commands: list[str] = field(default_factory=list)


Replies = dict[str, tuple[str, int]]


@asynccontextmanager
async def ssh_server(keys: Keys, replies: Replies) -> AsyncIterator[Server]:
    """Serve SSH on 127.0.0.1 (free port): the client key may log in, commands get replies."""
    received: list[str] = []

    async def handle(process: asyncssh.SSHServerProcess[str]) -> None:
        """Answer an allowlisted command with its recorded output, anything else with 127."""
        command = process.command or ""
        received.append(command)
        reply = replies.get(command)
        if reply is None:
            process.stderr.write(f"sh: 1: {command.split()[0]}: not found\n")
            process.exit(127)
            return
        out, status = reply
        process.stdout.write(out)
        process.exit(status)

    public = keys.client_key.export_public_key().decode()
    server = await asyncssh.create_server(
        asyncssh.SSHServer,
        "127.0.0.1",
        0,
        server_host_keys=[keys.host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(public),
        process_factory=handle,
    )
    try:
        port = server.sockets[0].getsockname()[1]
        yield Server(port, received)
    finally:
        server.close()
        await server.wait_closed()


def recorded(name: str) -> str:
    """Return a recorded output."""
    return (FIXTURES / name).read_text()


@pytest.fixture
def probe() -> SshProbe:
    """A fresh ssh probe."""
    return SshProbe()


def settings(keys: Keys, port: int, **extra: Any) -> dict[str, Any]:
    """Return valid ssh settings for the test server, with extra overrides."""
    base: dict[str, Any] = {
        "command": "multipath",
        "username": "vigie",
        "client_key_file": str(keys.client_key_file),
        "passphrase_file": str(keys.passphrase_file),
        "known_hosts_file": str(keys.known_hosts(port)),
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


async def run(probe: SshProbe, ctx: ProbeContext, port: int, opts: dict[str, Any]) -> ProbeResult:
    """Run the probe once under a timeout, as the scheduler does."""
    check = make_check(probe, f"127.0.0.1:{port}", **opts)
    async with asyncio.timeout(10):
        return await probe(check, ctx)


def no_secret(
    result: ProbeResult, ctx: ProbeContext, logs: Sequence[MutableMapping[str, Any]]
) -> None:
    """Assert the passphrase shows nowhere: reason, debug lines, structured log events."""
    texts = [result.error or "", *ctx.log.lines, *(repr(e) for e in logs)]
    assert not any(PASSPHRASE in t or "horse" in t for t in texts)


# --------------------------------------------------------------------------- runs


async def test_multipath_healthy(probe: SshProbe, ctx: ProbeContext, keys: Keys) -> None:
    """Over real SSH with key auth and a checked host key, multipath maps become samples."""
    replies = {MULTIPATH_COMMAND: (recorded("multipath-healthy.json"), 0)}
    async with ssh_server(keys, replies) as server:
        with structlog.testing.capture_logs() as logs:
            result = await run(probe, ctx, server.port, settings(keys, server.port))
    assert result.success, result.error
    assert server.commands == [MULTIPATH_COMMAND]
    assert sample(result, "multipath_maps") == 2
    assert sample(result, "multipath_paths", map="mpath-dpi-data") == 4
    assert sample(result, "multipath_map_ok", map="mpath-dpi-logs") == 1
    assert sample(result, "probe_ssh_connect_duration_seconds") > 0
    assert [name for name, _ in result.phases] == ["connect", "command"]
    no_secret(result, ctx, logs)


async def test_multipath_degraded_is_a_successful_poll(
    probe: SshProbe, ctx: ProbeContext, keys: Keys
) -> None:
    """A degraded SAN view is a successful poll; the failed paths are in the samples."""
    replies = {f"sudo -n {MULTIPATH_COMMAND}": (recorded("multipath-degraded.json"), 0)}
    async with ssh_server(keys, replies) as server:
        result = await run(probe, ctx, server.port, settings(keys, server.port, sudo=True))
    assert result.success, result.error
    assert server.commands == [f"sudo -n {MULTIPATH_COMMAND}"]
    assert sample(result, "multipath_paths_failed", map="mpath-dpi-data") == 2
    assert sample(result, "multipath_map_ok", map="mpath-dpi-logs") == 0


async def test_fc_host(probe: SshProbe, ctx: ProbeContext, keys: Keys) -> None:
    """fc_host runs the fixed sysfs loop (never under sudo) and reports each port's state."""
    replies = {FC_HOST_COMMAND: (recorded("fc_host-linkdown.txt"), 0)}
    async with ssh_server(keys, replies) as server:
        opts = settings(keys, server.port, command="fc_host", sudo=True)
        result = await run(probe, ctx, server.port, opts)
    assert result.success, result.error
    assert server.commands == [FC_HOST_COMMAND]
    assert sample(result, "fc_host_port_online", host="host1") == 1
    assert sample(result, "fc_host_port_online", host="host2") == 0


# --------------------------------------------------------------------------- failures


async def test_wrong_host_key(probe: SshProbe, ctx: ProbeContext, keys: Keys) -> None:
    """A server whose host key is not the known one fails before authenticating, and says so."""
    other = asyncssh.generate_private_key("ssh-ed25519")
    async with ssh_server(keys, {}) as server:
        known = keys.known_hosts(server.port, other)
        opts = settings(keys, server.port, known_hosts_file=str(known))
        result = await run(probe, ctx, server.port, opts)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith(
        f"host key of 127.0.0.1:{server.port} not trusted: not in known_hosts file '{known}'"
    )
    assert server.commands == []


async def test_wrong_client_key(probe: SshProbe, ctx: ProbeContext, keys: Keys) -> None:
    """A client key the server does not authorise fails naming the user and the key file."""
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    key_file = keys.root / "stranger"
    stranger.write_private_key(key_file)
    async with ssh_server(keys, {}) as server:
        opts = settings(keys, server.port, client_key_file=str(key_file), passphrase_file=None)
        with structlog.testing.capture_logs() as logs:
            result = await run(probe, ctx, server.port, opts)
    assert result.error == (
        f"SSH authentication as 'vigie' refused by 127.0.0.1:{server.port}:"
        f" client key '{key_file}' not accepted"
    )
    no_secret(result, ctx, logs)


async def test_insecure_ignore_host_key(probe: SshProbe, ctx: ProbeContext, keys: Keys) -> None:
    """With insecure_ignore_host_key and no known_hosts, any host key is accepted."""
    replies = {MULTIPATH_COMMAND: (recorded("multipath-no-maps.json"), 0)}
    async with ssh_server(keys, replies) as server:
        opts = settings(keys, server.port, known_hosts_file=None, insecure_ignore_host_key=True)
        opts.pop("known_hosts_file", None)
        result = await run(probe, ctx, server.port, opts)
    assert result.success, result.error
    assert sample(result, "multipath_maps") == 0
    assert any("host_key_checked=False" in line for line in ctx.log.lines)


async def test_command_failure_reports_stderr(
    probe: SshProbe, ctx: ProbeContext, keys: Keys
) -> None:
    """A failing command (multipathd not running) fails with its exit code and stderr line."""
    async with ssh_server(keys, {}) as server:
        result = await run(probe, ctx, server.port, settings(keys, server.port))
    assert result.error == (f"`{MULTIPATH_COMMAND}` exited with 127: sh: 1: multipathd: not found")


async def test_garbage_output(probe: SshProbe, ctx: ProbeContext, keys: Keys) -> None:
    """Output that is not multipathd JSON fails with the parser's reason."""
    replies = {MULTIPATH_COMMAND: ("multipathd> \x1b[0m garbage", 0)}
    async with ssh_server(keys, replies) as server:
        result = await run(probe, ctx, server.port, settings(keys, server.port))
    assert result.error == (
        "multipath: multipathd output is not JSON: Expecting value at line 1 column 1"
    )


async def test_huge_output_is_cut(probe: SshProbe, ctx: ProbeContext, keys: Keys) -> None:
    """Output over max_output_bytes stops the command and fails the check."""
    replies = {MULTIPATH_COMMAND: ("x" * 300_000, 0)}
    async with ssh_server(keys, replies) as server:
        opts = settings(keys, server.port, max_output_bytes=65536)
        result = await run(probe, ctx, server.port, opts)
    assert result.error == "output larger than max_output_bytes (65536)"


async def test_connection_refused(probe: SshProbe, ctx: ProbeContext, keys: Keys) -> None:
    """A closed port fails naming the target."""
    port = refused_port()
    result = await run(probe, ctx, port, settings(keys, port))
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


async def _cut_by_the_timeout(
    probe: SshProbe, check: Check[SshSettings], ctx: ProbeContext, started: asyncio.Event
) -> None:
    """Run the probe under a timeout, as the scheduler does, expiring it once `started` is set;
    the run must then end at once with TimeoutError."""
    loop = asyncio.get_running_loop()
    deadlines: list[asyncio.Timeout] = []

    async def scheduled() -> ProbeResult:
        """The scheduler's way to run a check: under asyncio.timeout."""
        async with asyncio.timeout(None) as deadline:
            deadlines.append(deadline)
            return await probe(check, ctx)

    run = asyncio.ensure_future(scheduled())
    try:
        await wait_for(started.is_set, "the probe to reach the server")
        deadlines[0].reschedule(loop.time())  # the check's timeout expires now
        await wait_for(run.done, "the run to end once its timeout expired", within=5)
        assert isinstance(run.exception(), TimeoutError)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


@dataclass
class Peer:
    """What a test server saw of one client connection: accepted, and closed by the client."""

    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)


async def _until_eof(reader: asyncio.StreamReader, peer: Peer) -> None:
    """Read (and drop) what the client sends until it closes its side."""
    try:
        while await reader.read(65536):
            pass
    except OSError:
        pass
    peer.client_closed.set()


async def test_silent_server_is_left_to_the_timeout(
    probe: SshProbe, ctx: ProbeContext, keys: Keys
) -> None:
    """A port that accepts but never speaks SSH: the scheduler's timeout cuts the run, and the
    connection the probe opened is closed at once (the server sees the client hang up)."""
    peer = Peer()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Say nothing; note when the client hangs up."""
        peer.accepted.set()
        try:
            await _until_eof(reader, peer)
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        check = make_check(probe, f"127.0.0.1:{port}", **settings(keys, port))
        await _cut_by_the_timeout(probe, check, ctx, peer.accepted)
        await wait_for(peer.client_closed.is_set, "the probe to close its connection")
    finally:
        server.close()
        await server.wait_closed()


async def test_host_hung_mid_command_is_closed_by_the_timeout(
    probe: SshProbe, ctx: ProbeContext, keys: Keys
) -> None:
    """A host that stops answering while the command runs (no channel close will ever come):
    the timeout cuts the run at once and its connection is closed without waiting for the host.

    Between probe and server a TCP relay stops forwarding what the probe sends once the command
    is streaming its output (the server saw the probe read it), as if the host's sshd froze.
    """
    started, frozen = asyncio.Event(), asyncio.Event()
    peer = Peer()

    async def hang(process: asyncssh.SSHServerProcess[str]) -> None:
        """Send more than the SSH window, so the drain proves the probe is reading; then freeze."""
        process.stdout.write("[" * (3 * 1024 * 1024))
        await process.stdout.drain()
        frozen.set()
        started.set()
        await asyncio.Event().wait()

    public = keys.client_key.export_public_key().decode()
    sshd = await asyncssh.create_server(
        asyncssh.SSHServer,
        "127.0.0.1",
        0,
        server_host_keys=[keys.host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(public),
        process_factory=hang,
    )
    sshd_port = sshd.sockets[0].getsockname()[1]
    pumps: list[asyncio.Task[None]] = []

    async def pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, freezes: bool
    ) -> None:
        """Forward bytes until EOF; once frozen, drop them if this direction freezes."""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if not (freezes and frozen.is_set()):
                    writer.write(data)
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one client connection to the SSH server; note when the client hangs up."""
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", sshd_port)
        pumps.append(asyncio.ensure_future(pump(up_reader, writer, freezes=False)))
        await pump(reader, up_writer, freezes=True)
        peer.client_closed.set()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        opts = settings(keys, port, max_output_bytes=16 * 1024 * 1024)
        check = make_check(probe, f"127.0.0.1:{port}", **opts)
        await _cut_by_the_timeout(probe, check, ctx, started)
        await wait_for(peer.client_closed.is_set, "the probe to close its connection")
    finally:
        server.close()
        sshd.close()
        await sshd.wait_closed()
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await server.wait_closed()


# --------------------------------------------------------------------------- settings


def _invalid(keys: Keys) -> list[tuple[dict[str, Any], str]]:
    """Invalid settings and the message each must give."""
    base = settings(keys, 22)
    return [
        ({**base, "command": "rm -rf /"}, "Input should be 'multipath' or 'fc_host'"),
        ({k: v for k, v in base.items() if k != "known_hosts_file"}, "known_hosts_file is"),
        ({**base, "insecure_ignore_host_key": True}, "not both"),
        ({**base, "passphrase_file": str(keys.root / "nope")}, "cannot read secret file"),
        (
            {k: v for k, v in base.items() if k != "passphrase_file"},
            f"client key '{keys.client_key_file}' is encrypted: set passphrase_file",
        ),
        ({**base, "client_key_file": str(keys.passphrase_file)}, "cannot load client key"),
        ({**base, "client_key_file": str(keys.root / "nope")}, "cannot read client key file"),
        ({**base, "known_hosts_file": str(keys.root / "nope")}, "cannot read known_hosts"),
        ({**base, "username": "root; reboot"}, "is not a valid user"),
        ({**base, "command_line": "id"}, "Extra inputs are not permitted"),
    ]


def test_invalid_settings(keys: Keys) -> None:
    """Bad settings are refused at load with the reason, never showing the passphrase."""
    for opts, message in _invalid(keys):
        clean = {k: v for k, v in opts.items() if v is not None}
        with pytest.raises(ValidationError) as info:
            SshSettings.model_validate(clean)
        # What `vigie check` shows: the messages (pydantic's input echo is not printed).
        text = " | ".join(e["msg"] for e in info.value.errors())
        assert message in text, (opts, text)
        assert "horse" not in text


def test_settings_hide_the_passphrase(keys: Keys) -> None:
    """The passphrase read from its file is a SecretStr: not in repr nor in a dump."""
    loaded = SshSettings.model_validate(settings(keys, 22))
    assert loaded.passphrase is not None
    assert loaded.passphrase.get_secret_value() == PASSPHRASE
    assert "horse" not in repr(loaded) and "horse" not in str(loaded.model_dump())


@pytest.mark.parametrize(
    ("target", "normalised", "host"),
    [
        ("srv-dpi-1.chu.local", "srv-dpi-1.chu.local:22", "srv-dpi-1.chu.local"),
        ("SRV:2222", "srv:2222", "SRV"),
        ("::1", "[::1]:22", "::1"),
        ("[::1]", "[::1]:22", "::1"),
        ("[::1]:2222", "[::1]:2222", "::1"),
    ],
)
def test_targets(probe: SshProbe, target: str, normalised: str, host: str) -> None:
    """Targets are host[:port] with port 22 by default, IPv6 in brackets."""
    assert probe.parse_target(target) == normalised
    assert probe.host_of(target) == host


@pytest.mark.parametrize("target", ["", "a b:22", "host:99999", "1:2:3:zz"])
def test_invalid_targets(probe: SshProbe, target: str) -> None:
    """Malformed targets are refused with a reason."""
    with pytest.raises(ValueError, match=r"must|port|IPv6|valid"):
        probe.parse_target(target)


def test_config_loads_an_ssh_check(keys: Keys, tmp_path: Path) -> None:
    """A config with an ssh check loads through the registry, its key decrypted at load."""
    config = tmp_path / "vigie.yaml"
    known = keys.known_hosts(22)
    config.write_text(
        "checks:\n"
        "  - id: srv-dpi-1-multipath\n"
        "    kind: ssh\n"
        "    target: srv-dpi-1.chu.local\n"
        "    interval: 1m\n"
        "    ssh:\n"
        "      command: multipath\n"
        "      username: vigie\n"
        "      sudo: true\n"
        f"      client_key_file: {keys.client_key_file}\n"
        f"      passphrase_file: {keys.passphrase_file}\n"
        f"      known_hosts_file: {known}\n"
    )
    loaded = load_config(config, ProbeRegistry([SshProbe()]))
    check = loaded.plan["srv-dpi-1-multipath"]
    assert isinstance(check.settings, SshSettings)
    assert check.target == "srv-dpi-1.chu.local:22"
    assert check.settings.sudo and check.settings.known_hosts() is not None


async def test_wrong_passphrase_fails_at_run_without_showing_it(
    probe: SshProbe, ctx: ProbeContext, keys: Keys
) -> None:
    """A wrong passphrase fails the run naming the key file, never the passphrase."""
    async with ssh_server(keys, {}) as server:
        opts = settings(keys, server.port, passphrase="hunter2-wrong", passphrase_file=None)
        with structlog.testing.capture_logs() as logs:
            result = await run(probe, ctx, server.port, opts)
    assert result.error == f"cannot load client key '{keys.client_key_file}': wrong passphrase"
    assert server.commands == []
    texts = [result.error, *ctx.log.lines, *(repr(e) for e in logs)]
    assert not any("hunter2" in t for t in texts)


async def test_key_is_decrypted_once_for_all_checks(ctx: ProbeContext, keys: Keys) -> None:
    """Concurrent checks sharing a key decrypt it once (bcrypt is slow), off the event loop;
    a rotated key file is decrypted again."""
    decrypted: list[Path] = []
    loop_thread = threading.get_ident()

    def counting(path: Path, passphrase: str | None) -> asyncssh.SSHKey:
        """The real decryption, counted, and checked to run off the event loop's thread."""
        assert threading.get_ident() != loop_thread
        decrypted.append(path)
        return decrypt_key(path, passphrase)

    probe = SshProbe(KeyCache(decrypt=counting))
    replies = {MULTIPATH_COMMAND: (recorded("multipath-no-maps.json"), 0)}
    async with ssh_server(keys, replies) as server:
        check = make_check(probe, f"127.0.0.1:{server.port}", **settings(keys, server.port))
        async with asyncio.timeout(20):
            results = await asyncio.gather(*(probe(check, ctx) for _ in range(8)))
        assert all(r.success for r in results), [r.error for r in results]
        assert decrypted == [keys.client_key_file]
        os.utime(keys.client_key_file, ns=(1, time.time_ns()))  # a rotated key: read again
        async with asyncio.timeout(20):
            assert (await probe(check, ctx)).success
            assert (await probe(check, ctx)).success
        assert decrypted == [keys.client_key_file] * 2


def test_same_config_gives_equal_settings(keys: Keys) -> None:
    """Two loads of the same settings compare equal, so a reload does not restart the check."""
    opts = settings(keys, 22)
    assert SshSettings.model_validate(opts) == SshSettings.model_validate(opts)
    other = settings(keys, 2222)
    assert SshSettings.model_validate(opts) != SshSettings.model_validate(other)
