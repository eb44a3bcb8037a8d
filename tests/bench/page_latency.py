"""Page latency: from a fault to Alertmanager's first notification, measured against the budget.

`vigie run` runs as a process against small real targets (an aiohttp server in the bench: the
server's BMC and the application hang when the server crashes, as a host that is gone does;
the UPSes' exporter pages say `ups_on_battery 1` when the mains are lost) and pages a real
prometheus-alertmanager, whose webhook notifications the bench receives. Each run starts a
fresh daemon (its own `vigie_run` external label, so its alerts form new Alertmanager groups
and meet `group_wait`), waits until every component is OK, injects the fault at a random phase
of the checks' grid and times the first notification; it then counts the distinct groups
notified (pages) for a while.

Time is compressed honestly: every duration of the default settings (30 s interval, 10 s
timeout, 10 s group_wait, the health windows) is divided by `scale`; the report gives the
measured figures, their ratio to the budget computed for the same scaled config, and both
scaled back (x scale). Fixed costs that do not scale (the health runner's 1 s tick and 0.2 s
coalescing, HTTP round trips) are multiplied too when scaling back: the scaled-back figures
are pessimistic.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from tests.bench.common import OUT, ROOT, free_port, log
from vigie.monitor.config import load_config
from vigie.monitor.health.budget import budgets_of
from vigie.probes import default_registry

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
DEFAULTS = {"interval": 30.0, "timeout": 10.0, "group_wait": 10.0}
GOAL_S = 60.0
"""The issue's goal: a tier-1 server crash reaches Alertmanager's first notification in 60 s."""

SCENARIOS: dict[str, tuple[str, str]] = {
    # name: (component whose budget bounds it, what the bench does)
    "server crash": ("srv-dpi", "srv-dpi's BMC and the DPI application stop answering (hang)"),
    "power cut": ("ups-nord-1", "both UPSes of Datacenter Nord go on battery at once"),
}


@dataclass(frozen=True)
class Params:
    """How compressed and how many runs."""

    scale: float
    runs: int
    seed: int = 11


FULL = Params(scale=5.0, runs=6)
QUICK = Params(scale=10.0, runs=3)


class Targets:
    """The hospital's devices on one loopback port: BMCs, applications, UPS exporters."""

    def __init__(self) -> None:
        self.hung: set[str] = set()
        self.on_battery: set[str] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def reset(self) -> None:
        """Everything healthy again."""
        self.hung.clear()
        self.on_battery.clear()

    async def _page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in self.hung:
            await asyncio.sleep(3600)  # a crashed host: the probe times out
        return web.Response(text="status: OK\n")

    async def _ups(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        battery = 1 if name in self.on_battery else 0
        return web.Response(
            text=f"# TYPE ups_on_battery gauge\nups_on_battery {battery}\n"
            "# TYPE ups_battery_runtime_seconds gauge\nups_battery_runtime_seconds 1500\n"
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Targets]:
        """Serve on a free loopback port for the duration of the block."""
        app = web.Application()
        app.router.add_get("/c/{name}", self._page)
        app.router.add_get("/ups/{name}", self._ups)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        try:
            yield self
        finally:
            await self._runner.cleanup()


@dataclass
class Notification:
    """One webhook POST from Alertmanager, with when it arrived (bench monotonic clock)."""

    at: float
    body: dict[str, Any]


class Receiver:
    """Alertmanager's webhook receiver."""

    def __init__(self) -> None:
        self.got: list[Notification] = []
        self.url = ""

    def pages(self, instance: str, since: float) -> list[Notification]:
        """Firing notifications of one daemon's alerts (the watchdog aside) since a time."""
        return [
            n
            for n in self.got
            if n.at >= since
            and n.body.get("status") == "firing"
            and any(
                a["labels"].get("vigie_run") == instance
                and a["labels"].get("alertname") != "VigieWatchdog"
                and a["status"] == "firing"
                for a in n.body.get("alerts", [])
            )
        ]

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        """Serve on a free loopback port for the duration of the block."""

        async def handle(request: web.Request) -> web.Response:
            self.got.append(Notification(time.monotonic(), await request.json()))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        try:
            yield self
        finally:
            await runner.cleanup()


def am_config(hook: str, scale: float) -> str:
    """deploy/alertmanager's route, its times divided by scale; the watchdog goes nowhere.

    Grouped by vigie_run too (an external label naming each run's daemon), so its first alert
    opens a new group and waits group_wait, as a first fault does in production (the previous run's
    alerts stay firing at Alertmanager until they expire; sharing their group, a new alert
    would wait for the group's next group_interval instead).
    """
    return yaml.safe_dump(
        {
            "route": {
                "receiver": "hook",
                "group_by": ["alertname", "site", "root_cause", "vigie_run"],
                "group_wait": f"{DEFAULTS['group_wait'] / scale:g}s",
                "group_interval": f"{60 / scale:g}s",
                "repeat_interval": "4h",
                "routes": [{"matchers": ['alertname = "VigieWatchdog"'], "receiver": "null"}],
            },
            "receivers": [
                {"name": "hook", "webhook_configs": [{"url": hook, "send_resolved": True}]},
                {"name": "null"},
            ],
        },
        sort_keys=False,
    )


def hospital(
    targets: str, am_url: str, *, port: int, state: Path, scale: float, instance: str
) -> dict[str, Any]:
    """A small Datacenter Nord: A/B UPSes, a SAN, the DPI server and the DPI application."""

    def d(seconds: float) -> str:
        return f"{seconds / scale:g}s"

    def page(cid: str) -> dict[str, Any]:
        return {"id": f"{cid}-check", "kind": "http", "target": f"{targets}/c/{cid}"}

    ups = ["ups-nord-1", "ups-nord-2"]
    return {
        "state_dir": str(state),
        "web": {"listen": f"127.0.0.1:{port}"},
        "defaults": {"interval": d(DEFAULTS["interval"]), "timeout": d(DEFAULTS["timeout"])},
        "health": {
            "resolve_hold": d(30),
            "confirm_max": d(60),
            "site_window": d(120),
            "flapping": {"window": d(600)},
        },
        "sites": [
            {"id": "nord", "name": "Datacenter Nord"},
            {"id": "nord-salle-1", "name": "Nord salle 1", "parent": "nord"},
        ],
        "components": [
            *(
                {"id": u, "kind": "ups", "site": "nord-salle-1", "checks": [f"{u}-check"]}
                for u in ups
            ),
            {
                "id": "san-nord",
                "kind": "san_array",
                "site": "nord-salle-1",
                "checks": ["san-nord-check"],
                "powered_by": ups,
            },
            {
                "id": "srv-dpi",
                "kind": "server",
                "site": "nord-salle-1",
                "checks": ["srv-dpi-check"],
                "depends_on": ["san-nord"],
                "powered_by": ups,
            },
            {
                "id": "dpi",
                "kind": "application",
                "site": "nord-salle-1",
                "criticality": 1,
                "name": "Dossier patient",
                "checks": ["dpi-check"],
                "depends_on": ["srv-dpi"],
            },
        ],
        "checks": [
            *(
                {
                    "id": f"{u}-check",
                    "kind": "exporter",
                    "target": f"{targets}/ups/{u}",
                    "exporter": {"metrics": ["ups_.*"]},
                }
                for u in ups
            ),
            page("san-nord"),
            page("srv-dpi"),
            page("dpi"),
        ],
        "rules": [
            {
                "name": "on_battery",
                "expr": "ups_on_battery == 1",
                "severity": "warning",
                "checks": [f"{u}-check" for u in ups],
            },
            {
                "name": "runtime_low",
                "expr": "ups_battery_runtime_seconds < 600",
                "severity": "down",
                "checks": [f"{u}-check" for u in ups],
            },
        ],
        "alerting": {
            "alertmanagers": [am_url],
            "group_wait": d(DEFAULTS["group_wait"]),
            "resend_interval": d(60),
            "backoff_initial": "100ms",
            "backoff_max": "1s",
            "vigie_instance": instance,
            "external_labels": {"vigie_run": instance},
        },
    }


def budgets(config: dict[str, Any], workdir: Path) -> dict[str, float]:
    """The computed budget of each scenario's deciding component for this config."""
    path = workdir / "budget.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = load_config(path, default_registry(), env={})
    computed = budgets_of(loaded.config, loaded.plan).components
    return {name: computed[comp].seconds for name, (comp, _) in SCENARIOS.items()}


@dataclass
class Run:
    """One fault: its phase, when the first page arrived, and which groups were paged."""

    phase_s: float
    first_s: float | None
    groups: list[str] = field(default_factory=list)
    shown_s: float | None = None  # an incident on /api/v1/incidents (confirmed or held)
    confirmed_s: float | None = None  # that incident confirmed: handed to the outbox


@dataclass
class Results:
    """Runs per scenario, with the budgets they are judged against."""

    params: Params
    runs: dict[str, list[Run]] = field(default_factory=dict)
    budget_s: dict[str, float] = field(default_factory=dict)
    default_budget_s: dict[str, float] = field(default_factory=dict)
    alertmanager: str = ""


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json() if resp.status == 200 else None


async def _until(what: str, limit: float, check: Callable[[], Any]) -> None:
    """Poll an async condition every 50 ms until it holds; raise naming `what` at the limit."""
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {limit:g}s")
        await asyncio.sleep(0.05)


@dataclass
class Bench:
    """What every run shares: the targets, the receiver, Alertmanager, the session."""

    p: Params
    rng: random.Random
    targets: Targets
    receiver: Receiver
    am_url: str
    workdir: Path
    session: aiohttp.ClientSession


async def _stages(session: aiohttp.ClientSession, base: str, start: float, run: Run) -> None:
    """Note when Vigie first shows an incident, and when it first confirms one (every 50 ms)."""
    while run.confirmed_s is None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            rows = await _get_json(session, f"{base}/api/v1/incidents") or []
            now = time.monotonic() - start
            if rows and run.shown_s is None:
                run.shown_s = now
            if any(r.get("confirmed", True) for r in rows):
                run.confirmed_s = now
        await asyncio.sleep(0.05)


async def _one_run(bench: Bench, scenario: str, index: int, budget: float) -> Run:
    """Start a daemon, wait for all OK, inject the fault at a random phase, time the pages."""
    p, rng, targets, receiver = bench.p, bench.rng, bench.targets, bench.receiver
    am_url, workdir, session = bench.am_url, bench.workdir, bench.session
    instance = f"bench-{scenario.replace(' ', '-')}-{index}"
    port = free_port()
    run_dir = workdir / instance
    run_dir.mkdir()
    config = hospital(
        targets.url, am_url, port=port, state=run_dir / "state", scale=p.scale, instance=instance
    )
    path = run_dir / "vigie.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(path)]
    with (OUT / "page-latency-daemon.log").open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:

        async def all_ok() -> bool:
            if proc.returncode is not None:
                raise RuntimeError(f"vigie run exited with {proc.returncode}: see its log")
            with contextlib.suppress(aiohttp.ClientError):
                rows = await _get_json(session, f"{base}/api/v1/components")
                return bool(rows) and all(r["state"] == "OK" for r in rows)
            return False

        await _until("every component OK", 60, all_ok)
        phase = rng.uniform(0, DEFAULTS["interval"] / p.scale)
        await asyncio.sleep(phase)
        start = time.monotonic()
        if scenario == "server crash":
            targets.hung.update({"srv-dpi", "dpi"})
        else:
            targets.on_battery.update({"ups-nord-1", "ups-nord-2"})
        limit = 4 * budget + 10
        result = Run(phase, None)
        watcher = asyncio.create_task(_stages(session, base, start, result))

        async def paged() -> bool:
            return bool(receiver.pages(instance, start))

        try:
            with contextlib.suppress(TimeoutError):
                await _until(f"{scenario}: first notification", limit, paged)
                result.first_s = receiver.pages(instance, start)[0].at - start
                await asyncio.sleep(budget)  # later pages of the same fault, if any
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        groups: dict[str, None] = {}
        for n in receiver.pages(instance, start):
            labels = n.body.get("groupLabels", {})
            shown = sorted((k, v) for k, v in labels.items() if k != "vigie_run")
            groups.setdefault(",".join(f"{k}={v}" for k, v in shown))
        result.groups = list(groups)
        return result
    finally:
        targets.reset()
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def measure(p: Params, workdir: Path) -> Results:
    """Run every scenario p.runs times against a real Alertmanager."""
    from tests.alerting.conftest import Alertmanager  # the alerting tests' helper
    from tests.bench.health import _am_version

    res = Results(p)
    rng = random.Random(p.seed)
    async with (
        Receiver().serving() as receiver,
        Targets().serving() as targets,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
    ):
        am = Alertmanager(ALERTMANAGER, workdir / "am", receiver.url, ["alertname"])
        am.config.write_text(am_config(receiver.url, p.scale))
        for scale, into in ((p.scale, res.budget_s), (1.0, res.default_budget_s)):
            into.update(
                budgets(
                    hospital(
                        targets.url, am.url, port=1, state=workdir, scale=scale, instance="budget"
                    ),
                    workdir,
                )
            )
        await am.start(session)
        bench = Bench(p, rng, targets, receiver, am.url, workdir, session)
        try:
            for scenario in SCENARIOS:
                res.runs[scenario] = []
                for i in range(p.runs):
                    run = await _one_run(bench, scenario, i, res.budget_s[scenario])
                    res.runs[scenario].append(run)
                    first = "none" if run.first_s is None else f"{run.first_s:.2f}s"
                    log(
                        f"page latency: {scenario} {i + 1}/{p.runs}: phase {run.phase_s:.2f}s,"
                        f" first page after {first} (budget {res.budget_s[scenario]:g}s),"
                        f" {len(run.groups)} page(s)"
                    )
        finally:
            await am.stop()
    res.alertmanager = _am_version()
    return res


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of values; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _median_max(values: Sequence[float]) -> str:
    """`median / max` in seconds, or n/a."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} / {max(values):.2f} s"


def _stage_rows(res: Results) -> list[str]:
    """One row per scenario: the stages from fault to first notification."""
    s = res.params.scale
    detect = (DEFAULTS["interval"] + DEFAULTS["timeout"]) / s
    rows = []
    for scenario in SCENARIOS:
        runs = res.runs.get(scenario, [])
        shown = [r.shown_s for r in runs if r.shown_s is not None]
        held = [
            r.confirmed_s - r.shown_s
            for r in runs
            if r.confirmed_s is not None and r.shown_s is not None
        ]
        sent = [
            r.first_s - r.confirmed_s
            for r in runs
            if r.first_s is not None and r.confirmed_s is not None
        ]
        rows.append(
            f"| {scenario} | {detect:g} s | {_median_max(shown)} | {_median_max(held)} |"
            f" {_median_max(sent)} |"
        )
    return rows


def render(res: Results) -> str:
    """The Markdown section."""
    p = res.params
    s = p.scale
    lines = [
        "## Page latency: fault to Alertmanager's first notification",
        "",
        "| Goal | Measured | Met |",
        "| --- | --- | --- |",
    ]
    crash = [r.first_s for r in res.runs.get("server crash", []) if r.first_s is not None]
    missed = sum(1 for r in res.runs.get("server crash", []) if r.first_s is None)
    if crash:
        worst = max(crash) * s
        met = worst <= GOAL_S and missed == 0
        lines.append(
            f"| Tier-1 server crash paged ≤ {GOAL_S:g} s worst case at defaults (computed"
            f" budget {res.default_budget_s['server crash']:g} s) | worst {worst:.1f} s scaled"
            f" back from {max(crash):.2f} s at 1/{s:g} ({len(crash)} runs"
            f"{f', {missed} never paged' if missed else ''}) | {'yes' if met else '**no**'} |"
        )
    for scenario in SCENARIOS:
        runs = res.runs.get(scenario, [])
        counts = [len(r.groups) for r in runs]
        if counts:
            ok = all(c == 1 for c in counts)
            lines.append(
                f"| {scenario}: 1 page per run | {min(counts)} to {max(counts)} pages"
                f" ({len(counts)} runs) | {'yes' if ok else '**no**'} |"
            )
    lines += [
        "",
        f"`vigie run` as a process per run against small real targets and a real Alertmanager"
        f" ({res.alertmanager}, Debian; deploy/alertmanager's route, group_by"
        " alertname, site, root_cause, plus the external label vigie_run so that each run's"
        " first alert opens a new group), receiving its webhook notifications in the bench."
        " The hospital: Datacenter Nord with A/B UPSes (exporter checks, rule `on_battery`),"
        " a SAN array, the DPI server (its BMC) and the DPI application (tier 1).",
        "",
        f"Time-compressed 1/{s:g}: interval {DEFAULTS['interval'] / s:g} s, timeout"
        f" {DEFAULTS['timeout'] / s:g} s, group_wait {DEFAULTS['group_wait'] / s:g} s (and"
        " confirm_max, site_window, resolve_hold, group_interval alike) for the defaults'"
        f" 30 s, 10 s, 10 s. Each run starts a fresh daemon, waits until every component is"
        f" OK, then injects the fault at a uniformly random phase of the 30 s grid (scaled;"
        f" seed {p.seed}). Scaled back = measured x {s:g}: the health runner's 1 s tick and"
        " HTTP round trips do not shrink with the scale, so these are pessimistic.",
        "",
        "| Scenario | Fault | Runs | Budget at defaults | p50 | p99 | max | max / budget |"
        " Pages per run |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for scenario, (_, what) in SCENARIOS.items():
        runs = res.runs.get(scenario, [])
        firsts = [r.first_s for r in runs if r.first_s is not None]
        budget = res.budget_s.get(scenario, math.nan)
        if not firsts:
            lines.append(f"| {scenario} | {what} | {len(runs)} | - | never paged | | | | |")
            continue

        def fig(v: float) -> str:
            return f"{v * s:.1f} s ({v:.2f} s)"

        counts = sorted({len(r.groups) for r in runs})
        lines.append(
            f"| {scenario} | {what} | {len(firsts)}"
            f"{f' (+{len(runs) - len(firsts)} never paged)' if len(firsts) < len(runs) else ''}"
            f" | {res.default_budget_s[scenario]:g} s ({budget:g} s) |"
            f" {fig(percentile(firsts, 50))} | {fig(percentile(firsts, 99))} |"
            f" {fig(max(firsts))} | {max(firsts) / budget:.2f} |"
            f" {', '.join(map(str, counts))} |"
        )
    lines += [
        "",
        "Figures scaled back to the defaults, the measured (scaled) time in brackets; p99 is"
        " the nearest rank, so with few runs it is the maximum. The budget is"
        " `monitor/health/budget.py`'s for the server (`srv-dpi`) and for a UPS (`ups-nord-1`):"
        " interval + timeout + `for` + one confirmation timeout + group_wait"
        " ([docs/health.md](health.md#detection-budget)).",
        "",
        "Where the time goes (measured, scaled; median / max over runs): the bench polls"
        " `/api/v1/incidents` every 50 ms for the first incident shown (detected: the check"
        " failed and the health runner evaluated) and the first confirmed (the confirmation"
        " hold is over: handed to the outbox); the rest is the POST to Alertmanager and its"
        " group_wait.",
        "",
        "| Scenario | Detect budget (interval + timeout + `for`) | Fault → shown |"
        " Shown → confirmed | Confirmed → notified (group_wait "
        f"{DEFAULTS['group_wait'] / s:g} s) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *_stage_rows(res),
        "",
        "Groups paged per run (a page = a new Alertmanager group notified):",
        "",
    ]
    for scenario in SCENARIOS:
        seen: dict[str, int] = {}
        for r in res.runs.get(scenario, []):
            for g in r.groups:
                seen[g] = seen.get(g, 0) + 1
        listed = "; ".join(f"`{g}` in {n} run(s)" for g, n in seen.items()) or "none"
        lines.append(f"- {scenario}: {listed}")
    lines += [
        "",
        "Pages per scenario on the generated hospital (hundreds of seeds, engine level): the"
        " section *Health: one page per root cause, generated hospitals* (the property runner,"
        " `tests/health/sim.py`).",
    ]
    return "\n".join(lines) + "\n"


def run(quick: bool) -> str:
    """Run the page-latency benchmark and return its Markdown section."""
    p = QUICK if quick else FULL
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vigie-bench-page-") as tmp:
        res = asyncio.run(measure(p, Path(tmp)))
    return render(res)


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
