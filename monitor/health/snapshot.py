"""What the health engine publishes: component statuses, incidents and a snapshot of both.

Plain frozen values, read by the web pages, the API, the alerting and the history; kept apart
from the engine so that readers do not import the machinery that computes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vigie.monitor.health.states import State


class Later:
    """A sentence kept as its facts, written (once) when a page or an alert reads it.

    After a site-wide failure an evaluation gives thousands of components new reasons, and
    writing each as a Text cost more than the rest of the evaluation; few of them are ever
    read. Equal facts write equal sentences, so two are compared by their facts; against a
    plain string, by the sentence.
    """

    __slots__ = ("_text", "args", "make")

    def __init__(self, make: Callable[..., str], *args: Hashable) -> None:
        """Keep the facts: the wording function and its arguments."""
        self.make = make
        self.args = args
        self._text: str | None = None

    def text(self) -> str:
        """Return the sentence, written at the first call."""
        text = self._text
        if text is None:
            text = self._text = self.make(*self.args)
        return text

    def __eq__(self, other: object) -> bool:
        """Equal facts (the same wording of equal arguments), or the same sentence as a str."""
        if self is other:
            return True
        if isinstance(other, Later):
            return self.make is other.make and self.args == other.args
        if isinstance(other, str):
            return self.text() == other
        return NotImplemented

    def __hash__(self) -> int:
        """Hash as the sentence (equal facts write equal sentences)."""
        return hash(self.text())

    def __repr__(self) -> str:
        """Show the sentence, as a reason written at once showed."""
        return repr(self.text())


Reason = str | Later
"""A reason as the engine keeps it: a sentence, or its facts until someone reads it."""


@dataclass(frozen=True, slots=True, init=False)
class ComponentStatus:
    """What the health model says of one component now.

    `reasons` are the sentences; `why` the same as the engine keeps them (facts written on
    reading, see `Later`), and what two statuses are compared by.
    """

    id: str
    kind: str
    site: str
    state: State
    own: State
    since: float
    why: tuple[Reason, ...]
    roots: tuple[str, ...]
    maintenance: bool = False

    def __init__(  # noqa: PLR0917 - positional, as the generated one was: callers use it so
        self,
        id: str,
        kind: str,
        site: str,
        state: State,
        own: State,
        since: float,
        reasons: Iterable[Reason],
        roots: tuple[str, ...],
        maintenance: bool = False,
    ) -> None:
        """Take the reasons as sentences or as facts (`Later`)."""
        # The slots' own setters: a frozen class cannot assign, and object.__setattr__ by
        # name costs twice as much (1,500 statuses are built after a site-wide failure).
        set_id, set_kind, set_site, set_state, set_own, set_since, set_why, set_roots, set_m = (
            _SETTERS
        )
        set_id(self, id)
        set_kind(self, kind)
        set_site(self, site)
        set_state(self, state)
        set_own(self, own)
        set_since(self, since)
        set_why(self, reasons if isinstance(reasons, tuple) else tuple(reasons))
        set_roots(self, roots)
        set_m(self, maintenance)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the component is in its state, one sentence each (a Text for the pages)."""
        return tuple(r if isinstance(r, str) else r.text() for r in self.why)


_SETTERS = tuple(
    getattr(ComponentStatus, f.name).__set__ for f in dataclasses.fields(ComponentStatus)
)
"""ComponentStatus's slot setters, in field order (what its __init__ assigns with)."""


@dataclass(frozen=True, slots=True)
class ImpactedApp:
    """An application hit by an incident, with what clinicians do meanwhile."""

    id: str
    name: str
    criticality: int
    state: State
    degraded_mode: str
    runbook_url: str
    team: str


@dataclass(frozen=True, slots=True)
class Incident:
    """One root cause with its blast radius."""

    key: str
    root_cause: str
    site: str
    severity: str
    started_at: float
    summary: str
    description: str
    impacted: tuple[str, ...]
    applications: tuple[ImpactedApp, ...]
    site_wide: bool = False
    maintenance: bool = False
    runbook_url: str = ""
    component: str = ""
    confirmed: bool = True  # False while held: its dependencies' checks have not spoken yet

    @property
    def id(self) -> str:
        """A readable incident id: root cause and start time."""
        stamp = datetime.fromtimestamp(self.started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.root_cause}@{stamp}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole health picture at one instant."""

    at: float
    components: Mapping[str, ComponentStatus]
    incidents: Mapping[str, Incident]
    sites: Mapping[str, State]
    warnings: Mapping[str, ComponentStatus] = field(default_factory=dict)
