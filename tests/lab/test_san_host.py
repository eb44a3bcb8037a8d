"""The lab servers' sshd answering `multipathd show maps json`, read by Vigie's real ssh probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog

from tests.probes.conftest import make_check
from vigie.core.results import ProbeResult
from vigie.lab.hospital import Lab
from vigie.lab.san_host import PATHS, multipath_output
from vigie.lab.scenarios import get_scenario, run_scenario
from vigie.probes.base import ProbeContext, ProbeLog, ProbeRegistry
from vigie.probes.http import make_session
from vigie.probes.san_host import parse_multipath
from vigie.probes.ssh import SshProbe

MAP = {"map": "mpath-srv-dpi-data"}


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    """A probe context on a fresh session."""
    session: aiohttp.ClientSession
    async with make_session() as session:
        yield ProbeContext(session=session, log=ProbeLog(structlog.get_logger()))


@pytest.fixture
def probe() -> SshProbe:
    """The ssh probe, registered as the daemon would."""
    found = ProbeRegistry([SshProbe()])["ssh"]
    assert isinstance(found, SshProbe)
    return found


async def _read(lab: Lab, probe: SshProbe, ctx: ProbeContext, server: str) -> ProbeResult:
    """Probe one server's multipath maps as config/demo.yaml does (lab key, known_hosts)."""
    assert lab.ssh_dir is not None
    check = make_check(
        probe,
        f"127.0.0.1:{lab.ssh_port}",
        command="multipath",
        username=server,
        client_key_file=str(lab.ssh_dir / "id_ed25519"),
        known_hosts_file=str(lab.ssh_dir / "known_hosts"),
    )
    async with asyncio.timeout(10):
        return await probe(check, ctx)


def _value(result: ProbeResult, name: str) -> float | None:
    return next(
        (s.value for s in result.samples if s.name == name and s.labels == tuple(MAP.items())), None
    )


async def test_lab_sshd_serves_healthy_paths(lab: Lab, probe: SshProbe, ctx: ProbeContext) -> None:
    """A healthy server: its map has every path active, read over a host-key-checked session."""
    result = await _read(lab, probe, ctx, "srv-dpi")
    assert result.success, result.error
    assert _value(result, "multipath_paths_active") == PATHS
    assert _value(result, "multipath_paths_failed") == 0
    assert _value(result, "multipath_map_ok") == 1


async def test_san_degradation_fails_some_paths_then_all(
    lab: Lab, probe: SshProbe, ctx: ProbeContext
) -> None:
    """san-degradation: half the Nord servers' paths fail, then all (map no longer ok)."""
    scenario = get_scenario("san-degradation")
    partial = next(s for s in scenario.steps if "half their SAN paths" in s.what)
    partial.action(lab, 1.0)
    result = await _read(lab, probe, ctx, "srv-dpi")
    assert result.success, result.error
    assert _value(result, "multipath_paths_failed") == PATHS // 2
    assert _value(result, "multipath_map_ok") == 1
    await run_scenario(lab, scenario, speed=10_000)
    result = await _read(lab, probe, ctx, "srv-dpi")
    assert result.success, result.error
    assert _value(result, "multipath_paths_active") == 0
    assert _value(result, "multipath_map_ok") == 0
    assert _value(await _read(lab, probe, ctx, "srv-intranet"), "multipath_map_ok") is None
    lab.reset()
    assert _value(await _read(lab, probe, ctx, "srv-dpi"), "multipath_map_ok") == 1


async def test_powered_off_or_unknown_host_fails_the_check(
    lab: Lab, probe: SshProbe, ctx: ProbeContext
) -> None:
    """A powered-off server or a user that is no lab server fails the check with a reason."""
    lab.power_off_site("nord")
    result = await _read(lab, probe, ctx, "srv-dpi")
    assert not result.success and "powered off" in (result.error or ""), result.error
    result = await _read(lab, probe, ctx, "nobody")
    assert not result.success and "no such host" in (result.error or ""), result.error


async def test_bad_paths_fault_is_a_clear_error(lab: Lab, ctx: ProbeContext) -> None:
    """POST /lab/fault with too many failed paths is a 400 naming the server."""
    body = {"host": "srv-dpi", "paths_failed": PATHS + 1}
    async with ctx.session.post(f"{lab.url}/lab/fault", json=body) as response:
        assert response.status == 400
        assert f"srv-dpi: failed paths must be 0 to {PATHS}" in await response.text()


def test_multipath_output_parses_as_multipathd_json() -> None:
    """The generated output is what Vigie's multipath parser reads, failed paths counted."""
    samples = {(s.name, s.labels): s.value for s in parse_multipath(multipath_output("srv-x", 3))}
    labels = (("map", "mpath-srv-x-data"),)
    assert samples[("multipath_paths_failed", labels)] == 3
    assert samples[("multipath_paths_active", labels)] == PATHS - 3
