"""Tests for the sd_notify client, against real unix datagram sockets."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigie.monitor.systemd import SystemdNotifier, watchdog_loop

RECV_TIMEOUT = 2.0


class RecordingLogger:
    """Collects warning events instead of printing them."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        """Record one warning."""
        self.warnings.append((event, fields))


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        sock.settimeout(RECV_TIMEOUT)
        yield sock, str(path)
    finally:
        sock.close()


@pytest.fixture
def notifier(receiver: tuple[socket.socket, str]) -> Iterator[SystemdNotifier]:
    """A notifier pointed at the receiver socket, closed after the test."""
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": receiver[1]}) as n:
        yield n


def recv(sock: socket.socket) -> bytes:
    """Return the next datagram, failing the test after RECV_TIMEOUT."""
    return sock.recv(4096)


def assert_nothing_pending(sock: socket.socket) -> None:
    """Fail if a datagram is waiting on the socket."""
    sock.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
    finally:
        sock.settimeout(RECV_TIMEOUT)


def test_ready_sends_ready(notifier: SystemdNotifier, receiver: tuple[socket.socket, str]) -> None:
    """ready() sends exactly READY=1."""
    assert notifier.ready() is True
    assert recv(receiver[0]) == b"READY=1"


def test_stopping_sends_stopping(
    notifier: SystemdNotifier, receiver: tuple[socket.socket, str]
) -> None:
    """stopping() sends exactly STOPPING=1."""
    notifier.stopping()
    assert recv(receiver[0]) == b"STOPPING=1"


def test_watchdog_sends_watchdog(
    notifier: SystemdNotifier, receiver: tuple[socket.socket, str]
) -> None:
    """watchdog() sends exactly WATCHDOG=1."""
    notifier.watchdog()
    assert recv(receiver[0]) == b"WATCHDOG=1"


def test_status_sends_status_text(
    notifier: SystemdNotifier, receiver: tuple[socket.socket, str]
) -> None:
    """status() sends STATUS=<text> verbatim, UTF-8 encoded."""
    notifier.status("12 checks, 1 failing — db01")
    assert recv(receiver[0]) == "STATUS=12 checks, 1 failing — db01".encode()


def test_status_keeps_one_line(
    notifier: SystemdNotifier, receiver: tuple[socket.socket, str]
) -> None:
    """status() turns newlines into spaces so the text cannot inject other assignments."""
    notifier.status("reloaded\nREADY=1")
    assert recv(receiver[0]) == b"STATUS=reloaded READY=1"


def test_reloading_sends_monotonic_usec(
    notifier: SystemdNotifier, receiver: tuple[socket.socket, str]
) -> None:
    """reloading() sends RELOADING=1 and the current CLOCK_MONOTONIC in one datagram."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = recv(receiver[0]).decode().split("\n")
    assert len(lines) == 2
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_messages_arrive_in_order(
    notifier: SystemdNotifier, receiver: tuple[socket.socket, str]
) -> None:
    """Several sends through the one socket arrive as separate datagrams, in order."""
    notifier.status("starting")
    notifier.ready()
    notifier.stopping()
    assert [recv(receiver[0]) for _ in range(3)] == [b"STATUS=starting", b"READY=1", b"STOPPING=1"]
    assert_nothing_pending(receiver[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_socket_address() -> None:
    """A NOTIFY_SOCKET starting with '@' is the abstract socket of that name."""
    name = f"vigie-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT)
        with SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name}) as n:
            assert n.enabled
            n.ready()
        assert sock.recv(4096) == b"READY=1"


def test_no_notify_socket_is_noop() -> None:
    """Without NOTIFY_SOCKET the notifier is disabled and every call is a silent no-op."""
    log = RecordingLogger()
    with SystemdNotifier.from_env({"WATCHDOG_USEC": "2000000"}, logger=log) as n:
        assert n.enabled is False
        assert n.watchdog_interval is None
        assert n.ready() is False
        assert n.stopping() is False
        assert n.watchdog() is False
        assert n.status("x") is False
        assert n.reloading() is False
    assert log.warnings == []


def test_watchdog_interval_is_half_of_watchdog_usec(receiver: tuple[socket.socket, str]) -> None:
    """WATCHDOG_USEC=2000000 gives a ping interval of 1.0 second."""
    env = {"NOTIFY_SOCKET": receiver[1], "WATCHDOG_USEC": "2000000"}
    with SystemdNotifier.from_env(env) as n:
        assert n.enabled is True
        assert n.watchdog_interval == 1.0


def test_watchdog_pid_of_this_process_keeps_watchdog(receiver: tuple[socket.socket, str]) -> None:
    """WATCHDOG_PID equal to our pid keeps the watchdog enabled."""
    env = {
        "NOTIFY_SOCKET": receiver[1],
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    with SystemdNotifier.from_env(env) as n:
        assert n.watchdog_interval == 15.0


def test_watchdog_pid_of_another_process_disables_watchdog(
    receiver: tuple[socket.socket, str],
) -> None:
    """WATCHDOG_PID naming another process disables the watchdog, not the notifications."""
    env = {
        "NOTIFY_SOCKET": receiver[1],
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    with SystemdNotifier.from_env(env) as n:
        assert n.watchdog_interval is None
        assert n.enabled is True


def test_watchdog_usec_invalid_disables_watchdog(receiver: tuple[socket.socket, str]) -> None:
    """A WATCHDOG_USEC that is not a positive integer disables the watchdog with a warning."""
    log = RecordingLogger()
    env = {"NOTIFY_SOCKET": receiver[1], "WATCHDOG_USEC": "soon"}
    with SystemdNotifier.from_env(env, logger=log) as n:
        assert n.watchdog_interval is None
    assert [event for event, _ in log.warnings] == ["sd_notify_env_invalid"]


def test_missing_socket_path_does_not_raise(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET path nobody listens on logs sd_notify_failed instead of raising."""
    log = RecordingLogger()
    env = {"NOTIFY_SOCKET": str(tmp_path / "absent.sock")}
    with SystemdNotifier.from_env(env, logger=log) as n:
        assert n.ready() is False
        assert n.watchdog() is False
    assert [event for event, _ in log.warnings] == ["sd_notify_failed", "sd_notify_failed"]
    assert log.warnings[0][1]["message"] == "READY"


def test_unsupported_address_disables_notifier() -> None:
    """A relative or vsock NOTIFY_SOCKET is refused once with a warning, then ignored."""
    log = RecordingLogger()
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}, logger=log) as n:
        assert n.enabled is False
        assert n.ready() is False
    assert [event for event, _ in log.warnings] == ["sd_notify_failed"]


def test_close_makes_sends_silent_noops(receiver: tuple[socket.socket, str]) -> None:
    """After close(), sends do nothing, log nothing, and close() can be called again."""
    log = RecordingLogger()
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": receiver[1]}, logger=log)
    n.close()
    n.close()
    assert n.enabled is False
    assert n.ready() is False
    assert_nothing_pending(receiver[0])
    assert log.warnings == []


async def test_watchdog_loop_pings_repeatedly(receiver: tuple[socket.socket, str]) -> None:
    """watchdog_loop sends WATCHDOG=1 again and again until it is cancelled."""
    sock = receiver[0]
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": receiver[1]}) as n:
        task = asyncio.create_task(watchdog_loop(n, 0.02))
        try:
            async with asyncio.timeout(RECV_TIMEOUT):
                pings = [await loop.sock_recv(sock, 4096) for _ in range(3)]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert pings == [b"WATCHDOG=1"] * 3


async def test_watchdog_loop_rejects_non_positive_interval() -> None:
    """watchdog_loop refuses an interval of zero instead of spinning the event loop."""
    with SystemdNotifier.from_env({}) as n, pytest.raises(ValueError):
        await watchdog_loop(n, 0)


async def test_blocked_event_loop_stops_pings(receiver: tuple[socket.socket, str]) -> None:
    """While a callback blocks the event loop, no watchdog ping is sent."""
    interval, block = 0.02, 0.3
    sock = receiver[0]
    sock.settimeout(0.05)
    loop = asyncio.get_running_loop()
    arrivals: asyncio.Queue[float] = asyncio.Queue()
    stop = threading.Event()

    def receive() -> None:
        """Timestamp each datagram as it arrives, independently of the event loop."""
        while not stop.is_set():
            try:
                sock.recv(4096)
            except TimeoutError:
                continue
            loop.call_soon_threadsafe(arrivals.put_nowait, time.monotonic())

    span: list[float] = []

    def block_loop() -> None:
        """Hold the event loop for `block` seconds, recording when."""
        span.append(time.monotonic())
        time.sleep(block)
        span.append(time.monotonic())

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    times: list[float] = []
    with SystemdNotifier.from_env({"NOTIFY_SOCKET": receiver[1]}) as n:
        task = asyncio.create_task(watchdog_loop(n, interval))
        try:
            async with asyncio.timeout(RECV_TIMEOUT + block):
                times += [await arrivals.get() for _ in range(2)]
                loop.call_soon(block_loop)
                while not span or times[-1] <= span[1]:
                    times.append(await arrivals.get())
                times += [await arrivals.get() for _ in range(2)]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stop.set()
            await asyncio.to_thread(reader.join, RECV_TIMEOUT)
    start, end = span
    # A ping sent just before the block may be timestamped a little after it started.
    slack = 0.1
    assert not [t for t in times if start + slack < t < end]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= block - slack
