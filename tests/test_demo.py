"""`vigie demo`: starts its services and the daemon, prints the URLs, stops on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port


def test_demo_prints_urls_serves_metrics_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """The demo's printed /metrics URL serves probe results; SIGINT stops it with exit 0."""
    err = (tmp_path / "stderr").open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "demo", "--listen", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL, stderr=err)
    try:
        end = time.monotonic() + 20
        metrics_url = None
        while metrics_url is None and time.monotonic() < end:
            found = re.search(rb"Metrics: (http://\S+/metrics)", (tmp_path / "stderr").read_bytes())
            metrics_url = found.group(1).decode() if found else None
            time.sleep(0.05)
        assert metrics_url, (tmp_path / "stderr").read_text()
        body = ""
        while time.monotonic() < end and "probe_success{" not in body:
            with urllib.request.urlopen(metrics_url, timeout=2) as resp:
                body = resp.read().decode()
            time.sleep(0.1)
        assert 'probe_success{check="' in body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert b"Vigie demo stopped." in (tmp_path / "stderr").read_bytes()
        with pytest.raises(OSError):
            urllib.request.urlopen(metrics_url, timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
