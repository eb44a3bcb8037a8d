"""Tests of the benchmarks' shared helpers (tests/bench/common.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.bench.common import stray_daemons
from tests.bench.run import main
from tests.waiting import wait_for_sync


def _fake_proc(root: Path, pid: int, argv: list[str]) -> None:
    """Write a /proc-like entry whose cmdline is argv (NUL-separated, as the kernel's)."""
    entry = root / str(pid)
    entry.mkdir()
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_a_running_daemon_is_found_and_other_commands_are_not(tmp_path: Path) -> None:
    """`vigie run` and `vigie worker`, however started, are strays; `vigie check` is not."""
    _fake_proc(tmp_path, 101, ["/usr/bin/python3", "-m", "vigie.monitor.cli", "run", "-c", "x"])
    _fake_proc(tmp_path, 102, ["/opt/venv/bin/vigie", "worker", "--config", "w.yaml"])
    _fake_proc(tmp_path, 103, ["/opt/venv/bin/vigie", "check", "--config", "x.yaml"])
    _fake_proc(tmp_path, 104, ["/usr/bin/python3", "run.py"])
    (tmp_path / "self").mkdir()  # not a pid: skipped
    found = stray_daemons(tmp_path)
    assert [line.split(":")[0] for line in found] == ["pid 101", "pid 102"]
    assert "vigie.monitor.cli run -c x" in found[0]


def test_the_bench_refuses_to_start_beside_a_running_daemon(tmp_path: Path) -> None:
    """A real process named like a daemon (not a daemon: it only sleeps) stops the bench."""
    script = tmp_path / "vigie"
    script.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script), "run"])
    try:
        wait_for_sync(
            lambda: any(f"pid {proc.pid}:" in s for s in stray_daemons()),
            "the sleeper listed as a running daemon",
        )
        assert main(["--only", "health", "--output", str(tmp_path / "out.md")]) == 2
        assert not (tmp_path / "out.md").exists()
    finally:
        proc.kill()
        proc.wait()
