"""Trap benchmark: how fast a UPS going on battery shows in /metrics, with a trap and without.

`vigie run` runs as a subprocess with one snmp check (ups-mib) of a net-snmp snmpd whose
UPS-MIB values come from a state file (tests/snmp_peers.py). Part 1: the bench switches the
agent to battery, sends upsTrapOnBattery with `snmptrap`, and times the send -> the state in
/metrics (scraped every 5 ms), then -> the re-poll's confirmation; upsTrapAlarmEntryRemoved
(re-poll only) brings it back to mains. Part 2, no trap: the bench switches the agent at a
random point of the poll interval and times the change -> detection by polling. Part 3, a
flood: 127.0.0.2 sends large junk (tests/test_traps.py's flooder: 49 KB and 8 KB
wrong-community traps, 8 KB of random bytes) paced, then as fast as one sender can, while a
process of its own times /-/healthy every 20 ms and valid traps (snmptrap from 127.0.0.1) go
on arriving: the web's latency, the valid traps counted, the drops by reason and the kernel's
own drops on the socket (/proc/net/udp), each phase against an idle one.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.bench.common import OUT, ROOT, free_port, log
from tests.snmp_peers import UPS_ON_BATTERY, UPS_ONLINE, Snmpd, free_udp_port, running_snmpd
from tests.test_traps import HEALTHY_SCRIPT, start_flood
from vigie.monitor.traps import DROP_REASONS

SNMPTRAP = "/usr/bin/snmptrap"
ON_BATTERY = "1.3.6.1.2.1.33.2.0.1"  # upsTrapOnBattery: sets ups_on_battery 1
ALARM_REMOVED = "1.3.6.1.2.1.33.2.0.4"  # upsTrapAlarmEntryRemoved: re-poll only
TRAP_GOAL_S = 1.0
POLL_MARGIN_S = 1.0


@dataclass(frozen=True)
class Params:
    """Sizes of one run."""

    traps: int
    polls: int
    poll_interval: float
    flood_seconds: float = 10.0


FULL = Params(traps=20, polls=4, poll_interval=10.0, flood_seconds=10.0)
QUICK = Params(traps=10, polls=2, poll_interval=4.0, flood_seconds=3.0)
HEALTHY_GOAL_S = 0.05
FLOOD_PHASES = (
    ("idle (no flood)", 0, 0.0, False),
    ("flood paced at 2,000 datagrams/s", 20, 0.01, False),
    ("flood as fast as one sender goes", 64, 0.0, False),
    ("right community: 8 KB traps of 200 varbinds, 200/s", 2, 0.01, True),
)
"""(name, datagrams per tick, tick in s (0: no pause), with the right community)."""


@dataclass
class FloodPhase:
    """What one flood phase measured."""

    name: str
    seconds: float
    sent: int
    healthy: list[float]
    traps_sent: int
    traps_matched: int
    drops: dict[str, float]
    kernel_drops: int
    decoded_junk: int = 0
    """The flood's datagrams that passed screening and were decoded (unmatched traps)."""


@dataclass
class Results:
    """Latencies measured, in seconds."""

    params: Params
    trap_to_metrics: list[float] = field(default_factory=list)
    trap_to_repoll: list[float] = field(default_factory=list)
    poll_to_metrics: list[float] = field(default_factory=list)
    flood: list[FloodPhase] = field(default_factory=list)


def _config(path: Path, agent: Snmpd, web: int, traps: int | None, interval: float) -> None:
    """Write a config with one ups-mib check of the agent (and a trap receiver if traps)."""
    lines = [
        f"web: {{listen: '127.0.0.1:{web}'}}",
        "snmp:",
        f"  auths: {{ups: {{version: 2, community: {agent.community}}}}}",
        "checks:",
        f"  - {{id: ups, kind: snmp, target: '{agent.target()}', interval: {interval:g}s,"
        " timeout: 3s, snmp: {auth: ups, profiles: [ups-mib]}}",
    ]
    if traps is not None:
        lines.append(f"traps: {{listen: '127.0.0.1:{traps}', auths: [ups]}}")
    path.write_text("\n".join(lines) + "\n")


@asynccontextmanager
async def _daemon(config: Path, log_file: Path) -> AsyncIterator[None]:
    """Run `vigie run` for the duration of the block."""
    cmd = [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)]
    with log_file.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _value(session: aiohttp.ClientSession, url: str, prefix: str) -> float | None:
    """Return the value of the first /metrics line starting with prefix (None if absent)."""
    try:
        async with session.get(url) as resp:
            page = await resp.text()
    except aiohttp.ClientError:
        return None
    for line in page.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _wait(
    session: aiohttp.ClientSession, url: str, prefix: str, want: float, limit: float
) -> float:
    """Scrape every 5 ms until the series has the value; return when (monotonic)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if await _value(session, url, prefix) == want:
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{prefix} never became {want:g} within {limit:g}s")


async def _trap(port: int, community: str, oid: str) -> None:
    """Send one v2c trap with net-snmp."""
    proc = await asyncio.create_subprocess_exec(
        SNMPTRAP,
        "-v2c",
        "-c",
        community,
        f"127.0.0.1:{port}",
        "",
        oid,
        env={**os.environ, "MIBS": ""},
    )
    if await proc.wait() != 0:
        raise RuntimeError("snmptrap failed")


ON = "ups_on_battery{"


async def _source_battery(session: aiohttp.ClientSession, url: str, limit: float) -> float:
    """Wait until the poll-only series upsOutputSource=battery is 1; return when."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        async with session.get(url) as resp:
            page = await resp.text()
        if any(
            ln.startswith("ups_output_source{") and 'state="battery"' in ln and ln.endswith(" 1")
            for ln in page.splitlines()
        ):
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise TimeoutError("the re-poll never showed upsOutputSource=battery")


async def _with_traps(p: Params, res: Results, agent: Snmpd, work: Path) -> None:
    """Part 1: trap send -> /metrics, and -> the re-poll's confirmation."""
    web, traps = free_port(), free_udp_port()
    config = work / "traps.yaml"
    _config(config, agent, web, traps, 300.0)
    url = f"http://127.0.0.1:{web}/metrics"
    agent.set_ups(UPS_ONLINE)
    async with _daemon(config, OUT / "traps-daemon.log"), aiohttp.ClientSession() as session:
        # First poll: the check's offset in a 300 s interval; a trap re-polls it now.
        end = time.monotonic() + 30
        while await _value(session, url, ON) != 0.0:
            if time.monotonic() > end:
                raise TimeoutError("daemon did not start")
            await asyncio.sleep(0.1)
            if await _value(session, url, "vigie_checks{") is not None:
                await _trap(traps, agent.community, ALARM_REMOVED)
        for _ in range(p.traps):
            agent.set_ups(UPS_ON_BATTERY)
            sent = time.monotonic()
            await _trap(traps, agent.community, ON_BATTERY)
            seen = await _wait(session, url, ON, 1.0, 5.0)
            confirmed = await _source_battery(session, url, 5.0)
            res.trap_to_metrics.append(seen - sent)
            res.trap_to_repoll.append(confirmed - sent)
            agent.set_ups(UPS_ONLINE)
            await _trap(traps, agent.community, ALARM_REMOVED)
            await _wait(session, url, ON, 0.0, 5.0)


async def _polling_only(p: Params, res: Results, agent: Snmpd, work: Path) -> None:
    """Part 2: agent change at a random point of the interval -> detection by polling."""
    web = free_port()
    config = work / "polling.yaml"
    _config(config, agent, web, None, p.poll_interval)
    url = f"http://127.0.0.1:{web}/metrics"
    agent.set_ups(UPS_ONLINE)
    rng = random.Random(1628)
    limit = p.poll_interval + 10
    async with _daemon(config, OUT / "traps-daemon.log"), aiohttp.ClientSession() as session:
        await _wait(session, url, ON, 0.0, limit + 20)
        for _ in range(p.polls):
            await asyncio.sleep(rng.uniform(0, p.poll_interval))
            agent.set_ups(UPS_ON_BATTERY)
            changed = time.monotonic()
            res.poll_to_metrics.append(await _wait(session, url, ON, 1.0, limit) - changed)
            agent.set_ups(UPS_ONLINE)
            await _wait(session, url, ON, 0.0, limit)


def _kernel_drops(port: int) -> int:
    """Return the datagrams the kernel dropped on the UDP socket bound to port (buffer full)."""
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[-1])
    return 0


async def _page(session: aiohttp.ClientSession, url: str) -> str:
    """Return the /metrics page ("" if it does not answer)."""
    try:
        async with session.get(url) as resp:
            return await resp.text()
    except aiohttp.ClientError:
        return ""


def _sample(page: str, prefix: str) -> float:
    """Return the value of the line starting with prefix (0 if absent)."""
    for line in page.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _counters(page: str) -> dict[str, float]:
    """Return the trap counters of a /metrics page: drops by reason and matched traps."""
    counters = {
        reason: _sample(page, f'vigie_snmp_traps_dropped_total{{reason="{reason}"}} ')
        for reason in DROP_REASONS
    }
    for result in ("matched", "unmatched"):
        counters[result] = _sample(page, f'vigie_snmp_traps_received_total{{result="{result}"}} ')
    return counters


async def _flood_phase(
    phase: tuple[str, int, float, bool], seconds: float, ports: tuple[int, int], agent: Snmpd
) -> FloodPhase:
    """Run one phase: healthy timed, flood (if any) and valid traps for `seconds`."""
    name, per_tick, tick, valid = phase
    community = agent.community if valid else None
    web, traps = ports
    url = f"http://127.0.0.1:{web}/metrics"
    async with aiohttp.ClientSession() as session:
        before, kernel = _counters(await _page(session, url)), _kernel_drops(traps)
        timer = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", HEALTHY_SCRIPT, str(web)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        flood = await start_flood(traps, 10**9, per_tick, tick, community) if per_tick else None
        sent_traps = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await _trap(traps, agent.community, ALARM_REMOVED)  # one at a time, ~10/s
            sent_traps += 1
            await asyncio.sleep(0.1)
        sent = await flood.stop() if flood is not None else 0
        out, _ = await timer.communicate(b"")
        end = time.monotonic() + 10  # the last valid traps still in flight
        after = _counters(await _page(session, url))
        while after["matched"] - before["matched"] < sent_traps and time.monotonic() < end:
            await asyncio.sleep(0.05)
            after = _counters(await _page(session, url))
    return FloodPhase(
        name=name,
        seconds=seconds,
        sent=sent,
        healthy=[float(t) for t in out.split()],
        traps_sent=sent_traps,
        traps_matched=int(after["matched"] - before["matched"]),
        drops={r: after[r] - before[r] for r in DROP_REASONS},
        kernel_drops=_kernel_drops(traps) - kernel,
        decoded_junk=int(after["unmatched"] - before["unmatched"]),
    )


async def _flood(p: Params, res: Results, agent: Snmpd, work: Path) -> None:
    """Part 3: /-/healthy and valid traps under a junk flood, phase by phase."""
    web, traps = free_port(), free_udp_port()
    config = work / "flood.yaml"
    _config(config, agent, web, traps, 300.0)
    agent.set_ups(UPS_ONLINE)
    async with _daemon(config, OUT / "traps-daemon.log"), aiohttp.ClientSession() as session:
        end = time.monotonic() + 30
        while not await _page(session, f"http://127.0.0.1:{web}/metrics"):
            if time.monotonic() > end:
                raise TimeoutError("daemon did not start")
            await asyncio.sleep(0.1)
        for phase in FLOOD_PHASES:
            log(f"traps: {phase[0]}, {p.flood_seconds:g}s")
            res.flood.append(await _flood_phase(phase, p.flood_seconds, (web, traps), agent))


def _pct(values: list[float], q: float) -> float:
    """Return the q-quantile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def render(res: Results) -> str:
    """Return the Markdown section."""
    p = res.params
    rows = []
    for name, values, goal in (
        ("trap sent -> `ups_on_battery 1` in /metrics", res.trap_to_metrics, TRAP_GOAL_S),
        ("trap sent -> re-poll confirms (upsOutputSource=battery)", res.trap_to_repoll, None),
        (
            f"no trap: agent change -> detected by polling every {p.poll_interval:g} s",
            res.poll_to_metrics,
            p.poll_interval + POLL_MARGIN_S,
        ),
    ):
        if not values:
            continue
        worst = max(values)
        met = "" if goal is None else (" (met)" if worst <= goal else " (**missed**)")
        goal_text = "-" if goal is None else f"< {goal:g} s{met}"
        rows.append(
            f"| {name} | {len(values)} | {_ms(statistics.median(values))} | "
            f"{_ms(_pct(values, 0.99))} | {_ms(worst)} | {goal_text} |"
        )
    return "\n".join(
        [
            "## SNMP traps",
            "",
            "`vigie run` (subprocess) with one ups-mib check of net-snmp's snmpd, whose UPS-MIB"
            " values come from a state file the bench switches to battery; traps sent with"
            " net-snmp's `snmptrap` (v2c, a process per trap, its start-up included); /metrics"
            " scraped every 5 ms. With a trap, the check's interval is 300 s: only the trap"
            " (immediate result + re-poll) can show the change. Without, the agent is switched"
            " at a random point of the poll interval.",
            "",
            "| latency | n | p50 | p99 | max | goal |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *_render_flood(res.flood),
        ]
    )


def _render_flood(phases: list[FloodPhase]) -> list[str]:
    """Return the flood table's lines (none when part 3 did not run)."""
    if not phases:
        return []
    rows = []
    for ph in phases:
        h = ph.healthy
        worst = max(h) if h else float("nan")
        met = "met" if worst < HEALTHY_GOAL_S else "**missed**"
        drops = ", ".join(f"{r} {v:.0f}" for r, v in ph.drops.items() if v) or "-"
        if ph.decoded_junk:
            drops += f"; decoded {ph.decoded_junk}"
        rows.append(
            f"| {ph.name} | {ph.sent / ph.seconds:,.0f}/s | {len(h)} | "
            f"{_ms(statistics.median(h)) if h else '-'} | {_ms(_pct(h, 0.99)) if h else '-'} | "
            f"{_ms(worst)} ({met}) | {ph.traps_matched}/{ph.traps_sent} | {drops} | "
            f"{ph.kernel_drops} |"
        )
    return [
        "### Under a junk flood",
        "",
        "127.0.0.2 sends, in turn, a 49 KB and an 8 KB v2c trap with a guessed community and"
        " 8 KB of random bytes (tests/test_traps.py's flooder, a process of its own); a process"
        " of its own times `GET /-/healthy` (keep-alive) every 20 ms; valid traps"
        " (`snmptrap`, upsTrapAlarmEntryRemoved, re-poll only) go from 127.0.0.1 one at a time"
        f" about every 100 ms. {phases[0].seconds:g} s per phase. Defaults: 8 KiB bound,"
        " a bucket of 100 tokens per source refilled at 20/s, a datagram taking one per"
        " started KiB. Kernel drops: the socket's own (/proc/net/udp), datagrams lost"
        " before Vigie could read them. The last phase sends costly valid traps (right"
        " community) from 127.0.0.2: what the per-KiB tokens let through is decoded.",
        "",
        "| phase | junk sent | /-/healthy n | p50 | p99 | max (goal < 50 ms) "
        "| valid traps counted | dropped by Vigie, by reason | kernel drops |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


async def _run(p: Params) -> Results:
    res = Results(p)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vigie-traps-") as tmp:
        work = Path(tmp)
        with running_snmpd(work / "agent") as agent:
            log(f"traps: {p.traps} traps")
            await _with_traps(p, res, agent, work)
            log(f"traps: {p.polls} changes without trap, interval {p.poll_interval:g}s")
            await _polling_only(p, res, agent, work)
            await _flood(p, res, agent, work)
    return res


def run(quick: bool) -> str:
    """Run the trap benchmark and return its Markdown section."""
    return render(asyncio.run(_run(QUICK if quick else FULL)))
