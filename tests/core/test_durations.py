"""Durations: `30s`, `1m30s`, `500ms` or seconds, always positive."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from vigie.core.durations import Duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1d", 86400.0), (15, 15.0)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    """Every unit a Prometheus user writes, and plain numbers as seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["0s", "-5s", "5 minutes", "", True, None, "1x"])
def test_bad_durations_are_refused_with_an_example(bad: object) -> None:
    """A wrong duration is refused, never read as zero."""
    with pytest.raises(ValueError, match=r"duration such as|greater than 0"):
        parse_duration(bad)


def test_duration_field_validates_in_a_model() -> None:
    """The annotated type validates in any settings model and shows in the JSON schema."""

    class Model(BaseModel):
        every: Duration

    assert Model(every="1m").every == 60.0
    with pytest.raises(ValidationError):
        Model(every="soon")
    assert "anyOf" in Model.model_json_schema()["properties"]["every"]
