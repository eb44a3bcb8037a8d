"""YAML with positions: every key and item knows its line and column; errors say where."""

from __future__ import annotations

import pytest

from vigie.core.yamlpos import ConfigError, ConfigErrors, PosDict, PosList, load_yaml, parse_yaml


def test_positions_of_keys_and_items() -> None:
    """Lines and columns start at 1, as an editor shows them."""
    data = load_yaml("checks:\n  - id: a\n    kind: http\n", "vigie.yaml", {})
    assert isinstance(data, PosDict) and data.pos["checks"] == (1, 1)
    checks = data["checks"]
    assert isinstance(checks, PosList) and checks.pos[0] == (2, 5)
    assert checks[0].pos["kind"] == (3, 5)


def test_environment_variables_are_substituted() -> None:
    """`${NAME}` takes the environment's value; `$$` is a dollar."""
    data = load_yaml("a: ${HOST}:9090\nb: cost $$5\n", "f.yaml", {"HOST": "prom"})
    assert data == {"a": "prom:9090", "b": "cost $5"}


def test_unset_variable_and_duplicate_key_are_errors_with_places() -> None:
    """Both are reported at once, each with file, line and column."""
    with pytest.raises(ConfigErrors) as caught:
        load_yaml("a: ${NOPE}\na: 2\n", "f.yaml", {})
    assert [(e.line, e.message) for e in caught.value.errors] == [
        (1, "environment variable NOPE is not set"),
        (2, "duplicate key 'a'"),
    ]


def test_parse_yaml_returns_problems_and_tainted_marks() -> None:
    """The config loader gets problems as data, to report one error per mistake."""
    data, problems, tainted = parse_yaml("port: ${PORT}\n", "f.yaml", {})
    assert data == {"port": ""} and problems and (1, 7) in tainted


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("a: [1, 2\n", (2, 1), "invalid YAML"),
        ("a: \x07\n", (1, 4), "character #x0007 is not allowed"),
    ],
)
def test_syntax_errors_name_the_place(text: str, where: tuple[int, int], reason: str) -> None:
    """A syntax error or a control character stops the load with its position."""
    with pytest.raises(ConfigErrors) as caught:
        load_yaml(text, "f.yaml", {})
    (error,) = caught.value.errors
    assert (error.line, error.column) == where and reason in error.message
    assert str(error).startswith(f"f.yaml:{where[0]}:{where[1]}: ")


def test_config_error_text_names_file_line_field() -> None:
    """The one-line form an operator reads."""
    error = ConfigError("vigie.yaml", 12, 5, "checks[3].interval", "must be a duration")
    assert str(error) == "vigie.yaml:12:5: checks[3].interval: must be a duration"


@pytest.mark.parametrize(
    "text", ["{a: 1}: x\n", "? [1, 2]\n: x\nok: 1\n", "a:\n  ? {b: c}\n  : d\n"]
)
def test_a_collection_as_a_key_is_an_error_not_a_crash(text: str) -> None:
    """A mapping or list used as a key is named with its place, never a TypeError."""
    with pytest.raises(ConfigErrors) as caught:
        load_yaml(text, "f.yaml", {})
    assert [e.message for e in caught.value.errors] == ["a mapping or a list cannot be a key"]
