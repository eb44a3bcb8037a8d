"""The lab servers' own view of the SAN: an SSH server answering `multipathd show maps json`.

One asyncssh server on a free loopback port stands for every server's sshd; the user name picks
the server (as the SNMP community picks the device). Each server has one multipath map of
PATHS paths to the SAN; scenarios fail some or all of them. Keys are generated per lab run: the
host key stays in memory, the client key and a known_hosts file are written for the daemon.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import asyncssh

from vigie.probes.san_host import MULTIPATH_COMMAND

PATHS = 4
"""Paths per map: two HBA ports, each zoned to two controller ports."""


def multipath_output(server: str, failed: int) -> str:
    """Return `multipathd show maps json` for a server whose first `failed` paths are down."""
    paths: list[dict[str, Any]] = []
    for i in range(PATHS):
        down = i < failed
        paths.append(
            {
                "dev": f"sd{chr(ord('b') + i)}",
                "dev_t": f"8:{16 * (i + 1)}",
                "dm_st": "failed" if down else "active",
                "dev_st": "transport-offline" if down else "running",
                "chk_st": "faulty" if down else "ready",
                "checker": "tur",
                "host_wwpn": f"0x10000090fa8c1a0{i % 2}",
                "target_wwpn": f"0x20010002ac01e5f{i}",
            }
        )
    doc = {
        "major_version": 0,
        "minor_version": 1,
        "maps": [
            {
                "name": f"mpath-{server}-data",
                "uuid": f"36000c29{zlib.crc32(server.encode()):024x}",
                "dm_st": "active",
                "features": "1 queue_if_no_path",
                "paths": PATHS - failed,
                "path_faults": failed,
                "path_groups": [{"group": 1, "dm_st": "active", "paths": paths}],
            }
        ],
    }
    return json.dumps(doc, indent=3)


class SanHostSsh:
    """The SSH server: answers MULTIPATH_COMMAND per server from the lab's path state."""

    def __init__(
        self,
        failed_paths: Mapping[str, int],
        reachable: Callable[[str], bool],
        host: str = "127.0.0.1",
    ) -> None:
        self.failed_paths = failed_paths
        self.reachable = reachable
        self.host = host
        self.port = 0
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519", comment="vigie@lab")
        self._server: asyncssh.SSHAcceptor | None = None

    async def start(self, port: int = 0) -> None:
        """Bind the port (free unless given); only the lab's client key may log in."""
        self._server = await asyncssh.create_server(
            asyncssh.SSHServer,
            self.host,
            port,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                self.client_key.export_public_key().decode()
            ),
            process_factory=self._handle,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the port."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def write_files(self, directory: Path) -> tuple[Path, Path]:
        """Write the client key (mode 600) and a known_hosts for the port; return both paths."""
        key = directory / "id_ed25519"
        self.client_key.write_private_key(key)
        key.chmod(0o600)
        known = directory / "known_hosts"
        public = self.host_key.export_public_key().decode().strip()
        known.write_text(f"[{self.host}]:{self.port} {public}\n")
        return key, known

    def _handle(self, process: asyncssh.SSHServerProcess[str]) -> None:
        """Answer the multipath command for the logged-in server, anything else with 127."""
        server = process.get_extra_info("username") or ""
        command = (process.command or "").removeprefix("sudo -n ").strip()
        if server not in self.failed_paths:
            process.stderr.write(f"{server}: no such host in the lab\n")
            process.exit(1)
        elif not self.reachable(server):
            process.stderr.write(f"{server}: host powered off\n")
            process.exit(255)
        elif command != MULTIPATH_COMMAND:
            process.stderr.write(f"sh: 1: {command.split()[0] if command else ''}: not found\n")
            process.exit(127)
        else:
            process.stdout.write(multipath_output(server, self.failed_paths[server]))
            process.exit(0)
