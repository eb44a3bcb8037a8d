"""`vigie demo`: starts the lab and the daemon, prints URLs, plays a scenario, stops on Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.waiting import wait_for_sync


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        body: bytes = resp.read()
        return body.decode()


def test_demo_plays_a_scenario_serves_metrics_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """The demo's printed URLs serve probe results and the scenario's incident; SIGINT exits 0."""
    err_path = tmp_path / "stderr"
    err = err_path.open("w+b")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vigie.monitor.cli",
            "demo",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--scenario",
            "server-crash",
            "--speed",
            "100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        urls: dict[str, str] = {}

        def printed() -> bool:
            """Collect the URLs the demo prints; True once all three are there."""
            text = err_path.read_bytes().decode(errors="replace")
            for name in ("Metrics", "Incidents", "Lab"):
                found = re.search(rf"{name}:\s+(http://\S+)", text)
                if found:
                    urls[name] = found.group(1)
            return len(urls) == 3

        wait_for_sync(printed, "the demo's three URLs on stderr")
        body = ""

        def scraped() -> bool:
            """Fetch /metrics; True once the UPS poll is in it."""
            nonlocal body
            body = _get(urls["Metrics"])
            return 'probe_success{check="ups-nord-1-snmp"' in body

        wait_for_sync(scraped, "the UPS poll in /metrics")
        assert "ups_battery_runtime_seconds{" in body
        assert json.loads(_get(urls["Lab"]))["ports"]["snmp"] > 0
        roots: list[str] = []

        def crashed() -> bool:
            """Fetch the incidents; True once the server crash is one of their roots."""
            nonlocal roots
            incidents = json.loads(_get(urls["Incidents"]))
            rows = incidents if isinstance(incidents, list) else incidents["incidents"]
            roots = [i["root_cause"] for i in rows]
            return "srv-dpi" in roots

        # first round of checks (5 s interval), crash, next round
        wait_for_sync(crashed, "the srv-dpi incident", within=40)
        assert roots == ["srv-dpi"], err_path.read_text()[-3000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert b"Vigie demo stopped." in err_path.read_bytes()
        with pytest.raises(OSError):
            urllib.request.urlopen(urls["Metrics"], timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()


def test_demo_rejects_an_unknown_scenario() -> None:
    """An unknown scenario name exits 2 naming the known ones."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vigie.monitor.cli",
            "demo",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--scenario",
            "meteor",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert b"unknown scenario 'meteor'; known: power-cut" in proc.stderr
