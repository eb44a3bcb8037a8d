"""The state directory's health: failed writes counted, logged at most once a minute, paged.

Every store kept in state_dir (the alert outbox, the health state, the probe state) reports
its writes to one StateDirMonitor. A failed write never stops the daemon: the store keeps what
it could not write in memory and writes it when writing works again. The monitor counts the
failure (vigie_state_write_failures_total{store}), sets vigie_degraded{reason="state_dir"},
logs the path, the cause and the fix (once a minute per store at most) and offers a Vigie
self-incident, which the daemon pages with the health incidents.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from vigie.core.results import bound_text
from vigie.monitor.alerting.model import Alert

STORES = ("outbox", "health", "probes", "audit", "archive", "maintenance")
"""The stores kept in state_dir, as the `store` label names them."""

SELF_INCIDENT_KEY = "vigie:state_dir"
SELF_INCIDENT_NAME = "VigieStateDirUnwritable"
PROBE_BYTES = 64 * 1024
"""What `vigie check` writes (and removes) to prove the state directory takes data."""

_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM}


@dataclass(frozen=True, slots=True)
class StateProblem:
    """Why a store cannot write its file, and what the operator should do."""

    store: str
    path: Path
    cause: str
    fix: str
    error: str
    since: float

    def text(self) -> str:
        """Return one line naming the path, the cause and the fix."""
        return f"cannot write {self.path}: {self.cause}. Fix: {self.fix}"


def _existing(path: Path) -> Path:
    """Return path or its nearest existing ancestor (what statvfs and access can look at)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def diagnose(path: Path, error: BaseException) -> tuple[str, str]:
    """Return (cause, fix) of a failed write of path, from the error and the filesystem."""
    directory = path.parent
    where = _existing(directory)
    code = error.errno if isinstance(error, OSError) else None
    name = getattr(error, "sqlite_errorname", "") if isinstance(error, sqlite3.Error) else ""
    try:
        fs = os.statvfs(where)
        read_only = bool(fs.f_flag & os.ST_RDONLY)
        free = fs.f_bavail * fs.f_frsize
    except OSError:
        read_only, free = False, -1
    if code == errno.EROFS or read_only:
        return (
            "read-only filesystem",
            f"remount the filesystem holding {directory} read-write, "
            "or set state_dir to a writable directory",
        )
    if code in _FULL or name.startswith("SQLITE_FULL") or 0 <= free < PROBE_BYTES:
        return (
            "no space left on device",
            f"free space on the filesystem holding {directory} (df -h {where}), "
            "or set state_dir to a larger one",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            "locked by another process",
            f"close what holds {path} open (fuser -v {path}): a second Vigie on the same "
            "state_dir, or an sqlite3 shell left in a transaction",
        )
    if where.is_file() or code in (errno.ENOTDIR, errno.EEXIST):
        return (
            f"{where} is a file, not a directory",
            f"move {where} away or set state_dir to a directory",
        )
    file_denied = path.exists() and not os.access(path, os.W_OK)
    if code in _DENIED or file_denied or not os.access(where, os.W_OK):
        return (
            "permission denied",
            f"let the user running Vigie write {directory} and its files (chown, chmod)",
        )
    return (
        bound_text(str(error) or type(error).__name__, 200),
        f"check the disk and the filesystem holding {directory} (dmesg, df -h {where})",
    )


def is_write_failure(exc: sqlite3.Error) -> bool:
    """Tell a failure of the disk or the file (full, read-only, locked...) from a bug of ours."""
    return not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
    )


def read_only_copy(path: Path) -> sqlite3.Connection | None:
    """Open an SQLite file only to read it (on a read-only mount too); None if that fails."""
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        return None
    return db


def check_directory(directory: Path) -> tuple[str, str] | None:
    """Try what the daemon will do in directory (create it, write, fsync, remove a file).

    Return (cause, fix) when that fails, None when the directory takes data.
    """
    probe = directory / ".vigie-write-check"
    created = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("outbox.sqlite", "health.sqlite", "probes.json"):
            existing = directory / name
            if existing.exists() and not os.access(existing, os.W_OK):
                raise PermissionError(errno.EACCES, "not writable", str(existing))
        with probe.open("wb") as out:
            out.write(b"\0" * PROBE_BYTES)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        return diagnose(probe, exc)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
            for made in created:  # a check leaves the filesystem as it found it
                made.rmdir()
    return None


class StateDirMonitor:
    """Collects write outcomes of the stores in state_dir: metrics, logs, self-incident."""

    def __init__(
        self,
        directory: Path,
        registry: CollectorRegistry | None = None,
        *,
        logger: Any = None,
        clock: Callable[[], float] = time.time,
        log_every: float = 60.0,
        url: str = "",
    ) -> None:
        self.directory = directory
        self._log = logger if logger is not None else structlog.get_logger()
        self._clock = clock
        self._log_every = log_every
        self._url = url
        registry = registry if registry is not None else CollectorRegistry()
        self.failures = Counter(
            "vigie_state_write_failures",
            "Failed writes of state in state_dir, by store (outbox, health, probes, audit,"
            " archive).",
            ["store"],
            registry=registry,
        )
        self.degraded = Gauge(
            "vigie_degraded",
            "1 while Vigie runs degraded for this reason (state_dir: state kept in memory).",
            ["reason"],
            registry=registry,
        )
        for store in STORES:
            self.failures.labels(store=store)
        self.degraded.labels(reason="state_dir").set(0)
        self._problems: dict[str, StateProblem] = {}
        self._episode: float | None = None
        """When the current run of failures began (the self-incident's start), None if none."""
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def failed(self, store: str, path: Path, error: BaseException) -> None:
        """Count a failed write of store's file; log it unless logged less than a minute ago."""
        now = self._clock()
        self.failures.labels(store=store).inc()
        cause, fix = diagnose(path, error)
        old = self._problems.get(store)
        since = old.since if old is not None and old.path == path else now
        problem = StateProblem(store, path, cause, fix, bound_text(str(error), 200), since)
        self._problems[store] = problem
        if self._episode is None:
            self._episode = now
        self.degraded.labels(reason="state_dir").set(1)
        last = self._logged_at.get(store)
        if last is not None and now - last < self._log_every and old is not None:
            self._unlogged[store] = self._unlogged.get(store, 0) + 1
            return
        self._logged_at[store] = now
        self._log.error(
            "state_write_failed",
            store=store,
            path=str(path),
            cause=cause,
            fix=fix,
            error=problem.error,
            unlogged=self._unlogged.pop(store, 0),
            kept="in memory until writing works again",
        )

    def ok(self, store: str) -> None:
        """Record that store wrote everything it held; clear its problem if it had one."""
        problem = self._problems.pop(store, None)
        if problem is None:
            return
        self._logged_at.pop(store, None)
        self._log.info(
            "state_write_recovered",
            store=store,
            path=str(problem.path),
            failed_for=round(self._clock() - problem.since, 3),
            unlogged=self._unlogged.pop(store, 0),
        )
        if not self._problems:
            self._episode = None
            self.degraded.labels(reason="state_dir").set(0)

    @property
    def failing(self) -> bool:
        """True while some store holds state it could not write."""
        return bool(self._problems)

    def problems(self) -> list[StateProblem]:
        """Return the current problems, oldest first."""
        return sorted(self._problems.values(), key=lambda p: (p.since, p.store))

    def summary(self) -> str | None:
        """Return one line describing the problem for /-/healthy, None when writing works."""
        problems = self.problems()
        if not problems:
            return None
        paths: dict[tuple[str, str], list[str]] = {}
        for p in problems:  # the same cause and fix once, with every path it concerns
            paths.setdefault((p.cause, p.fix), []).append(str(p.path))
        return "; ".join(
            f"cannot write {', '.join(names)}: {cause}. Fix: {fix}"
            for (cause, fix), names in paths.items()
        )

    def alerts(self) -> list[Alert]:
        """Return the self-incident to page while state cannot be written (else nothing)."""
        problems = self.problems()
        if not problems:
            return []
        first = problems[0]
        lines = [f"{p.store}: {p.path}: {p.cause} ({p.error})" for p in problems]
        description = (
            "Vigie keeps running and keeps paging: what it cannot write is held in memory "
            "and written when writing works again, but a restart now would lose it "
            "(alerts queued for delivery, incident start times, the recovery board).\n"
            + "\n".join(lines)
        )
        return [
            Alert(
                key=SELF_INCIDENT_KEY,
                labels={
                    "alertname": SELF_INCIDENT_NAME,
                    "severity": "critical",
                    "component": "vigie",
                    "root_cause": "state_dir",
                },
                annotations={
                    "summary": f"Vigie cannot write its state in {first.path}: "
                    f"{first.cause}. Fix: {first.fix}",
                    "description": description[:4000],
                    "fix": first.fix,
                },
                # One start per episode: a store recovering while another still fails must not
                # move it (Alertmanager would see a changed alert).
                starts_at=datetime.fromtimestamp(self._episode or first.since, UTC),
                generator_url=self._url,
            )
        ]
