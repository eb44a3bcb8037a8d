"""Webhook sink: Alertmanager's webhook JSON (version 4), so existing receivers work as they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from vigie.monitor.alerting.model import GO_ZERO_TIME, Alert, fingerprint, rfc3339
from vigie.monitor.alerting.sink import Delivery, http_error, transport_error


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Return the pairs every mapping has, as Alertmanager's commonLabels."""
    if not maps:
        return {}
    common = dict(maps[0])
    for other in maps[1:]:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return dict(sorted(common.items()))


def webhook_payload(
    alerts: Sequence[Alert], *, receiver: str, vigie_instance: str, external_url: str = ""
) -> dict[str, Any]:
    """Return a webhook notification as Alertmanager builds it for a route without group_by."""
    items = [
        {
            "status": alert.state,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": rfc3339(alert.starts_at),
            # Alertmanager hides the end of a firing alert behind Go's zero time.
            "endsAt": GO_ZERO_TIME if alert.ends_at is None else rfc3339(alert.ends_at),
            "generatorURL": alert.generator_url,
            "fingerprint": fingerprint(alert.labels),
        }
        for alert in alerts
    ]
    firing = any(alert.ends_at is None for alert in alerts)
    # Route key and group labels as Alertmanager formats them: a route matching our instance.
    instance = vigie_instance.replace("\\", "\\\\").replace('"', '\\"')
    return {
        "version": "4",
        "groupKey": f'{{}}/{{vigie_instance="{instance}"}}:{{}}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": items,
    }


class WebhookSink:
    """POSTs each state change to a receiver of Alertmanager's webhook format."""

    delivery = Delivery.LATEST
    refresh = False

    def __init__(
        self,
        url: str,
        *,
        name: str,
        vigie_instance: str,
        bearer_token: SecretStr | None = None,
        external_url: str = "",
        timeout: float = 10.0,
        batch_size: int = 64,
    ) -> None:
        self._url = url
        parsed = URL(url)
        # Webhook paths and queries often hold a token: show only scheme, host and port.
        self.where = f"webhook {parsed.origin()!s}"
        self._hide = (url, parsed.raw_path_qs, parsed.path_qs, parsed.raw_path, parsed.path)
        self.name = name
        self.batch_size = batch_size
        self._receiver = name.removeprefix("webhook:")
        self._instance = vigie_instance
        self._token = bearer_token
        self._external_url = external_url
        self._timeout = timeout

    async def send(self, alerts: Sequence[Alert], session: aiohttp.ClientSession) -> None:
        """POST one notification carrying the alerts."""
        payload = webhook_payload(
            alerts,
            receiver=self._receiver,
            vigie_instance=self._instance,
            external_url=self._external_url,
        )
        headers = {}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        try:
            async with session.post(
                self._url,
                json=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                if response.status // 100 != 2:
                    raise await http_error(response, self.where, self._hide)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise transport_error(exc, self.where, self._timeout, self._hide) from None
