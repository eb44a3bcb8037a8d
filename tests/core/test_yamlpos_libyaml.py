"""libyaml reads a config as PyYAML does: same data, marks, problems and error messages.

parse_yaml takes libyaml (about ten times faster on a 20k-check config) only where its reading is
certainly PyYAML's; these tests compare both readings on every YAML file of the repository, on
the spots where the two parsers are known to differ, and on seeded random mutations of them.
"""

from __future__ import annotations

import math
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from vigie.core import yamlpos
from vigie.core.yamlpos import ConfigErrors, parse_yaml

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "out", "node_modules"}
FILES = sorted(
    p
    for p in [*ROOT.rglob("*.yaml"), *ROOT.rglob("*.yml")]
    if not SKIP & set(p.relative_to(ROOT).parts)
)
ENV = {"X": "x"}

# Where libyaml and PyYAML read differently: each must be read as PyYAML reads it.
DISAGREEMENTS = [
    "a:\t1\n",  # a tab after a colon
    "\ufeffa: 1\nb: 2\n",  # a byte order mark
    "a: 'x\ufeffy'\n",  # one inside a string
    "a: >-# comment\n  text\n",  # a block scalar header and a comment without a space
    "a: {label?: index}\n",  # `?` in a plain scalar of a flow collection
    "a: [x?y, z]\n",
    "a: [b:]\n",  # PyYAML reads {b: null}, libyaml refuses it
    "a: &r {self: *r}\n",  # a mapping holding itself
    "&a [*a]\n",  # a top-level sequence holding itself
    "a: !!set {x, y}\nb: !!omap [x: 1]\n",  # collections of other tags
    "a: x\u2028b: y\n",  # a Unicode line separator
    "a: 1\na: 2\nb: ${NOPE}\nc: ${X}\n",  # problems: duplicate key, unset variable
    "a: &x 1\nb: &x [2]\nc: *x\n",  # an anchor defined twice
    "base: &b {interval: 30s}\ncheck: {<<: *b, id: c}\n",  # merge keys
    "{a: 1}: x\n",  # a mapping as a key
    "a: [1, 2\n",  # syntax errors
    "a: b: c\n",
    "- a\nb: c\n",
    "",
]


def same(a: Any, b: Any) -> bool:
    """Return whether two readings are equal, positions of every mapping and list included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (
            getattr(a, "mark", None) == getattr(b, "mark", None)
            and getattr(a, "pos", None) == getattr(b, "pos", None)
            and list(a) == list(b)
            and all(a[k] is a or same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list):
        return (
            getattr(a, "mark", None) == getattr(b, "mark", None)
            and getattr(a, "pos", None) == getattr(b, "pos", None)
            and len(a) == len(b)
            and all(x is a or same(x, y) for x, y in zip(a, b, strict=True))
        )
    return bool(a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


def reading(text: str, libyaml: bool) -> tuple[str, Any]:
    """Return what parse_yaml makes of a text: its result, or its error's text or type."""
    try:
        return "ok", parse_yaml(text, "f.yaml", ENV, libyaml=libyaml)
    except ConfigErrors as exc:
        return "error", str(exc)
    except Exception as exc:  # the same crash both ways is the same reading
        return "crash", type(exc).__name__


def assert_same_reading(text: str) -> None:
    """Assert libyaml's reading of a text is PyYAML's."""
    fast, slow = reading(text, True), reading(text, False)
    assert fast[0] == slow[0], (text, fast, slow)
    if fast[0] == "ok":
        (data, problems, tainted), (data2, problems2, tainted2) = fast[1], slow[1]
        assert same(data, data2), text
        assert (problems, tainted) == (problems2, tainted2), text
    else:
        assert fast[1] == slow[1], text


def test_repository_files_read_the_same() -> None:
    """Every YAML file of the repository (configs, profiles, fixtures, deploy) reads the same."""
    assert len(FILES) > 20
    for path in FILES:
        assert_same_reading(path.read_text(encoding="utf-8", errors="replace"))


@pytest.mark.parametrize("text", DISAGREEMENTS)
def test_known_disagreements_read_as_pyyaml(text: str) -> None:
    """Where libyaml reads otherwise, the result and the error message are PyYAML's."""
    assert_same_reading(text)


def test_error_message_is_pyyaml_s() -> None:
    """A syntax error is worded by PyYAML, line and column included, as before libyaml."""
    kind, message = reading("checks:\n  - {id: a, kind: http\n", True)
    assert kind == "error"
    assert message.startswith("f.yaml:3:1: invalid YAML: while parsing a flow mapping")


def test_random_mutations_read_the_same() -> None:
    """Seeded mutations of the repository's files (inserted indicators, cuts, copies) agree."""
    rng = random.Random(13)
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in FILES]
    texts = [t for t in texts if len(t) < 20_000]
    pieces = [*":-{}[],'\"#&*!|>%@`?\t \n\\$", "\ufeff", "é", "${X}", "&a ", "*a", "<<: *a"]
    pieces += ["- ", "? ", "---\n", "!!str ", "|\n", ">-\n", "a?b", "\n  "]
    for _ in range(300):
        text = rng.choice(texts)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text) + 1)
            op = rng.random()
            if op < 0.5:
                text = text[:at] + rng.choice(pieces) + text[at:]
            elif op < 0.7:
                text = text[:at] + text[at + rng.randint(1, 5) :]
            else:
                start = rng.randrange(len(text) + 1)
                text = text[:at] + text[start : start + rng.randint(1, 40)] + text[at:]
        assert_same_reading(text)


def test_libyaml_is_taken_on_a_large_config() -> None:
    """A large plain config is read with libyaml: several times less CPU than PyYAML alone."""
    text = "checks:\n" + "".join(
        f"  - id: chk-{i}\n    kind: http\n    target: http://10.0.{i // 250}.{i % 250}/\n"
        f"    interval: 30s\n    labels: {{component: app-{i // 4}, site: nord}}\n"
        for i in range(2000)
    )
    costs = {}
    for libyaml in (True, False):
        started = time.process_time()
        parse_yaml(text, "f.yaml", {}, libyaml=libyaml)
        costs[libyaml] = time.process_time() - started
    assert costs[True] * 3 < costs[False], costs


# Anchors and aliases libyaml's events read without a node tree (yamlpos._EventBuilder).
ALIASES = [
    "a: &x [1, 2]\nb: *x\n",  # a list given twice: the same object, the anchor's marks
    "a: &s hello\nb: *s\nc: [*s, *s]\n",  # a scalar
    "a: &m {k: v}\nb: [*m, *m]\n",
    "a: &x 1\nb: &y [2]\nc: *x\nd: *y\n",
    "k: &e ${X}\nj: *e\nu: &u ${NOPE}\nv: *u\n",  # variables: substituted once, tainted marks
    "a: &n null\nb: *n\nc: &i 12\nd: [*i]\n",
    "a: &q x\nb: {c: *q}\n",
]


@pytest.mark.parametrize("text", ALIASES)
def test_aliases_read_as_pyyaml_from_events(text: str) -> None:
    """Anchors and aliases read as PyYAML reads them, straight from libyaml's events."""
    assert_same_reading(text)
    assert yamlpos._FastLoader is not None, "libyaml is installed with PyYAML's wheel"
    loader = yamlpos._FastLoader(text)
    loader.env, loader.problems, loader.tainted = ENV, [], set()
    try:
        yamlpos._EventBuilder(loader).document()  # no _Disagree: no node tree was needed
    finally:
        loader.dispose()


def test_large_config_is_read_without_a_node_tree() -> None:
    """Reading holds little more than the data: no tree of nodes beside it (it was 1.6x)."""
    text = "checks:\n" + "".join(
        f"  - id: chk-{i}\n    kind: http\n    target: http://10.0.{i // 250}.{i % 250}/\n"
        f"    interval: 30s\n    labels: {{component: app-{i // 4}, site: nord}}\n"
        for i in range(4000)
    )
    tracemalloc.start()
    try:
        data = parse_yaml(text, "f.yaml", {})
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data[0]["checks"]) == 4000
    assert peak < 1.3 * held, (peak, held)
