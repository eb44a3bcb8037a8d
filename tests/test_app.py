"""The daemon as systemd runs it: `vigie run` in a process, sd_notify on a real socket,
SIGHUP reloads (a bad config keeps the old plan), SIGTERM drains and exits 0; and, in
process, the optional probe hooks a reload and a stop call."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from tests.conftest import free_port
from tests.waiting import wait_for_sync
from vigie.core.results import ProbeResult
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.probes import default_registry
from vigie.probes.base import Check, ProbeContext, ProbeRegistry
from vigie.probes.http import make_session
from vigie.probes.tcp import TcpProbe


class Notifications:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET (a real socket).

    A thread reads it as systemd does, at once: a unix datagram queue holds about ten
    messages, and a reader that only drains when asked would make the daemon's later
    messages (STOPPING=1 after many watchdog pings) fail with EAGAIN.
    """

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.received.append((time.monotonic(), data.decode()))

    def seen(self, message: str, count: int = 1) -> bool:
        """Return whether `count` of the datagrams received so far contain message."""
        with self._lock:
            return sum(message in m for _, m in self.received) >= count

    def wait_for(self, message: str, count: int = 1) -> None:
        """Wait until `count` datagrams contain message, or fail naming it."""
        wait_for_sync(lambda: self.seen(message, count), f"{count} {message!r} from the daemon")

    def close(self) -> None:
        """Stop the reader and close the socket."""
        self._closed.set()
        self._reader.join(timeout=5)
        self.sock.close()


def fetch(url: str) -> str:
    """GET a URL and return its body, or '' when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body: bytes = resp.read()
            return body.decode()
    except OSError:
        return ""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Notifications, Path, int]]:
    """A `vigie run` process with NOTIFY_SOCKET and WATCHDOG_USEC set."""
    port = free_port()
    target_port = free_port()  # nothing listens: the check fails fast, which is fine here
    config = tmp_path / "vigie.yaml"
    config.write_text(
        f"web: {{listen: '127.0.0.1:{port}'}}\n"
        f"checks:\n  - {{id: first, kind: tcp, target: '127.0.0.1:{target_port}', interval: 1s,"
        " timeout: 500ms}\n"
    )
    notes = Notifications(tmp_path / "notify.sock")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "400000",
        "WATCHDOG_PID": "",
    }
    env.pop("WATCHDOG_PID")
    log = (tmp_path / "stdout.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        yield proc, notes, config, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        notes.close()


def events(tmp_path: Path) -> list[dict[str, object]]:
    """Return the daemon's JSON log lines."""
    lines = (tmp_path / "stdout.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_daemon_lifecycle(
    running: tuple[subprocess.Popen[bytes], Notifications, Path, int], tmp_path: Path
) -> None:
    """READY, watchdog pings, SIGHUP reload (bad then good config), SIGTERM drain, exit 0."""
    proc, notes, config, port = running
    notes.wait_for("READY=1")
    metrics = f"http://127.0.0.1:{port}/metrics"
    wait_for_sync(
        lambda: 'probe_success{check="first"' in fetch(metrics), "first check in /metrics"
    )
    notes.wait_for("WATCHDOG=1", count=5)  # every 0.2 s: half of WATCHDOG_USEC
    good = config.read_text()
    config.write_text(good.replace("interval: 1s", "interval: -1s"))
    proc.send_signal(signal.SIGHUP)
    wait_for_sync(
        lambda: "vigie_config_last_reload_successful 0.0" in fetch(metrics), "failed reload"
    )
    assert 'probe_success{check="first"' in fetch(metrics), "old plan must keep running"
    errors = [e for e in events(tmp_path) if e.get("event") == "config_reload_failed"]
    assert errors and "checks[0].interval: must be greater than 0" in str(errors[0]["error"])
    config.write_text(good.replace("id: first", "id: second"))
    proc.send_signal(signal.SIGHUP)
    wait_for_sync(lambda: 'probe_success{check="second"' in fetch(metrics), "reloaded plan")
    page = fetch(metrics)
    assert 'check="first"' not in page and "vigie_config_last_reload_successful 1.0" in page
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    notes.wait_for("STOPPING=1")
    names = [e.get("event") for e in events(tmp_path)]
    assert "daemon_started" in names and "config_reloaded" in names and "daemon_stopped" in names
    assert all(e.get("level") and e.get("timestamp") for e in events(tmp_path))


def test_bad_config_at_start_exits_1(tmp_path: Path) -> None:
    """`vigie run` with an invalid config logs every error and exits 1."""
    config = tmp_path / "vigie.yaml"
    config.write_text("checks:\n  - {id: a, kind: telnet, target: x}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    line = json.loads(proc.stdout.decode().splitlines()[0])
    assert line["event"] == "config_invalid"
    known = ", ".join(default_registry().kinds())
    assert f"unknown probe kind 'telnet'; known kinds: {known}" in line["error"]


def test_config_warnings_are_logged_at_start(tmp_path: Path) -> None:
    """`vigie run` logs what `vigie check` warns about (here a tier-1 app paged too late)."""
    port = free_port()
    config = tmp_path / "vigie.yaml"
    config.write_text(
        f"web: {{listen: '127.0.0.1:{port}'}}\n"
        f"checks:\n  - {{id: slow, kind: tcp, target: '127.0.0.1:{free_port()}', interval: 5m}}\n"
        "components:\n"
        "  - {id: dpi, kind: application, criticality: 1, checks: [slow]}\n"
    )
    log = (tmp_path / "stdout.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_sync(
            lambda: any(e.get("event") == "daemon_started" for e in events(tmp_path)),
            "daemon_started",
        )
        warnings = [
            str(e["warning"]) for e in events(tmp_path) if e.get("event") == "config_warning"
        ]
        assert any("dpi" in w and "page_within" in w for w in warnings), warnings
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


class NoSettings(BaseModel):
    """The settings of the recording kind: none."""


class RecordingProbe:
    """A probe kind with both optional hooks, recording when the daemon calls them.

    A stand-in for the stateful and resource-holding kinds (snmp, redfish), whose peers the
    daemon's hook calls do not need: the test asserts on the calls the daemon makes.
    """

    kind: ClassVar[str] = "recording"
    Settings: ClassVar[type[BaseModel]] = NoSettings

    def __init__(self) -> None:
        self.kept: list[set[str]] = []
        self.closed = 0

    def parse_target(self, target: str) -> str:
        """Any target will do."""
        return target

    def host_of(self, target: str) -> str:
        """The target is the host."""
        return target

    async def __call__(self, check: Check[NoSettings], ctx: ProbeContext) -> ProbeResult:
        """Succeed at once."""
        return ProbeResult(success=True)

    def keep_only(self, check_ids: set[str]) -> None:
        """Record which checks of this kind the new plan holds."""
        self.kept.append(set(check_ids))

    async def close(self) -> None:
        """Record the release."""
        self.closed += 1


async def test_reload_and_stop_call_the_hooks_probes_declare(tmp_path: Path) -> None:
    """A reload tells a KeepsCheckState probe its kind's check ids; stop closes a Closing one."""
    recorder = RecordingProbe()
    registry = ProbeRegistry([TcpProbe(), recorder])
    config = tmp_path / "vigie.yaml"
    head = "web: {listen: '127.0.0.1:0'}\nchecks:\n"
    tcp = f"  - {{id: port, kind: tcp, target: '127.0.0.1:{free_port()}', interval: 1m}}\n"

    def recording(*ids: str) -> str:
        return "".join(f"  - {{id: {i}, kind: recording, target: x, interval: 1m}}\n" for i in ids)

    config.write_text(head + tcp + recording("a", "b"))
    async with make_session() as session:
        daemon = Daemon(load_config(config, registry, env={}), registry, session)
        await daemon.start()
        try:
            assert recorder.kept == []  # nothing to drop at start
            config.write_text(head + tcp + recording("b", "c"))
            assert await daemon.reload() == []
            assert recorder.kept == [{"b", "c"}]  # only its own kind's ids, not "port"
            assert recorder.closed == 0
        finally:
            await daemon.stop()
    assert recorder.closed == 1
