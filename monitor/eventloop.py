"""The event loop the long-running commands run on: uvloop when it is installed, else asyncio's.

uvloop runs the loop's own work (timers, sockets, callbacks, transports) in C on libuv: at
20,000 HTTP checks that work is a third of the daemon's CPU on asyncio's loop (docs/scaling.md).
Its clock (`loop.time()`) ticks in milliseconds and is read once per loop iteration, so Vigie
measures durations with `time.monotonic()`, never with the loop's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

CHOICES = ("auto", "uvloop", "asyncio")
"""`--loop` values: auto is uvloop when installed, asyncio's own loop otherwise."""


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return what makes the loop `choice` names; ValueError if it cannot be had here."""
    if choice not in CHOICES:
        raise ValueError(f"unknown event loop {choice!r}: one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop  # optional: auto falls back to asyncio's loop without it
    except ImportError as exc:
        if choice == "auto":
            return asyncio.new_event_loop
        raise ValueError(f"--loop uvloop: uvloop cannot be imported ({exc})") from None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Return "uvloop" or "asyncio": which loop runs (the daemon says it at start)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
