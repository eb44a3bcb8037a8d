"""Alertmanager sink: POST /api/v2/alerts, firing alerts kept alive by re-sending them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from yarl import URL

from vigie.monitor.alerting.model import Alert, rfc3339
from vigie.monitor.alerting.sink import Delivery, http_error, transport_error

FIRING_TTL_RESENDS = 4
"""A firing alert's endsAt is this many resend intervals ahead, as Prometheus does."""


def alertmanager_payload(alerts: Sequence[Alert], firing_ends_at: datetime) -> list[dict[str, Any]]:
    """Return the JSON body of POST /api/v2/alerts; firing alerts end at firing_ends_at."""
    return [
        {
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": rfc3339(alert.starts_at),
            # A start in the future (a skewed caller) must not make the alert invalid.
            "endsAt": rfc3339(
                alert.ends_at
                if alert.ends_at is not None
                else max(firing_ends_at, alert.starts_at + timedelta(seconds=1))
            ),
            "generatorURL": alert.generator_url,
        }
        for alert in alerts
    ]


class AlertmanagerSink:
    """One Alertmanager of a cluster; the dispatcher sends every alert to each of them."""

    delivery = Delivery.LATEST
    refresh = True

    def __init__(
        self,
        url: str,
        *,
        resend_interval: float,
        timeout: float = 10.0,
        batch_size: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        base = URL(url)
        self.url = base.with_path(base.path.rstrip("/") + "/api/v2/alerts")
        # Alertmanager URLs carry no credentials (settings refuse them): safe to show whole.
        self.where = str(self.url)
        self.name = f"alertmanager:{str(base).rstrip('/')}"
        self.batch_size = batch_size
        self._ttl = FIRING_TTL_RESENDS * resend_interval
        self._timeout = timeout
        self._clock = clock

    async def send(self, alerts: Sequence[Alert], session: aiohttp.ClientSession) -> None:
        """POST the alerts; endsAt of firing ones is computed now, so late deliveries stay live."""
        ends = datetime.fromtimestamp(self._clock(), UTC) + timedelta(seconds=self._ttl)
        payload = alertmanager_payload(alerts, ends)
        try:
            async with session.post(
                self.url,
                json=payload,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                if response.status // 100 != 2:
                    raise await http_error(response, self.where)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise transport_error(exc, self.where, self._timeout) from None
