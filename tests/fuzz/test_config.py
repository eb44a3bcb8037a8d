"""Fuzz regression of the config loader: kept inputs, then a short random run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import corpus, given_test, replay
from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.config import load_config
from vigie.probes import default_registry

TARGET = "config"


@pytest.mark.parametrize("seed", corpus(TARGET), ids=lambda p: p.name)
def test_seed_is_handled(seed: Path) -> None:
    """Every kept input (seeds, past crashes) is parsed or refused with the documented error."""
    replay(TARGET, seed)


def test_random_input_is_handled() -> None:
    """A short Hypothesis run (make fuzz runs the long one under atheris) finds no crash."""
    given_test(TARGET, 3)()


def test_control_character_is_a_config_error_naming_its_place(tmp_path: Path) -> None:
    """Found by fuzzing: a C0 control character gave a raw yaml ReaderError, now one ConfigError
    naming file, line and column."""
    path = tmp_path / "vigie.yaml"
    path.write_text("defaults:\n  interval: 3\x07s\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, default_registry())
    (error,) = caught.value.errors
    assert str(error).startswith(f"{path}:2:14: invalid YAML: character #x0007 is not allowed")


def test_value_of_no_union_shape_is_an_error(tmp_path: Path) -> None:
    """Found by fuzzing: a list where a group member (a name or a group) goes raised ConfigErrors
    with no error at all; now its error names the place."""
    path = tmp_path / "vigie.yaml"
    path.write_text(
        "checks:\n"
        '  - {id: a, kind: tcp, target: "127.0.0.1:1", labels: {component: a}}\n'
        "components:\n"
        "  - {id: a, kind: server, selector: {component: a}}\n"
        "  - {id: b, kind: business_service, depends_on: [{any_of: [[], a], need: 1}]}\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, default_registry(), env={})
    (error,) = caught.value.errors
    assert (error.line, error.path) == (5, "components[1].depends_on[0]"), error
    assert "valid string" in error.message
