"""On-demand runs, bounded: at most one per check per timeout and a global rate, both counted.

The health engine asks for checks to run now (to confirm a root cause, to re-check what a
recovered root impacted, on a sign of power loss); the scheduler asks this gate first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

Clock = Callable[[], float]
RunNow = Callable[[str, str], bool]
"""(check id, reason) -> True when the run was granted; the engine's seam to the scheduler."""


class OnDemandMetrics:
    """Counters of on-demand runs granted and refused, by reason."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "vigie_ondemand_runs_total",
            "On-demand check runs granted, by why they were asked (confirm, recheck, power...).",
            ["reason"],
            registry=registry,
        )
        self.refused = Counter(
            "vigie_ondemand_refused_total",
            "On-demand check runs refused: 'recent' (one already within the check's timeout)"
            " or 'budget' (the global rate is spent; the scheduled run decides instead).",
            ["reason"],
            registry=registry,
        )


class OnDemandGate:
    """Grants on-demand runs: one per check per timeout, `rate` a second in all (a bucket)."""

    def __init__(
        self,
        metrics: OnDemandMetrics,
        *,
        rate: float = 50.0,
        clock: Clock = time.monotonic,
        logger: Any = None,
    ) -> None:
        self._metrics = metrics
        self.rate = rate
        self._clock = clock
        self._log = logger if logger is not None else structlog.get_logger()
        self._tokens = rate
        self._filled = clock()
        self._last: dict[str, float] = {}
        self._spent_logged = False

    def retry_after(self, check_id: str, timeout: float) -> float:
        """Seconds until the gate could grant this check again (its timeout, or a token)."""
        now = self._clock()
        last = self._last.get(check_id)
        wait = 0.0 if last is None else last + timeout - now
        if self.rate > 0:
            tokens = min(self.rate, self._tokens + (now - self._filled) * self.rate)
            wait = max(wait, (1.0 - tokens) / self.rate)
        return max(wait, 0.001)

    def allow(self, check_id: str, timeout: float, reason: str) -> bool:
        """Return True (and count it) when the check may run now for this reason."""
        now = self._clock()
        last = self._last.get(check_id)
        if last is not None and now - last < timeout:
            self._metrics.refused.labels(reason="recent").inc()
            return False
        self._tokens = min(self.rate, self._tokens + (now - self._filled) * self.rate)
        self._filled = now
        if self._tokens < 1.0:
            self._metrics.refused.labels(reason="budget").inc()
            if not self._spent_logged:  # once per episode: a power cut asks for hundreds
                self._spent_logged = True
                self._log.warning(
                    "ondemand_budget_spent",
                    rate=self.rate,
                    check=check_id,
                    reason=reason,
                    fallback="scheduled runs decide, health.confirm_max at most",
                )
            return False
        self._spent_logged = False
        self._tokens -= 1.0
        self._last[check_id] = now
        if len(self._last) > 100_000:  # forget checks long gone (removed from the plan)
            self._last = {k: v for k, v in self._last.items() if now - v < 3600}
        self._metrics.runs.labels(reason=reason).inc()
        return True
