"""Config load: the garbage collector paused during a load is put back as it was, error or not."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.config import load_config
from vigie.probes import default_registry

GOOD = "checks:\n  - {id: a, kind: tcp, target: '127.0.0.1:9', interval: 30s}\n"
BAD = "checks:\n  - {id: a, kind: tcp, target: '127.0.0.1:9', interval: never}\n"


@pytest.fixture
def collector_state() -> Iterator[None]:
    """Restore the collector's state whatever a test leaves."""
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("text", [GOOD, BAD], ids=["valid", "invalid"])
def test_collector_state_is_restored(
    tmp_path: Path, collector_state: None, enabled: bool, text: str
) -> None:
    """Enabled stays enabled and disabled stays disabled, after a load and after a refused one."""
    path = tmp_path / "vigie.yaml"
    path.write_text(text)
    if enabled:
        gc.enable()
    else:
        gc.disable()
    try:
        load_config(path, default_registry(), env={})
    except ConfigErrors as exc:
        assert text is BAD and "interval" in str(exc)
    assert gc.isenabled() is enabled


SHARED = """\
snmp:
  auths:
    ro: {version: 2, community: public}
checks:
  - {id: a, kind: http, target: 'http://127.0.0.1:9/'}
  - {id: b, kind: http, target: 'http://127.0.0.1:9/b', http: {}}
  - {id: c, kind: http, target: 'http://127.0.0.1:9/c', http: {reuse_connections: true}}
  - {id: d, kind: http, target: 'http://127.0.0.1:9/d', http: {reuse_connections: true}}
  - {id: e, kind: http, target: 'http://127.0.0.1:9/e', http: {method: HEAD}}
  - {id: f, kind: snmp, target: '127.0.0.1:9', snmp: {auth: ro}}
  - {id: g, kind: snmp, target: '127.0.0.2:9', snmp: {auth: ro}}
  - {id: h, kind: exporter, target: 'http://127.0.0.1:9/m', exporter: {metrics: [ups_.*]}}
  - {id: i, kind: exporter, target: 'http://127.0.0.1:9/n', exporter: {metrics: [ups_.*]}}
"""


def test_checks_with_equal_settings_share_one_object(tmp_path: Path) -> None:
    """Equal settings are one object (frozen, so shared): defaults, repeats, bound ones too."""
    (tmp_path / "vigie.yaml").write_text(SHARED)
    plan = load_config(tmp_path / "vigie.yaml", default_registry(), env={}).plan
    settings: dict[str, Any] = {cid: check.settings for cid, check in plan.items()}
    assert settings["a"] is settings["b"]  # the default, and `http: {}` equal to it
    assert settings["c"] is settings["d"]
    assert settings["c"] is not settings["a"] and settings["c"].reuse_connections
    assert settings["e"].method == "HEAD" and settings["a"].method == "GET"
    assert settings["f"] is settings["g"]  # bound to the snmp section once
    assert settings["h"] is settings["i"]  # a kind without default settings shares too


def test_kind_without_default_settings_still_asks_for_them(tmp_path: Path) -> None:
    """The exporter kind has no default (`metrics` is required): leaving it out is an error."""
    (tmp_path / "vigie.yaml").write_text(
        "checks:\n  - {id: h, kind: exporter, target: 'http://127.0.0.1:9/m'}\n"
    )
    with pytest.raises(ConfigErrors, match="metrics: required field is missing"):
        load_config(tmp_path / "vigie.yaml", default_registry(), env={})


def test_running_config_keeps_the_plan_not_the_check_models(tmp_path: Path) -> None:
    """What the daemon keeps: the plan and the budgets, without the validated check list."""
    (tmp_path / "vigie.yaml").write_text(GOOD)
    loaded = load_config(tmp_path / "vigie.yaml", default_registry(), env={})
    running = loaded.running()
    assert len(loaded.config.checks) == 1 and running.config.checks == []
    assert running.plan is loaded.plan and running.budget() == loaded.budget()
    assert running.config.scheduler == loaded.config.scheduler
    assert running.running() is running
