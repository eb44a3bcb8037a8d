"""The soak: `vigie run` at 10k checks for 30 minutes with flapping targets; RSS every minute.

`python -m tests.bench.soak [--minutes 30] [--checks 10000] [--interval 60]` (`make soak`).
The generated hospital of the whole-daemon bench (tests/bench/whole.py); one check in ten
GETs a flapping target that answers 200 and 503 in turn (its own period, so components,
incidents and pages come and go all the time), the rest a loopback nginx; /metrics is scraped
every 15 s. RSS is sampled each minute; the goal is under 5% growth from the end of the
warm-up (a third of the run, at most 10 minutes) to the end. Writes tests/bench/out/soak.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from tests.bench.common import (
    OUT,
    ROOT,
    free_port,
    log,
    proc_cpu,
    proc_memory,
    stop_process,
    target_server,
    wait_port,
)
from tests.bench.whole import TARGET_HOSTS, WholeParams, _scrape, _wait_status, write_config

GROWTH_GOAL = 0.05
FLAP_SHARE = 10  # one check in FLAP_SHARE flaps
FLAP_PERIOD = 150.0  # seconds up, then as long down


@dataclass
class SoakResults:
    """RSS samples and what the daemon did meanwhile."""

    checks: int
    interval: float
    minutes: float
    warmup_minutes: float
    load_avg: list[float] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (minutes, VmRSS KiB)
    cpu_s: float = 0.0
    scrapes_ms: list[float] = field(default_factory=list)
    transitions: int = 0

    def rss_at_warmup(self) -> int:
        """Return the RSS sampled at the end of the warm-up."""
        after = [kib for at, kib in self.samples if at >= self.warmup_minutes]
        return after[0] if after else 0

    def growth(self) -> float:
        """Return the RSS growth from the end of the warm-up to the last sample."""
        start = self.rss_at_warmup()
        return (self.samples[-1][1] - start) / start if start and self.samples else float("nan")


async def _flap(request: web.Request) -> web.Response:
    """Answer 200 or 503 by turns, each check on its own phase."""
    n = int(request.match_info["n"])
    up = (int(time.time() / FLAP_PERIOD) + n) % 2 == 0
    return web.Response(status=200 if up else 503, text="ok\n" if up else "down\n")


async def _serve_flap(host: str, port: int) -> None:
    """Serve /flap/<n> until killed."""
    app = web.Application()
    app.router.add_get("/flap/{n}", _flap)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    await asyncio.Event().wait()


def _write_config(
    path: Path,
    *,
    checks: int,
    interval: float,
    nginx: list[tuple[str, int]],
    flap: tuple[str, int],
    web_port: int,
) -> None:
    """Write the whole-daemon config, then point one check in FLAP_SHARE at the flapper."""
    write_config(path, WholeParams("soak", checks, interval, 0.0), nginx, web_port)
    config = yaml.safe_load(path.read_text())
    for i, check in enumerate(config["checks"]):
        if i % FLAP_SHARE == 0:
            check["target"] = f"http://{flap[0]}:{flap[1]}/flap/{i}"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))


async def _observe(proc: subprocess.Popen[bytes], web_port: int, res: SoakResults) -> None:
    """Wait for the first round, then sample RSS each minute and scrape every 15 s."""
    base = f"http://127.0.0.1:{web_port}"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        await _wait_status(session, f"{base}/-/healthy", 600, proc)
        await _wait_status(session, f"{base}/-/ready", 2 * res.interval + 120, proc)
        log(f"soak: first round done; sampling RSS each minute for {res.minutes:g} min")
        t0 = time.monotonic()
        cpu0 = proc_cpu(proc.pid)
        next_sample = t0
        while (now := time.monotonic()) < t0 + res.minutes * 60:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode} during the soak")
            if now >= next_sample:
                kib = proc_memory(proc.pid).get("VmRSS", 0)
                res.samples.append(((now - t0) / 60, kib))
                log(f"soak: {(now - t0) / 60:4.1f} min RSS {kib / 1024:.1f} MiB")
                next_sample += 60
            scrape, _ = await _scrape(session, f"{base}/metrics", t0)
            res.scrapes_ms.append(scrape.body_ms)
            await asyncio.sleep(max(0.0, min(15.0, next_sample - time.monotonic())))
        kib = proc_memory(proc.pid).get("VmRSS", 0)
        res.samples.append(((time.monotonic() - t0) / 60, kib))
        res.cpu_s = (proc_cpu(proc.pid) - cpu0).total


def run_soak(checks: int, interval: float, minutes: float) -> SoakResults:
    """Start the targets and the daemon, soak, stop everything."""
    OUT.mkdir(parents=True, exist_ok=True)
    res = SoakResults(checks, interval, minutes, min(10.0, minutes / 3))
    res.load_avg.extend(os.getloadavg())
    listens = [(host, free_port(host)) for host in TARGET_HOSTS]
    flap = ("127.0.0.6", free_port("127.0.0.6"))
    flapper = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.soak", "--serve-flap", f"{flap[0]}:{flap[1]}"],
        cwd=ROOT,
    )
    try:
        wait_port(*flap, 15)
        with target_server(listens, workers=1):
            web_port = free_port()
            config = OUT / "soak.yaml"
            _write_config(
                config,
                checks=checks,
                interval=interval,
                nginx=listens,
                flap=flap,
                web_port=web_port,
            )
            cmd = [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)]
            with (OUT / "soak-daemon.log").open("wb") as out:
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            try:
                asyncio.run(_observe(proc, web_port, res))
            finally:
                stop_process(proc, grace=30)
    finally:
        stop_process(flapper)
    text = (OUT / "soak-daemon.log").read_text(errors="replace")
    res.transitions = text.count('"check_down"')  # every check logs check_up once at start
    res.load_avg.extend(os.getloadavg())
    return res


def render(res: SoakResults) -> str:
    """Return the soak's Markdown report."""
    growth = res.growth()
    met = "yes" if growth < GROWTH_GOAL else "**no**"
    samples = ", ".join(f"{at:.0f} min {kib / 1024:.1f}" for at, kib in res.samples)
    return "\n".join(
        [
            f"## Soak: {res.checks} checks for {res.minutes:g} minutes, flapping targets",
            "",
            f"`python -m tests.bench.soak --minutes {res.minutes:g} --checks {res.checks}"
            f" --interval {res.interval:g}` (`make soak` runs 30 minutes). One check in"
            f" {FLAP_SHARE} flaps (200, then 503, {FLAP_PERIOD:g} s each); checks went down"
            f" {res.transitions} times (check_down logged). Load average before:"
            f" {res.load_avg[0]:.2f}, after: {res.load_avg[3]:.2f}.",
            "",
            "| Goal | Measured | Met |",
            "| --- | --- | --- |",
            f"| RSS growth < {GROWTH_GOAL:.0%} after the warm-up ({res.warmup_minutes:.1f} min)"
            f" | {res.rss_at_warmup() / 1024:.1f} → {res.samples[-1][1] / 1024:.1f} MiB:"
            f" {growth:+.1%} | {met} |",
            "",
            f"RSS (MiB) each minute: {samples}.",
            f"Daemon CPU over the soak: {res.cpu_s:.0f} s"
            f" ({100 * res.cpu_s / (res.minutes * 60):.0f}% of a core); /metrics whole body"
            f" worst {max(res.scrapes_ms, default=0):.0f} ms over {len(res.scrapes_ms)} scrapes.",
            "",
        ]
    )


def main() -> None:
    """Run the soak (or, with --serve-flap, be the flapping target)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--checks", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--serve-flap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_flap:
        host, _, port = args.serve_flap.rpartition(":")
        asyncio.run(_serve_flap(host, int(port)))
        return
    res = run_soak(args.checks, args.interval, args.minutes)
    report = render(res)
    (OUT / "soak.md").write_text(report)
    (OUT / "soak.json").write_text(json.dumps(asdict(res), indent=2) + "\n")
    print(report)


if __name__ == "__main__":
    main()
