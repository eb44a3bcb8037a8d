"""`vigie demo --ha`: two replicas on the lab; the power cut takes Nord's, Bellevue pages it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import free_port
from tests.waiting import wait_for_sync


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        body: bytes = resp.read()
        return body.decode()


def _answers(url: str) -> bool:
    try:
        _get(url)
    except OSError:
        return False
    return True


def test_power_cut_takes_the_nord_replica_down_and_bellevue_pages_it(tmp_path: Path) -> None:
    """The demo prints both replicas; the power cut darkens Nord and stops its replica;
    Bellevue's incident for Nord names the lost replica, and the SMS goes out from Bellevue."""
    err_path = tmp_path / "stderr"
    with err_path.open("w+b") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "vigie.monitor.cli", "demo", "--ha"),
                *("--listen", f"127.0.0.1:{free_port()}", "--scenario", "power-cut"),
                *("--speed", "100"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            urls: dict[str, str] = {}

            def printed() -> bool:
                text = err_path.read_bytes().decode(errors="replace")
                for name in ("Bellevue", "Nord"):
                    found = re.search(rf"Vigie {name} (http://\S+)/", text)
                    if found:
                        urls[name] = found.group(1)
                return len(urls) == 2

            wait_for_sync(printed, "both replicas' URLs on stderr", within=60)
            summaries: list[str] = []

            def named() -> bool:
                nonlocal summaries
                incidents = json.loads(_get(f"{urls['Bellevue']}/api/v1/incidents"))
                summaries = [i["summary"] for i in incidents if i["site"] == "nord"]
                return any("Vigie Nord lost" in s for s in summaries)

            wait_for_sync(named, "Bellevue's Nord incident naming the lost replica", within=90)
            assert not _answers(f"{urls['Nord']}/-/healthy")
            assert b"Vigie Nord goes down with it" in err_path.read_bytes()
            replica = json.loads(_get(f"{urls['Bellevue']}/-/replica"))
            assert replica["sender"] is True
            assert [m["alive"] for m in replica["members"] if m["name"] == "nord"] == [False]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
