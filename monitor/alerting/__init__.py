"""Alert delivery: a durable outbox and one module per sink (Alertmanager, webhook, SMTP)."""

from __future__ import annotations

import time
from collections.abc import Callable

from vigie.monitor.alerting.alertmanager import AlertmanagerSink
from vigie.monitor.alerting.dispatcher import WATCHDOG_KEY, AlertDispatcher, AlertingMetrics
from vigie.monitor.alerting.model import Alert, fingerprint
from vigie.monitor.alerting.outbox import Outbox
from vigie.monitor.alerting.settings import AlertingSettings, SmtpSettings, WebhookSettings
from vigie.monitor.alerting.sink import Delivery, DeliveryError, Sink
from vigie.monitor.alerting.smtp import SmtpSink
from vigie.monitor.alerting.webhook import WebhookSink

__all__ = [
    "WATCHDOG_KEY",
    "Alert",
    "AlertDispatcher",
    "AlertingMetrics",
    "AlertingSettings",
    "AlertmanagerSink",
    "Delivery",
    "DeliveryError",
    "Outbox",
    "Sink",
    "SmtpSettings",
    "SmtpSink",
    "WebhookSettings",
    "WebhookSink",
    "build_sinks",
    "fingerprint",
]


def build_sinks(settings: AlertingSettings, clock: Callable[[], float] = time.time) -> list[Sink]:
    """Return the sinks the settings describe: each Alertmanager, each webhook, the mail relay."""
    sinks: list[Sink] = [
        AlertmanagerSink(
            url, resend_interval=settings.resend_interval, timeout=settings.timeout, clock=clock
        )
        for url in settings.alertmanagers
    ]
    sinks += [
        WebhookSink(
            hook.url,
            name=hook.sink_name,
            vigie_instance=settings.vigie_instance,
            bearer_token=hook.bearer_token,
            external_url=settings.external_url or "",
            timeout=hook.timeout,
        )
        for hook in settings.webhooks
    ]
    if settings.smtp is not None:
        sinks.append(SmtpSink(settings.smtp, vigie_instance=settings.vigie_instance, clock=clock))
    return sinks
