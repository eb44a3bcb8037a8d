"""The SAN host parsers on recorded multipathd and fc_host outputs, and on broken outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import require_binary
from vigie.core.results import Sample
from vigie.monitor.exposition import Exposition
from vigie.probes.san_host import (
    COMMANDS,
    FC_HOST_COMMAND,
    SanParseError,
    parse_fc_host,
    parse_multipath,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ssh"


def recorded(name: str) -> str:
    """Return a recorded output of tests/fixtures/ssh."""
    return (FIXTURES / name).read_text()


def values(samples: list[Sample], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Return the samples of one family by their labels."""
    return {s.labels: s.value for s in samples if s.name == name}


def by_map(samples: list[Sample], name: str) -> dict[str, float]:
    """Return a per-map family as {map: value}."""
    return {dict(k)["map"]: v for k, v in values(samples, name).items()}


def test_healthy_multipath() -> None:
    """Two healthy ALUA maps: 4 paths each, 2 active (optimised), none failed, map ok."""
    samples = parse_multipath(recorded("multipath-healthy.json"))
    assert values(samples, "multipath_maps") == {(): 2}
    maps = ("mpath-dpi-data", "mpath-dpi-logs")
    assert by_map(samples, "multipath_paths") == dict.fromkeys(maps, 4)
    assert by_map(samples, "multipath_paths_active") == dict.fromkeys(maps, 2)
    assert by_map(samples, "multipath_paths_failed") == dict.fromkeys(maps, 0)
    assert by_map(samples, "multipath_map_ok") == dict.fromkeys(maps, 1)
    assert by_map(samples, "multipath_path_faults_total") == dict.fromkeys(maps, 0)
    assert {s.type for s in samples if s.name == "multipath_path_faults_total"} == {"counter"}


def test_degraded_multipath() -> None:
    """Fabric B lost on one map (2 failed, still ok) and every path lost on the other (not ok)."""
    samples = parse_multipath(recorded("multipath-degraded.json"))
    assert by_map(samples, "multipath_paths_failed") == {
        "mpath-dpi-data": 2,
        "mpath-dpi-logs": 4,
    }
    assert by_map(samples, "multipath_paths_active") == {"mpath-dpi-data": 1, "mpath-dpi-logs": 0}
    assert by_map(samples, "multipath_map_ok") == {"mpath-dpi-data": 1, "mpath-dpi-logs": 0}
    assert by_map(samples, "multipath_path_faults_total") == {
        "mpath-dpi-data": 2,
        "mpath-dpi-logs": 7,
    }
    up = values(samples, "multipath_path_up")
    sdc = next(k for k in up if ("dev", "sdc") in k)
    assert up[sdc] == 0
    assert dict(sdc) == {
        "map": "mpath-dpi-data",
        "dev": "sdc",
        "host_wwpn": "0x10000090fa8c1a02",
        "target_wwpn": "0x21010002ac01e5f4",
    }


def test_multipath_without_maps() -> None:
    """multipathd with no maps gives multipath_maps 0 and nothing else."""
    samples = parse_multipath(recorded("multipath-no-maps.json"))
    assert [(s.name, s.value) for s in samples] == [("multipath_maps", 0)]


def test_suspended_map_is_not_ok() -> None:
    """A suspended map is not ok even with ready paths."""
    doc = json.loads(recorded("multipath-healthy.json"))
    doc["maps"][0]["dm_st"] = "suspend"
    samples = parse_multipath(json.dumps(doc))
    assert by_map(samples, "multipath_map_ok") == {"mpath-dpi-data": 0, "mpath-dpi-logs": 1}


def test_control_characters_in_names_are_tamed() -> None:
    """A map name with control characters or a huge size is bounded and cleaned for labels."""
    doc = json.loads(recorded("multipath-healthy.json"))
    doc["maps"][0]["name"] = "evil\x1b[31m" + "x" * 1000
    text = json.dumps(doc).replace("\\u001b", "\x1b")  # multipathd does not escape them
    samples = parse_multipath(text)
    name = next(iter(by_map(samples, "multipath_paths")))
    assert name.startswith("evil [31m") and len(name) <= 128


def _mutate(path: list[Any], value: object) -> str:
    """Return the healthy recording with one field replaced."""
    doc = json.loads(recorded("multipath-healthy.json"))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not JSON: Expecting value at line 1 column 1"),
        ("ux_socket_connect: No such file or directory\n", "not JSON"),
        ('{"maps": [', "not JSON"),
        ("[]", "output is not an object"),
        ('{"major_version": 0}', "no maps list"),
        ('{"maps": {}}', "output.maps is not a list"),
        ('{"maps": [1]}', "maps[0] is not an object"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (_mutate(["maps", 0, "path_groups"], "x"), "maps[0].path_groups is not a list"),
        (_mutate(["maps", 1, "path_faults"], "many"), "maps[1].path_faults is not an integer"),
        (_mutate(["maps", 1, "name"], "mpath-dpi-data"), "map 'mpath-dpi-data' listed twice"),
    ],
)
def test_broken_multipath_output(text: str, message: str) -> None:
    """Broken outputs raise SanParseError saying where and why, never another exception."""
    with pytest.raises(SanParseError) as info:
        parse_multipath(text)
    assert message in str(info.value)


def test_fc_host_online_and_linkdown() -> None:
    """Each HBA port gives online 1/0 and an info series with its WWPN and raw state."""
    online = parse_fc_host(recorded("fc_host-online.txt"))
    assert values(online, "fc_hosts") == {(): 2}
    assert values(online, "fc_host_port_online") == {
        (("host", "host1"),): 1,
        (("host", "host2"),): 1,
    }
    down = parse_fc_host(recorded("fc_host-linkdown.txt"))
    assert values(down, "fc_host_port_online")[(("host", "host2"),)] == 0
    info = {dict(k)["host"]: dict(k) for k in values(down, "fc_host_port_info")}
    assert info["host2"] == {
        "host": "host2",
        "port_name": "0x10000090fa8c1a02",
        "port_state": "Linkdown",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no FC host found"),
        ("host1 Online\n", "line 1 is not"),
        ("host1\t0x1\tOnline\nrm -rf\tx\ty\n", "line 2 is not"),
        ("host1\t0x1\tOnline\nhost1\t0x1\tOnline\n", "host1 listed twice"),
    ],
)
def test_broken_fc_host_output(text: str, message: str) -> None:
    """Unexpected fc_host output raises SanParseError with the line at fault."""
    with pytest.raises(SanParseError, match=message):
        parse_fc_host(text)


def test_fc_host_command_runs_on_a_host_without_hba(tmp_path: Path) -> None:
    """The fixed fc_host command is valid sh: nothing without HBAs, one line per HBA port."""
    out = subprocess.run(
        ["/bin/sh", "-c", FC_HOST_COMMAND.replace("/sys/class/fc_host", str(tmp_path))],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert out.stdout == ""
    host = tmp_path / "host7"
    host.mkdir()
    (host / "port_state").write_text("Online\n")
    (host / "port_name").write_text("0x10000090fa8c1a07\n")
    out = subprocess.run(
        ["/bin/sh", "-c", FC_HOST_COMMAND.replace("/sys/class/fc_host", str(tmp_path))],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert parse_fc_host(out.stdout)[1].labels == (("host", "host7"),)


def test_allowlist() -> None:
    """Only the two parsers exist; multipathd needs root, reading sysfs does not."""
    assert sorted(COMMANDS) == ["fc_host", "multipath"]
    assert COMMANDS["multipath"].line == "multipathd show maps json"
    assert COMMANDS["multipath"].needs_root and not COMMANDS["fc_host"].needs_root


def test_samples_pass_promtool_lint() -> None:
    """The SAN families as /metrics renders them pass `promtool check metrics` (naming, types)."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    samples = parse_multipath(recorded("multipath-degraded.json"))
    samples += parse_fc_host(recorded("fc_host-linkdown.txt"))
    exp = Exposition(CollectorRegistry())
    text = exp.render_text(exp.render_samples('check="srv-dpi-1"', samples))
    lint = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert lint.returncode == 0 and not lint.stdout + lint.stderr, lint.stdout + lint.stderr
