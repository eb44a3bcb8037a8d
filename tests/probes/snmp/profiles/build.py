"""Profiles written in a test: YAML text to a validated Profile, one evaluated poll."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from vigie.core.results import Sample
from vigie.probes.snmp.profiles import Collected, Profile, evaluate


def profile(text: str) -> Profile:
    """Validate a profile given as YAML text (through the loader, positions included)."""
    from vigie.core.yamlpos import load_yaml

    return Profile.model_validate(load_yaml(textwrap.dedent(text), "t.yaml", {}))


def write_profile(directory: Path, name: str, text: str) -> Path:
    """Write a profile file and return its path."""
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def run(prof: Profile, data: Collected, previous: Any = None) -> tuple[list[Sample], list[str]]:
    """Evaluate one profile; return the samples and the logged event names."""
    events: list[str] = []
    samples, _ = evaluate([prof], data, previous or {}, lambda event, **_: events.append(event))
    return samples, events


def by_name(samples: list[Sample], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Return one family's samples by labels."""
    return {s.labels: s.value for s in samples if s.name == name}


MINIMAL = """
source: test
metrics:
  - {name: up_seconds, oid: 1.3.6.1.2.1.1.3.0, type: gauge, unit: seconds, scale: 0.01,
     help: Uptime.}
"""
