"""Sending on a non-blocking socket from the event loop, on any loop (uvloop has no
`loop.sock_sendto`): send now, or once the socket's buffer has room."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def send_when_writable(fd: int, send: Callable[[], object]) -> None:
    """Call send(); if the buffer is full (BlockingIOError), wait until fd is writable and
    call it once more."""
    try:
        send()
        return
    except BlockingIOError:
        pass
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, settle, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
    send()


def settle(future: asyncio.Future[None]) -> None:
    """Resolve a readiness future once (the loop may call back again before it runs)."""
    if not future.done():
        future.set_result(None)
