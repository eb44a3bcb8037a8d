"""Durations in the config: `30s`, `1m30s`, `500ms` or a number of seconds, as floats."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^-?(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


def parse_duration(value: Any) -> float:
    """Return seconds from a duration string or number; raise ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 1m or 500ms")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        return _text_seconds(value)
    else:
        raise ValueError(f"must be a duration such as 30s, 1m or 500ms, got {value!r}")
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


@functools.lru_cache(maxsize=4096)
def _text_seconds(value: str) -> float:
    """Return seconds from a duration string: a config repeats a few (`30s`) thousands of
    times, each read once (and one float for all)."""
    text = value.strip()
    if not _WHOLE.match(text):
        raise ValueError(f"must be a duration such as 30s, 1m or 500ms, got {value!r}")
    sign = -1.0 if text.startswith("-") else 1.0
    seconds = sign * sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
                {"type": "number", "exclusiveMinimum": 0},
            ]
        }
    ),
]
