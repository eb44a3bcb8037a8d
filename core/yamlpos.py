"""YAML with positions: every mapping and list remembers its line and column, for errors.

`${NAME}` substitutes an environment variable; `$$` is a literal dollar. Errors carry the file,
line, column and field path, so a config mistake is reported where it stands.

libyaml (PyYAML's C parser) reads a large config about ten times faster than the pure-Python
one; it is used when its reading is certainly the same, and the pure-Python parser reads the
text otherwise (and words every error, so messages are the same either way).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
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
        if not isinstance(key_node, yaml.ScalarNode):  # `{a: 1}: x`: unhashable, and no name
            loader.problems.append((_mark(key_node), "a mapping or a list cannot be a key"))
            loader.tainted.update((_mark(key_node), data.mark))  # what follows from it: one error
            continue
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

# Where libyaml and PyYAML read a text differently (found by differential fuzzing): tabs, BOMs
# and the Unicode line breaks; a block scalar header followed by `#` (`>-#`, PyYAML refuses); and
# `?` inside a plain scalar of a flow collection (PyYAML refuses, libyaml takes it).
_LIBYAML_DIFFERS = "\t\ufeff\x85\u2028\u2029"
_BLOCK_HEADER_COMMENT = re.compile(r"[|>][-+0-9]*#")


def _libyaml_may_differ(text: str) -> bool:
    """Return whether the text holds a character or a block header libyaml reads otherwise."""
    if any(char in text for char in _LIBYAML_DIFFERS):
        return True
    return ("|" in text or ">" in text) and _BLOCK_HEADER_COMMENT.search(text) is not None


class _Disagree(Exception):
    """libyaml read something PyYAML reads differently: read the text with PyYAML instead."""


def _flow_question_mark(node: yaml.MappingNode | yaml.SequenceNode) -> None:
    """Raise _Disagree for a `?` in a plain scalar directly in a flow collection."""
    items = node.value if isinstance(node, yaml.SequenceNode) else chain.from_iterable(node.value)
    for item in items:
        if isinstance(item, yaml.ScalarNode) and not item.style and "?" in item.value:
            raise _Disagree


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


class _Builder:
    """Builds the data of a composed document as the constructors above do, 3 times faster.

    The same PosDict, PosList, marks, problems and tainted marks, in the same order, and the
    same object for a node reached twice through an alias; other scalar tags go to the
    loader's constructors; a collection of another tag (!!set, !!omap) or one that holds
    itself raises _Disagree. A class, not a closure: a recursive closure is a reference cycle
    that would keep the whole document alive until the garbage collector runs.
    """

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.built: dict[int, Any] = {}  # id(node) -> its collection: a node reached again
        self.building: set[int] = set()  # a collection holding itself: PyYAML's rules differ

    def build(self, node: yaml.Node) -> Any:
        """Return the data of a node."""
        found = self.built.get(id(node))
        if found is not None:
            return found
        if id(node) in self.building:
            raise _Disagree
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag != _STR:
                return self.loader.construct_object(node, deep=True)
            return _construct_str(self.loader, node) if "$" in node.value else node.value
        if isinstance(node, yaml.MappingNode) and tag == _MAP:
            return self._mapping(node)
        if isinstance(node, yaml.SequenceNode) and tag == _SEQ:
            return self._sequence(node)
        raise _Disagree

    def _mapping(self, node: yaml.MappingNode) -> PosDict:
        """Return a mapping's PosDict: keys, values, their marks and duplicate-key problems."""
        self.building.add(id(node))
        mapping = PosDict()
        mapping.mark = _mark(node)
        if node.flow_style:
            _flow_question_mark(node)
        loader, build, tainted = self.loader, self.build, self.loader.tainted
        loader.flatten_mapping(node)
        scalar = yaml.ScalarNode
        for key_node, value_node in node.value:  # a plain string is taken in place: most are
            if not isinstance(key_node, scalar):
                raise _Disagree  # a collection as a key: PyYAML's path reports it
            key = (
                key_node.value
                if key_node.tag == _STR
                and key_node.__class__ is scalar
                and "$" not in key_node.value
                else build(key_node)
            )
            key_at = key_node.start_mark
            key_mark = (key_at.line + 1, key_at.column + 1)
            if key in mapping:
                loader.problems.append((key_mark, f"duplicate key {key!r}"))
            mapping[key] = (
                value_node.value
                if value_node.tag == _STR
                and value_node.__class__ is scalar
                and "$" not in value_node.value
                else build(value_node)
            )
            mapping.pos[key] = key_mark
            if tainted and _mark(value_node) in tainted:
                tainted.add(key_mark)
        self.built[id(node)] = mapping
        return mapping

    def _sequence(self, node: yaml.SequenceNode) -> PosList:
        """Return a sequence's PosList with each item's mark."""
        self.building.add(id(node))
        items = PosList()
        items.mark = _mark(node)
        if node.flow_style:
            _flow_question_mark(node)
        build, marks = self.build, items.pos
        for item in node.value:
            items.append(build(item))
            item_at = item.start_mark
            marks.append((item_at.line + 1, item_at.column + 1))
        self.built[id(node)] = items
        return items


class _EventBuilder:
    """Builds the data straight from libyaml's events, as _Builder builds it from nodes.

    No node tree is held: at 20,000 checks the tree weighed about 140 MB beside the data,
    and the strings taken from it kept its memory pages from going back to the system, so
    a daemon's resident memory stayed that much larger for its whole life. An alias gives
    the anchored value itself, with the anchor's mark, as a node reached twice does. A merge
    key (`<<`), a collection as a key, an alias of a collection being built or a
    collection's other tag raises _Disagree: the text is then composed into nodes and read
    by _Builder.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.events = loader.get_event
        self.tainted: set[Mark] = loader.tainted
        self.anchors: dict[str, tuple[Any, Mark]] = {}  # anchor -> value, its mark
        self.named: set[str] = set()  # anchors met, built or being built
        self.plain: dict[str, str] = loader._plain_tags  # plain scalars' tags, by text

    def document(self) -> Any:
        """Return the single document's data, None for an empty stream."""
        events = self.events
        events()  # StreamStartEvent
        if self.loader.check_event(yaml.StreamEndEvent):
            return None
        events()  # DocumentStartEvent
        data, _ = self.value(events())
        events()  # DocumentEndEvent
        if not self.loader.check_event(yaml.StreamEndEvent):
            raise _Disagree  # more than one document: the composer words the error
        return data

    def value(self, event: Any) -> tuple[Any, Mark]:
        """Return the data starting at this event, and its mark (an alias: its anchor's)."""
        cls, at = event.__class__, event.start_mark
        mark = (at.line + 1, at.column + 1)
        if cls is yaml.AliasEvent:
            found = self.anchors.get(event.anchor)
            if found is None:  # unknown, or a collection holding itself
                raise _Disagree
            return found
        anchor = event.anchor
        if anchor is not None:
            if anchor in self.named:
                raise _Disagree  # an anchor defined twice: the composer words the error
            self.named.add(anchor)
        if cls is yaml.ScalarEvent:
            data = self.scalar(event)
        elif cls is yaml.MappingStartEvent and event.tag in (None, "!", _MAP):
            data = self.mapping(event, mark)
        elif cls is yaml.SequenceStartEvent and event.tag in (None, "!", _SEQ):
            data = self.sequence(event, mark)
        else:
            raise _Disagree
        if anchor is not None:
            self.anchors[anchor] = (data, mark)
        return data, mark

    def scalar(self, event: Any) -> Any:
        """Return a scalar's value: a string in place, else the loader's constructor's."""
        tag, value = event.tag, event.value
        if tag is None or tag == "!":
            if not event.implicit[0]:  # quoted, or a bare `!`: a string (no path resolvers)
                tag = _STR
            else:
                tag = self.plain.get(value) or self.loader.resolve(
                    yaml.ScalarNode, value, event.implicit
                )
        if tag == _STR and "$" not in value:
            return value
        if tag in (_MERGE, _VALUE):
            raise _Disagree
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
        if tag == _STR:
            return _construct_str(self.loader, node)
        return self.loader.construct_object(node, deep=True)

    def mapping(self, start: Any, mark: Mark) -> PosDict:
        """Return a mapping's PosDict: keys, values, their marks and duplicate-key problems."""
        mapping = PosDict()
        mapping.mark = mark
        flow, events, tainted = start.flow_style, self.events, self.tainted
        problems, pos = self.loader.problems, mapping.pos
        while True:
            key_event = events()
            if key_event.__class__ is yaml.MappingEndEvent:
                return mapping
            if key_event.__class__ is not yaml.ScalarEvent or key_event.anchor is not None:
                raise _Disagree  # a collection, an alias or an anchor as a key
            if flow and _plain_question(key_event):
                raise _Disagree
            key = self.scalar(key_event)
            key_at: Any = key_event.start_mark
            key_mark = (key_at.line + 1, key_at.column + 1)
            if key in mapping:
                problems.append((key_mark, f"duplicate key {key!r}"))
            value_event = events()
            if flow and _plain_question(value_event):
                raise _Disagree
            mapping[key], value_mark = self.value(value_event)
            pos[key] = key_mark
            if tainted and value_mark in tainted:
                tainted.add(key_mark)

    def sequence(self, start: Any, mark: Mark) -> PosList:
        """Return a sequence's PosList with each item's mark."""
        items = PosList()
        items.mark = mark
        flow, events, marks = start.flow_style, self.events, items.pos
        while True:
            event = events()
            if event.__class__ is yaml.SequenceEndEvent:
                return items
            if flow and _plain_question(event):
                raise _Disagree
            item, item_mark = self.value(event)
            items.append(item)
            marks.append(item_mark)


def _plain_question(event: Any) -> bool:
    """True for a plain scalar holding `?` (in a flow collection: PyYAML refuses it)."""
    return event.__class__ is yaml.ScalarEvent and not event.style and "?" in event.value


_MERGE, _VALUE = "tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"


_FastLoader: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):
    _resolve: Callable[..., Any] = yaml.CSafeLoader.resolve  # untyped in the stubs

    class _CLoader(yaml.CSafeLoader):
        """libyaml's parser; the data is built by _Builder."""

        env: Mapping[str, str]
        problems: list[tuple[Mark, str]]
        tainted: set[Mark]

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._plain_tags: dict[str, str] = {}

        def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
            """Resolve a tag as SafeLoader does, remembering each plain scalar's tag.

            A plain scalar's tag depends on its text alone (SafeLoader has no path
            resolvers), and the same texts (durations, kinds, labels) come back by thousands.
            """
            if kind is not yaml.ScalarNode or not implicit[0]:
                return str(_resolve(self, kind, value, implicit))
            tag = self._plain_tags.get(value)
            if tag is None:
                tag = self._plain_tags[value] = str(_resolve(self, kind, value, implicit))
            return tag

    _FastLoader = _CLoader


def _parse_fast(
    text: str, env: Mapping[str, str]
) -> tuple[Any, list[tuple[Mark, str]], set[Mark]] | None:
    """Parse with libyaml; None when it is missing, may read the text otherwise, or fails.

    From the events first; where they cannot say it as PyYAML would (_Disagree: a merge key,
    another tag...), the text is composed into nodes and read by _Builder.
    """
    if _FastLoader is None or _libyaml_may_differ(text):
        return None
    for build in (_from_events, _from_nodes):
        loader = _FastLoader(text)
        loader.env = env
        loader.problems = []
        loader.tainted = set()
        try:
            data = build(loader)
        except _Disagree:
            if build is _from_nodes:
                return None
            continue
        except Exception:  # any failure: PyYAML reads the text again and words the error
            return None
        finally:
            loader.dispose()
        return data, loader.problems, loader.tainted
    return None


def _from_events(loader: Any) -> Any:
    """Return the document's data built from libyaml's events."""
    return _EventBuilder(loader).document()


def _from_nodes(loader: Any) -> Any:
    """Return the document's data built from libyaml's node tree."""
    root = loader.get_single_node()
    return None if root is None else _Builder(loader).build(root)


def load_yaml(text: str, file: str, env: Mapping[str, str]) -> Any:
    """Parse YAML keeping positions; raise ConfigErrors on syntax errors or unset variables."""
    data, problems, _ = parse_yaml(text, file, env)
    if problems:
        raise ConfigErrors([ConfigError(file, ln, col, "", msg) for (ln, col), msg in problems])
    return data


def parse_yaml(
    text: str, file: str, env: Mapping[str, str], *, libyaml: bool = True
) -> tuple[Any, list[tuple[Mark, str]], set[Mark]]:
    """Parse YAML keeping positions; return the data, the problems found and the tainted marks.

    Only a syntax error raises: an unset variable or a duplicate key is a problem reported with
    the others, the variable's value taken as empty (its tainted marks let the caller drop the
    errors that empty value causes, so one mistake gives one error). libyaml=False reads with
    PyYAML alone: the reference libyaml's reading is tested against.
    """
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a control character: YAML refuses the whole text
        pos = exc.position
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        reason = f"invalid YAML: character #x{exc.character:04x} is not allowed ({exc.reason})"
        raise ConfigErrors([ConfigError(file, line, col, "", reason)]) from None
    fast = _parse_fast(text, env) if libyaml else None
    if fast is not None:
        loader.dispose()
        return fast
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
