"""A ProbeResult on the bus: compact versioned JSON, bounded, and a strict decoder.

The decoder reads whatever reaches the results subject: anything malformed, oversized or
out of bounds is refused with a reason (counted by `vigie run`), never raised past it.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, cast

from vigie.core.results import MetricType, ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise

VERSION = 1
MAX_SAMPLES = 10_000
MAX_PHASES = 64
MAX_HELP_CHARS = 1024
MAX_NAME_CHARS = 200
_TYPES: frozenset[str] = frozenset({"gauge", "counter", "info", "stateset"})
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_CHECK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,254}$")
_WORKER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DecodeError(ValueError):
    """A message on the results subject that is not a result; reason is a short metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BusResult:
    """A decoded result: which check, which worker ran it, and the result."""

    check_id: str
    worker: str
    result: ProbeResult


def subject_token(check_id: str) -> str:
    """Return a check id as one NATS subject token (its dots escaped; ids hold no % or space)."""
    return check_id.replace("%", "%25").replace(".", "%2E")


def encode(check_id: str, worker: str, result: ProbeResult, limit: int) -> bytes:
    """Encode a result (without its debug logs); past limit bytes, without its samples."""
    body: dict[str, Any] = {
        "v": VERSION,
        "id": check_id,
        "w": worker,
        "ok": result.success,
        "d": result.duration,
        "t": result.timestamp,
        "e": result.error,
        "p": [[name, seconds] for name, seconds in result.phases],
        "s": [
            [s.name, s.value, [list(kv) for kv in s.labels], s.type, s.help] for s in result.samples
        ],
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) <= limit:
        return data
    body["s"] = []
    note = f"result too large for the bus ({len(data)} bytes): samples dropped"
    body["e"] = bound_text(f"{result.error}; {note}" if result.error else note)
    return json.dumps(body, separators=(",", ":")).encode()


def _number(value: Any, what: str) -> float:
    """Return a JSON number as a float; bools and other types are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"bad_{what}")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise DecodeError(f"bad_{what}") from None


def _text(value: Any, what: str, limit: int) -> str:
    """Return a JSON string within limit characters, sanitised."""
    if not isinstance(value, str) or len(value) > limit:
        raise DecodeError(f"bad_{what}")
    return sanitise(value, limit) if value else value


def _sample(raw: Any) -> Sample:
    """Decode one sample: [name, value, [[label, value]...], type, help]."""
    if not isinstance(raw, list) or len(raw) != 5:
        raise DecodeError("bad_sample")
    name, value, labels, kind, help_ = raw
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _METRIC.match(name):
        raise DecodeError("bad_sample")
    if not isinstance(labels, list) or len(labels) > 64:
        raise DecodeError("bad_sample")
    pairs: list[tuple[str, str]] = []
    for pair in labels:
        if not isinstance(pair, list) or len(pair) != 2:
            raise DecodeError("bad_sample")
        label, text = pair
        if not isinstance(label, str) or len(label) > MAX_NAME_CHARS or not _LABEL.match(label):
            raise DecodeError("bad_sample")
        pairs.append((label, _text(text, "sample", 4096)))
    if kind not in _TYPES:
        raise DecodeError("bad_sample")
    return Sample(
        name,
        _number(value, "sample"),
        tuple(pairs),
        cast(MetricType, kind),
        _text(help_, "sample", MAX_HELP_CHARS),
    )


def decode(data: bytes, limit: int) -> BusResult:
    """Decode a message of the results subject; raise DecodeError naming why it is refused."""
    if len(data) > limit:
        raise DecodeError("too_large")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise DecodeError("not_json") from None
    if not isinstance(body, dict):
        raise DecodeError("not_an_object")
    if body.get("v") != VERSION:
        raise DecodeError("version")
    check_id, worker = body.get("id"), body.get("w")
    if not isinstance(check_id, str) or not _CHECK_ID.match(check_id):
        raise DecodeError("bad_check_id")
    if not isinstance(worker, str) or not _WORKER.match(worker):
        raise DecodeError("bad_worker")
    success = body.get("ok")
    if not isinstance(success, bool):
        raise DecodeError("bad_success")
    duration = _number(body.get("d"), "duration")
    timestamp = _number(body.get("t"), "timestamp")
    if not (0 <= duration < 86400 and math.isfinite(timestamp) and timestamp > 0):
        raise DecodeError("bad_time")
    error = body.get("e")
    if error is not None and not isinstance(error, str):
        raise DecodeError("bad_error")
    phases_raw, samples_raw = body.get("p", []), body.get("s", [])
    if not isinstance(phases_raw, list) or len(phases_raw) > MAX_PHASES:
        raise DecodeError("bad_phases")
    if not isinstance(samples_raw, list) or len(samples_raw) > MAX_SAMPLES:
        raise DecodeError("bad_samples")
    phases: list[tuple[str, float]] = []
    for phase in phases_raw:
        if not isinstance(phase, list) or len(phase) != 2:
            raise DecodeError("bad_phases")
        phases.append((_text(phase[0], "phases", MAX_NAME_CHARS), _number(phase[1], "phases")))
    result = ProbeResult(
        success=success,
        duration=duration,
        samples=tuple(_sample(s) for s in samples_raw),
        error=bound_text(error) if error is not None else None,
        phases=tuple(phases),
        timestamp=min(timestamp, time.time() + 86400),
    )
    return BusResult(check_id, worker, result)
