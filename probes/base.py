"""The probe interface: one async callable per kind, its optional hooks, the context, the registry.

A probe kind is one object with `kind`, `Settings`, `parse_target`, `host_of` and an async
`__call__`. Everything else is optional and declared by type, never found by `getattr`:
`KeepsCheckState` (told which checks a new plan holds), `Closing` (released at stop),
`StatefulProbe` (learnt state kept across restarts), `SectionProbe` (a config block of its own),
and, on a check's settings, `RuleSource` (health rules a probe brings, e.g. an SNMP profile's).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, runtime_checkable

import aiohttp
import structlog
from pydantic import BaseModel
from typing_extensions import TypeVar

from vigie.core.results import ProbeResult, bound_text
from vigie.core.rules import Rule

S_co = TypeVar("S_co", bound=BaseModel, covariant=True, default=BaseModel)
"""A check's settings model: each probe kind takes checks of its own settings type."""


@dataclass(frozen=True, slots=True)
class Check(Generic[S_co]):
    """One scheduled check, resolved from the config: what to probe, how, how often."""

    id: str
    kind: str
    target: str
    interval: float
    timeout: float
    settings: S_co
    labels: tuple[tuple[str, str], ...] = ()
    host: str = ""


class ProbeLog:
    """Debug events of one probe run: sent to the logger, kept as lines for debug runs only."""

    def __init__(self, logger: Any, keep: bool = True) -> None:
        self.lines: list[str] = []
        self._logger = logger
        self._keep = keep
        # Probes log a few events per run: skip them at once when nobody would see them.
        is_enabled_for = getattr(logger, "is_enabled_for", None)
        self.enabled = keep or is_enabled_for is None or bool(is_enabled_for(logging.DEBUG))

    def __call__(self, event: str, **fields: object) -> None:
        """Record one event with its fields."""
        if not self.enabled:
            return
        if self._keep:
            text = " ".join([event, *(f"{k}={v}" for k, v in fields.items())])
            self.lines.append(bound_text(text))
        self._logger.debug(event, **fields)


@dataclass(slots=True)
class ProbeContext:
    """What a probe needs from outside: the shared HTTP session and a log bound to the check."""

    session: aiohttp.ClientSession
    log: ProbeLog = field(default_factory=lambda: ProbeLog(structlog.get_logger()))


S_contra = TypeVar("S_contra", bound=BaseModel, contravariant=True, default=BaseModel)


@runtime_checkable
class Probe(Protocol[S_contra]):
    """A probe kind: its settings model, its target syntax, and the async call that runs it.

    The plan gives each probe only checks of its own kind, whose settings were validated by
    its `Settings` model: a probe types its call as `Check[ItsSettings]` and needs no guard.
    """

    kind: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]

    def parse_target(self, target: str) -> str:
        """Return the normalised target or raise ValueError saying why it is invalid."""
        ...

    def host_of(self, target: str) -> str:
        """Return the host a target hits, for the per-host concurrency limit."""
        ...

    async def __call__(self, check: Check[S_contra], ctx: ProbeContext) -> ProbeResult:
        """Run the check once; timeouts and exceptions are handled by the scheduler."""
        ...


AnyProbe = Probe[Any]
"""A probe of any kind, as the registry holds them (each takes its own settings type)."""


@runtime_checkable
class KeepsCheckState(Protocol):
    """A probe that keeps state per check: after a reload it drops what other checks left."""

    def keep_only(self, check_ids: set[str]) -> None:
        """Drop the state of every check not in check_ids (the ids of this kind in the plan)."""
        ...


@runtime_checkable
class Closing(Protocol):
    """A probe that holds resources (sessions, sockets, threads) to release at stop."""

    async def close(self) -> None:
        """Release them; the probe is not called again."""
        ...


@runtime_checkable
class StatefulProbe(Protocol):
    """A probe kind whose learnt state (baselines, counters) should survive a restart."""

    kind: str

    def save_state(self) -> dict[str, Any]:
        """Return the state as JSON-ready data."""
        ...

    def load_state(self, data: dict[str, Any]) -> None:
        """Take back data saved by save_state (it may be from an older version: skip bad parts)."""
        ...


@runtime_checkable
class RuleSource(Protocol):
    """Check settings that bring health rules of their own (an SNMP profile's, Redfish's)."""

    def health_rules(self) -> list[Rule]:
        """Return the rules this check's results are judged by, beside the config's."""
        ...


@runtime_checkable
class SectionProbe(Probe[S_contra], Protocol[S_contra]):
    """A probe kind with a top-level config block of its own (e.g. `snmp:` auths and profiles).

    `bind` resolves a check's references into that block (an auth name, a profile name) when
    the plan is built, so errors show at load time and probes get ready-to-use settings.
    """

    Section: ClassVar[type[BaseModel]]

    def bind(self, settings: BaseModel, section: BaseModel, config_dir: Path) -> BaseModel:
        """Return the check's settings with references resolved, or raise ValueError."""
        ...


class ProbeRegistry:
    """The one list of probe kinds: the config's union of check models is built from it."""

    def __init__(self, probes: Iterable[AnyProbe]) -> None:
        self._probes: dict[str, AnyProbe] = {}
        for probe in probes:
            if probe.kind in self._probes:
                raise ValueError(f"probe kind {probe.kind!r} registered twice")
            self._probes[probe.kind] = probe

    def __getitem__(self, kind: str) -> AnyProbe:
        return self._probes[kind]

    def __iter__(self) -> Iterator[AnyProbe]:
        return iter(self._probes.values())

    def kinds(self) -> list[str]:
        """Return the registered kinds, sorted."""
        return sorted(self._probes)
