"""Replicas: two (or more) identical `vigie run` with one config, each watching the others.

Every replica runs every check and computes the same incidents; Alertmanager's cluster
deduplicates their alerts, whose labels are the same (the instance is an annotation). The
`replicas:` block lists the members; each gets, on every replica, a `vigie` check probing it
and a component of kind `monitor` in its site, so a replica's death is part of its site's
incident ("...; Vigie Nord lost") or an incident of its own. Direct sinks (webhook, mail),
which nothing deduplicates, are sent by one replica: the first by name among those alive.
There is no consensus: during a partition both send (a duplicate is accepted, a lost page
is not).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Gauge
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vigie.core.durations import Duration
from vigie.core.results import ProbeResult, bound_text
from vigie.core.sanitise import sanitise
from vigie.core.secrets import ConfigPath
from vigie.core.yamlpos import PosDict, PosList
from vigie.monitor.alerting.ack import Silences
from vigie.monitor.alerting.settings import AlertingSettings
from vigie.monitor.alerting.sink import DeliveryError
from vigie.monitor.audit import AuditLog
from vigie.monitor.health.maintenance import MaintenanceBook, Window
from vigie.probes.base import Check
from vigie.probes.tls import SslContextCache
from vigie.probes.vigie_peer import RESOLVED, VigiePeerSettings

CHECK_PREFIX = "vigie-"
"""A member's check and component are `vigie-<name>` (its peers' view of it)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplicaMember(_Strict):
    """One replica: its name, where the others reach it, the datacenter it runs in."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$", description="Unique name, e.g. `nord`."
    )
    url: str = Field(description="Base URL of its web server, as the other replicas reach it.")
    site: str = Field(description="The site (datacenter) it runs in: it fails with it.")
    display_name: str = Field("", description="Name for people; default `Vigie <Name>`.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from vigie.probes.vigie_peer import VigiePeerProbe

        return VigiePeerProbe().parse_target(value)

    @property
    def title(self) -> str:
        """The name people read: `Vigie Nord`."""
        return self.display_name or f"Vigie {self.name[:1].upper()}{self.name[1:]}"


class ReplicaSettings(_Strict):
    """The `replicas:` block: which replica this is, and every member of the set."""

    instance: str = Field(
        description="This replica's name, one of members: set it from the environment"
        " (`instance: ${VIGIE_INSTANCE}`) so both replicas share one config file."
    )
    members: list[ReplicaMember] = Field(min_length=2, description="Every replica, this one too.")
    interval: Duration = Field(10.0, description="How often each replica probes the others.")
    timeout: Duration = Field(5.0, description="Time a probe of a replica may take.")
    max_heartbeat_age: Duration = Field(
        30.0, description="A replica whose last health evaluation is older is dead (stuck)."
    )
    startup_grace: Duration | Literal[0] = Field(
        60.0,
        description="After a replica starts, a peer that never answered it is not judged"
        " (replicas started together come up seconds apart).",
    )
    lost_hold: Duration | Literal[0] = Field(
        60.0,
        description="A replica lost on its own is paged after this long, so that a site"
        " failure seen meanwhile includes it (`...; Vigie Nord lost`) instead.",
    )
    handoff: Duration = Field(
        60.0,
        description="A direct-sink notification the sending replica had this long to deliver"
        " is dropped by the others; longer than a replica's detected death (interval x 2 +"
        " timeout), so the survivor sends what a dead sender could not.",
    )
    username: str | None = Field(None, description="Basic auth user of the replicas' web.yml.")
    password_file: ConfigPath | None = Field(None, description="File holding its password.")
    ca_file: ConfigPath | None = Field(None, description="CA to verify https replica URLs.")

    @model_validator(mode="after")
    def _check(self) -> ReplicaSettings:
        """Names unique, this instance one of them, times consistent."""
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"replica names must be unique: {names}")
        if self.instance not in names:
            raise ValueError(f"instance {self.instance!r} is not one of the members {names}")
        if self.timeout > self.interval:
            raise ValueError("timeout is longer than the interval")
        if self.handoff <= 2 * self.interval + self.timeout:
            raise ValueError("handoff must be longer than interval x 2 + timeout")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("set both username and password_file, or neither")
        return self

    def member(self, name: str) -> ReplicaMember:
        """Return the member of that name."""
        return next(m for m in self.members if m.name == name)

    @property
    def me(self) -> ReplicaMember:
        """This replica."""
        return self.member(self.instance)

    def stale_after(self) -> float:
        """How old a peer's last successful probe may be for it to count as alive."""
        return 2 * self.interval + self.timeout


def replica_warnings(
    settings: ReplicaSettings | None, alerting: AlertingSettings | None
) -> list[tuple[tuple[str | int, ...], str]]:
    """What `vigie check` warns about a replicas block: where pages could double or be lost."""
    if settings is None:
        return []
    out: list[tuple[tuple[str | int, ...], str]] = []
    sites = {m.site for m in settings.members}
    if len(sites) == 1:
        out.append(
            (
                ("replicas", "members"),
                f"every replica runs in site {sites.pop()!r}: losing it loses them all",
            )
        )
    if alerting is None:
        return out
    if not alerting.alertmanagers:
        out.append(
            (
                ("alerting",),
                "replicas without an Alertmanager: their pages are deduplicated only by the"
                " sender rule, and a partition doubles every one (docs/ha.md)",
            )
        )
    if "vigie_instance" in alerting.model_fields_set:
        out.append(
            (
                ("alerting", "vigie_instance"),
                "with replicas, vigie_instance is the same on every replica (one config):"
                " leave it unset, it defaults to replicas.instance",
            )
        )
    return out


def check_id(name: str) -> str:
    """Return the id of the check (and of the component) watching a member."""
    return f"{CHECK_PREFIX}{name}"


def expand_raw(raw: PosDict) -> None:
    """Add each member's `vigie` check and `monitor` component to the raw config, in place.

    Done on the raw data, before validation, so that the plan, the topology, the budgets and
    `vigie check` treat them as any other; an invalid `replicas:` block adds nothing (its
    own errors say why). The entries stand at the block's line in error messages.
    """
    block = raw.get("replicas")
    if not isinstance(block, dict):
        return
    try:
        settings = ReplicaSettings.model_validate(block, context={"config_dir": None})
    except ValueError:
        return
    mark = raw.pos.get("replicas", raw.mark)
    for section, entries in (
        ("checks", [_check_entry(settings, m) for m in settings.members]),
        ("components", [_component_entry(m) for m in settings.members]),
    ):
        listed = raw.get(section)
        if listed is None:
            listed = PosList()
            listed.mark = mark
            raw[section] = listed
            raw.pos[section] = mark
        if not isinstance(listed, PosList):
            return  # the section's own error is reported
        for entry in entries:
            node = PosDict(entry)
            node.mark = mark
            listed.append(node)
            listed.pos.append(mark)


def _check_entry(settings: ReplicaSettings, member: ReplicaMember) -> dict[str, Any]:
    """The raw check probing a member."""
    vigie: dict[str, Any] = {
        "instance": member.name,
        "max_heartbeat_age": settings.max_heartbeat_age,
        "startup_grace": settings.startup_grace,
    }
    if settings.username is not None:
        vigie["username"] = settings.username
    if settings.password_file is not None:
        vigie["password_file"] = str(settings.password_file)
    if settings.ca_file is not None:
        vigie["tls"] = {"ca_file": str(settings.ca_file)}
    return {
        "id": check_id(member.name),
        "kind": "vigie",
        "target": member.url,
        "interval": settings.interval,
        "timeout": settings.timeout,
        "labels": {"replica": member.name},
        "vigie": vigie,
    }


def _component_entry(member: ReplicaMember) -> dict[str, Any]:
    """The raw `monitor` component of a member, in its site, fed by its check."""
    return {
        "id": check_id(member.name),
        "kind": "monitor",
        "site": member.site,
        "name": member.title,
        "checks": [check_id(member.name)],
        "criticality": 4,
    }


# --- at run time --------------------------------------------------------------------------


LatestResult = Callable[[str], ProbeResult | None]
"""The result store's last result of a check (monitor.store.ResultStore.latest)."""


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """A member as this replica sees it now."""

    name: str
    title: str
    site: str
    url: str
    this: bool
    alive: bool
    checked_at: float | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """Which replica answers, whether it sends to direct sinks, and how it sees the others."""

    instance: str
    title: str
    site: str
    sender: bool
    heartbeat: float
    now: float
    members: tuple[MemberStatus, ...]
    resolved: Mapping[str, float] = field(default_factory=dict)
    """Alerts this replica resolved lately (key -> time): its peers hold their keep-alives."""

    def to_json(self) -> dict[str, Any]:
        """The /-/replica answer (probes.vigie_peer reads instance, heartbeat, now, sender)."""
        return {
            "instance": self.instance,
            "title": self.title,
            "site": self.site,
            "sender": self.sender,
            "heartbeat": self.heartbeat,
            "now": self.now,
            "members": [
                {
                    "name": m.name,
                    "title": m.title,
                    "site": m.site,
                    "url": m.url,
                    "self": m.this,
                    "alive": m.alive,
                    "checked_at": m.checked_at,
                    "reason": m.reason,
                }
                for m in self.members
            ],
            "resolved": dict(self.resolved),
        }


class ReplicaSet:
    """This replica's view of the set: who is alive (the `vigie` checks' results), who sends."""

    def __init__(
        self,
        settings: ReplicaSettings,
        latest: LatestResult,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._latest = latest
        self._clock = clock
        self.resolved: Callable[[], Mapping[str, float]] = dict
        """This replica's recent resolves (the dispatcher's), served to its peers."""
        self.heartbeat = clock()
        self._heartbeat = Gauge(
            "vigie_replica_heartbeat_timestamp_seconds",
            "Wall time of this replica's last health evaluation (its peers read it).",
            registry=registry,
        )
        self._peer_up = Gauge(
            "vigie_replica_peer_up",
            "Whether this replica sees each member alive (itself always).",
            ["replica"],
            registry=registry,
        )
        self._sender = Gauge(
            "vigie_replica_sender",
            "Whether this replica sends to direct sinks (webhook, mail) now.",
            registry=registry,
        )
        self.beat()

    @property
    def instance(self) -> str:
        """This replica's name."""
        return self.settings.instance

    def beat(self) -> None:
        """Note a health evaluation: the heartbeat the other replicas read."""
        self.heartbeat = self._clock()
        self._heartbeat.set(self.heartbeat)

    def _member(self, name: str, now: float) -> MemberStatus:
        m = self.settings.member(name)
        this = name == self.settings.instance
        result = None if this else self._latest(check_id(name))
        if this:
            alive, reason = True, None
        elif result is None:
            alive, reason = False, "not probed yet"
        elif now - result.timestamp > self.settings.stale_after():
            alive, reason = False, f"last probed {now - result.timestamp:.0f}s ago"
        else:  # a success with an error is a peer not judged yet (startup grace): not alive
            alive, reason = result.success and result.error is None, result.error
        return MemberStatus(
            name=name,
            title=m.title,
            site=m.site,
            url=m.url,
            this=this,
            alive=alive,
            checked_at=None if result is None else result.timestamp,
            reason=None if alive else reason,
        )

    def alive(self, name: str) -> bool:
        """Whether a member is alive as seen from here (a peer not probed yet is not)."""
        return self._member(name, self._clock()).alive

    def is_sender(self) -> bool:
        """Whether this replica sends to direct sinks: no member alive sorts before it.

        A peer not yet probed counts as dead: at start both may send (a duplicate), never none.
        """
        now = self._clock()
        sender = all(
            not self._member(m.name, now).alive
            for m in self.settings.members
            if m.name < self.settings.instance
        )
        self._sender.set(sender)
        return sender

    def peer_resolved(self) -> dict[str, float]:
        """The alerts live peers resolved lately (key -> latest time), from their last probe."""
        now = self._clock()
        out: dict[str, float] = {}
        for m in self.settings.members:
            if m.name == self.settings.instance or not self._member(m.name, now).alive:
                continue
            result = self._latest(check_id(m.name))
            for sample in result.samples if result is not None else ():
                if sample.name == RESOLVED and sample.labels:
                    key = sample.labels[0][1]
                    out[key] = max(out.get(key, 0.0), sample.value)
        return out

    def status(self) -> ReplicaStatus:
        """This replica's view now, for /-/replica, the API and the status page."""
        now = self._clock()
        members = tuple(self._member(m.name, now) for m in self.settings.members)
        for m in members:
            self._peer_up.labels(replica=m.name).set(m.alive)
        me = self.settings.me
        return ReplicaStatus(
            instance=me.name,
            title=me.title,
            site=me.site,
            sender=self.is_sender(),
            heartbeat=self.heartbeat,
            now=now,
            members=members,
            resolved=self.resolved(),
        )


# --- maintenance windows shared through Alertmanager ---------------------------------------

MAINTENANCE_COMMENT = "Vigie maintenance window"
"""How a maintenance window's silence comment starts: how a replica knows its peer's windows."""
PULLED = "alertmanager"
"""The source of a window a replica learnt from a peer's silence."""
ENDED_BY_PEER = "a peer replica (its silence was expired)"
"""Who ended a window whose silence left the cluster: the replica that ended it knows who."""
END_MARGIN = 5.0
"""A window this close to its end is left to end by itself (its silence expires at its end)."""
_SILENCE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class MaintenanceMirror:
    """Maintenance windows opened or ended on one replica hold or release the others' pages.

    A window opened through a replica's API is posted as an Alertmanager silence on its
    target (`site=` or `component=`), with its reason as comment and the replica as author;
    the window keeps the silence's id. The cluster shares the silence, so Alertmanager holds
    the pages of both replicas at once. Ending the window early expires its silence. Each
    replica reads the cluster's current Vigie silences every `every` seconds: it adds the
    windows it lacks to its own book (so its direct sinks hold too), ends the windows whose
    silence has left the cluster (ended on a peer), expires again the silence of a window it
    ended if the cluster still holds it, and posts again a window whose silence could not be
    created. A failed read changes nothing.
    """

    def __init__(
        self,
        silences: Silences,
        book: Callable[[], MaintenanceBook],
        sites: Callable[[], set[str]],
        instance: str,
        *,
        on_change: Callable[[], None] = lambda: None,
        logger: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._silences = silences
        self._book = book
        self._sites = sites
        self._instance = instance
        self._on_change = on_change
        self._log = logger if logger is not None else structlog.get_logger()
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._creating: set[str] = set()
        """Windows whose silence is being created: never judged by a pull meanwhile."""

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def opened(self, win: Window) -> None:
        """A window was opened here: post its silence in the background (logged if it fails)."""
        self._creating.add(win.id)
        self._background(self.publish(win))

    def ended(self, win: Window) -> None:
        """A window was ended early here: expire its silence in the background."""
        if win.silence is not None:
            self._background(self._expire(win))

    async def publish(self, win: Window) -> None:
        """Post the window as a silence of the cluster; the window keeps the silence's id."""
        self._creating.add(win.id)
        label = "site" if win.target in self._sites() else "component"
        try:
            silence = await self._silences.create(
                {label: win.target},
                author=f"vigie {self._instance}",
                comment=f"{MAINTENANCE_COMMENT}: {win.target}: {win.reason}",
                until=datetime.fromtimestamp(win.end, UTC),
                since=datetime.fromtimestamp(win.start, UTC),
            )
        except DeliveryError as exc:
            self._log.warning("maintenance_silence_failed", target=win.target, error=exc.reason)
            return
        finally:
            self._creating.discard(win.id)
        if not _SILENCE_ID.match(silence):  # it goes into URLs: an id, nothing else
            self._log.warning("maintenance_silence_failed", target=win.target, error="bad id")
            return
        self._log.info("maintenance_silence_created", target=win.target, silence=silence)
        kept = self._book().set_silence(win.id, silence)
        if kept is not None and kept.ended_early:  # ended while its silence was being made
            await self._expire(kept)

    async def _expire(self, win: Window) -> None:
        """Expire a window's silence (logged; the next pull tries again if it fails)."""
        if win.silence is None:
            return
        try:
            await self._silences.expire(win.silence)
        except DeliveryError as exc:
            self._log.warning("maintenance_silence_unexpired", target=win.target, error=exc.reason)
            return
        self._log.info("maintenance_silence_expired", target=win.target, silence=win.silence)

    async def pull(self) -> int:
        """Bring the book in line with the cluster's Vigie silences; return how many changed."""
        # Only windows whose silence existed before the read are judged by it: one created
        # while the read was under way is not in its answer.
        settled = {
            w.id: w.silence
            for w in self._book().windows
            if w.silence is not None and w.id not in self._creating
        }
        try:
            found = await self._silences.active(pending=True)
        except DeliveryError as exc:
            self._log.warning("maintenance_silences_unread", error=exc.reason)
            return 0
        book = self._book()
        now = self._clock()
        live = {str(s.get("id")) for s in found}
        changed = 0
        for win in book.windows:
            if win.source == "config" or win.id in self._creating:
                continue
            if win.silence is None:
                if win.source == "api":  # its silence could not be created: try again
                    self.opened(win)
                continue
            if settled.get(win.id) != win.silence:
                continue
            if win.silence not in live and win.end > now + END_MARGIN:
                book.end(win.id, ENDED_BY_PEER)
                changed += 1
                self._log.info("maintenance_ended_by_peer", target=win.target, window=win.id)
        for sid in book.silences_of_ended() & live:  # its expiry failed: again
            self._background(self._expire_id(sid))
        known = book.silences()
        posting = {(w.target, round(w.end)) for w in book.windows if w.silence is None}
        for silence in found:
            peer = _window_of(silence)
            if peer is None or peer.silence in known or (peer.target, round(peer.end)) in posting:
                continue
            book.adopt(peer)
            changed += 1
            self._log.info("maintenance_from_peer", target=peer.target, reason=peer.reason)
        if changed:
            self._on_change()
        return changed

    async def _expire_id(self, silence: str) -> None:
        try:
            await self._silences.expire(silence)
        except DeliveryError as exc:
            self._log.warning("maintenance_silence_unexpired", silence=silence, error=exc.reason)

    async def run(self, every: float) -> None:
        """Pull every `every` seconds until cancelled."""
        while True:
            await self.pull()
            await asyncio.sleep(every)

    async def close(self) -> None:
        """Wait for the silences being posted or expired (a window changed just before a stop)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _window_of(silence: dict[str, Any]) -> Window | None:
    """Return the maintenance window a Vigie silence stands for, None for any other silence."""
    comment = silence.get("comment")
    matchers = silence.get("matchers")
    sid = silence.get("id")
    if not isinstance(sid, str) or not _SILENCE_ID.match(sid):
        return None
    if not isinstance(comment, str) or not comment.startswith(f"{MAINTENANCE_COMMENT}: "):
        return None
    if not isinstance(matchers, list) or len(matchers) != 1 or not isinstance(matchers[0], dict):
        return None
    matcher = matchers[0]
    if matcher.get("name") not in ("site", "component") or matcher.get("isRegex"):
        return None
    target = matcher.get("value")
    try:
        start = datetime.fromisoformat(str(silence["startsAt"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(silence["endsAt"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    if not isinstance(target, str) or not target:
        return None
    _, _, rest = comment.partition(": ")
    reason = rest.partition(": ")[2]
    return Window(
        target=bound_text(target, 200),
        start=start.timestamp(),
        end=end.timestamp(),
        reason=bound_text(reason, 500),
        source=PULLED,
        author=bound_text(sanitise(str(silence.get("createdBy") or "")), 100),
        silence=sid,
    )


# --- incident updates forwarded between replicas --------------------------------------------

UPDATES_PATH = "/-/replica/updates"
"""Where a replica serves the incident updates posted on it (same auth as /-/replica)."""
MAX_UPDATES = 100
"""Updates in one answer, at most: a peer asks again from the last one it got."""
MAX_UPDATES_BODY = 256 * 1024
MAX_PAGES = 10
"""Answers read from one peer per pull, at most (a replica catching up after a restart)."""


def updates_answer(audit: AuditLog, since: float, keys: Mapping[str, str]) -> dict[str, Any]:
    """The /-/replica/updates answer: updates posted here at or after `since`, oldest first.

    Each names its incident by id and, while it is open, by key: the peer's incident of the
    same key may carry another id (its start seen a check interval apart).
    """
    found = audit.local_updates(since, MAX_UPDATES)
    return {
        "updates": [
            {
                "incident": a.target,
                "key": keys.get(a.target),
                "at": a.at,
                "who": a.who,
                "role": a.role,
                "text": a.detail,
                "expected": a.expected,
            }
            for a in found
        ],
        "more": len(found) >= MAX_UPDATES,
    }


PeerSettings = Callable[[str], VigiePeerSettings | None]
"""The settings (auth, TLS) of the `vigie` check watching a member: how to reach it."""


def peer_settings(plan: Callable[[], Mapping[str, Check[Any]]]) -> PeerSettings:
    """Read a member's auth and TLS from the plan in force (its `vigie-<name>` check)."""

    def of(name: str) -> VigiePeerSettings | None:
        check = plan().get(check_id(name))
        settings = None if check is None else check.settings
        return settings if isinstance(settings, VigiePeerSettings) else None

    return of


class UpdateFeed:
    """Pulls the incident updates posted on each peer replica into this replica's audit log.

    Every `interval`, each peer is asked for its updates since the last one this replica got
    from it (all it keeps, after a restart); those this log lacks (same incident, time,
    author and text) are kept as posted there, via `replica <name>`. Both replicas then show
    the same updates and annotate the incident's alert identically (the newest by its time).
    A peer that does not answer is asked again next time: a partition or a restart catches up.
    """

    def __init__(
        self,
        settings: ReplicaSettings,
        audit: AuditLog,
        session: aiohttp.ClientSession,
        peer: PeerSettings,
        incidents: Callable[[], Mapping[str, str]],
        *,
        on_change: Callable[[], None] = lambda: None,
        logger: Any = None,
    ) -> None:
        self._settings = settings
        self._audit = audit
        self._session = session
        self._peer = peer
        self._incidents = incidents
        """This replica's open incidents: key -> id."""
        self._on_change = on_change
        self._log = logger if logger is not None else structlog.get_logger()
        self._since: dict[str, float] = {}
        self._ssl = SslContextCache()

    async def pull(self) -> int:
        """Ask every peer once; return how many updates this log lacked."""
        added = 0
        for member in self._settings.members:
            if member.name == self._settings.instance:
                continue
            try:
                added += await self._pull_from(member)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                self._log.debug(
                    "updates_unread", replica=member.name, error=bound_text(repr(exc), 300)
                )
        if added:
            self._on_change()
        return added

    async def _pull_from(self, member: ReplicaMember) -> int:
        added = 0
        for _ in range(MAX_PAGES):
            since = self._since.get(member.name, 0.0)
            body = await self._get(member, since)
            updates, more = _updates_of(body)
            incidents = self._incidents()
            for u in updates:
                local = incidents.get(u.key, u.incident) if u.key else u.incident
                kept = self._audit.adopt_update(
                    at=u.at,
                    who=u.who,
                    role=u.role,
                    replica=member.name,
                    remote=member.url,
                    incident=local,
                    text=u.text,
                    expected=u.expected,
                )
                if kept is not None:
                    added += 1
                    self._log.info("update_from_peer", replica=member.name, incident=local)
                self._since[member.name] = max(self._since.get(member.name, 0.0), u.at)
            if not more or not updates:
                break
        return added

    async def _get(self, member: ReplicaMember, since: float) -> bytes:
        """GET a peer's updates (its vigie check's auth and TLS), at most MAX_UPDATES_BODY."""
        settings = self._peer(member.name)
        auth = None
        sslctx: ssl.SSLContext | None = None
        server_name = None
        if settings is not None:
            if settings.username is not None and settings.password is not None:
                auth = aiohttp.BasicAuth(settings.username, settings.password.get_secret_value())
            sslctx = self._ssl.get(settings.tls)
            server_name = settings.tls.server_name
        async with self._session.get(
            f"{member.url}{UPDATES_PATH}",
            params={"since": repr(since)},
            auth=auth,
            ssl=sslctx if sslctx is not None else True,
            server_hostname=server_name,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
        ) as response:
            if response.status != 200:
                raise ValueError(f"{UPDATES_PATH} answered HTTP {response.status}")
            body = await response.content.read(MAX_UPDATES_BODY + 1)
        if len(body) > MAX_UPDATES_BODY:
            raise ValueError(f"{UPDATES_PATH} answer larger than {MAX_UPDATES_BODY} bytes")
        return body

    async def run(self, every: float) -> None:
        """Pull every `every` seconds until cancelled."""
        while True:
            await self.pull()
            await asyncio.sleep(every)


@dataclass(frozen=True, slots=True)
class PeerUpdate:
    """One update as a peer served it, checked and bounded."""

    incident: str
    key: str | None
    at: float
    who: str
    role: str
    text: str
    expected: float | None


def _updates_of(body: bytes) -> tuple[list[PeerUpdate], bool]:
    """Read a peer's answer (untrusted): the well-formed updates, at most MAX_UPDATES."""
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("updates"), list):
        raise ValueError(f"{UPDATES_PATH}: not a replica's answer")
    out: list[PeerUpdate] = []
    for item in data["updates"][:MAX_UPDATES]:
        if not isinstance(item, dict):
            continue
        at, expected = item.get("at"), item.get("expected")
        incident, key, text = item.get("incident"), item.get("key"), item.get("text")
        if not (isinstance(at, int | float) and math.isfinite(at) and at > 0):
            continue
        if expected is not None and not (
            isinstance(expected, int | float) and math.isfinite(expected)
        ):
            expected = None
        if not isinstance(incident, str) or not incident or not isinstance(text, str) or not text:
            continue
        out.append(
            PeerUpdate(
                incident=bound_text(sanitise(incident), 200),
                key=bound_text(sanitise(key), 200) if isinstance(key, str) and key else None,
                at=float(at),
                who=sanitise(str(item.get("who") or "-"))[:200],
                role="operator" if item.get("role") == "operator" else "viewer",
                text=bound_text(sanitise(text), 500),
                expected=None if expected is None else float(expected),
            )
        )
    return out, data.get("more") is True
