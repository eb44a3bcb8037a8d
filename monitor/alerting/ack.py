"""Acknowledgement: signed expiring link tokens, and their mirror as Alertmanager silences.

A token names the escalation it acknowledges and the receiver it was sent to, with an expiry,
signed with HMAC-SHA256 under a key from a secret file; it is checked with compare_digest.
It is short, because it travels in an SMS. The acknowledgement becomes a silence on the
incident's alert (matchers on its labels), which Alertmanager's cluster shares between
replicas; the silence is expired before the incident's resolve is posted, so every receiver
gets the resolved notification.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from vigie.core.results import bound_text
from vigie.monitor.alerting.model import Alert, rfc3339
from vigie.monitor.alerting.sink import DeliveryError, Sink, http_error, transport_error

ACK_COMMENT = "Acknowledged in Vigie"
"""How an acknowledgement's silence comment starts: how a replica knows its peer's acks."""
SIGNATURE_BYTES = 12
"""96 bits of HMAC-SHA256: forging one needs 2^96 tries against a rate-limited endpoint."""
MAX_TOKEN = 300


class BadToken(ValueError):
    """A token that is malformed, forged or expired; the message says which (no secret)."""


@dataclass(frozen=True, slots=True)
class AckClaim:
    """What a valid token says: which escalation, which receiver, until when."""

    escalation: int
    receiver: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AckTokens:
    """Makes and checks acknowledgement tokens."""

    def __init__(self, key: bytes, ttl: float, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise ValueError("the acknowledgement key must be at least 32 bytes")
        self._key = key
        self._ttl = ttl
        self._clock = clock

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, b"vigie-ack\0" + payload.encode(), hashlib.sha256).digest()
        return _b64(digest[:SIGNATURE_BYTES])

    def make(self, escalation: int, receiver: str) -> str:
        """Return a token for an escalation and the receiver it is sent to."""
        expires = int(self._clock() + self._ttl)
        payload = _b64(f"{escalation}~{expires:x}~{receiver}".encode())
        return f"{payload}.{self._sign(payload)}"

    def check(self, token: str) -> AckClaim:
        """Return the claim of a valid token; raise BadToken otherwise."""
        if len(token) > MAX_TOKEN:
            raise BadToken("token too long")
        payload, dot, signature = token.partition(".")
        if not dot or not payload:
            raise BadToken("malformed token")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            raise BadToken("bad signature")
        try:
            eid, expires, receiver = _unb64(payload).decode().split("~", 2)
            claim = AckClaim(int(eid), receiver, float(int(expires, 16)))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise BadToken("malformed token") from None
        if claim.expires < self._clock():
            raise BadToken("link expired")
        return claim


class Silences:
    """Creates and expires silences in an Alertmanager cluster (API v2)."""

    def __init__(
        self, urls: Sequence[str], session: aiohttp.ClientSession, timeout: float = 10.0
    ) -> None:
        self._urls = [str(URL(u)).rstrip("/") for u in urls]
        self._session = session
        self._timeout = timeout

    @property
    def enabled(self) -> bool:
        """Whether there is an Alertmanager to mirror to."""
        return bool(self._urls)

    async def create(
        self,
        labels: Mapping[str, str],
        *,
        author: str,
        comment: str,
        until: datetime,
        since: datetime | None = None,
    ) -> str:
        """Silence the alert with exactly these labels from `since` (default now) until
        `until`; return the silence id.

        Posted to the first member that accepts it: the cluster shares it with the others.
        """
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in sorted(labels.items())
            ],
            "startsAt": rfc3339(max(since, datetime.now(UTC)) if since else datetime.now(UTC)),
            "endsAt": rfc3339(until),
            "createdBy": bound_text(author, 100),
            "comment": bound_text(comment, 500),
        }
        reasons = []
        for url in self._urls:
            where = f"alertmanager {URL(url).origin()!s} silences"
            try:
                async with self._session.post(
                    f"{url}/api/v2/silences",
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ) as response:
                    if response.status != 200:
                        raise await http_error(response, where)
                    found = await response.json()
                    return str(found["silenceID"])
            except DeliveryError as exc:
                reasons.append(exc.reason)
            except (aiohttp.ClientError, TimeoutError, OSError, KeyError, ValueError) as exc:
                reasons.append(transport_error(exc, where, self._timeout).reason)
        raise DeliveryError("; ".join(reasons) or "no Alertmanager configured")

    async def active(self, *, pending: bool = False) -> list[dict[str, Any]]:
        """Return the active silences of the cluster (from the first member that answers).

        With pending, those not started yet too (a maintenance window opened for later).
        """
        states = ("active", "pending") if pending else ("active",)
        reasons = []
        for url in self._urls:
            where = f"alertmanager {URL(url).origin()!s} silences"
            try:
                async with self._session.get(
                    f"{url}/api/v2/silences",
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ) as response:
                    if response.status != 200:
                        raise await http_error(response, where)
                    found = await response.json()
                    if not isinstance(found, list):
                        raise ValueError("the silences answer is not a list")
                    return [
                        s
                        for s in found
                        if isinstance(s, dict)
                        and isinstance(s.get("status"), dict)
                        and s["status"].get("state") in states
                    ]
            except DeliveryError as exc:
                reasons.append(exc.reason)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                reasons.append(transport_error(exc, where, self._timeout).reason)
        raise DeliveryError("; ".join(reasons) or "no Alertmanager configured")

    async def expire(self, silence: str) -> None:
        """Expire a silence; done when one member says so or none knows it (already gone)."""
        reasons = []
        for url in self._urls:
            where = f"alertmanager {URL(url).origin()!s} silences"
            try:
                async with self._session.delete(
                    f"{url}/api/v2/silence/{silence}",
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ) as response:
                    if response.status in (200, 404):
                        return
                    text = (await response.text())[:200]
                    if "already expired" in text or "not found" in text:
                        return
                    reasons.append(f"{where}: HTTP {response.status}: {bound_text(text, 200)}")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reasons.append(transport_error(exc, where, self._timeout).reason)
        if reasons:
            raise DeliveryError("; ".join(reasons))


class SilenceFirstSink:
    """Wraps an Alertmanager sink: a resolve is posted only once its alert's silences expired.

    A silenced alert's resolved notification is muted too; the acknowledgement's silence is
    therefore expired first, and a failure to expire it fails the delivery (retried).
    """

    def __init__(
        self,
        inner: Sink,
        silences_of: Callable[[str], Sequence[str]],
        expire: Callable[[str], Awaitable[None]],
        forget: Callable[[str], None],
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.delivery = inner.delivery
        self.refresh = inner.refresh
        self.batch_size = inner.batch_size
        self._silences_of = silences_of
        self._expire = expire
        self._forget = forget

    async def send(self, alerts: Sequence[Alert], session: aiohttp.ClientSession) -> None:
        """Expire the silences of the resolved alerts, then send the batch."""
        for alert in alerts:
            if alert.ends_at is None:
                continue
            for silence in self._silences_of(alert.key):
                await self._expire(silence)
                self._forget(silence)
        await self.inner.send(alerts, session)


def acknowledges(silence: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """True when a silence is a Vigie acknowledgement of the alert with exactly these labels."""
    if not str(silence.get("comment", "")).startswith(ACK_COMMENT):
        return False
    matchers = silence.get("matchers") or []
    try:
        pairs = {
            (m["name"], m["value"])
            for m in matchers
            if not m.get("isRegex") and m.get("isEqual", True)
        }
    except (KeyError, TypeError):
        return False
    return len(pairs) == len(matchers) and pairs == set(labels.items())
