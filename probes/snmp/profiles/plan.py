"""What a poll asks a device for (the plan of its profiles) and what came back (Collected)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vigie.probes.snmp.profiles.model import Profile

__all__ = ["Collected", "PollPlan", "Value", "poll_plan"]

Value = None | str | bytes | int | float
"""A varbind value as the SNMP engine returns it (TimeTicks as hundredths, OIDs as text)."""


@dataclass(frozen=True, slots=True)
class PollPlan:
    """What to ask a device for: scalar OIDs to GET, columns to walk, objects that must answer.

    required: (oid, metric) the poll cannot do without; counted: (oid, metric) whose absence
    is counted in snmp_objects_missing (every requested object but the columns of merged
    tables, e.g. an alarm table, where no row is a normal answer).
    """

    gets: tuple[str, ...]
    walks: tuple[str, ...]
    required: tuple[tuple[str, str], ...]
    counted: tuple[tuple[str, str], ...] = ()

    def missing(self, data: Collected) -> list[tuple[str, str]]:
        """Return the counted (oid, metric) the agent did not serve in this poll, OID order."""
        return [(oid, name) for oid, name in self.counted if not _served(oid, data)]

    def missing_required(self, data: Collected) -> list[tuple[str, str]]:
        """Return the required (oid, metric) the agent did not serve in this poll."""
        return [(oid, name) for oid, name in self.required if not _served(oid, data)]


def _served(oid: str, data: Collected) -> bool:
    """Whether a poll got a value for a scalar OID or at least one row of a column."""
    return oid in data.scalars or bool(data.walks.get(oid))


def _oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(p) for p in oid.split("."))


def poll_plan(profiles: Iterable[Profile]) -> PollPlan:
    """Return the deduplicated, OID-ordered requests the profiles need."""
    gets: set[str] = set()
    walks: set[str] = set()
    required: dict[str, str] = {}
    counted: dict[str, str] = {}
    for profile in profiles:
        for m in profile.metrics:
            related = [lk.oid for lk in m.lookups] + [f.oid for f in m.factors]
            if m.variants is not None:
                related.append(m.variants.oid)
            if m.valid_when is not None:
                related.append(m.valid_when.oid)
            target = walks if m.walked else gets
            target.add(m.oid)
            target.update(related)
            if m.required:
                required.setdefault(m.oid, m.name)
            for oid in ([] if m.merged else [m.oid]) + related:
                counted.setdefault(oid, m.name)
    # A required object is counted too, even the column of a merged table.
    for oid, name in required.items():
        counted.setdefault(oid, name)

    def ordered(pairs: dict[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(pairs.items(), key=lambda kv: _oid_key(kv[0])))

    return PollPlan(
        gets=tuple(sorted(gets, key=_oid_key)),
        walks=tuple(sorted(walks, key=_oid_key)),
        required=ordered(required),
        counted=ordered(counted),
    )


@dataclass(slots=True)
class Collected:
    """Varbinds of one poll: scalar values by OID, and walked columns by OID then row suffix."""

    scalars: dict[str, Value] = field(default_factory=dict)
    walks: dict[str, dict[str, Value]] = field(default_factory=dict)
    # Scalars the agent answered with more than the client can read (counted as missing).
    unreadable: set[str] = field(default_factory=set)

    def related(self, oid: str, suffix: str) -> Value:
        """Return the value of column oid for a row (or of scalar oid when suffix is empty)."""
        if not suffix:
            return self.scalars.get(oid)
        return self.walks.get(oid, {}).get(suffix)
