"""The detection budget where users see it: /api/v1/components, the component page, /metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.waiting import wait_for
from tests.web.outage import fetch, running_hospital
from vigie.monitor.config import LoadedConfig


def _slow_server(config: dict[str, Any]) -> None:
    """srv-00 is declared down only after 20 s of failure (every check: 1 s interval, 500 ms)."""
    config["rules"].append(
        {
            "name": "srv_down",
            "expr": "probe_success == 0",
            "severity": "down",
            "for": "20s",
            "checks": ["chk-srv-00"],
        }
    )


async def _listed(daemon: Any) -> dict[str, Any]:
    """Return /api/v1/components by id once the first evaluation has listed every component."""
    rows: dict[str, Any] = {}

    async def complete() -> bool:
        _, body = await fetch(daemon, "/api/v1/components")
        rows.update({row["id"]: row for row in json.loads(body)})
        return len(rows) == len(daemon.loaded.config.components)

    await wait_for(complete, "every component in /api/v1/components")
    return rows


def _metric(text: str, component: str) -> str:
    """Return the vigie_page_budget_seconds line of one component."""
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("vigie_page_budget_seconds{") and f'component="{component}"' in line
    ]
    assert len(lines) == 1, lines
    return lines[0]


async def test_budget_in_api_page_and_metrics(tmp_path: Path) -> None:
    """A slow server check sets its server's and its application's budget, shown everywhere."""
    async with running_hospital(tmp_path, config_hook=_slow_server) as (daemon, _):
        rows = await _listed(daemon)
        # 1 s interval + 0.5 s timeout + 20 s for + 0.5 s (its SAN and UPS checks' timeout)
        # + 10 s group_wait (the default: no alerting block).
        assert rows["srv-00"]["budget"] == {
            "seconds": 32.0,
            "target": 60.0,
            "over_target": False,
            "tier": 1,
            "check": "chk-srv-00",
            "via": "srv-00",
            "rule": "srv_down",
            "interval": 1.0,
            "timeout": 0.5,
            "for": 20.0,
            "confirm": 0.5,
            "group_wait": 10.0,
        }
        app = rows["app-dpi-00"]["budget"]  # runs on srv-00: detected through it at worst
        assert (app["seconds"], app["via"], app["tier"]) == (32.0, "srv-00", 1)
        assert rows["app-dpi-06"]["budget"]["seconds"] == 12.0  # 1 + 0.5 + 0 + 0.5 + 10

        status, page = await fetch(daemon, "/component/app-dpi-00")
        assert status == 200
        assert "Detection budget: paged at worst 32 s after a fault" in page
        assert "(target for tier 1: 60 s)" in page
        assert 'of <a href="/component/srv-00">' in page

        status, metrics = await fetch(daemon, "/metrics")
        assert status == 200
        assert "# TYPE vigie_page_budget_seconds gauge" in metrics
        line = _metric(metrics, "srv-00")
        assert 'kind="server"' in line and 'tier="1"' in line and line.endswith(" 32.0")


async def test_budget_follows_a_reload(tmp_path: Path) -> None:
    """After a reload that slows a check, the gauge and the API give the new budget."""
    async with running_hospital(tmp_path) as (daemon, _):
        await _listed(daemon)
        _, metrics = await fetch(daemon, "/metrics")
        assert _metric(metrics, "srv-00").endswith(" 12.0")
        path = daemon.loaded.path
        config = yaml.safe_load(path.read_text())
        _slow_server(config)
        config["health"]["confirm_max"] = "2s"
        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        assert await daemon.reload() == []
        assert isinstance(daemon.loaded, LoadedConfig)
        _, metrics = await fetch(daemon, "/metrics")
        # 1 + 0.5 + 20 s for + 0.5 + 10, then the app behind it too; confirm_max 2 s > 0.5 s.
        assert _metric(metrics, "srv-00").endswith(" 32.0")
        rows = await _listed(daemon)
        assert rows["app-dpi-00"]["budget"]["seconds"] == 32.0


async def test_component_without_budget_says_so(tmp_path: Path) -> None:
    """A component no check can see has a null budget in the API and says so on its page."""

    def blind(config: dict[str, Any]) -> None:
        config["components"].append({"id": "paper", "kind": "application", "site": "nord"})

    async with running_hospital(tmp_path, config_hook=blind) as (daemon, _):
        rows = await _listed(daemon)
        assert rows["paper"]["budget"] is None
        _, page = await fetch(daemon, "/component/paper")
        assert "Detection budget: none (no check can see this component fail)." in page
