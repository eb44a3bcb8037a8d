"""The icmp probe: real echo requests inside a network namespace the tests create (as root).

Debian's default net.ipv4.ping_group_range ("1 0") refuses ICMP datagram sockets to every
group, and changing it on the host would change the machine. The sysctl is per network
namespace, so each test runs the probe under `unshare --net` in a script that sets it, brings
up lo, adds what the case needs, runs the probe and prints the result as JSON (or runs
`vigie check`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import require_binary
from tests.probes.conftest import make_check
from vigie.probes.base import ProbeContext
from vigie.probes.icmp import IcmpProbe, IcmpSettings, ping_permission_problem

SCRIPT = """
import asyncio, json, subprocess, sys
import aiohttp
from vigie.probes.base import Check, ProbeContext
from vigie.probes.icmp import IcmpProbe

args = json.loads(sys.argv[1])
for command in [["link", "set", "lo", "up"], *args["ip"]]:
    subprocess.run([args["ip_binary"], *command], check=True)

async def main() -> dict:
    probe = IcmpProbe()
    target = probe.parse_target(args["target"])
    check = Check(
        id="t", kind="icmp", target=target, interval=30.0, timeout=args["timeout"],
        settings=probe.Settings.model_validate(args["settings"]), host=probe.host_of(target),
    )
    async with aiohttp.ClientSession() as session:
        result = await probe(check, ProbeContext(session=session))
    return {
        "success": result.success,
        "error": result.error,
        "samples": {s.name: s.value for s in result.samples},
    }

print(json.dumps(asyncio.run(main())))
"""
OPEN_RANGE = "0 2147483647"


def in_netns(argv: list[str], gid_range: str) -> subprocess.CompletedProcess[str]:
    """Run argv in a fresh network namespace whose ping_group_range is gid_range."""
    if os.geteuid() != 0:
        message = "creating a network namespace to allow ICMP sockets needs root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    unshare = require_binary("unshare", "util-linux")
    set_range = 'echo "$1" > /proc/sys/net/ipv4/ping_group_range && shift && exec "$@"'
    proc = subprocess.run(
        [unshare, "--net", "--", "sh", "-c", set_range, "sh", gid_range, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 and "unshare failed" in proc.stderr and not os.environ.get("CI"):
        pytest.skip(f"cannot create a network namespace here: {proc.stderr.strip()}")
    return proc


def ping_in_netns(
    target: str,
    settings: dict[str, Any] | None = None,
    *,
    gid_range: str = OPEN_RANGE,
    ip: list[list[str]] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Run the probe against target in a fresh network namespace; return its result as data."""
    args = {
        "target": target,
        "settings": settings or {},
        "ip": ip or [],
        "ip_binary": require_binary("ip", "iproute2"),
        "timeout": timeout,
    }
    proc = in_netns([sys.executable, "-c", SCRIPT, json.dumps(args)], gid_range)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("gid_range", [OPEN_RANGE, "1 0"])
def test_vigie_check_warns(tmp_path: Path, gid_range: str) -> None:
    """`vigie check` warns about the sysctl when icmp checks exist and the range excludes us."""
    config = tmp_path / "vigie.yaml"
    config.write_text("checks:\n  - {id: gw, kind: icmp, target: 10.1.0.1}\n")
    code = "import sys; from vigie.monitor.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = in_netns([sys.executable, "-c", code, "check", str(config)], gid_range)
    assert proc.returncode == 0, proc.stderr
    warned = "warning: net.ipv4.ping_group_range is '1 0', which excludes" in proc.stderr
    assert warned == (gid_range == "1 0"), proc.stderr


def test_ping_loopback() -> None:
    """Three echoes to 127.0.0.1 all come back: no loss, ordered round trips."""
    result = ping_in_netns("127.0.0.1", {"count": 3, "interval": 0.05})
    assert result["success"], result["error"]
    samples = result["samples"]
    assert samples["icmp_packets_sent"] == 3 and samples["icmp_packets_received"] == 3
    assert samples["icmp_loss_ratio"] == 0
    low, avg, high = (samples[f"icmp_rtt_{s}_seconds"] for s in ("min", "avg", "max"))
    assert 0 < low <= avg <= high < 1


def test_ping_ipv6_loopback() -> None:
    """::1 is pinged over ICMPv6 (the same sysctl governs it)."""
    result = ping_in_netns("::1", {"count": 2, "interval": 0.05})
    if not result["success"] and "Cannot assign" in str(result["error"]):
        pytest.skip("no IPv6 in the namespace here")
    assert result["success"], result["error"]
    assert result["samples"]["icmp_packets_received"] == 2


def test_ping_host_name() -> None:
    """A host name is resolved, and the failure reason would show both name and address."""
    result = ping_in_netns("localhost", {"count": 1, "ip_version": 4})
    assert result["success"], result["error"]
    assert result["samples"]["icmp_packets_received"] == 1


def test_total_loss() -> None:
    """Requests routed into lo for an address nobody has are lost: 100% loss, no round trips."""
    result = ping_in_netns(
        "10.99.0.2",
        {"count": 2, "interval": 0.05, "packet_timeout": 0.3},
        ip=[["route", "add", "10.99.0.0/24", "dev", "lo"]],
    )
    assert result["error"] == "no echo reply from 10.99.0.2: 2 sent, 100% loss"
    assert result["samples"]["icmp_loss_ratio"] == 1
    assert result["samples"]["icmp_packets_sent"] == 2
    assert "icmp_rtt_avg_seconds" not in result["samples"]


def test_network_unreachable() -> None:
    """An address without a route fails at once naming the kernel's reason."""
    result = ping_in_netns("192.0.2.1")
    assert result["error"] == "ping 192.0.2.1: Network is unreachable"
    assert result["samples"]["icmp_packets_sent"] == 0


def test_max_rtt() -> None:
    """An average round trip above max_rtt fails saying both figures."""
    result = ping_in_netns("127.0.0.1", {"count": 1, "max_rtt": 1e-9})
    assert str(result["error"]).startswith("average round trip ")
    assert str(result["error"]).endswith("ms to 127.0.0.1, above max_rtt 1e-06 ms")


def test_refused_names_the_sysctl() -> None:
    """With the range excluding every group, the socket is refused naming the sysctl."""
    result = ping_in_netns("127.0.0.1", gid_range="1 0")
    assert str(result["error"]).startswith(
        "ICMP socket refused: net.ipv4.ping_group_range is '1 0', which excludes this"
        " process's groups (0"
    )
    assert "sysctl -w net.ipv4.ping_group_range='0 0'" in str(result["error"])


async def test_refused_on_this_host(ctx: ProbeContext) -> None:
    """Outside a namespace, on a host whose range excludes us, the real refusal is reported."""
    problem = ping_permission_problem()
    if problem is None:
        pytest.skip("this host's net.ipv4.ping_group_range allows this process")
    probe = IcmpProbe()
    result = await probe(make_check(probe, "127.0.0.1"), ctx)
    assert result.error == f"ICMP socket refused: {problem}"


@pytest.mark.parametrize(
    ("gid_range", "groups", "allowed"),
    [((0, 2147483647), [1000], True), ((1, 0), [0], False), ((100, 200), [50, 150], True)],
)
def test_permission_problem(gid_range: tuple[int, int], groups: list[int], allowed: bool) -> None:
    """Any of the process's groups inside the range allows the socket; none names the fix."""
    problem = ping_permission_problem(gid_range, groups)
    assert (problem is None) == allowed
    if not allowed:
        assert problem is not None and "net.ipv4.ping_group_range" in problem


def test_targets() -> None:
    """Addresses and host names are accepted and normalised; ports and junk are refused."""
    probe = IcmpProbe()
    assert probe.parse_target(" 2001:DB8::1 ") == "2001:db8::1"
    assert probe.parse_target("PACS.chu.local") == "pacs.chu.local"
    assert probe.host_of("10.0.0.1") == "10.0.0.1"
    for bad in ["10.0.0.1:80", "a b", "", "x" * 300]:
        with pytest.raises(ValueError, match="IP address or host name"):
            probe.parse_target(bad)


@pytest.mark.parametrize(
    "settings",
    [{"count": 0}, {"max_loss_ratio": 1}, {"payload_bytes": 4}, {"ip_version": 5}, {"x": 1}],
)
def test_settings_rejected(settings: dict[str, object]) -> None:
    """Out-of-range counts, ratios, payloads and unknown keys are config errors."""
    with pytest.raises(ValidationError):
        IcmpSettings.model_validate(settings)
