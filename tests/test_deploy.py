"""The deploy/ files are valid for the real tools that load them, and name real metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.conftest import require_binary
from vigie.monitor.runtime_metrics import runtime_metric_names
from vigie.probes.snmp.profiles import SHIPPED_PROFILE_DIR, family_names, load_profile_dirs

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "le", "sum", "avg", "count", "min", "max", "topk", "bottomk", "rate",
    "increase", "irate", "histogram_quantile", "absent", "time", "vector", "scalar",
}  # fmt: skip
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def run(*argv: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    """Run a tool, fail the test with its output when it exits non-zero, return its stdout."""
    out = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{argv}: {out.stdout}{out.stderr}"
    return out.stdout


def known_metrics() -> set[str]:
    """Return every metric family Vigie can expose: profile families, its own and probe metrics."""
    names: set[str] = set()
    for profile in load_profile_dirs([SHIPPED_PROFILE_DIR]).values():
        names.update(family_names(profile))
    for source in [*ROOT.glob("monitor/**/*.py"), *ROOT.glob("probes/*.py")]:
        names.update(re.findall(r"[\"']((?:vigie|probe)_[a-z0-9_]+)", source.read_text()))
    rules = yaml.safe_load((DEPLOY / "prometheus" / "vigie-rules.yml").read_text())
    names.update(r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r)
    names.update(runtime_metric_names())  # process_* and python_* from client_python
    names.add("up")
    return names


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression reads (label matchers and groupings removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    tokens = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {t for t in tokens if t not in PROMQL_WORDS}


def known(name: str, names: set[str]) -> bool:
    """Return whether name, or name less a counter/histogram suffix, is a known family."""
    return name in names or any(name.endswith(s) and name[: -len(s)] in names for s in SUFFIXES)


def test_prometheus_rules_pass_promtool_check_and_unit_tests() -> None:
    """The shipped alerting and recording rules load in promtool and their unit tests pass."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    rules = DEPLOY / "prometheus"
    assert "SUCCESS: 9 rules found" in run(promtool, "check", "rules", "vigie-rules.yml", cwd=rules)
    assert "SUCCESS" in run(promtool, "test", "rules", "vigie-rules.test.yml", cwd=rules)


def readme_check_commands() -> list[list[str]]:
    """Return the promtool and amtool commands deploy/README.md tells a reader to run."""
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [
        line.split()
        for block in blocks
        for line in block.splitlines()
        if line.split()[:1] in (["promtool"], ["amtool"])
    ]


def test_readme_check_commands_pass_as_written() -> None:
    """Each promtool/amtool command of deploy/README.md succeeds as written, from deploy/."""
    tools = {
        "promtool": ("/usr/bin/promtool", "prometheus"),
        "amtool": ("/usr/bin/amtool", "prometheus-alertmanager"),
    }
    commands = readme_check_commands()
    assert [c[:3] for c in commands] == [
        ["promtool", "check", "config"],
        ["promtool", "check", "rules"],
        ["promtool", "test", "rules"],
        ["amtool", "check-config", "alertmanager/alertmanager.yml"],
    ]
    for tool, *args in commands:
        run(require_binary(*tools[tool]), *args, cwd=DEPLOY)


def test_prometheus_config_passes_promtool() -> None:
    """The example scrape config is a valid Prometheus config once its rule file is in place."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "vigie-rules.yml")]
    run(promtool, "check", "config", "--syntax-only", "/dev/stdin", stdin=yaml.safe_dump(config))


def test_alertmanager_example_passes_amtool() -> None:
    """The Alertmanager example is accepted by amtool and routes the watchdog apart."""
    amtool = require_binary("/usr/bin/amtool", "prometheus-alertmanager")
    path = DEPLOY / "alertmanager" / "alertmanager.yml"
    run(amtool, "check-config", str(path))
    routes = [amtool, "config", "routes", "test", "--config.file", str(path)]
    assert run(*routes, "alertname=VigieWatchdog").split() == ["heartbeat"]
    assert run(*routes, "severity=critical").split() == ["astreinte-pager,dsi-mail"]


def test_rules_and_dashboard_read_only_metrics_vigie_exposes(tmp_path: Path) -> None:
    """Every metric the rules and the Grafana dashboard query exists, and each query parses."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    names = known_metrics()
    dashboard = json.loads((DEPLOY / "grafana" / "vigie-overview.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "vigie-rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) > 10
    unknown = {n for e in exprs for n in metric_names(e) if not known(n, names)}
    assert not unknown, f"queries name metrics Vigie does not expose: {sorted(unknown)}"
    # promtool parses every dashboard query as a recording rule.
    as_rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(as_rules))
    run(promtool, "check", "rules", str(path))


def test_dashboard_ids_and_grid_are_consistent() -> None:
    """Panel ids are unique and panels do not overlap, so Grafana imports the board as drawn."""
    dashboard = json.loads((DEPLOY / "grafana" / "vigie-overview.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        area = {(x, y) for x in xs for y in ys}
        assert not cells & area, f"panel {p['title']!r} overlaps another"
        cells |= area


def test_metric_name_parser_sees_through_matchers_and_groupings() -> None:
    """The query scanner finds metric names and not label names or functions."""
    expr = 'histogram_quantile(0.99, sum by (le, site) (rate(x_bucket{a="b"}[5m]))) > on (i) y'
    assert metric_names(expr) == {"x_bucket", "y"}
