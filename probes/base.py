"""The probe interface: one async callable per kind, the context it gets, and the registry."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import aiohttp
import structlog
from pydantic import BaseModel

from vigie.monitor.results import ProbeResult, bound_text


@dataclass(frozen=True, slots=True)
class Check:
    """One scheduled check, resolved from the config: what to probe, how, how often."""

    id: str
    kind: str
    target: str
    interval: float
    timeout: float
    settings: BaseModel
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


@runtime_checkable
class Probe(Protocol):
    """A probe kind: its settings model, its target syntax, and the async call that runs it."""

    kind: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]

    def parse_target(self, target: str) -> str:
        """Return the normalised target or raise ValueError saying why it is invalid."""
        ...

    def host_of(self, target: str) -> str:
        """Return the host a target hits, for the per-host concurrency limit."""
        ...

    async def __call__(self, check: Check, ctx: ProbeContext) -> ProbeResult:
        """Run the check once; timeouts and exceptions are handled by the scheduler."""
        ...


@runtime_checkable
class SectionProbe(Probe, Protocol):
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

    def __init__(self, probes: Iterable[Probe]) -> None:
        self._probes: dict[str, Probe] = {}
        for probe in probes:
            if probe.kind in self._probes:
                raise ValueError(f"probe kind {probe.kind!r} registered twice")
            self._probes[probe.kind] = probe

    def __getitem__(self, kind: str) -> Probe:
        return self._probes[kind]

    def __iter__(self) -> Iterator[Probe]:
        return iter(self._probes.values())

    def kinds(self) -> list[str]:
        """Return the registered kinds, sorted."""
        return sorted(self._probes)
