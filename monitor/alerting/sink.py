"""The one small protocol every sink implements, and the error a failed delivery raises."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Protocol

import aiohttp

from vigie.core.results import bound_text
from vigie.monitor.alerting.model import Alert

MAX_BODY_IN_ERROR = 200
"""How much of a refusing server's body an error quotes: enough to say why, bounded."""


class Delivery(Enum):
    """How a sink's queued notifications of one alert combine while undelivered."""

    LATEST = "latest"
    """A newer state supersedes an older undelivered one; a pending resolve is kept."""
    EACH = "each"
    """Every state change is delivered once, in order (mail)."""


class DeliveryError(Exception):
    """A delivery failed; the reason names the sink and the status or error, never a secret."""

    def __init__(self, reason: str) -> None:
        self.reason = bound_text(reason)
        super().__init__(self.reason)


class Sink(Protocol):
    """Somewhere alerts are delivered: Alertmanager, a webhook, a mail relay."""

    name: str
    """Stable name: it keys the sink's rows in the outbox and labels its metrics."""
    delivery: Delivery
    refresh: bool
    """Re-sent every resend_interval while firing, with every update; gets the watchdog."""
    batch_size: int
    """Most alerts one send() carries."""

    async def send(self, alerts: Sequence[Alert], session: aiohttp.ClientSession) -> None:
        """Deliver alerts (at most one per key) or raise DeliveryError."""
        ...


def redact(text: str, hide: Sequence[str]) -> str:
    """Return text with each string of hide (longest first) replaced by <redacted>."""
    for secret in sorted((h for h in hide if h and h != "/"), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


async def http_error(
    response: aiohttp.ClientResponse, where: str, hide: Sequence[str] = ()
) -> DeliveryError:
    """Return the error for a non-2xx answer: where, status, and the start of the body."""
    try:
        body = (await response.content.read(MAX_BODY_IN_ERROR)).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError):
        body = ""
    # A server may echo the request path, and a webhook's path may hold a token.
    body = redact(body.strip(), hide)
    return DeliveryError(f"{where}: HTTP {response.status}" + (f": {body}" if body else ""))


def transport_error(
    exc: BaseException, where: str, timeout: float, hide: Sequence[str] = ()
) -> DeliveryError:
    """Return the error for a request that got no answer, with the strings in hide cut out."""
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"{where}: timeout after {timeout:g}s")
    # Some client errors quote the whole URL, whose path or query may hold a token.
    text = redact(str(exc) or type(exc).__name__, hide)
    return DeliveryError(f"{where}: {type(exc).__name__}: {text}")
