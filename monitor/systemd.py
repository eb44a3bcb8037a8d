"""Dependency-free sd_notify: readiness, status, reload and watchdog messages to systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import structlog

__all__ = ["SystemdNotifier", "watchdog_loop"]


def _parse_address(raw: str) -> str | None:
    """Return the AF_UNIX address for a NOTIFY_SOCKET value, or None if unsupported."""
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None


def _parse_positive_int(raw: str | None) -> int | None:
    """Return the value as a positive int, or None if it is missing or invalid."""
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value > 0 else None


class SystemdNotifier:
    """Sends sd_notify datagrams to NOTIFY_SOCKET; every method is a no-op when it is unset."""

    def __init__(
        self,
        notify_socket: str | None,
        *,
        watchdog_usec: int | None = None,
        logger: Any = None,
    ) -> None:
        self._log: Any = logger if logger is not None else structlog.get_logger()
        self._raw_address = notify_socket or ""
        self._address: str | None = None
        self._sock: socket.socket | None = None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        if not notify_socket:
            return
        address = _parse_address(notify_socket)
        if address is None:
            self._log.warning(
                "sd_notify_failed",
                address=notify_socket,
                error="unsupported NOTIFY_SOCKET (only absolute paths and @abstract names)",
            )
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
        except OSError as exc:
            self._log.warning("sd_notify_failed", address=notify_socket, error=str(exc))
            return
        self._address = address
        self._sock = sock

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, logger: Any = None, pid: int | None = None
    ) -> SystemdNotifier:
        """Build a notifier from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID in `env`."""
        log: Any = logger if logger is not None else structlog.get_logger()
        watchdog_usec = _parse_positive_int(env.get("WATCHDOG_USEC"))
        if env.get("WATCHDOG_USEC") is not None and watchdog_usec is None:
            log.warning("sd_notify_env_invalid", variable="WATCHDOG_USEC")
        raw_pid = env.get("WATCHDOG_PID")
        if watchdog_usec is not None and raw_pid is not None:
            watchdog_pid = _parse_positive_int(raw_pid)
            if watchdog_pid != (os.getpid() if pid is None else pid):
                watchdog_usec = None
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=watchdog_usec, logger=log)

    @property
    def enabled(self) -> bool:
        """Whether messages are actually sent (NOTIFY_SOCKET usable and not closed)."""
        return self._sock is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of WATCHDOG_USEC), None if watchdog is off."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, *assignments: str) -> bool:
        """Send VAR=value lines in one datagram; True if sent, never raises."""
        sock = self._sock
        if sock is None or self._address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8", errors="replace")
        try:
            sock.sendto(data, self._address)
        except OSError as exc:
            self._log.warning(
                "sd_notify_failed",
                address=self._raw_address,
                message=assignments[0].partition("=")[0],
                error=str(exc),
            )
            return False
        return True

    def ready(self) -> bool:
        """Tell systemd start-up (or a reload) is finished: READY=1."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Tell systemd the daemon is shutting down: STOPPING=1."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Ping the systemd watchdog: WATCHDOG=1."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by systemctl status (newlines become spaces)."""
        line = " ".join(text.replace("\0", " ").splitlines())
        return self.notify(f"STATUS={line}")

    def reloading(self) -> bool:
        """Tell systemd a reload started (RELOADING=1 + MONOTONIC_USEC); send ready() after."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def close(self) -> None:
        """Close the socket; later sends are silent no-ops."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        """Return the notifier itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the socket."""
        self.close()


async def watchdog_loop(notifier: SystemdNotifier, interval: float) -> None:
    """Send WATCHDOG=1 now and every `interval` seconds until cancelled.

    Run it as a task on the daemon's event loop, never in a thread: the pings then
    prove the loop itself is alive. If a callback blocks the loop (or it deadlocks),
    no ping is sent and systemd kills and restarts the service after WatchdogSec.
    """
    if interval <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval!r}")
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
