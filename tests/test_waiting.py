"""The shared wait helper returns as soon as its condition holds and fails naming it."""

from __future__ import annotations

import time

import pytest

from tests.waiting import wait_for, wait_for_sync


async def test_wait_for_returns_when_condition_holds() -> None:
    """An awaitable condition that turns true ends the wait."""
    calls = {"n": 0}

    async def third_time() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    await wait_for(third_time, "third call", within=5.0, every=0.001)
    assert calls["n"] == 3


async def test_wait_for_fails_naming_what() -> None:
    """A condition that never holds fails with its name after the deadline."""
    with pytest.raises(pytest.fail.Exception, match="the impossible"):
        await wait_for(lambda: False, "the impossible", within=0.05, every=0.01)


def test_wait_for_sync_both_ways() -> None:
    """The blocking twin returns on truth and fails naming the condition otherwise."""
    start = time.monotonic()
    wait_for_sync(lambda: time.monotonic() - start > 0.02, "20 ms", within=5.0, every=0.005)
    with pytest.raises(pytest.fail.Exception, match="never"):
        wait_for_sync(lambda: False, "never", within=0.05, every=0.01)
