"""The scaling curve and memory per check: `vigie run` alone, from a handful to 50k checks.

Each size is a whole-daemon run (tests/bench/whole.py: the generated hospital, HTTP checks of
a static file on a loopback nginx, /metrics scraped every 15 s) without blackbox_exporter and
the floor beside it, so the daemon has the machine's other core. The probe rate is capped
(500 a second at most) by lengthening the interval, so every size fits a 2-core machine
with its targets; memory per check is the RSS past a 10-check daemon's, divided by the
extra checks.
"""

from __future__ import annotations

import json
import math
import sys

from tests.bench.common import OUT
from tests.bench.whole import WholeParams, WholeResults, run_whole

BASE_CHECKS = 10
RSS_GOAL_KIB = 15.0
MAX_RATE = 500.0


def _params(checks: int, window: float) -> WholeParams:
    """Return the run of one size: interval at least 30 s, rate at most MAX_RATE."""
    interval = max(30.0, math.ceil(checks / MAX_RATE / 10) * 10)
    return WholeParams(f"curve-{checks}", checks, interval, window, sides=False)


# The sizes (1k, 10k, 50k); 20k is the whole part's own run (tests/bench/whole.py).
FULL = [_params(n, 30.0) for n in (BASE_CHECKS, 1000, 10000, 50000)]
QUICK = [
    WholeParams(f"curve-{n}", n, 10.0, 20.0, sides=False, scrape_every=5.0)
    for n in (BASE_CHECKS, 500, 2000)
]


def rss_kib(r: WholeResults) -> float:
    """Return the daemon's highest VmRSS sampled in the window."""
    return float(max(r.rss_kib, default=0))


def per_check_kib(r: WholeResults, base: WholeResults) -> float:
    """Return the RSS per check past the base daemon's, in KiB."""
    extra = r.params.checks - base.params.checks
    return (rss_kib(r) - rss_kib(base)) / extra if extra > 0 else math.nan


def run(quick: bool) -> str:
    """Run every size; return the Markdown section (with its goal row)."""
    results = [run_whole(p) for p in (QUICK if quick else FULL)]
    (OUT / "memory.json").write_text(
        json.dumps([r.to_json() for r in results], indent=2, default=str) + "\n"
    )
    return render(results)


def render(results: list[WholeResults]) -> str:
    """Return the section: the goal, then one row per size."""
    base, sized = results[0], results[1:]
    worst = max((per_check_kib(r, base) for r in sized), default=math.nan)
    lines = [
        "## Scaling curve and memory per check (the daemon alone)",
        "",
        "`vigie run` with the generated hospital (4 checks per component), every check an"
        " HTTP GET on a fresh connection to a loopback nginx, /metrics scraped every 15 s;"
        f" the interval grows with the size so the rate stays at most {MAX_RATE:.0f} probes/s."
        " Nothing else is driven beside it. RSS is the highest VmRSS sampled during the"
        f" window; per check, past a {base.params.checks}-check daemon's"
        f" ({rss_kib(base) / 1024:.0f} MiB).",
        "",
        "| Goal | Measured | Met |",
        "| --- | --- | --- |",
        f"| RSS per check ≤ {RSS_GOAL_KIB:g} KiB past the base (worst of"
        f" {', '.join(str(r.params.checks) for r in sized)} checks) | {worst:.1f} KiB |"
        f" {'yes' if worst <= RSS_GOAL_KIB else '**no**'} |",
        "",
        "| Checks | Components | Interval (probes/s) | CPU % of a core | CPU ms/probe"
        " | RSS MiB | KiB/check past base | Lag p99 | /metrics worst | /metrics MB text (wire)"
        " | Load avg (1 min) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        s = r.scrapes[-1] if r.scrapes else None
        size = f"{s.text_bytes / 1e6:.1f} ({s.wire_bytes / 1e6:.1f})" if s else "n/a"
        per = "—" if r is base else f"{per_check_kib(r, base):.1f}"
        lines.append(
            f"| {r.params.checks} | {r.components} | {r.params.interval:g} s"
            f" ({r.params.rate:.0f}) | {r.cpu_percent:.1f}% | {r.ms_per_probe:.3f} |"
            f" {rss_kib(r) / 1024:.0f} | {per} | {r.lag_quantile(0.99) * 1000:.1f} ms |"
            f" {r.body_ms(1.0):.0f} ms | {size} | {r.load_avg_before[0]:.1f} |"
        )
    lines += [""] + [
        f"Run {r.params.label} did not complete: {r.error}." for r in results if r.error
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the curve from the command line: `python -m tests.bench.memory [--quick]`."""
    print(run("--quick" in sys.argv[1:]))


if __name__ == "__main__":
    main()
