"""The NATS side shared by `vigie worker` and `vigie run`: connect, the bucket, its watch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from vigie.core.results import bound_text
from vigie.monitor.bus.members import Change, Membership
from vigie.monitor.bus.settings import BusSettings

_GONE = frozenset({"DEL", "PURGE"})


async def connect(settings: BusSettings, name: str, log: Any) -> Client:
    """Connect to the cluster (reconnecting for ever once connected); raise if none answers."""

    async def on_error(exc: Exception) -> None:
        log.warning("bus_error", error=bound_text(repr(exc)))

    async def on_disconnected() -> None:
        log.warning("bus_disconnected", servers=settings.public_servers())

    async def on_reconnected() -> None:
        log.info("bus_reconnected", servers=settings.public_servers())

    credentials = str(settings.credentials_file) if settings.credentials_file else None
    return await nats.connect(
        servers=settings.servers,
        name=name,
        user_credentials=credentials,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1.0,
        connect_timeout=5.0,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )


async def connect_until(settings: BusSettings, name: str, log: Any, every: float = 2.0) -> Client:
    """Connect, trying again every few seconds while no server answers (logged each time)."""
    while True:
        try:
            return await connect(settings, name, log)
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            log.warning(
                "bus_connect_failed",
                servers=settings.public_servers(),
                error=bound_text(repr(exc), 200),
            )
            await asyncio.sleep(every)


async def members_bucket(client: Client, settings: BusSettings) -> KeyValue:
    """Return the workers' bucket, created with the workers' TTL as its max age if missing."""
    js = client.jetstream()
    with contextlib.suppress(nats.js.errors.BucketNotFoundError):
        return await js.key_value(settings.kv_bucket)
    try:
        return await js.create_key_value(
            bucket=settings.kv_bucket,
            ttl=settings.worker_ttl,
            history=1,
            description="Vigie probe workers: one key per live worker",
        )
    except nats.js.errors.BadRequestError:  # another process created it first
        return await js.key_value(settings.kv_bucket)


def _age(created: Any) -> float:
    """Return seconds since the server stored an entry (0 when unknown)."""
    if isinstance(created, datetime):
        return max(0.0, (datetime.now(UTC) - created).total_seconds())
    return 0.0


async def watch_members(
    bucket: KeyValue,
    membership: Membership,
    on_change: Callable[[Change], None],
    log: Any,
    *,
    ready: asyncio.Event | None = None,
) -> None:
    """Follow the bucket for ever: apply puts and deletes, expire silent members, report changes.

    ready is set once the bucket's current keys have been read (the first view is whole).
    A broken watch is logged and started again.
    """
    period = membership.ttl / 4
    while True:
        try:
            watcher: Any = await bucket.watchall()  # nats-py leaves the watcher untyped
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("bus_watch_failed", error=bound_text(repr(exc), 200))
            await asyncio.sleep(period)
            continue
        try:
            while True:
                change = Change()
                try:
                    entry = await watcher.updates(timeout=period)
                except nats.errors.TimeoutError:
                    entry = None
                else:
                    if entry is None and ready is not None:
                        ready.set()  # the current keys are all in
                if entry is not None:
                    if entry.operation in _GONE:
                        change = membership.delete(entry.key)
                    else:
                        change = membership.put(entry.key, entry.value, _age(entry.created))
                expired = membership.expire()
                merged = Change(change.joined, change.left, change.lost + expired.lost)
                if merged:
                    on_change(merged)
        except (nats.errors.Error, OSError) as exc:
            log.warning("bus_watch_broken", error=bound_text(repr(exc), 200))
            with contextlib.suppress(Exception):
                await watcher.stop()
            await asyncio.sleep(period)
