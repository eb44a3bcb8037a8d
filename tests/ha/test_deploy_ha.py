"""deploy/ha/ holds files the real tools accept: the config, Prometheus's, Alertmanager's flags."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_binary
from vigie.monitor.config import load_config
from vigie.probes import default_registry

HA = Path(__file__).resolve().parents[2] / "deploy" / "ha"


@pytest.mark.parametrize("instance", ["nord", "bellevue"])
def test_the_replicas_config_loads_on_each_host(instance: str) -> None:
    """One file, two hosts: each loads it with its VIGIE_INSTANCE and probes both replicas."""
    loaded = load_config(HA / "vigie.yaml", default_registry(), env={"VIGIE_INSTANCE": instance})
    assert loaded.config.replicas is not None
    assert loaded.config.replicas.instance == instance
    assert {c for c, k in loaded.plan.items() if k.kind == "vigie"} == {
        "vigie-nord",
        "vigie-bellevue",
    }
    assert loaded.warnings == []


def test_prometheus_config_passes_promtool() -> None:
    """promtool accepts the two-replica scrape config (and the rules it loads)."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    out = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=HA,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_alertmanager_cluster_flags_exist() -> None:
    """Every flag of the Alertmanager defaults file is one prometheus-alertmanager knows."""
    binary = require_binary("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager")
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=False)
    helptext = out.stdout + out.stderr
    args = re.search(r'^ARGS="(.*)"$', (HA / "prometheus-alertmanager.default").read_text(), re.M)
    assert args is not None
    flags = [a.split("=", 1)[0] for a in shlex.split(args.group(1))]
    assert flags, "no flag in ARGS"
    for flag in flags:
        assert f"{flag}=" in helptext, flag
