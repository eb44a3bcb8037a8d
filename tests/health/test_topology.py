"""Topology in the config: references, cycles and loose ends reported with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.config import load_config
from vigie.monitor.health.topology import AnyOf, find_cycle
from vigie.probes import default_registry

BASE = """\
sites:
  - {id: nord, name: Datacenter Nord}
checks:
  - {id: chk-a, kind: tcp, target: '127.0.0.1:1'}
  - {id: chk-b, kind: tcp, target: '127.0.0.1:2'}
components:
"""


def load_text(tmp_path: Path, text: str) -> list[str]:
    """Load a config and return its error messages (empty when valid)."""
    path = tmp_path / "vigie.yaml"
    path.write_text(text)
    try:
        load_config(path, default_registry(), env={})
    except ConfigErrors as exc:
        return [str(e).removeprefix(str(path)) for e in exc.errors]
    return []


def test_dependency_cycle_is_printed(tmp_path: Path) -> None:
    """A cycle is an error that prints the cycle, at the component's line."""
    errors = load_text(
        tmp_path,
        BASE
        + (
            "  - {id: a, kind: server, site: nord, checks: [chk-a], depends_on: [b]}\n"
            "  - {id: b, kind: server, site: nord, checks: [chk-b], depends_on: [c]}\n"
            "  - {id: c, kind: vm, site: nord, selector: {x: y}, depends_on: [a]}\n"
        ),
    )
    assert errors == [":7:56: components[0].depends_on: dependency cycle: a -> b -> c -> a"]


def test_unknown_references_are_errors(tmp_path: Path) -> None:
    """Unknown site, dependency, check and redundancy member are each named with their place."""
    errors = load_text(
        tmp_path,
        BASE
        + (
            "  - id: a\n    kind: server\n    site: sud\n    checks: [chk-a, chk-z]\n"
            "    depends_on: [{any_of: [b, ghost], need: 1}]\n"
            "  - {id: b, kind: server, site: nord, checks: [chk-b]}\n"
        ),
    )
    assert errors == [
        ":9:5: components[0].site: unknown site 'sud'; known sites: nord",
        ":10:21: components[0].checks[1]: unknown check 'chk-z'",
        ":11:18: components[0].depends_on[0]: unknown component 'ghost'",
    ]


def test_loose_ends_are_warnings(tmp_path: Path) -> None:
    """A component without checks and a check feeding no component are warnings, not errors."""
    path = tmp_path / "vigie.yaml"
    path.write_text(BASE + "  - {id: a, kind: server, site: nord}\n")
    loaded = load_config(path, default_registry(), env={})
    assert [str(w).removeprefix(str(path)) for w in loaded.warnings] == [
        ":4:5: checks[0]: check 'chk-a' feeds no component",
        ":5:5: checks[1]: check 'chk-b' feeds no component",
        ":7:5: components[0]: component 'a' has no checks",
    ]


def test_two_power_feeds_are_a_redundancy_group(tmp_path: Path) -> None:
    """powered_by with two feeds means A/B power: one feed is enough."""
    path = tmp_path / "vigie.yaml"
    path.write_text(
        BASE
        + (
            "  - {id: ups-a, kind: ups, site: nord, checks: [chk-a]}\n"
            "  - {id: ups-b, kind: ups, site: nord, checks: [chk-b]}\n"
            "  - {id: srv, kind: server, site: nord, powered_by: [ups-a, ups-b]}\n"
        )
    )
    loaded = load_config(path, default_registry(), env={})
    srv = loaded.config.components[2]
    assert srv.powered_by == [AnyOf(any_of=["ups-a", "ups-b"], need=1)]


def test_bad_rule_expression_is_rejected(tmp_path: Path) -> None:
    """A rule whose condition cannot be parsed is a config error naming the expression."""
    errors = load_text(
        tmp_path,
        BASE + "  - {id: a, kind: server, checks: [chk-a]}\n"
        "rules:\n  - {name: x, expr: 'probe_success = = 0', checks: [chk-a]}\n",
    )
    assert len(errors) == 1
    assert "rules[0].expr: invalid condition 'probe_success = = 0'" in errors[0]


def test_maintenance_unknown_target(tmp_path: Path) -> None:
    """A maintenance window on an unknown target is an error."""
    errors = load_text(
        tmp_path,
        BASE + "  - {id: a, kind: server, checks: [chk-a, chk-b]}\n"
        "maintenance:\n  - {target: nowhere, end: '2030-01-01T00:00:00Z'}\n",
    )
    assert errors == [":9:6: maintenance[0].target: unknown component or site 'nowhere'"]


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": ["b"], "b": []}, None),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["b"]}, ["b", "c", "b"]),
    ],
)
def test_find_cycle(edges: dict[str, list[str]], cycle: list[str] | None) -> None:
    """find_cycle returns the cycle path or None."""
    assert find_cycle(edges) == cycle
