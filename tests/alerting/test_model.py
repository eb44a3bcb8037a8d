"""The Alert value: validation, state, JSON round trip, Alertmanager's fingerprint."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.alerting.conftest import T0, make_alert
from vigie.monitor.alerting.model import Alert, fingerprint, rfc3339


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # Computed by prometheus-alertmanager 0.25 (GET /api/v2/alerts); see test_alertmanager
        # for the same check against the running program.
        ({"alertname": "X", "site": "nord"}, "32b706d67ef1135c"),
        ({}, "cbf29ce484222325"),
    ],
)
def test_fingerprint_matches_alertmanager(labels: dict[str, str], expected: str) -> None:
    """The fingerprint is Alertmanager's FNV-1a over sorted label pairs."""
    assert fingerprint(labels) == expected


def test_fingerprint_ignores_label_order() -> None:
    """Two label sets with the same pairs in another order have the same fingerprint."""
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1", "b": "2"}) != fingerprint({"a": "2", "b": "1"})


def test_state_and_resolved() -> None:
    """An alert fires until resolved; resolving never ends it before it started."""
    alert = make_alert()
    assert alert.state == "firing"
    done = alert.resolved(T0 + timedelta(minutes=5))
    assert done.state == "resolved"
    assert done.ends_at == T0 + timedelta(minutes=5)
    assert alert.resolved(T0 - timedelta(minutes=5)).ends_at == T0


def test_times_are_utc() -> None:
    """Times with any offset are kept in UTC and written with a Z."""
    paris = timezone(timedelta(hours=1))
    alert = Alert("k", {"alertname": "A"}, starts_at=datetime(2025, 1, 2, 4, 4, 5, tzinfo=paris))
    assert alert.starts_at == T0
    assert rfc3339(alert.starts_at) == "2025-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key": ""}, "key must not be empty"),
        ({"labels": {}}, "has no labels"),
        ({"labels": {"bad-name": "x"}}, "invalid label name 'bad-name'"),
        ({"labels": {"site": ""}}, "label 'site' is empty"),
        ({"starts_at": datetime(2025, 1, 1)}, "starts_at must be timezone-aware"),
    ],
)
def test_invalid_alerts_are_refused(kwargs: dict[str, object], error: str) -> None:
    """What Alertmanager would refuse or alter is refused when the alert is made."""
    args: dict[str, object] = {"key": "k", "labels": {"alertname": "A"}, "starts_at": T0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=error):
        Alert(**args)  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    """An alert read back from its JSON equals the original, firing or resolved."""
    alert = make_alert()
    assert Alert.from_json(alert.to_json()) == alert
    done = alert.resolved(T0 + timedelta(seconds=1.5))
    assert Alert.from_json(done.to_json()) == done


def test_with_labels_keeps_own_values() -> None:
    """Extra labels fill in what is missing and never override the alert's own."""
    alert = make_alert(vigie_instance="mine")
    assert alert.with_labels({"vigie_instance": "other"}).labels["vigie_instance"] == "mine"
    assert make_alert().with_labels({"vigie_instance": "h"}).labels["vigie_instance"] == "h"


def test_labels_are_copied() -> None:
    """Changing the dict an alert was made from does not change the alert."""
    labels = {"alertname": "A"}
    alert = Alert("k", labels, starts_at=T0)
    labels["alertname"] = "B"
    assert alert.labels == {"alertname": "A"}
