"""Run every benchmark in one go and write docs/benchmarks.md: `python -m tests.bench.run`."""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.bench.common import OUT, ROOT, log, raise_nofile, stray_daemons
from tests.bench.cpu import CpuParams, CpuResults, run_cpu
from tests.bench.report import RunInfo, render_report
from tests.bench.scale import ScaleParams, ScaleResults, run_scale, summary
from vigie.monitor.logs import configure_logging

FULL_CPU = CpuParams(n=3000, n_check_http=3000, concurrency=16, rounds=3, warmup=200)
QUICK_CPU = CpuParams(n=500, n_check_http=500, concurrency=16, rounds=1, warmup=50)
FULL_SCALE = ScaleParams(n_http=7000, n_tcp=3000, interval=30, window=60, scrape_every=15)
QUICK_SCALE = ScaleParams(n_http=1400, n_tcp=600, interval=10, window=20, scrape_every=5)


def _parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    parser.add_argument(
        "--only",
        choices=["cpu", "scale", *SECTIONS],
        help="run only one benchmark (for development)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="Markdown file to write (default: docs/benchmarks.md, or"
        " tests/bench/out/benchmarks-quick.md with --quick)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, write the report and the raw JSON; return the exit code."""
    args = _parser().parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "tests.bench.run", *argv_used])
    output: Path = args.output or (
        OUT / "benchmarks-quick.md" if args.quick else ROOT / "docs" / "benchmarks.md"
    )
    configure_logging("warning", stream=sys.stderr)
    strays = stray_daemons()
    if strays:
        log("refusing to measure beside running daemons (stop them first):")
        for line in strays:
            log(f"  {line}")
        return 2
    nofile = raise_nofile()
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    cpu: CpuResults | None = None
    scale: ScaleResults | None = None
    took: dict[str, float] = {}
    if args.only in (None, "cpu"):
        log("benchmark 1: CPU per HTTP probe")
        at = time.monotonic()
        cpu = run_cpu(QUICK_CPU if args.quick else FULL_CPU)
        took["cpu"] = time.monotonic() - at
    if args.only in (None, "scale"):
        log("benchmark 2: scale")
        at = time.monotonic()
        scale = run_scale(QUICK_SCALE if args.quick else FULL_SCALE, 10 if args.quick else 20)
        took["scale"] = time.monotonic() - at
        log(f"scale: {summary(scale)}")
    sections: list[str] = []
    headline: list[str] = []
    for name, target in SECTIONS.items():
        if args.only in (None, name):
            log(f"benchmark: {name}")
            at = time.monotonic()
            module, _, func = target.partition(":")
            section = getattr(importlib.import_module(module), func)(args.quick)
            took[name] = time.monotonic() - at
            log(f"benchmark: {name} took {took[name]:.0f}s")
            (headline if name in HEADLINE else sections).append(section)
    sections.append(wall_times(took))
    info = RunInfo(command, date, time.monotonic() - started, args.quick, nofile)
    raw = {
        "run": info.__dict__,
        "cpu": cpu.to_json() if cpu is not None else None,
        "scale": scale.to_json() if scale is not None else None,
    }
    (OUT / "results.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_report(info, cpu, scale, NOTES, sections, headline=headline))
    log(f"wrote {output} in {info.wall_s:.0f}s")
    return 0


def wall_times(took: dict[str, float]) -> str:
    """Return the Markdown section of each part's wall time (the whole run's budget: 45 min)."""
    rows = [f"| `{name}` | {seconds / 60:.1f} |" for name, seconds in took.items()]
    total = sum(took.values()) / 60
    return "\n".join(
        [
            "## Wall time of each part",
            "",
            "What each part of this run took (`--only NAME` runs one); the whole run's budget",
            "is 45 minutes, `make soak` runs apart.",
            "",
            "| Part | Minutes |",
            "| --- | ---: |",
            *rows,
            f"| all | {total:.1f} |",
        ]
    )


NOTES: list[str] = []

# Further benchmarks, one module each: `run(quick: bool) -> str` runs it and returns its
# Markdown section (a `## ` heading, the command-independent setup, the figures as ratios).
SECTIONS: dict[str, str] = {
    "whole": "tests.bench.whole:run",
    "memory": "tests.bench.memory:run",
    "snmp": "tests.bench.snmp:run",
    "health": "tests.bench.health:run",
    "redfish": "tests.bench.redfish:run",
    "traps": "tests.bench.traps:run",
    "page_latency": "tests.bench.page_latency:run",
    "health_property": "tests.bench.health:run_property",
    "hung": "tests.bench.hung:run",
    "protocols": "tests.bench.protocols:run",
    "metrics_scale": "tests.bench.metrics_scale:run",
    "bus": "tests.bench.bus:run",
}

# Sections shown first, before the micro-benchmark: the whole daemon is the headline.
HEADLINE = ("whole",)


if __name__ == "__main__":
    sys.exit(main())
