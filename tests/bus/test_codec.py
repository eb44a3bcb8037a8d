"""The bus codec: results round-trip; anything else on the results subject is refused by name."""

from __future__ import annotations

import json
import math

import pytest

from vigie.core.results import ProbeResult, Sample
from vigie.monitor.bus.codec import DecodeError, decode, encode, subject_token

LIMIT = 256 * 1024


def result() -> ProbeResult:
    """A result with every field a probe fills."""
    return ProbeResult(
        success=False,
        duration=0.125,
        samples=(
            Sample("probe_http_status_code", 503.0, (), "gauge", "Status code."),
            Sample("vigie_ups_info", 1.0, (("model", "APC 3000"),), "info", ""),
            Sample("probe_value", math.nan),
        ),
        error="HTTP 503",
        phases=(("connect", 0.01), ("processing", 0.1)),
        logs=("debug line, not sent",),
        timestamp=1_700_000_000.5,
    )


def test_a_result_round_trips_without_its_debug_logs() -> None:
    """Every field but the debug logs comes back equal (NaN included)."""
    got = decode(encode("app.dpi:web", "w1", result(), LIMIT), LIMIT)
    assert (got.check_id, got.worker) == ("app.dpi:web", "w1")
    want = result()
    assert got.result.success is want.success
    assert got.result.duration == want.duration
    assert got.result.error == want.error
    assert got.result.phases == want.phases
    assert got.result.timestamp == want.timestamp
    assert got.result.logs == ()
    assert got.result.samples[:2] == want.samples[:2]
    assert math.isnan(got.result.samples[2].value)


def test_a_result_too_large_goes_without_its_samples_and_says_so() -> None:
    """Past the bound the samples are dropped and the reason tells it; it stays decodable."""
    big = ProbeResult(True, samples=tuple(Sample(f"m_{i}", float(i)) for i in range(2000)))
    data = encode("c", "w1", big, 8192)
    assert len(data) <= 8192
    got = decode(data, 8192).result
    assert got.success and got.samples == ()
    assert got.error is not None and "too large" in got.error


def test_a_check_id_is_one_subject_token() -> None:
    """Dots would split the subject: they are escaped, and nothing else changes."""
    assert subject_token("app.dpi:web/1") == "app%2Edpi:web/1"
    assert "." not in subject_token("a.b.c")


def valid() -> dict[str, object]:
    """A valid message body, to spoil one field at a time."""
    body: dict[str, object] = json.loads(encode("c1", "w1", result(), LIMIT))
    return body


HOSTILE: list[tuple[bytes, str]] = [
    (b"\xff\xfe garbage", "not_json"),
    (b"[" * 100_000 + b"]" * 100_000, "too_large"),
    (b"[" * 20_000 + b"]" * 20_000, "not_json"),  # deep nesting within the bound
    (b"[1, 2]", "not_an_object"),
    (json.dumps({**valid(), "v": 2}).encode(), "version"),
    (json.dumps({**valid(), "id": "../../etc"}).encode(), "bad_check_id"),
    (json.dumps({**valid(), "id": "x" * 1000}).encode(), "bad_check_id"),
    (json.dumps({**valid(), "w": "w 1\n"}).encode(), "bad_worker"),
    (json.dumps({**valid(), "ok": "yes"}).encode(), "bad_success"),
    (json.dumps({**valid(), "d": True}).encode(), "bad_duration"),
    (json.dumps({**valid(), "d": -1}).encode(), "bad_time"),
    (json.dumps({**valid(), "t": 10**400}).encode(), "bad_timestamp"),  # no float holds it
    (b'{"v": 1, "t": ' + b"9" * 5000 + b"}", "not_json"),  # past Python's digit limit
    (json.dumps({**valid(), "t": 1e308 * 10}).encode(), "bad_time"),  # Infinity
    (json.dumps({**valid(), "e": {"x": 1}}).encode(), "bad_error"),
    (json.dumps({**valid(), "p": [["a", 1]] * 100}).encode(), "bad_phases"),
    (json.dumps({**valid(), "s": [["bad name", 1, [], "gauge", ""]]}).encode(), "bad_sample"),
    (json.dumps({**valid(), "s": [["m", 1, [["1x", "v"]], "gauge", ""]]}).encode(), "bad_sample"),
    (json.dumps({**valid(), "s": [["m", 1, [], "histogram", ""]]}).encode(), "bad_sample"),
    (json.dumps({**valid(), "s": [["m", "1", [], "gauge", ""]]}).encode(), "bad_sample"),
    (json.dumps({**valid(), "s": [["m", 1, [], "gauge", "h" * 5000]]}).encode(), "bad_sample"),
]


@pytest.mark.parametrize(("data", "reason"), HOSTILE)
def test_hostile_messages_are_refused_naming_why(data: bytes, reason: str) -> None:
    """Garbage, oversize, deep nesting, wrong types or names: a DecodeError with its reason."""
    with pytest.raises(DecodeError) as caught:
        decode(data, 64 * 1024)
    assert caught.value.reason == reason


def test_untrusted_texts_are_sanitised_and_bounded() -> None:
    """Control characters in a reason or a label value do not reach pages or /metrics raw."""
    body = valid()
    body["e"] = "boom\x1b[31m\r\n" + "x" * 5000
    body["s"] = [["m", 1, [["l", "a\rb\x00"]], "gauge", ""]]
    got = decode(json.dumps(body).encode(), LIMIT).result
    assert got.error is not None and len(got.error) <= 512
    assert got.error.isprintable()
    assert got.samples[0].labels == (("l", "a b "),)
