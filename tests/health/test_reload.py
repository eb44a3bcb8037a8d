"""A reload that changes the topology keeps the open incidents it leaves alone (issue 11 p. 4).

Through the daemon's own reload: a Daemon on the test hospital with alerting (not started, so
nothing leaves the process; what it would send is queued in its outbox and counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.health.hospital import hospital
from vigie.core.results import ProbeResult
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.probes import default_registry
from vigie.probes.http import make_session

UP = ProbeResult(True, 0.01)
DOWN = ProbeResult(False, 0.5, error="timeout after 0.5s")


def config_with(tmp_path: Path, extra_app: bool) -> dict[str, Any]:
    """The test hospital with alerting and a state_dir; extra_app adds one application."""
    config = hospital(interval="10s")
    config["state_dir"] = str(tmp_path / "state")
    config["alerting"] = {"alertmanagers": ["http://127.0.0.1:9"], "watchdog": False}
    if extra_app:
        config["components"].append(
            {"id": "app-new", "kind": "application", "site": "bellevue", "depends_on": ["srv-15"]}
        )
    return config


def feed(daemon: Daemon, failing: set[str]) -> None:
    """Every check reports through the result store (as the scheduler's results do)."""
    for check_id in daemon.loaded.plan:
        comp = check_id.removeprefix("chk-")
        daemon.store.update(check_id, DOWN if comp in failing else UP)


async def test_reload_keeps_untouched_incident_without_notification(tmp_path: Path) -> None:
    """An application added elsewhere: srv-00's incident keeps its key, start and confirmation,
    and the reload queues no notification at all."""
    (tmp_path / "state").mkdir()
    path = tmp_path / "vigie.yaml"
    path.write_text(yaml.safe_dump(config_with(tmp_path, extra_app=False)))
    registry = default_registry()
    async with make_session() as session:
        daemon = Daemon(load_config(path, registry, env={}), registry, session, env={})
        try:
            feed(daemon, {"srv-00", "app-dpi-00", "app-dpi-20"})
            daemon.health.evaluate()
            feed(daemon, {"srv-00", "app-dpi-00", "app-dpi-20"})  # its SAN and UPS answered
            before = daemon.health.evaluate().incidents["component:srv-00"]
            assert before.confirmed
            assert daemon.alerts is not None
            queued = dict(daemon.alerts.queued())
            assert sum(queued.values()) == 1, "the one page, queued for Alertmanager"
            path.write_text(yaml.safe_dump(config_with(tmp_path, extra_app=True)))
            assert await daemon.reload() == []
            assert "app-new" in daemon.health.engine.topology.components, "topology rebuilt"
            after = daemon.health.evaluate().incidents["component:srv-00"]
            assert (after.key, after.started_at, after.confirmed, after.impacted) == (
                before.key,
                before.started_at,
                True,
                before.impacted,
            )
            assert dict(daemon.alerts.queued()) == queued, "the reload notified something"
        finally:
            await daemon.stop()
