"""`make fuzz`: run every fuzz target under atheris (libFuzzer) for its share of a time budget.

`python -m tests.fuzz.run [--budget SECONDS] [--only TARGET ...]` runs each target in a child
process (`python -m tests.fuzz.run one TARGET ...`) and prints executions, time and crashes per
target. A crash leaves its input in tests/fuzz/out/TARGET/ (crash-*): keep it as a regression
seed in tests/fuzz/corpus/TARGET/ once fixed. Exit status 1 if any target crashed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
BYTE = ("ber", "trap_header", "nagios")
# Shares of the budget: most of it on the byte-level decoders, the fastest and most exposed.
SHARES = {
    "ber": 0.22,
    "trap_header": 0.22,
    "nagios": 0.2,
    "redfish": 0.12,
    "profiles": 0.12,
    "config": 0.12,
}
_RUNS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


@dataclass
class Outcome:
    """One target's run: executions, seconds and the crash files it left."""

    target: str
    runs: int
    seconds: float
    crashes: list[Path]


def one(target: str, libfuzzer_args: list[str]) -> None:
    """Fuzz one target in this process (never returns: libFuzzer exits)."""
    import atheris  # type: ignore[import-untyped]  # no stubs; only `make fuzz` installs it

    with atheris.instrument_imports(include=["vigie.monitor", "vigie.probes", "vigie.core"]):
        from tests.fuzz import targets

    if target in targets.BYTE_TARGETS:
        entry = targets.BYTE_TARGETS[target]
    else:
        entry = targets.given_test(target, 10**9).hypothesis.fuzz_one_input
    atheris.Setup([sys.argv[0], *libfuzzer_args], entry)
    atheris.Fuzz()


def fuzz(target: str, seconds: int) -> Outcome:
    """Run one target for `seconds` in a child process; return what it did."""
    work = OUT / target
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    before = set(work.glob("crash-*"))
    dirs = [str(work / "corpus")]
    seeds = HERE / "corpus" / target
    if target in BYTE and seeds.is_dir():  # structured seeds are values, not libFuzzer bytes
        dirs.append(str(seeds))
    args = [
        f"-max_total_time={seconds}",
        "-print_final_stats=1",
        "-max_len=4096",
        "-rss_limit_mb=2048",
        "-timeout=20",
        f"-artifact_prefix={work}/",
        *dirs,
    ]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", "one", target, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=HERE.parents[1],
    )
    elapsed = time.monotonic() - started
    (work / "last.log").write_text(proc.stdout + proc.stderr)
    found = _RUNS.findall(proc.stderr)
    crashes = sorted(set(work.glob("crash-*")) - before)
    if proc.returncode != 0 and not crashes:
        crashes = [work / "last.log"]  # died another way (timeout, OOM): the log says how
    return Outcome(target, int(found[-1]) if found else 0, elapsed, crashes)


def main(argv: list[str] | None = None) -> int:
    """Run the targets and print the figures; return 1 if any crashed."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["one"]:
        one(args_in[1], args_in[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--budget", type=float, default=840, help="total seconds (default 840)")
    parser.add_argument("--only", nargs="+", choices=sorted(SHARES), help="targets to run")
    args = parser.parse_args(args_in)
    chosen = args.only or list(SHARES)
    share = sum(SHARES[t] for t in chosen)
    outcomes = []
    for target in chosen:
        seconds = max(1, int(args.budget * SHARES[target] / share))
        print(f"fuzz {target}: {seconds}s", file=sys.stderr, flush=True)
        outcomes.append(fuzz(target, seconds))
    print("| target | executions | seconds | executions/s | crashes |")
    print("|---|---:|---:|---:|---:|")
    for o in outcomes:
        rate = o.runs / o.seconds if o.seconds else 0.0
        print(f"| {o.target} | {o.runs:,} | {o.seconds:.0f} | {rate:,.0f} | {len(o.crashes)} |")
    total = sum(o.runs for o in outcomes)
    wall = sum(o.seconds for o in outcomes)
    print(f"| total | {total:,} | {wall:.0f} | {total / wall if wall else 0:,.0f} | "
          f"{sum(len(o.crashes) for o in outcomes)} |")  # fmt: skip
    for o in outcomes:
        for crash in o.crashes:
            print(f"CRASH {o.target}: {crash}", file=sys.stderr)
    return 1 if any(o.crashes for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
