"""The daemon's event loop (monitor/eventloop.py): uvloop by default, asyncio on request."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from tests.conftest import free_port
from tests.probes.conftest import make_check
from tests.waiting import wait_for_sync
from vigie.monitor.eventloop import loop_factory, loop_name
from vigie.probes.base import ProbeContext, ProbeLog
from vigie.probes.tcp import TcpProbe


def test_auto_is_uvloop_here_and_asyncio_on_request() -> None:
    """uvloop is a dependency: auto gives it; asyncio gives asyncio's own loop."""
    for choice, want in (("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")):
        loop = loop_factory(choice)()
        try:
            assert loop_name(loop) == want, choice
        finally:
            loop.close()


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    """A typo names what is accepted."""
    with pytest.raises(ValueError, match=r"unknown event loop 'uv': one of auto, uvloop, asyncio"):
        loop_factory("uv")


def _is_whole_ms(seconds: float) -> bool:
    """True when a duration is a whole number of milliseconds (what uvloop's clock gives)."""
    ms = seconds * 1000
    return abs(ms - round(ms)) < 1e-6


def test_probe_durations_on_uvloop_are_finer_than_its_clock() -> None:
    """uvloop's loop.time() ticks in milliseconds, read once per iteration: a connect timed
    with it on loopback reads 0 or 1 ms. Probes time with time.monotonic() instead."""

    async def connects() -> list[float]:
        async def greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        probe = TcpProbe()
        check = make_check(probe, f"127.0.0.1:{port}")
        out = []
        async with aiohttp.ClientSession() as session:
            ctx = ProbeContext(session=session, log=ProbeLog(structlog.get_logger()))
            for _ in range(20):
                result = await probe(check, ctx)
                assert result.success, result.error
                out.append(dict(result.phases)["connect"])
        server.close()
        await server.wait_closed()
        assert loop_name(asyncio.get_running_loop()) == "uvloop"
        return out

    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as runner:
        durations = runner.run(connects())
    assert all(d > 0 for d in durations)
    assert not all(_is_whole_ms(d) for d in durations), durations


@pytest.fixture
def daemon_config(tmp_path: Path) -> Path:
    """A one-check config listening on a free loopback port."""
    config = tmp_path / "vigie.yaml"
    config.write_text(
        f"web: {{listen: '127.0.0.1:{free_port()}'}}\n"
        f"checks:\n  - {{id: t, kind: tcp, target: '127.0.0.1:{free_port()}'}}\n"
    )
    return config


def _started(log: Path) -> dict[str, object] | None:
    """Return the daemon's daemon_started event once it is logged."""
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            event: dict[str, object] = json.loads(line)
            if event.get("event") == "daemon_started":
                return event
    return None


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start `vigie run` processes (killed at the end)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("flags", "want"), [((), "uvloop"), (("--loop", "asyncio"), "asyncio")])
def test_vigie_run_says_which_loop_it_runs_on(
    daemon_config: Path,
    tmp_path: Path,
    run_daemon: list[subprocess.Popen[bytes]],
    flags: tuple[str, ...],
    want: str,
) -> None:
    """The default is uvloop; `--loop asyncio` is there to tell a loop problem apart."""
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        cmd = [sys.executable, "-m", "vigie.monitor.cli", "run", "-c", str(daemon_config)]
        run_daemon.append(subprocess.Popen([*cmd, *flags], stdout=out, stderr=subprocess.STDOUT))
    wait_for_sync(lambda: _started(log) is not None, "daemon_started in the log")
    assert (_started(log) or {}).get("loop") == want


def test_vigie_run_refuses_an_unknown_loop(daemon_config: Path) -> None:
    """A bad --loop is a usage error (exit 2) naming the choices, before anything starts."""
    cmd = [sys.executable, "-m", "vigie.monitor.cli", "run", "-c", str(daemon_config)]
    proc = subprocess.run(
        [*cmd, "--loop", "libev"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'libev'" in proc.stderr.decode()


async def test_the_async_tests_run_on_the_loop_asked_for() -> None:
    """Outside tests/probes the async tests run on asyncio's loop unless VIGIE_TEST_LOOP
    names another (tests/probes/test_base.py checks that the probes' run on uvloop)."""
    want = os.environ.get("VIGIE_TEST_LOOP") or "asyncio"
    assert loop_name(asyncio.get_running_loop()) == want
