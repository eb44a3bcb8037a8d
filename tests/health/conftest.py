"""Fixtures shared with the alerting tests: real Alertmanagers and a webhook receiver."""

from typing import Any

import aiohttp
import pytest

from tests.alerting.conftest import (
    Alertmanager,
    AlertmanagerFactory,
    Receiver,
    alertmanagers,
    receiver,
    session,
)

__all__ = ["alertmanagers", "am", "pages", "receiver", "session"]


def pages(rec: Receiver, status: str = "firing") -> dict[str, dict[str, Any]]:
    """Return the alerts Alertmanager notified with this status, by fingerprint."""
    out: dict[str, dict[str, Any]] = {}
    for body in rec.on("/am/am"):
        for alert in body["alerts"]:
            if alert["status"] == status:
                out[alert["fingerprint"]] = alert
    return out


@pytest.fixture
async def am(alertmanagers: AlertmanagerFactory, session: aiohttp.ClientSession) -> Alertmanager:
    """One Alertmanager, each alert its own group, notifying the receiver at /am/am."""
    manager = alertmanagers("am", group_by=("...",))
    await manager.start(session)
    return manager
