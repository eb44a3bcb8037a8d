"""Probe state kept over a restart: SNMP baselines, forecast points and last values.

A probe that learns from its own history (the SNMP probe's EWMA latency baselines, pool-fill
forecasts, sysUpTime for reboot detection) exposes `save_state()` and `load_state(data)`.
Without this, a restart in the middle of a slow SAN degradation would learn the degraded
latency as the new normal and clear the alert. The daemon writes every such probe's state to
one JSON file in state_dir each minute and on stop, atomically, and reads it at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vigie.monitor.alerting.outbox import WriteReport
from vigie.probes.base import StatefulProbe

MAX_STATE_BYTES = 64 * 1024 * 1024
"""A state file larger than this is not read (it is ours, but the disk is not trusted)."""


class ProbeStateFile:
    """One JSON file holding each stateful probe's state by kind."""

    STORE = "probes"

    def __init__(self, path: Path, log: Any, *, report: WriteReport | None = None) -> None:
        self.path = path
        self._log = log
        self._report = report

    def load(self, probes: Iterable[object]) -> None:
        """Give each stateful probe its saved state; a missing or bad file is only logged."""
        try:
            if self.path.stat().st_size > MAX_STATE_BYTES:
                raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self._log.warning("probe_state_unreadable", path=str(self.path), error=str(exc))
            return
        for probe in probes:
            if not isinstance(probe, StatefulProbe):
                continue
            part = data.get(probe.kind)
            if isinstance(part, dict):
                try:
                    probe.load_state(part)
                except Exception as exc:  # an old or damaged file must not stop the start
                    self._log.warning("probe_state_ignored", kind=probe.kind, error=repr(exc))

    def snapshot(self, probes: Iterable[object]) -> dict[str, Any]:
        """Return every stateful probe's state by kind (call it on the event loop)."""
        return {p.kind: p.save_state() for p in probes if isinstance(p, StatefulProbe)}

    def write(self, data: dict[str, Any]) -> None:
        """Write data atomically (temporary file, fsync, rename)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with tmp.open("w") as out:
                json.dump(data, out, separators=(",", ":"))
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
        except BaseException:
            # A half-written temporary file would hold space a full disk needs back.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    async def save(self, probes: Iterable[object]) -> bool:
        """Snapshot on the loop, write in a thread; a failure is reported, never raised.

        Return True when the file was written (or there was nothing to write). The state
        itself lives in the probes, so a failed write loses nothing: the next one writes it all.
        """
        data = self.snapshot(probes)
        if not data:
            return True
        try:
            await asyncio.to_thread(self.write, data)
        except (OSError, ValueError, TypeError) as exc:
            if self._report is not None and isinstance(exc, OSError):
                self._report.failed(self.STORE, self.path, exc)  # counted, logged once a minute
            else:
                self._log.warning("probe_state_save_failed", path=str(self.path), error=str(exc))
            return False
        if self._report is not None:
            self._report.ok(self.STORE)
        return True

    async def run(self, probes: Iterable[object], every: float = 60.0) -> None:
        """Save every `every` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            await self.save(probes)
