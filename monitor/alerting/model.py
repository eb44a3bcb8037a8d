"""The alert handed to the delivery layer, its wire forms, and Alertmanager's fingerprint."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

AlertState = Literal["firing", "resolved"]

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
"""What Alertmanager's webhook puts in endsAt of a firing alert (Go's zero time)."""

# FNV-1a 64, as prometheus/common's model.LabelSet.Fingerprint.
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = 2**64 - 1
_SEPARATOR = 0xFF


def fingerprint(labels: Mapping[str, str]) -> str:
    """Return Alertmanager's fingerprint of a label set (16 hex digits)."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def rfc3339(at: datetime) -> str:
    """Return a UTC timestamp as Alertmanager writes it: RFC 3339 with a Z."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc(at: datetime, name: str) -> datetime:
    if at.tzinfo is None:
        # A naive time is ambiguous and would shift by the host's offset at Alertmanager.
        raise ValueError(f"{name} must be timezone-aware")
    return at.astimezone(UTC)


@dataclass(frozen=True)
class Alert:
    """An alert: identity by labels (as in Alertmanager), dedup by key, firing while no ends_at."""

    key: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ends_at: datetime | None = None
    generator_url: str = ""

    def __post_init__(self) -> None:
        """Check what Alertmanager would reject, so no alert can poison a sink's queue."""
        if not self.key:
            raise ValueError("alert key must not be empty")
        if not self.labels:
            raise ValueError(f"alert {self.key!r} has no labels")
        for name, value in self.labels.items():
            if not LABEL_NAME.match(name):
                raise ValueError(f"alert {self.key!r}: invalid label name {name!r}")
            if not value:
                # Alertmanager drops empty-valued labels, which would change the fingerprint.
                raise ValueError(f"alert {self.key!r}: label {name!r} is empty")
        object.__setattr__(self, "labels", dict(self.labels))
        object.__setattr__(self, "annotations", dict(self.annotations))
        object.__setattr__(self, "starts_at", _utc(self.starts_at, "starts_at"))
        if self.ends_at is not None:
            object.__setattr__(self, "ends_at", _utc(self.ends_at, "ends_at"))

    @property
    def state(self) -> AlertState:
        """firing while ends_at is None, else resolved."""
        return "firing" if self.ends_at is None else "resolved"

    @property
    def name(self) -> str:
        """The alertname label, or the key when there is none."""
        return self.labels.get("alertname", self.key)

    def resolved(self, at: datetime) -> Alert:
        """Return this alert resolved at the given time (never before it started)."""
        return replace(self, ends_at=max(_utc(at, "at"), self.starts_at))

    def with_labels(self, extra: Mapping[str, str]) -> Alert:
        """Return the alert with labels it lacks taken from extra."""
        missing = {k: v for k, v in extra.items() if k not in self.labels}
        return replace(self, labels={**self.labels, **missing}) if missing else self

    def to_json(self) -> str:
        """Serialize for the outbox."""
        return json.dumps(
            {
                "key": self.key,
                "labels": self.labels,
                "annotations": self.annotations,
                "starts_at": self.starts_at.isoformat(),
                "ends_at": None if self.ends_at is None else self.ends_at.isoformat(),
                "generator_url": self.generator_url,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Alert:
        """Read back what to_json wrote."""
        data: dict[str, Any] = json.loads(text)
        ends = data["ends_at"]
        return cls(
            key=data["key"],
            labels=data["labels"],
            annotations=data["annotations"],
            starts_at=datetime.fromisoformat(data["starts_at"]),
            ends_at=None if ends is None else datetime.fromisoformat(ends),
            generator_url=data["generator_url"],
        )
