"""The snmp probe: GET scalars and GETBULK-walk tables with gufo-snmp, then apply device profiles.

Credentials (`snmp.auths`) are kept apart from what to collect (`snmp` profiles, YAML files
under config/profiles/ and the config's `snmp.profile_dirs`), as in snmp_exporter. A check
names one auth and a list of profiles; `bind` resolves them when the plan is built.

On a failure the probe says why (probes/snmp/diagnose.py). A v3 auth with a `context_name`
polls through pysnmp instead (probes/snmp/context.py: gufo-snmp 0.13 cannot send a context);
both paths share the plan, walk grouping and walk_cap (WalkRows).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from gufo.snmp import (
    NoSuchInstance,
    SnmpAuthError,
    SnmpDecodeError,
    SnmpEncodeError,
    SnmpError,
    User,
)
from pydantic import BaseModel

from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.probes.base import Check, ProbeContext
from vigie.probes.derive import DeriveState, labels_of
from vigie.probes.snmp.auth import SnmpAuth
from vigie.probes.snmp.client import (
    Client,
    NoAnswer,
    client_socket,
    format_target,
    open_v3,
    parse_target,
    resolve,
)
from vigie.probes.snmp.diagnose import explain_auth, explain_silence
from vigie.probes.snmp.failures import SnmpFailure
from vigie.probes.snmp.polling import PollStats, poll
from vigie.probes.snmp.profiles.evaluate import evaluate
from vigie.probes.snmp.profiles.model import Profile, family_names
from vigie.probes.snmp.profiles.plan import poll_plan
from vigie.probes.snmp.settings import SnmpCheckSettings, SnmpSection, SnmpSettings
from vigie.probes.traps import ConfigProblem, TrapDecoder, TrapOptions

if TYPE_CHECKING:
    from vigie.probes.snmp.context import ContextPoller

__all__ = ["SnmpProbe"]

_SELF_HELP = {
    "snmp_scrape_pdus_sent": "SNMP request PDUs the last poll sent (retries, v3 discovery "
    "included).",
    "snmp_scrape_varbinds_received": "Varbinds the last poll received.",
    "snmp_scrape_walk_duration_seconds": "Seconds the last poll spent walking tables.",
}


# gufo-snmp reads at most 4 KiB of a datagram: a larger response ends mid-message.
_INCOMPLETE_HINT = (
    "a response larger than the 4 KiB gufo-snmp reads even for one row, e.g. a table value "
    "that long, or a truncated datagram"
)

_MISSING_HELP = (
    "Objects of the check's profiles the agent did not serve in the last poll (noSuchObject, "
    "noSuchInstance, endOfMibView, an empty table): their metrics are absent."
)


def _objects_text(objects: Sequence[tuple[str, str]], shown: int = 8) -> str:
    """Name objects as `oid (metric)`, the first few of a long list then how many more."""
    text = ", ".join(f"{oid} ({name})" for oid, name in objects[:shown])
    return text + (f" and {len(objects) - shown} more" if len(objects) > shown else "")


def _self_samples(client: Client | None, stats: PollStats) -> list[Sample]:
    """Return the poll's own cost metrics."""
    values = {
        "snmp_scrape_pdus_sent": float(client.pdus if client else stats.pdus),
        "snmp_scrape_varbinds_received": float(stats.varbinds),
        "snmp_scrape_walk_duration_seconds": stats.walk_seconds,
    }
    return [Sample(name, value, (), "gauge", _SELF_HELP[name]) for name, value in values.items()]


class SnmpProbe:
    """Poll a device's SNMP agent and turn its answers into metrics with device profiles."""

    kind: ClassVar[str] = "snmp"
    Settings: ClassVar[type[BaseModel]] = SnmpSettings
    Section: ClassVar[type[BaseModel]] = SnmpSection

    def __init__(self, clock: Callable[[], float] = time.time, logger: Any = None) -> None:
        # Where lasting conditions of a device are told (objects it lacks), once, not per poll.
        self._log = logger if logger is not None else structlog.get_logger()
        # The objects each check's agent lacked when last told, by check id.
        self._missing_told: dict[str, tuple[str, ...]] = {}
        # Last values for resets (e.g. sysUpTime going down = reboot), by check id.
        self._previous: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        # Forecast points and EWMA baselines of the profiles' `derive:`, by check id.
        self._derived: dict[str, DeriveState] = {}
        self._saved_derived: dict[str, dict[str, Any]] = {}  # from before a restart (load_state)
        self._clock = clock
        # v3 users with their master keys, by auth: password-to-key once, not every poll.
        self._users: dict[SnmpAuth, User] = {}
        # pysnmp engines for the checks with a v3 context name: built on first use only.
        self._context: ContextPoller | None = None
        self._context_auths: dict[str, SnmpAuth] = {}  # by check id, to prune on reload

    def user_of(self, auth: SnmpAuth) -> User | None:
        """Return the v3 user of auth (None for v1/v2c), its keys derived once per auth."""
        if auth.version != 3:
            return None
        user = self._users.get(auth)
        if user is None:
            if len(self._users) >= 256:  # auths replaced by reloads: start afresh
                self._users.clear()
            user = self._users[auth] = auth.user()
        return user

    def _context_poller(self) -> ContextPoller:
        """Return the context poller, importing pysnmp and building it on first use."""
        if self._context is None:
            from vigie.probes.snmp.context import ContextPoller

            self._context = ContextPoller()
        return self._context

    async def close(self) -> None:
        """Release the pysnmp engines of context polls (their sockets and timers)."""
        if self._context is not None:
            self._context.close()
            self._context = None

    def trap_decoder(self) -> TrapDecoder:
        """Return a decoder of SNMP notifications for the daemon's trap receiver.

        pysnmp is imported here: a daemon without a trap receiver never loads it for traps.
        """
        from vigie.probes.snmp.traps import SnmpTrapDecoder

        return SnmpTrapDecoder()

    def trap_problems(self, options: TrapOptions, section: BaseModel | None) -> list[ConfigProblem]:
        """Return an error for each name of `traps.auths` that names no auth of `snmp:`."""
        known = section.all_auths() if isinstance(section, SnmpSection) else {}
        return [
            (
                ("traps", "auths", j),
                f"unknown auth {name!r}; known auths: {', '.join(sorted(known)) or 'none'}",
            )
            for j, name in enumerate(options.auths)
            if name not in known
        ]

    def parse_target(self, target: str) -> str:
        """Return `host:port` (`[v6]:port`) with the default port 161 filled in."""
        return format_target(*parse_target(target))

    def host_of(self, target: str) -> str:
        """Return the target's host."""
        return parse_target(target)[0]

    def bind(self, settings: BaseModel, section: BaseModel, config_dir: Path) -> BaseModel:
        """Resolve the check's auth and profile names; raise ValueError naming the known ones."""
        assert isinstance(settings, SnmpSettings) and isinstance(section, SnmpSection)
        auths = section.all_auths()
        auth = auths.get(settings.auth)
        if auth is None:
            raise ValueError(
                f"unknown auth {settings.auth!r}; known auths: {', '.join(sorted(auths))}"
            )
        known = section.profiles()
        chosen: list[Profile] = []
        owner: dict[str, str] = {}
        for name in settings.profiles:
            profile = known.get(name)
            if profile is None:
                raise ValueError(
                    f"unknown profile {name!r}; known profiles: {', '.join(sorted(known))}"
                )
            for family in family_names(profile):
                if family in owner:
                    raise ValueError(
                        f"profiles {owner[family]!r} and {name!r} both define {family!r}: "
                        "use one of them"
                    )
                owner[family] = name
            chosen.append(profile)
        return SnmpCheckSettings(
            **settings.model_dump(),
            resolved_auth=auth,
            resolved_profiles=tuple(chosen),
            plan=poll_plan(chosen),
        )

    async def __call__(self, check: Check[SnmpCheckSettings], ctx: ProbeContext) -> ProbeResult:
        """Poll the target once with the check's profiles (settings bound by `bind`)."""
        settings = check.settings
        started = time.monotonic()
        deadline = started + check.timeout * 0.95
        request_timeout = settings.request_timeout or check.timeout / (settings.retries + 2)
        auth = settings.resolved_auth
        host, port = parse_target(check.target)
        stats = PollStats()
        client: Client | None = None
        ctx.log(
            "snmp_poll",
            target=check.target,
            auth=auth.describe(),
            profiles=",".join(settings.profiles),
        )
        try:
            if auth.context_name:
                poller = self._context_poller()
                if self._context_auths.get(check.id, auth) != auth:  # changed by a reload
                    self._context_auths[check.id] = auth
                    poller.keep_engines_for(self._context_auths.values())
                self._context_auths[check.id] = auth
                data = await poller.poll(
                    check.target,
                    settings,
                    stats,
                    ctx.log,
                    request_timeout=request_timeout,
                    deadline=deadline,
                )
            else:
                address = await resolve(host, port)
                client = Client(
                    client_socket(auth, address), request_timeout, settings.retries, deadline
                )
                await open_v3(client, self.user_of(auth))
                data = await poll(client, settings, settings.plan, stats, ctx.log)
            lacking = settings.plan.missing_required(data)
            too_large = [(oid, name) for oid, name in lacking if oid in data.unreadable]
            if too_large:
                raise SnmpFailure(
                    "malformed",
                    f"{check.target} answered required {_objects_text(too_large)} with more "
                    "than the 4 KiB gufo-snmp reads of one datagram (a very long string)",
                )
            if lacking:
                raise SnmpFailure(
                    "no_such_object",
                    f"{check.target} does not serve required "
                    f"{_objects_text(lacking)} (noSuchObject, noSuchInstance, endOfMibView or "
                    "an empty table)",
                )
        except NoAnswer as exc:
            failure = await explain_silence(
                exc,
                target=check.target,
                host=host,
                port=port,
                auth=auth,
                request_timeout=request_timeout,
                deadline=deadline,
            )
            return self._failed(failure, client, stats, ctx)
        except SnmpFailure as exc:
            return self._failed(exc, client, stats, ctx)
        except SnmpAuthError:
            failure = await explain_auth(host, port, auth, deadline)
            return self._failed(failure, client, stats, ctx)
        except NoSuchInstance:
            failure = SnmpFailure("no_such_object", "noSuchObject/noSuchInstance")
            return self._failed(failure, client, stats, ctx)
        except (SnmpDecodeError, SnmpEncodeError, SnmpError) as exc:
            reason = f"malformed SNMP message: {exc}"
            if str(exc) == "incomplete":
                reason += f" ({_INCOMPLETE_HINT})"
            return self._failed(SnmpFailure("malformed", reason), client, stats, ctx)
        except OSError as exc:
            failure = SnmpFailure("socket", f"socket error talking to {check.target}: {exc}")
            return self._failed(failure, client, stats, ctx)
        previous = self._previous.get(check.id, {})
        samples, remember = evaluate(settings.resolved_profiles, data, previous, ctx.log)
        self._previous[check.id] = remember
        samples.extend(self._derive(check.id, settings, samples, ctx))
        samples.extend(_self_samples(client, stats))
        missing = settings.plan.missing(data)
        self._tell_missing(check, missing, data.unreadable, ctx)
        samples.append(
            Sample("snmp_objects_missing", float(len(missing)), (), "gauge", _MISSING_HELP)
        )
        ctx.log(
            "snmp_done",
            pdus=client.pdus if client else stats.pdus,
            varbinds=stats.varbinds,
            samples=len(samples),
        )
        return ProbeResult(success=True, samples=tuple(samples))

    def _derive(
        self, check_id: str, settings: SnmpCheckSettings, samples: list[Sample], ctx: ProbeContext
    ) -> list[Sample]:
        """Return the derived samples of the check's profiles, keeping their state per check."""
        defs = tuple(d for p in settings.resolved_profiles for d in p.derive)
        state = self._derived.get(check_id)
        if not defs:
            self._derived.pop(check_id, None)
            return []
        if state is None:
            state = self._derived[check_id] = DeriveState(defs)
            saved = self._saved_derived.pop(check_id, None)
            if saved is not None:  # state saved before a restart
                state.restore(saved)
        elif state.defs != defs:
            state.keep_definitions(defs)  # the check's profiles changed on a reload
        return state.apply(samples, self._clock(), ctx.log)

    def save_state(self) -> dict[str, Any]:
        """Return what should survive a restart, by check id: derive state and last values.

        Without it a restart during a slow SAN degradation would learn the degraded latency as
        the new baseline, and a reboot while Vigie was down would go unseen.
        """
        return {
            "derived": {cid: state.dump() for cid, state in self._derived.items()},
            "previous": {
                cid: [
                    [name, [list(pair) for pair in labels], value]
                    for (name, labels), value in last.items()
                ]
                for cid, last in self._previous.items()
            },
        }

    def load_state(self, data: dict[str, Any]) -> None:
        """Take back saved state; each check's part is applied when it next polls."""
        derived, previous = data.get("derived"), data.get("previous")
        if isinstance(derived, dict):
            self._saved_derived = {k: v for k, v in derived.items() if isinstance(v, dict)}
        if isinstance(previous, dict):
            for cid, entries in previous.items():
                last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
                for entry in entries if isinstance(entries, list) else ():
                    with contextlib.suppress(TypeError, ValueError, IndexError):
                        last[(str(entry[0]), labels_of(entry[1]))] = float(entry[2])
                self._previous.setdefault(cid, last)

    def keep_only(self, check_ids: set[str]) -> None:
        """Keep the state of check_ids only: the others left the plan.

        That is reset and derive state, and the pysnmp engines of context polls: an engine
        whose credentials no remaining check uses (a password rotated by a reload) is closed,
        so the old secret does not stay in memory.
        """
        stores = (
            self._previous,
            self._derived,
            self._saved_derived,
            self._context_auths,
            self._missing_told,
        )
        for store in stores:
            for gone in [c for c in store if c not in check_ids]:
                del store[gone]
        if self._context is not None:
            self._context.keep_engines_for(self._context_auths.values())

    def _tell_missing(
        self,
        check: Check[SnmpCheckSettings],
        missing: list[tuple[str, str]],
        unreadable: set[str],
        ctx: ProbeContext,
    ) -> None:
        """Log the objects the agent lacks when they change, not on every poll."""
        oids = tuple(oid for oid, _ in missing)
        too_large = [(oid, name) for oid, name in missing if oid in unreadable]
        extra = {"too_large": _objects_text(too_large)} if too_large else {}
        if missing:
            ctx.log("snmp_objects_missing", count=len(missing), objects=_objects_text(missing))
        if self._missing_told.get(check.id, ()) == oids:
            return
        self._missing_told[check.id] = oids
        if missing:
            self._log.warning(
                "snmp_objects_missing",
                check=check.id,
                target=check.target,
                count=len(missing),
                objects=_objects_text(missing),
                **extra,
                hint="their metrics are absent; mark an object `required: true` in its "
                "profile to fail the poll instead",
            )
        else:
            self._log.info("snmp_objects_all_served", check=check.id, target=check.target)

    @staticmethod
    def _failed(
        failure: SnmpFailure, client: Client | None, stats: PollStats, ctx: ProbeContext
    ) -> ProbeResult:
        """Return a failed result: the reason and the poll's own metrics, no device metrics."""
        reason = bound_text(failure.reason)
        ctx.log("snmp_failed", kind=failure.kind, reason=reason)
        return ProbeResult(success=False, error=reason, samples=tuple(_self_samples(client, stats)))
