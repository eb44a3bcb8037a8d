"""YAML with positions: every mapping and list remembers its line and column, for errors.

`${NAME}` substitutes an environment variable; `$$` is a literal dollar. Errors carry the file,
line, column and field path, so a config mistake is reported where it stands.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "ConfigErrors",
    "Mark",
    "PosDict",
    "PosList",
    "load_yaml",
    "parse_yaml",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$")


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One configuration error with its place: file, line, column and field path."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigErrors(Exception):
    """Every error found in a configuration file, in file order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.column, e.path))
        super().__init__("\n".join(str(e) for e in self.errors))


Mark = tuple[int, int]


class PosDict(dict[Any, Any]):
    """A mapping from YAML that remembers where it and each of its keys stand."""

    mark: Mark = (1, 1)
    pos: dict[Any, Mark]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pos = {}


class PosList(list[Any]):
    """A sequence from YAML that remembers where it and each of its items stand."""

    mark: Mark = (1, 1)
    pos: list[Mark]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pos = []


def _mark(node: yaml.Node) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps positions and substitutes ${ENV} in strings."""

    env: Mapping[str, str]
    problems: list[tuple[Mark, str]]
    tainted: set[Mark]  # scalars (and their keys) emptied because a variable is unset


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[PosDict]:
    data = PosDict()
    data.mark = _mark(node)
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in data:
            loader.problems.append((_mark(key_node), f"duplicate key {key!r}"))
        data[key] = loader.construct_object(value_node, deep=True)
        data.pos[key] = _mark(key_node)
        if _mark(value_node) in loader.tainted:
            loader.tainted.add(_mark(key_node))


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Iterator[PosList]:
    data = PosList()
    data.mark = _mark(node)
    yield data
    for item in node.value:
        data.append(loader.construct_object(item, deep=True))
        data.pos.append(_mark(item))


def _construct_str(loader: _Loader, node: yaml.ScalarNode) -> str:
    value = loader.construct_scalar(node)
    assert isinstance(value, str)
    if "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in loader.env:
            loader.problems.append((_mark(node), f"environment variable {name} is not set"))
            loader.tainted.add(_mark(node))
            return ""
        return loader.env[name]

    return _ENV_REF.sub(substitute, value)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def load_yaml(text: str, file: str, env: Mapping[str, str]) -> Any:
    """Parse YAML keeping positions; raise ConfigErrors on syntax errors or unset variables."""
    data, problems, _ = parse_yaml(text, file, env)
    if problems:
        raise ConfigErrors([ConfigError(file, ln, col, "", msg) for (ln, col), msg in problems])
    return data


def parse_yaml(
    text: str, file: str, env: Mapping[str, str]
) -> tuple[Any, list[tuple[Mark, str]], set[Mark]]:
    """Parse YAML keeping positions; return the data, the problems found and the tainted marks.

    Only a syntax error raises: an unset variable or a duplicate key is a problem reported with
    the others, the variable's value taken as empty (its tainted marks let the caller drop the
    errors that empty value causes, so one mistake gives one error).
    """
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a control character: YAML refuses the whole text
        pos = exc.position
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        reason = f"invalid YAML: character #x{exc.character:04x} is not allowed ({exc.reason})"
        raise ConfigErrors([ConfigError(file, line, col, "", reason)]) from None
    loader.env = env
    loader.problems = []
    loader.tainted = set()
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = exc.context or ""
        if exc.context_mark is not None and exc.context_mark is not mark:
            ctx_mark = exc.context_mark
            context += f" (started at line {ctx_mark.line + 1}, column {ctx_mark.column + 1})"
        reason = ": ".join(p for p in (context, exc.problem) if p)
        raise ConfigErrors([ConfigError(file, line, col, "", f"invalid YAML: {reason}")]) from None
    finally:
        loader.dispose()
    return data, loader.problems, loader.tainted
