"""Alert delivery: a durable outbox, one module per sink, and on-call escalation."""

from __future__ import annotations

import time
from collections.abc import Callable

from vigie.monitor.alerting.alertmanager import AlertmanagerSink
from vigie.monitor.alerting.dispatcher import WATCHDOG_KEY, AlertDispatcher, AlertingMetrics
from vigie.monitor.alerting.httpsink import HttpTemplateSink
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
    "HttpTemplateSink",
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
    """Return the sinks the settings describe: Alertmanagers, webhooks, mail relay, HTTP sinks."""
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
    sinks += [HttpTemplateSink(http) for http in settings.http_sinks]
    return sinks
