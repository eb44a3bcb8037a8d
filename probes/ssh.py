"""The ssh probe: run one allowlisted command on a host over SSH and parse its view of the SAN.

A check names a `command` from probes.san_host.COMMANDS, never a command line, so a config
cannot make Vigie run arbitrary commands on servers. Authentication is by a client key read
from a file (its passphrase from passphrase_file), decrypted once when the config loads; the
server's host key is checked against a known_hosts file unless `insecure_ignore_host_key` is
set (unsafe: anyone in the middle can answer in the server's place). Neither the user's SSH
config, agent nor ~/.ssh is used. One connection per run.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal, Self

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from vigie.core.hostport import HostPortTarget, split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.secrets import ConfigPath, resolve_secret_field
from vigie.probes.base import Check, ProbeContext
from vigie.probes.san_host import COMMANDS, SanParseError
from vigie.probes.tls import os_error_reason

__all__ = ["KeyCache", "SshProbe", "SshSettings", "decrypt_key"]

DEFAULT_PORT = 22
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
_CHUNK = 64 * 1024
_STDERR_BYTES = 4096


class SshSettings(BaseModel):
    """Settings of an ssh check: which allowlisted command, as whom, and how to trust the host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Literal["multipath", "fc_host"] = Field(
        description="What to read: `multipath` (multipathd show maps json) or `fc_host`"
        " (FC HBA port states from /sys/class/fc_host)."
    )
    username: str = Field(description="SSH user.")
    client_key_file: ConfigPath = Field(description="Private key file (OpenSSH or PEM).")
    passphrase: SecretStr | None = Field(
        None, description="Passphrase of the key (prefer passphrase_file)."
    )
    passphrase_file: ConfigPath | None = Field(
        None, description="File holding the key's passphrase, read once at load."
    )
    known_hosts_file: ConfigPath | None = Field(
        None, description="known_hosts file the server's host key must be in (required)."
    )
    insecure_ignore_host_key: bool = Field(
        False,
        description="UNSAFE: accept any host key (no protection against a man in the middle);"
        " only instead of known_hosts_file.",
    )
    sudo: bool = Field(
        False, description="Run multipathd through `sudo -n` (it needs root; fc_host does not)."
    )
    max_output_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="A larger output fails the check (and the command is stopped).",
    )
    # The file's text, not asyncssh's object: equal configs must compare equal, or a reload
    # would restart every ssh check.
    _known_hosts: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _load(self) -> Self:
        """Check the user, host-key policy and client key file; load known_hosts once."""
        if not _USER.match(self.username):
            raise ValueError(f"username {bound_text(self.username, 80)!r} is not a valid user")
        if self.insecure_ignore_host_key == (self.known_hosts_file is not None):
            raise ValueError(
                "set known_hosts_file, or insecure_ignore_host_key: true (unsafe), not both"
                if self.insecure_ignore_host_key
                else "known_hosts_file is required (or insecure_ignore_host_key: true, unsafe)"
            )
        passphrase = resolve_secret_field(self, "passphrase")
        _check_key_file(self.client_key_file, encrypted_ok=passphrase is not None)
        if self.known_hosts_file is not None:
            self._known_hosts = _read_known_hosts(self.known_hosts_file)
        return self

    def known_hosts(self) -> asyncssh.SSHKnownHosts | None:
        """Return the trusted host keys (as loaded with the config), or None if unchecked."""
        if self._known_hosts is None:
            return None
        return asyncssh.import_known_hosts(self._known_hosts)


_MAX_KEY_BYTES = 64 * 1024
_NEEDS_PASSPHRASE = "Passphrase must be specified"


def _read_key_bytes(path: Path) -> bytes:
    """Return a key file's content (bounded); the error names the file."""
    try:
        with path.open("rb") as fh:
            return fh.read(_MAX_KEY_BYTES)
    except OSError as exc:
        raise ValueError(f"cannot read client key file {str(path)!r}: {exc.strerror}") from None


def _check_key_file(path: Path, *, encrypted_ok: bool) -> None:
    """Check a key file holds a private key, without decrypting it (costly: see KeyCache)."""
    data = _read_key_bytes(path)
    try:
        asyncssh.import_private_key(data)
    except asyncssh.KeyImportError as exc:
        if _NEEDS_PASSPHRASE not in str(exc):
            raise ValueError(f"cannot load client key {str(path)!r}: {exc}") from None
        if not encrypted_ok:
            raise ValueError(
                f"client key {str(path)!r} is encrypted: set passphrase_file"
            ) from None


def decrypt_key(path: Path, passphrase: str | None) -> asyncssh.SSHKey:
    """Read and decrypt a private key; the error names the file, never the passphrase."""
    data = _read_key_bytes(path)
    try:
        return asyncssh.import_private_key(data, passphrase)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        text = str(exc)
        why = "wrong passphrase" if "passphrase" in text.lower() else bound_text(text, 200)
        raise ValueError(f"cannot load client key {str(path)!r}: {why}") from None


class KeyCache:
    """Decrypted client keys by file version and passphrase, decrypted once in a thread.

    An OpenSSH key's bcrypt KDF takes about a second at the default 128 rounds: done at config
    load for every check it would stall reloads and the event loop, so it is done on first use,
    off the loop, once per (file, mtime, size, passphrase digest) for all checks sharing it.
    """

    def __init__(
        self, decrypt: Callable[[Path, str | None], asyncssh.SSHKey] = decrypt_key
    ) -> None:
        """Start empty; `decrypt` reads and decrypts one key file (run in a thread)."""
        self._decrypt = decrypt
        self._tasks: dict[tuple[str, int, int, str], asyncio.Task[asyncssh.SSHKey]] = {}

    async def get(self, path: Path, passphrase: SecretStr | None) -> asyncssh.SSHKey:
        """Return the decrypted key, or raise ValueError saying why it cannot be loaded."""
        try:
            st = os.stat(path)  # one cheap syscall per run: no thread needed
        except OSError as exc:
            raise ValueError(f"cannot read client key file {str(path)!r}: {exc.strerror}") from None
        secret = passphrase.get_secret_value() if passphrase is not None else None
        digest = hashlib.sha256(secret.encode()).hexdigest() if secret else ""
        sig = (str(path), st.st_mtime_ns, st.st_size, digest)
        task = self._tasks.get(sig)
        if task is None:
            # Forget older versions of the same file: a rotated key is not used again.
            self._tasks = {k: v for k, v in self._tasks.items() if k[0] != sig[0]}
            task = asyncio.ensure_future(asyncio.to_thread(self._decrypt, path, secret))
            self._tasks[sig] = task
        return await asyncio.shield(task)


_MAX_KNOWN_HOSTS_BYTES = 4 * 1024 * 1024


def _read_known_hosts(path: Path) -> str:
    """Read and check a known_hosts file; return its text. The error names the file."""
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_KNOWN_HOSTS_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read known_hosts file {str(path)!r}: {exc.strerror}") from None
    if len(data) > _MAX_KNOWN_HOSTS_BYTES:
        raise ValueError(f"known_hosts file {str(path)!r} is larger than 4 MiB")
    text = data.decode("utf-8", errors="replace")
    try:
        asyncssh.import_known_hosts(text)
    except ValueError as exc:
        raise ValueError(f"invalid known_hosts file {str(path)!r}: {exc}") from None
    return text


class _Failure(Exception):
    """A run failed for a reason that fits in ProbeResult.error."""


async def _read(stream: asyncssh.SSHReader[bytes], limit: int) -> bytes:
    """Read a stream to EOF; raise _Failure once more than limit bytes came."""
    data = bytearray()
    while chunk := await stream.read(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise _Failure(f"output larger than max_output_bytes ({limit})")
    return bytes(data)


async def _read_some(stream: asyncssh.SSHReader[bytes], limit: int) -> bytes:
    """Read a stream to EOF keeping only the first limit bytes (stderr is only for reasons)."""
    data = bytearray()
    while chunk := await stream.read(_CHUNK):
        data += chunk[: max(0, limit - len(data))]
    return bytes(data)


async def _run(conn: asyncssh.SSHClientConnection, line: str, limit: int) -> tuple[bytes, str]:
    """Run line; return stdout and stderr's first line, or raise _Failure on a bad exit.

    Not `async with` the process: its exit waits for the server to confirm the channel's close,
    which a host that stopped answering never does. On any error or cancellation the caller
    aborts the whole connection instead.
    """
    proc = await conn.create_process(line, stdin=asyncssh.DEVNULL, encoding=None)
    out, err = await asyncio.gather(
        _read(proc.stdout, limit), _read_some(proc.stderr, _STDERR_BYTES)
    )
    await proc.wait_closed()
    first_err = next(
        (x.strip() for x in err.decode("utf-8", "replace").splitlines() if x.strip()), ""
    )
    if proc.exit_signal is not None:
        raise _Failure(f"`{line}` killed by signal {proc.exit_signal[0]}")
    if proc.exit_status:
        detail = f": {first_err}" if first_err else ""
        raise _Failure(f"`{line}` exited with {proc.exit_status}{detail}")
    return out, first_err


async def _session(conn: asyncssh.SSHClientConnection, line: str, limit: int) -> bytes:
    """Run line on an open connection and close it; abort it on any error or cancellation.

    Aborting closes the socket at once without waiting for the peer: the scheduler's timeout
    cancels a run while its host hangs, and what the run opened must not outlive it.
    """
    try:
        out, _ = await _run(conn, line, limit)
    except BaseException:
        conn.abort()
        raise
    conn.close()  # a polite disconnect; the socket is closed without waiting for the peer
    await conn.wait_closed()  # bounded: asyncssh's own cleanup, scheduled by close()
    return out


class SshProbe(HostPortTarget):
    """Probe kind "ssh": run an allowlisted command over SSH and parse the host's SAN view.

    The target is `host[:port]`, port 22 by default, IPv6 as `[addr]:port`.
    """

    kind: ClassVar[str] = "ssh"
    Settings: ClassVar[type[BaseModel]] = SshSettings
    default_port: ClassVar[int | None] = DEFAULT_PORT

    def __init__(self, keys: KeyCache | None = None) -> None:
        """Start with no decrypted key; `keys` is the cache of decrypted keys to use."""
        self._keys = keys if keys is not None else KeyCache()

    async def __call__(self, check: Check[SshSettings], ctx: ProbeContext) -> ProbeResult:
        """Connect, run the command, parse its output."""
        settings = check.settings
        host, port = split_host_port(check.target, DEFAULT_PORT)
        command = COMMANDS[settings.command]
        line = f"sudo -n {command.line}" if settings.sudo and command.needs_root else command.line
        known_hosts = settings.known_hosts()
        try:
            key = await self._keys.get(settings.client_key_file, settings.passphrase)
        except ValueError as exc:
            return self._fail(str(exc), [], ctx)
        start = time.monotonic()
        phases: list[tuple[str, float]] = []
        ctx.log(
            "ssh_connect",
            host=host,
            port=port,
            user=settings.username,
            command=settings.command,
            host_key_checked=known_hosts is not None,
        )
        try:
            # asyncssh aborts a connection cancelled during its handshake; once connected,
            # _session closes it.
            conn = await asyncssh.connect(
                host,
                port,
                username=settings.username,
                client_keys=[key],
                known_hosts=known_hosts,
                agent_path=None,
                config=[],  # not ~/.ssh/config: the check's settings are the whole truth
                preferred_auth="publickey",
                password=None,
                kbdint_auth=False,
                client_host_keys=None,
            )
            phases.append(("connect", time.monotonic() - start))
            ctx.log("ssh_connected", seconds=round(phases[-1][1], 6))
            out = await _session(conn, line, settings.max_output_bytes)
            phases.append(("command", time.monotonic() - start - phases[0][1]))
        except _Failure as exc:
            return self._fail(str(exc), phases, ctx)
        except asyncssh.HostKeyNotVerifiable as exc:
            where = settings.known_hosts_file
            return self._fail(
                f"host key of {check.target} not trusted: not in known_hosts file"
                f" {str(where)!r} ({exc.reason})",
                phases,
                ctx,
            )
        except asyncssh.PermissionDenied:
            return self._fail(
                f"SSH authentication as {settings.username!r} refused by {check.target}:"
                f" client key {str(settings.client_key_file)!r} not accepted",
                phases,
                ctx,
            )
        except asyncssh.DisconnectError as exc:
            return self._fail(f"SSH connection to {check.target} failed: {exc.reason}", phases, ctx)
        except asyncssh.ChannelOpenError as exc:
            return self._fail(f"SSH session refused by {check.target}: {exc.reason}", phases, ctx)
        except OSError as exc:
            return self._fail(
                f"connect to {check.target} failed: {os_error_reason(exc)}", phases, ctx
            )
        text = out.decode("utf-8", errors="replace")
        try:
            samples = command.parse(text)
        except SanParseError as exc:
            return self._fail(f"{settings.command}: {exc}", phases, ctx)
        ctx.log("ssh_parsed", command=settings.command, bytes=len(out), samples=len(samples))
        samples.insert(
            0,
            Sample(
                "probe_ssh_connect_duration_seconds",
                phases[0][1],
                help="Seconds to connect, exchange keys and authenticate over SSH.",
            ),
        )
        return ProbeResult(success=True, samples=tuple(samples), phases=tuple(phases))

    @staticmethod
    def _fail(error: str, phases: list[tuple[str, float]], ctx: ProbeContext) -> ProbeResult:
        """Return a failed result with a bounded reason."""
        error = bound_text(error)
        ctx.log("ssh_failed", error=error)
        return ProbeResult(success=False, error=error, phases=tuple(phases))
