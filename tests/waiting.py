"""The suite's one way to wait: poll a condition until it holds, fail naming it at a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import pytest

# Under load (both cores busy, CI) readiness takes longer; a deadline is a bound, not a pace.
DEFAULT_WITHIN = 20.0


async def wait_for(
    condition: Callable[[], object],
    what: str,
    within: float = DEFAULT_WITHIN,
    every: float = 0.02,
) -> None:
    """Poll condition (awaited if it returns an awaitable) until truthy; fail naming `what`."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(every)


def wait_for_sync(
    condition: Callable[[], object],
    what: str,
    within: float = DEFAULT_WITHIN,
    every: float = 0.05,
) -> None:
    """Blocking twin of wait_for, for threads and subprocess-driven tests."""
    deadline = time.monotonic() + within
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting for {what}")
        time.sleep(every)
