"""Fixtures shared with the alerting tests: real Alertmanagers and a webhook receiver."""

from tests.alerting.conftest import alertmanagers, receiver, session

__all__ = ["alertmanagers", "receiver", "session"]
