"""State directory failures on real filesystems: a tiny tmpfs filled until ENOSPC, a read-only
bind mount. Writing state may fail; detection and paging must not stop, and nothing is lost.

Mounting needs root: these tests skip naming that reason otherwise (CI runs the suite as root).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import yaml
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.alerting.conftest import Alertmanager, Receiver, make_alert, metric
from tests.waiting import wait_for
from tests.web.outage import Targets, all_ok
from vigie.monitor.alerting.model import Alert
from vigie.monitor.alerting.outbox import Entry, Outbox
from vigie.monitor.alerting.sink import Delivery
from vigie.monitor.app import Daemon
from vigie.monitor.cli import main
from vigie.monitor.config import load_config
from vigie.monitor.health.persist import HealthStateStore
from vigie.monitor.health.states import State
from vigie.monitor.probe_state import ProbeStateFile
from vigie.monitor.statedir import SELF_INCIDENT_NAME, StateDirMonitor, diagnose
from vigie.probes.base import ProbeRegistry
from vigie.probes.http import HttpProbe, make_session

AM = "alertmanager:http://am"


class Mounts:
    """Mounts made by a test, undone (in reverse order) by the fixture's teardown."""

    def __init__(self) -> None:
        self.made: list[Path] = []

    def tmpfs(self, where: Path, size: str = "256k") -> Path:
        """Mount a tmpfs of `size` on where (created)."""
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            check=True,
            capture_output=True,
        )
        self.made.append(where)
        return where

    def read_only(self, where: Path) -> Path:
        """Make where read-only: bind it on itself, remount the bind read-only."""
        subprocess.run(["mount", "--bind", str(where), str(where)], check=True, capture_output=True)
        self.made.append(where)
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(where)], check=True, capture_output=True
        )
        return where

    def unmount(self, where: Path) -> None:
        """Undo the last mount made on where (lazily: a file still open there stays usable)."""
        subprocess.run(["umount", "-l", str(where)], check=True, capture_output=True)
        self.made.reverse()
        self.made.remove(where)
        self.made.reverse()


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    """Mount helpers for root; skip (naming why) when not root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs or a read-only bind needs root (CI runs as root)")
    made = Mounts()
    yield made
    for where in reversed(made.made):
        done = subprocess.run(["umount", str(where)], check=False, capture_output=True)
        if done.returncode != 0:  # busy: detach it now, the kernel frees it when unused
            subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file in directory until the filesystem says ENOSPC; return it (to free space)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\xff" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    assert os.statvfs(directory).f_bavail == 0
    return filler


def monitor_of(directory: Path) -> tuple[StateDirMonitor, CollectorRegistry]:
    """A state-dir monitor with its own registry."""
    registry = CollectorRegistry()
    return StateDirMonitor(directory, registry, logger=structlog.get_logger()), registry


def failures(registry: CollectorRegistry, store: str) -> float:
    """vigie_state_write_failures_total of a store."""
    return metric(registry, "vigie_state_write_failures_total", store=store)


def degraded(registry: CollectorRegistry) -> float:
    """vigie_degraded{reason="state_dir"}."""
    return metric(registry, "vigie_degraded", reason="state_dir")


def test_outbox_keeps_working_in_memory_on_a_full_disk_and_writes_it_all_back(
    tmp_path: Path, mounts: Mounts
) -> None:
    """On ENOSPC the outbox carries on in memory (queue and active set); once space returns,
    everything queued meanwhile is in the file, and ids given meanwhile are never reused."""
    fs = mounts.tmpfs(tmp_path / "fs")
    monitor, registry = monitor_of(fs)
    path = fs / "outbox.sqlite"
    box = Outbox(path, report=monitor, retry_every=3600)
    before = make_alert("incident:before")
    box.record([Entry(AM, before, Delivery.LATEST)], activate=[before])
    filler = fill(fs)
    during = [make_alert(f"incident:during-{i}") for i in range(3)]
    for alert in during:
        box.record([Entry(AM, alert, Delivery.LATEST)], activate=[alert])
    assert box.in_memory
    assert failures(registry, "outbox") >= 1 and degraded(registry) == 1
    first = box.pending(AM, 10)
    assert [r.alert.key for r in first] == ["incident:before"] + [a.key for a in during]
    box.ack([first[0].id])  # delivered while in memory
    assert not box.flush(), "the disk is still full"
    filler.unlink()
    assert box.flush() and not box.in_memory
    assert degraded(registry) == 0 and not monitor.failing
    box.record([Entry(AM, make_alert("incident:after"), Delivery.LATEST)])
    box.close()
    reopened = Outbox(path)
    rows = reopened.pending(AM, 10)
    assert [r.alert.key for r in rows] == [a.key for a in during] + ["incident:after"]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert rows[-1].id > max(r.id for r in first), "an id given in memory was reused"
    assert set(reopened.active()) == {"incident:before"} | {a.key for a in during}
    reopened.close()


def test_health_state_and_history_wait_in_memory_until_space_returns(
    tmp_path: Path, mounts: Mounts
) -> None:
    """Incident starts, component states and recovery-board transitions refused by a full
    disk are written by the first save or flush after space returns, none lost."""
    fs = mounts.tmpfs(tmp_path / "fs")
    monitor, registry = monitor_of(fs)
    store = HealthStateStore(fs / "health.sqlite", report=monitor)
    store.load()
    store.save({"incident:a": 1.0}, {"a": (State.OK, 1.0)})
    store.save_history([("a", 1.0, State.OK)], [], 50)
    filler = fill(fs)
    store.save({"incident:a": 1.0, "incident:b": 2.0}, {"a": (State.DOWN, 2.0)})
    store.save_history([("a", 2.0, State.DOWN)], [], 50)
    assert store.failing and failures(registry, "health") >= 1 and degraded(registry) == 1
    filler.unlink()
    assert store.flush() and not store.failing and degraded(registry) == 0
    store.close()
    again = HealthStateStore(fs / "health.sqlite")
    assert again.load() == ({"incident:a": 1.0, "incident:b": 2.0}, {"a": (State.DOWN, 2.0)})
    assert again.load_history(50) == {"a": [(1.0, State.OK), (2.0, State.DOWN)]}
    again.close()


async def test_probe_state_on_a_full_disk_is_reported_and_leaves_no_partial_file(
    tmp_path: Path, mounts: Mounts
) -> None:
    """A probes.json write refused by ENOSPC is reported, its temporary file removed (it would
    hold space the disk needs back), and the next save after space returns succeeds."""
    from vigie.probes.snmp import SnmpProbe

    fs = mounts.tmpfs(tmp_path / "fs")
    monitor, registry = monitor_of(fs)
    probe = SnmpProbe()
    probe.load_state({"previous": {"a": [["uptime", [], 1.0]]}})
    state = ProbeStateFile(fs / "probes.json", structlog.get_logger(), report=monitor)
    filler = fill(fs)
    assert not await state.save([probe])
    assert failures(registry, "probes") == 1 and degraded(registry) == 1
    assert sorted(p.name for p in fs.iterdir()) == ["filler"]
    filler.unlink()
    assert await state.save([probe])
    assert degraded(registry) == 0 and json.loads((fs / "probes.json").read_text())


def test_outbox_on_a_read_only_mount_starts_in_memory_from_the_file(
    tmp_path: Path, mounts: Mounts
) -> None:
    """An outbox file on a read-only mount cannot be opened for writing: the outbox starts in
    memory with what the file holds, names the cause, and raises nothing."""
    state = tmp_path / "state"
    box = Outbox(state / "outbox.sqlite")
    alert = make_alert("incident:held")
    box.record([Entry(AM, alert, Delivery.LATEST)], activate=[alert])
    box.close()
    mounts.read_only(state)
    monitor, registry = monitor_of(state)
    ro = Outbox(state / "outbox.sqlite", report=monitor)
    assert ro.in_memory and list(ro.active()) == ["incident:held"]
    assert [r.alert.key for r in ro.pending(AM, 10)] == ["incident:held"]
    (problem,) = monitor.problems()
    assert problem.cause == "read-only filesystem" and "remount" in problem.fix
    assert degraded(registry) == 1
    ro.close()


def test_log_names_path_and_cause_at_most_once_a_minute(tmp_path: Path) -> None:
    """A store failing again and again is logged once a minute (with the count in between),
    and its recovery once."""
    now = [1000.0]
    monitor = StateDirMonitor(
        tmp_path, CollectorRegistry(), logger=structlog.get_logger(), clock=lambda: now[0]
    )
    error = OSError(errno.ENOSPC, "No space left on device")
    with capture_logs() as logs:
        for _ in range(10):
            monitor.failed("health", tmp_path / "health.sqlite", error)
            now[0] += 5
        monitor.failed("health", tmp_path / "health.sqlite", error)  # 50 s later: quiet
        now[0] += 15
        monitor.failed("health", tmp_path / "health.sqlite", error)  # 65 s later: logged
        monitor.ok("health")
    events = [(e["event"], e.get("unlogged")) for e in logs]
    assert events == [
        ("state_write_failed", 0),
        ("state_write_failed", 10),
        ("state_write_recovered", 0),
    ]
    assert logs[0]["path"] == str(tmp_path / "health.sqlite")
    assert logs[0]["cause"] == "no space left on device"


@pytest.mark.parametrize(
    ("error", "cause", "fix"),
    [
        (OSError(errno.EACCES, "Permission denied"), "permission denied", "chown"),
        (sqlite3.OperationalError("disk I/O error"), "disk I/O error", "dmesg"),
    ],
)
def test_diagnose_names_cause_and_fix(
    tmp_path: Path, error: BaseException, cause: str, fix: str
) -> None:
    """Each failure is told apart: its cause in words, and the fix naming the directory."""
    got_cause, got_fix = diagnose(tmp_path / "x.sqlite", error)
    assert got_cause == cause
    assert fix in got_fix and str(tmp_path) in got_fix


# --- the daemon --------------------------------------------------------------------------


def daemon_config(tmp_path: Path, state: Path, am_url: str, base: str) -> Path:
    """A small hospital: two applications, each with an http check on the Targets app."""
    apps = ["dpi", "labo"]
    config: dict[str, Any] = {
        "web": {"listen": "127.0.0.1:0"},
        "state_dir": str(state),
        "sites": [{"id": "nord", "name": "Datacenter Nord"}],
        "components": [
            {"id": app, "kind": "application", "site": "nord", "checks": [f"chk-{app}"]}
            for app in apps
        ],
        "checks": [
            {
                "id": f"chk-{app}",
                "kind": "http",
                "target": f"{base}/{app}",
                "interval": "500ms",
                "timeout": "450ms",  # no timeout under load: a state flip the test did not make
            }
            for app in apps
        ],
        "health": {"resolve_hold": 0},
        "alerting": {
            "alertmanagers": [am_url],
            "resend_interval": "1s",
            "backoff_initial": "50ms",
            "backoff_max": "300ms",
            "watchdog": False,
            "vigie_instance": "vigie-test",
            "flush_timeout": "2s",
        },
    }
    path = tmp_path / "vigie.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@asynccontextmanager
async def running(config: Path, targets: Targets) -> AsyncIterator[Daemon]:
    """A Daemon on config (state retried every 200 ms), stopped at the end."""
    registry = ProbeRegistry([HttpProbe()])
    async with make_session() as session:
        daemon = Daemon(
            load_config(config, registry, env={}), registry, session, state_retry_every=0.2
        )
        await daemon.start()
        try:
            yield daemon
        finally:
            await daemon.stop()


async def get(session: aiohttp.ClientSession, daemon: Daemon, path: str) -> tuple[int, str]:
    """GET a path of the daemon's web server."""
    async with session.get(f"http://127.0.0.1:{daemon.listen_port}{path}") as response:
        return response.status, await response.text()


def am_has(am: Alertmanager, session: aiohttp.ClientSession, alertname: str, **labels: str) -> Any:
    """A condition: Alertmanager holds a firing alert with alertname (and labels)."""

    async def check() -> bool:
        for alert in await am.alerts(session):
            got = alert["labels"]
            if got.get("alertname") == alertname and labels.items() <= got.items():
                return bool(alert["status"]["state"] == "active")
        return False

    return check


@pytest.fixture
async def targets() -> AsyncIterator[Targets]:
    """The applications' health pages on a loopback port."""
    app = Targets()
    await app.start()
    yield app
    await app.stop()


async def test_daemon_pages_while_the_disk_is_full_and_loses_nothing(
    *,
    tmp_path: Path,
    mounts: Mounts,
    alertmanager: Alertmanager,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    targets: Targets,
) -> None:
    """With state_dir full: an application going DOWN and the state_dir self-incident both
    reach a real Alertmanager, /-/healthy answers 200 naming the problem, the failures are
    counted; after space returns, the self-incident resolves and the incident, its queued
    alerts and the state changes are on disk."""
    fs = mounts.tmpfs(tmp_path / "fs", size="4m")
    state = fs / "state"
    config = daemon_config(tmp_path, state, alertmanager.url, targets.base)
    async with running(config, targets) as daemon:
        await wait_for(lambda: all_ok(daemon), "both applications OK")
        filler = fill(fs)
        targets.down = {"dpi"}
        await wait_for(am_has(alertmanager, session, "VigieIncident", component="dpi"), "dpi paged")
        await wait_for(am_has(alertmanager, session, SELF_INCIDENT_NAME), "self-incident paged")
        (own,) = [
            a
            for a in await alertmanager.alerts(session)
            if a["labels"]["alertname"] == SELF_INCIDENT_NAME
        ]
        summary = own["annotations"]["summary"]
        assert str(state) in summary and "no space left on device" in summary
        assert "Fix: free space" in summary
        status, body = await get(session, daemon, "/-/healthy")
        assert status == 200 and "Degraded: state_dir" in body and str(state) in body
        assert "no space left on device" in body
        status, page = await get(session, daemon, "/")
        assert status == 200 and "Vigie runs degraded, state_dir: cannot write" in page
        reg = daemon.own_registry
        assert failures(reg, "outbox") >= 1 and degraded(reg) == 1
        # Detection goes on: a second failure while the disk is still full is paged too.
        targets.down = {"dpi", "labo"}
        await wait_for(
            am_has(alertmanager, session, "VigieIncident", component="labo"), "labo paged"
        )
        assert failures(reg, "health") >= 1, "labo's new state was not refused by the disk?"
        filler.unlink()
        await wait_for(lambda: degraded(reg) == 0, "writing works again")
        await wait_for(
            lambda: receiver.notified("/am/am", SELF_INCIDENT_NAME, "resolved") >= 1,
            "the self-incident resolved at Alertmanager",
        )
        status, body = await get(session, daemon, "/-/healthy")
        assert (status, body) == (200, "Healthy.\n")
        assert "Vigie runs degraded" not in (await get(session, daemon, "/"))[1]
        on_disk = sqlite3.connect(f"{(state / 'outbox.sqlite').as_uri()}?mode=ro", uri=True)
        active = [Alert.from_json(a) for (a,) in on_disk.execute("SELECT alert FROM active")]
        on_disk.close()
        assert sorted(a.labels["component"] for a in active) == ["dpi", "labo"]
        assert all(a.name == "VigieIncident" for a in active)
        health = HealthStateStore(state / "health.sqlite")
        history = health.load_history(50)
        health.close()
        assert [s for _, s in history["dpi"]][-1] is State.DOWN
        assert [s for _, s in history["labo"]][-1] is State.DOWN


START_CASES = {
    "read-only": ("read-only filesystem", "remount"),
    "full": ("no space left on device", "free space"),
}


@pytest.mark.parametrize("how", sorted(START_CASES))
async def test_daemon_starts_on_an_unusable_state_dir_pages_it_and_recovers(
    *,
    tmp_path: Path,
    mounts: Mounts,
    alertmanager: Alertmanager,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    targets: Targets,
    how: str,
) -> None:
    """Starting on a read-only or full state_dir: no traceback, the daemon runs in memory,
    pages the self-incident naming the path, the cause and the fix, and still pages what
    fails; once the directory takes writes, the self-incident resolves and what was held in
    memory (the incident) is in the file."""
    cause, fix = START_CASES[how]
    fs = mounts.tmpfs(tmp_path / "fs", size="4m")  # room for the WALs once writable
    state = fs / "state"
    state.mkdir()
    filler = None
    if how == "full":
        filler = fill(fs)
    else:
        mounts.read_only(fs)
    config = daemon_config(tmp_path, state, alertmanager.url, targets.base)
    with capture_logs() as logs:
        async with running(config, targets) as daemon:
            await wait_for(am_has(alertmanager, session, SELF_INCIDENT_NAME), "self-incident")
            targets.down = {"dpi"}
            await wait_for(
                am_has(alertmanager, session, "VigieIncident", component="dpi"), "dpi paged"
            )
            (own,) = [
                a
                for a in await alertmanager.alerts(session)
                if a["labels"]["alertname"] == SELF_INCIDENT_NAME
            ]
            status, body = await get(session, daemon, "/-/healthy")
            if filler is not None:
                filler.unlink()
            else:
                mounts.unmount(fs)  # the read-only bind goes, the tmpfs below is writable
            await wait_for(lambda: degraded(daemon.own_registry) == 0, "writing works again")
            await wait_for(
                lambda: receiver.notified("/am/am", SELF_INCIDENT_NAME, "resolved") >= 1,
                "the self-incident resolved at Alertmanager",
            )
    summary = own["annotations"]["summary"]
    assert str(state) in summary and cause in summary and f"Fix: {fix}" in summary
    assert status == 200 and cause in body
    failed = [e for e in logs if e["event"] == "state_write_failed"]
    assert failed and all(e["cause"] == cause for e in failed)
    assert not [e for e in logs if e.get("exc_info") or e["log_level"] == "critical"]
    on_disk = sqlite3.connect(f"{(state / 'outbox.sqlite').as_uri()}?mode=ro", uri=True)
    active = [Alert.from_json(a) for (a,) in on_disk.execute("SELECT alert FROM active")]
    on_disk.close()
    assert [a.labels["component"] for a in active] == ["dpi"]


def test_vigie_check_reports_a_read_only_or_full_state_dir(
    tmp_path: Path, mounts: Mounts, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vigie check` fails on a state_dir it cannot write, naming the path, cause and fix."""
    fs = mounts.tmpfs(tmp_path / "fs")
    config = daemon_config(tmp_path, fs / "state", "http://127.0.0.1:9", "http://127.0.0.1:9")
    assert main(["check", str(config)]) == 0
    capsys.readouterr()
    filler = fill(fs)
    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"state_dir: cannot write {fs / 'state'}: no space left on device" in err
    assert "Fix: free space" in err
    filler.unlink()
    mounts.read_only(fs)
    assert main(["check", str(config)]) == 1
    assert "read-only filesystem" in capsys.readouterr().err


@pytest.fixture
def public_dir(mounts: Mounts) -> Iterator[Path]:
    """A directory another user can reach (tmp_path's parents are root's alone); removed after."""
    made = Path(tempfile.mkdtemp(prefix="vigie-state-test-"))
    made.chmod(0o755)
    yield made
    shutil.rmtree(made, ignore_errors=True)


def test_permission_denied_for_the_daemon_user(public_dir: Path) -> None:
    """Run as an unprivileged user (root ignores modes): `vigie check` fails on a state_dir
    owned by root naming 'permission denied' and chown, and an outbox there runs in memory."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run as another user")
    state = public_dir / "state"
    state.mkdir(mode=0o755)
    config = daemon_config(public_dir, state, "http://127.0.0.1:9", "http://127.0.0.1:9")
    config.chmod(0o644)
    as_nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    vigie = Path(sys.executable).with_name("vigie")
    check = subprocess.run(
        [*as_nobody, str(vigie), "check", str(config)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"state_dir: cannot write {state}: permission denied" in check.stderr
    assert "chown" in check.stderr
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from prometheus_client import CollectorRegistry\n"
        "from monitor.alerting.outbox import Outbox\n"
        "from monitor.statedir import StateDirMonitor\n"
        "monitor = StateDirMonitor(Path(sys.argv[1]), CollectorRegistry())\n"
        "box = Outbox(Path(sys.argv[1]) / 'outbox.sqlite', report=monitor)\n"
        "print(box.in_memory, monitor.problems()[0].cause)\n"
    )
    run = subprocess.run(
        [*as_nobody, sys.executable, "-c", script, str(state)],
        check=False,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "True permission denied"


def test_outbox_locked_by_another_process_runs_in_memory_then_writes_back(
    tmp_path: Path,
) -> None:
    """A second connection holding the write lock (an sqlite3 shell left in a transaction)
    makes the outbox carry on in memory, naming the lock; once released, all is in the file."""
    monitor, registry = monitor_of(tmp_path)
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, report=monitor, retry_every=3600)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    alert = make_alert("incident:while-locked")
    box.record([Entry(AM, alert, Delivery.LATEST)], activate=[alert])
    assert box.in_memory and failures(registry, "outbox") == 1
    (problem,) = monitor.problems()
    assert problem.cause == "locked by another process" and "fuser" in problem.fix
    other.execute("ROLLBACK")
    other.close()
    assert box.flush() and degraded(registry) == 0
    box.close()
    again = Outbox(path)
    assert [r.alert.key for r in again.pending(AM, 10)] == ["incident:while-locked"]
    again.close()


def test_self_incident_keeps_its_start_while_stores_come_and_go(tmp_path: Path) -> None:
    """The self-incident starts when the first store fails and keeps that start while other
    stores fail and recover; it is gone only when every store writes again."""
    now = [1000.0]
    monitor = StateDirMonitor(
        tmp_path, CollectorRegistry(), logger=structlog.get_logger(), clock=lambda: now[0]
    )
    full = OSError(errno.ENOSPC, "No space left on device")
    monitor.failed("outbox", tmp_path / "outbox.sqlite", full)
    now[0] += 10
    monitor.failed("health", tmp_path / "health.sqlite", full)
    (first,) = monitor.alerts()
    summary = monitor.summary()
    assert summary is not None and summary.count("Fix:") == 1, "one cause, said once"
    assert summary.startswith(
        f"cannot write {tmp_path / 'outbox.sqlite'}, {tmp_path / 'health.sqlite'}: "
        "no space left on device. Fix: free space"
    )
    monitor.ok("outbox")
    (second,) = monitor.alerts()
    assert first.starts_at == second.starts_at and first.starts_at.timestamp() == 1000.0
    assert str(tmp_path / "health.sqlite") in second.annotations["summary"]
    monitor.ok("health")
    assert monitor.alerts() == [] and monitor.summary() is None


def as_nobody(setpriv: str) -> list[str]:
    """The command prefix running what follows as nobody."""
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


MERGE_SCRIPT = """
import sys
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: answers
from pathlib import Path
from prometheus_client import CollectorRegistry
from vigie.monitor.alerting.outbox import Entry, Outbox
from vigie.monitor.alerting.sink import Delivery
from vigie.monitor.statedir import StateDirMonitor
from tests.alerting.conftest import make_alert
path = Path(sys.argv[1])
monitor = StateDirMonitor(path.parent, CollectorRegistry())
box = Outbox(path, report=monitor, retry_every=3600)
alert = make_alert("incident:new")
box.record([Entry("am", alert, Delivery.LATEST)], activate=[alert])
print(box.in_memory, monitor.problems()[0].cause, flush=True)
sys.stdin.readline()  # the test makes the file readable and writable meanwhile
print(box.flush(), flush=True)
box.close()
"""


def test_an_unreadable_outbox_file_is_added_to_never_replaced(public_dir: Path) -> None:
    """An outbox file the daemon's user cannot read at start (root's, mode 600): the outbox
    runs in memory; once the file is fixed, what was queued meanwhile is added to what the
    file held (the rows queued before the restart are kept)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run as another user")
    state = public_dir / "state"
    state.mkdir()
    path = state / "outbox.sqlite"
    old = Outbox(path)
    alert = make_alert("incident:old")
    old.record([Entry("am", alert, Delivery.LATEST)], activate=[alert])
    old.close()
    shutil.chown(state, "nobody", "nogroup")
    path.chmod(0o600)  # root's: nobody can neither read nor write it
    with subprocess.Popen(
        [*as_nobody(setpriv), sys.executable, "-c", MERGE_SCRIPT, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        first = child.stdout.readline().strip()
        if first != "True permission denied":
            child.kill()
            pytest.fail(f"child said {first!r}: {child.communicate()[1][-2000:]}")
        shutil.chown(path, "nobody", "nogroup")
        out, err = child.communicate("go\n", timeout=30)
        assert child.returncode == 0, err[-2000:]
        assert out.strip() == "True", err[-2000:]
    box = Outbox(path)
    assert [r.alert.key for r in box.pending("am", 10)] == ["incident:old", "incident:new"]
    assert set(box.active()) == {"incident:old", "incident:new"}
    box.close()
