"""Maintenance windows: pages are held for a component or a site, states are still computed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class MaintenanceSpec(BaseModel):
    """A window during which a component or a site is not paged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(description="A component id or a site id.")
    start: AwareDatetime | None = Field(None, description="Start (with timezone); default now.")
    end: AwareDatetime = Field(description="End of the window, with timezone.")
    reason: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _order(self) -> MaintenanceSpec:
        if self.start is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


@dataclass(frozen=True, slots=True)
class Window:
    """An active or future maintenance window."""

    target: str
    start: float
    end: float
    reason: str
    source: str  # "config" or "api"


class MaintenanceBook:
    """Windows from the config and from the API; tells which targets are in maintenance now."""

    def __init__(self, specs: Iterable[MaintenanceSpec] = ()) -> None:
        self.windows: list[Window] = []
        self.set_config(specs)

    def set_config(self, specs: Iterable[MaintenanceSpec]) -> None:
        """Replace the windows that come from the config; keep those added through the API."""
        api = [w for w in self.windows if w.source == "api"]
        self.windows = [*api, *(window(s, "config") for s in specs)]

    def add(self, spec: MaintenanceSpec) -> Window:
        """Add a window through the API."""
        win = window(spec, "api")
        self.windows.append(win)
        return win

    def active(self, now: float) -> dict[str, str]:
        """Return target -> reason for the windows open at now; drop the finished ones."""
        self.windows = [w for w in self.windows if w.end > now]
        return {w.target: w.reason or "maintenance" for w in self.windows if w.start <= now}


def window(spec: MaintenanceSpec, source: str) -> Window:
    """Turn a spec into a window with epoch times."""
    start = (spec.start or datetime.now(UTC)).timestamp()
    return Window(spec.target, start, spec.end.timestamp(), spec.reason, source)
