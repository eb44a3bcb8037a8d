"""Fixtures for the lab tests: the simulated hospital, and the alerting peers of tests/alerting."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.alerting.conftest import alertmanagers, receiver, session
from vigie.lab.hospital import Lab

__all__ = ["alertmanagers", "lab", "receiver", "session"]


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    """The simulated hospital on free loopback ports."""
    hospital = Lab()
    await hospital.start()
    yield hospital
    await hospital.stop()
