"""Config load: the garbage collector paused during a load is put back as it was, error or not."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

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
