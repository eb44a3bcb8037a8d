"""Render the benchmark results as docs/benchmarks.md."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tests.bench.cpu import CpuResults, CpuRun
from tests.bench.scale import ScaleResults
from vigie.monitor.scheduler import LAG_BUCKETS

PY_PACKAGES = (
    "vigie",
    "aiohttp",
    "yarl",
    "multidict",
    "prometheus-client",
    "pydantic",
    "structlog",
)
DEB_PACKAGES = (
    "prometheus-blackbox-exporter",
    "monitoring-plugins-basic",
    "nginx-light",
    "snmpd",
    "snmp",
    "prometheus-snmp-exporter",
    "prometheus-alertmanager",
)
GOAL_HEADER = "| Goal | Measured | Met |"
TOOL_NAMES = {
    "vigie": "Vigie (Scheduler.run + HttpProbe + Exposition.update)",
    "blackbox": "blackbox_exporter, module http_2xx",
    "check_http": "monitoring-plugins check_http (a process per check)",
    "aiohttp": "plain aiohttp GET, fresh connection (library floor, for reference)",
}
CPU_GOAL = 0.5
LAG_GOAL = 0.250
RENDER_GOAL_MS = 100.0


@dataclass
class RunInfo:
    """How the benchmark was run."""

    command: str
    date: str
    wall_s: float
    quick: bool
    nofile: int


def _cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _mem_total() -> str:
    """Return MemTotal from /proc/meminfo in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _deb_version(package: str) -> str:
    """Return the installed version of a Debian package, or "not installed"."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "not installed"


def _py_version(package: str) -> str:
    """Return the installed version of a Python distribution."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_section(info: RunInfo) -> list[str]:
    """Return the machine and command section."""
    cpus = len(os.sched_getaffinity(0))
    packages = ", ".join(f"{p} {_py_version(p)}" for p in PY_PACKAGES)
    debs = ", ".join(f"{p} {_deb_version(p)}" for p in DEB_PACKAGES)
    return [
        "## Machine and run",
        "",
        "| | |",
        "| --- | --- |",
        f"| Date (UTC) | {info.date} |",
        f"| Command | `{info.command}` |",
        f"| Mode | {'quick (smoke run, small sizes)' if info.quick else 'full'} |",
        f"| Total wall time | {info.wall_s:.0f} s |",
        f"| nproc | {cpus} |",
        f"| CPU | {_cpu_model()} |",
        f"| Memory | {_mem_total()} |",
        f"| Kernel | {platform.release()} |",
        f"| Python | {platform.python_version()} ({platform.python_implementation()}) |",
        f"| Python packages | {packages} |",
        f"| Debian packages | {debs} |",
        f"| RLIMIT_NOFILE (soft, raised to hard) | {info.nofile} |",
        "",
    ]


def _fmt(value: float, digits: int = 3) -> str:
    """Format a number, "n/a" for NaN."""
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _runs(cpu: CpuResults, tool: str) -> list[CpuRun]:
    """Return the runs of one tool."""
    return [r for r in cpu.runs if r.tool == tool]


def cpu_ratio(cpu: CpuResults, other: str) -> float:
    """Return Vigie's median CPU per probe divided by another tool's."""
    theirs = cpu.median_ms(other)
    return cpu.median_ms("vigie") / theirs if theirs else math.nan


def cpu_section(cpu: CpuResults) -> list[str]:
    """Return the CPU-per-probe section."""
    p = cpu.params
    lines = [
        "## 1. Micro-benchmark: CPU time per HTTP probe (the probe path alone)",
        "",
        "Not the whole daemon: `Scheduler.run` and the store back to back, without the"
        " per-check timers, the health engine or /metrics; the goal is judged on the whole"
        " daemon (section above). Kept to follow the probe path's own cost.",
        "",
        f"Every tool probes the same loopback target, `{cpu.url}` served by {cpu.target},"
        f" {p.concurrency} probes in flight, after {p.warmup} warm-up probes that are not"
        f" counted; every tool runs the same number of probes per round. {p.rounds}"
        " interleaved rounds; the table gives the median round.",
        "",
        "| Tool | Probes per round | CPU ms/probe (median) | min-max | user / sys ms/probe"
        " | Probes/s (wall) | Succeeded | Vigie ÷ tool |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tool, name in TOOL_NAMES.items():
        runs = _runs(cpu, tool)
        if not runs:
            continue
        values = [r.ms_per_probe for r in runs]
        probes = sum(r.probes for r in runs)
        user = sum(r.user for r in runs) * 1000 / probes if probes else math.nan
        sys_ = sum(r.sys for r in runs) * 1000 / probes if probes else math.nan
        rate = statistics.median(r.probes / r.wall for r in runs if r.wall > 0)
        ok = sum(r.ok for r in runs)
        ratio = "1" if tool == "vigie" else f"{cpu_ratio(cpu, tool):.2f}"
        lines.append(
            f"| {name} | {runs[0].probes} | **{cpu.median_ms(tool):.3f}** |"
            f" {min(values):.3f}-{max(values):.3f} | {user:.3f} / {sys_:.3f} | {rate:.0f} |"
            f" {ok}/{probes} | {ratio} |"
        )
    ratio_bb = cpu_ratio(cpu, "blackbox")
    met = "**met**" if ratio_bb <= CPU_GOAL else "**not met**"
    lines += [
        "",
        f"Micro-benchmark ratio (not the goal's measure): {_fmt(ratio_bb, 2)}x blackbox_exporter"
        f" ({met} at {CPU_GOAL}x for this path alone).",
        "",
        "How each is measured:",
        "",
        "- Vigie: `tests/bench/vigie_cpu.py` in its own process loads a one-check config with"
        " `load_config`, builds a `Scheduler` with the real `HttpProbe` and the shared session"
        " from `probes.http.make_session()`, and runs the check with `await scheduler.run(check)`"
        " from concurrent tasks; each result goes through `ResultStore.update` into"
        " `Exposition.update`, as in the daemon. CPU is `getrusage(RUSAGE_SELF)` user + sys"
        " around the measured batch only (imports, config load and warm-up excluded)."
        " Logging is configured at `info` as `vigie run` does.",
        "- blackbox_exporter: `/probe?module=http_2xx&target=…` requested by an aiohttp client"
        " in the harness process (kept-alive connections, as Prometheus scrapes it; the"
        " client's own CPU is not counted, while Vigie's figure includes the tasks that drive"
        " it); CPU is the exporter's utime + stime delta from `/proc/<pid>/stat` (all its"
        " threads, 10 ms ticks). Like Vigie's probe, it opens a new connection to the target"
        " for each probe. Its CPU"
        " includes serving the `/probe` request and rendering its answer, which is how it"
        " works; Vigie's /metrics render is per scrape, not per probe, so it is not in its"
        " figure (see section 2 for its cost).",
        "- check_http: one process per check (`-H 127.0.0.1 -p PORT -u /ok.txt`), run from a"
        " thread pool; CPU is the `RUSAGE_CHILDREN` delta, so process start-up is counted:"
        " that is the cost of that model (the harness's own fork and wait are not).",
        "- plain aiohttp: the same worker with `--mode aiohttp`: `session.get(url)` and"
        " `read()` on a `TCPConnector(force_close=True)` — no scheduler, no phase timing, no"
        " result. It shows the floor set by asyncio + aiohttp in this Python.",
        "",
        "All rounds:",
        "",
        "| Round | Tool | Probes | OK | user s | sys s | wall s | CPU ms/probe | Errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    counters: dict[str, int] = {}
    for r in cpu.runs:
        counters[r.tool] = counters.get(r.tool, 0) + 1
        errors = "; ".join(f"{k} x{v}" for k, v in r.errors.items()) or "—"
        lines.append(
            f"| {counters[r.tool]} | {r.tool} | {r.probes} | {r.ok} | {r.user:.3f} |"
            f" {r.sys:.3f} | {r.wall:.2f} | {r.ms_per_probe:.3f} | {errors} |"
        )
    lines.append("")
    return lines


def _lag_goal(scale: ScaleResults) -> tuple[str, bool]:
    """Return the lag p99 text and whether it meets the goal."""
    p99 = scale.lag_quantile(0.99)
    share = scale.lag_share_within(LAG_GOAL)
    ok = not math.isnan(p99) and p99 < LAG_GOAL and share >= 0.99
    return f"{p99 * 1000:.1f} ms ({share * 100:.2f}% of runs started ≤ 250 ms late)", ok


def scale_section(scale: ScaleResults) -> list[str]:
    """Return the scale section."""
    p = scale.params
    n = p.n_http + p.n_tcp
    totals = [s.total for s in scale.scrapes]
    ttfbs = [s.ttfb for s in scale.scrapes]
    cpu_per_probe = (
        (scale.cpu_user + scale.cpu_sys) * 1000 / scale.probes if scale.probes else math.nan
    )
    resolution = ", ".join(f"{b * 1000:g}" for b in LAG_BUCKETS)
    lag_text, lag_ok = _lag_goal(scale)
    render_ok = bool(ttfbs) and max(ttfbs) < RENDER_GOAL_MS
    success = ", ".join(f"{k}: {ok}/{total}" for k, (ok, total) in sorted(scale.success.items()))
    lines = [
        "## 2. Scale: the daemon with many checks",
        "",
        f"`vigie run` as a subprocess with {n} checks ({p.n_http} http, {p.n_tcp} tcp),"
        f" interval {p.interval:g} s, timeout {p.timeout:g} s,"
        f" `per_host_concurrency: {p.per_host_concurrency}`,"
        f" `max_concurrency: {p.max_concurrency}`; targets: {scale.target} (http checks GET"
        " a small static file, tcp checks connect and close). The window starts once"
        f" `/-/ready` says the first round is done, and lasts {scale.window_s:.0f} s; /metrics"
        f" is scraped every {p.scrape_every:g} s during it, as Prometheus would.",
        "",
        "| Figure | Value | Goal |",
        "| --- | ---: | --- |",
        f"| Start-up: process start to serving HTTP | {scale.startup_s:.1f} s | |",
        f"| First round done (after serving) | {scale.ready_s:.1f} s | |",
        f"| Probes run in the window (http + tcp) | {scale.probes:.0f}"
        f" (plan: {scale.expected_probes:.0f}) | |",
        f"| Checks succeeding at the end (probe_success 1) | {success} | all |",
        f"| Scheduler lag p50 | {scale.lag_quantile(0.5) * 1000:.1f} ms | |",
        f"| Scheduler lag p99 | {lag_text} | < 250 ms: {'**met**' if lag_ok else '**not met**'} |",
        f"| Daemon CPU (user + sys over wall) | {scale.cpu_percent:.1f}% of one core"
        f" (user {scale.cpu_user:.1f} s, sys {scale.cpu_sys:.1f} s) | |",
        f"| Daemon CPU per probe (all included) | {_fmt(cpu_per_probe)} ms | |",
        f"| RSS at the end (VmRSS) / peak (VmHWM) | {scale.rss_kib / 1024:.0f} MiB /"
        f" {scale.hwm_kib / 1024:.0f} MiB | |",
        f"| Open file descriptors (max sampled) | {scale.max_fds} | |",
        f"| /metrics page | {scale.page_bytes / 1e6:.1f} MB, {scale.series} series | |",
        f"| GET /metrics, whole body ({len(totals)} scrapes) | median"
        f" {statistics.median(totals):.1f} ms, max {max(totals):.1f} ms | |",
        f"| GET /metrics, time to response headers (≈ render) | median"
        f" {statistics.median(ttfbs):.1f} ms, max {max(ttfbs):.1f} ms |"
        f" < 100 ms: {'**met**' if render_ok else '**not met**'} |",
        f"| `Exposition.render()` in-process, same size ({len(scale.render_ms)} runs) | median"
        f" {statistics.median(scale.render_ms):.1f} ms, max {max(scale.render_ms):.1f} ms | |",
        "",
        "Lag is read from `vigie_scheduler_lag_seconds` (bucket counts at the end of the window"
        " minus those at its start) and interpolated within a bucket like PromQL's"
        f" `histogram_quantile`. Bucket edges (ms): {resolution}; so a quantile is only"
        " known to lie within its bucket, and the 250 ms goal is judged exactly by the share"
        " of runs in the buckets up to 250 ms.",
        "",
        "Lag observations in the window:",
        "",
        "| ≤ le | Runs | Cumulative |",
        "| ---: | ---: | ---: |",
    ]
    below = 0.0
    for le, count in scale.lag_buckets:
        edge = "+Inf" if math.isinf(le) else f"{le * 1000:g} ms"
        share = count / scale.lag_count * 100 if scale.lag_count else math.nan
        lines.append(f"| {edge} | {count - below:.0f} | {share:.2f}% |")
        below = count
    lines += [
        "",
        "Scrapes (seconds into the window, headers ms, total ms, bytes on the wire, gzip):"
        + "".join(
            f" {s.at:.0f}s {s.ttfb:.1f}/{s.total:.1f}/{s.size}" + ";" for s in scale.scrapes
        ).rstrip(";")
        + ".",
        "",
        f"The daemon exited with code {scale.daemon_exit} after SIGTERM.",
        "",
    ]
    return lines


def goal_rows(section: str) -> list[str]:
    """Return the rows of a section's own goals table (the one headed GOAL_HEADER)."""
    rows: list[str] = []
    lines = section.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != GOAL_HEADER:
            continue
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            rows.append(row)
    return rows


def goals_section(
    cpu: CpuResults | None,
    scale: ScaleResults | None,
    extra: list[str] | None = None,
    first: list[str] | None = None,
) -> list[str]:
    """Return the summary of the goals; first and extra hold the goal rows of the headline
    and further sections, listed before and after the micro and scale rows."""
    lines = ["## Goals", "", GOAL_HEADER, "| --- | --- | --- |", *(first or [])]
    if cpu is not None:
        ratio = cpu_ratio(cpu, "blackbox")
        lines.append(
            f"| Micro-benchmark only (probe path, not the whole daemon): CPU per HTTP probe"
            f" ≤ {CPU_GOAL}x blackbox_exporter's |"
            f" {cpu.median_ms('vigie'):.3f} ms vs {cpu.median_ms('blackbox'):.3f} ms:"
            f" {_fmt(ratio, 2)}x | {'yes' if ratio <= CPU_GOAL else '**no**'} |"
        )
    if scale is not None:
        n = scale.params.n_http + scale.params.n_tcp
        lag_text, lag_ok = _lag_goal(scale)
        totals = [s.total for s in scale.scrapes]
        ttfbs = [s.ttfb for s in scale.scrapes]
        lines.append(
            f"| Scheduler lag p99 < 250 ms at {n} checks | {lag_text} |"
            f" {'yes' if lag_ok else '**no**'} |"
        )
        # The page is built whole before its headers go out: time to headers is the render.
        render_ok = max(ttfbs) < RENDER_GOAL_MS
        lines.append(
            f"| /metrics render < 100 ms at {n} checks | time to headers median"
            f" {statistics.median(ttfbs):.1f} ms, max {max(ttfbs):.1f} ms (whole body median"
            f" {statistics.median(totals):.1f} ms, max {max(totals):.1f} ms) |"
            f" {'yes' if render_ok else '**no**'} |"
        )
        failing = sum(total - ok for ok, total in scale.success.values())
        lines.append(
            f"| Probes succeed (so figures are not for failures) | {failing} of {n} checks"
            f" failing at the end | {'yes' if failing == 0 else '**no**'} |"
        )
    lines += [*(extra or []), ""]
    return lines


def render_report(
    info: RunInfo,
    cpu: CpuResults | None,
    scale: ScaleResults | None,
    notes: list[str],
    sections: list[str] | None = None,
    *,
    headline: list[str] | None = None,
) -> str:
    """Return the whole Markdown document; sections are the further benchmarks' Markdown,
    headline the sections shown first (the whole daemon), before the micro-benchmark."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m tests.bench.run` (`make bench`); do not edit by hand, run it"
        " again. Raw figures: `tests/bench/out/results.json` (not committed).",
        "",
    ]
    if info.quick:
        lines += ["**Quick smoke run: sizes are too small for the figures to mean much.**", ""]
    lines += goals_section(
        cpu,
        scale,
        [r for s in sections or [] for r in goal_rows(s)],
        [r for s in headline or [] for r in goal_rows(s)],
    )
    lines += machine_section(info)
    for section in headline or []:
        lines += [*section.rstrip("\n").split("\n"), ""]
    if cpu is not None:
        lines += cpu_section(cpu)
    if scale is not None:
        lines += scale_section(scale)
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines) + "".join(f"\n{section}" for section in sections or [])
