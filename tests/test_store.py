"""The result store: latest results whole, a fixed ring of outcomes, listeners told."""

from __future__ import annotations

from vigie.core.results import ProbeResult, Sample
from vigie.monitor.store import ResultStore


def _result(i: int) -> ProbeResult:
    """Return the i-th result: every third fails, each with a sample and distinct times."""
    ok = i % 3 != 0
    return ProbeResult(
        ok,
        duration=i / 100,
        samples=(Sample("probe_x", float(i)),),
        error=None if ok else f"failed {i}",
        timestamp=1_700_000_000.0 + i,
    )


def test_history_keeps_the_last_outcomes_in_order_once_the_ring_wraps() -> None:
    """Past its size the history drops the oldest, keeps order, success, error and times."""
    store = ResultStore(history=5)
    for i in range(1, 13):
        store.update("a", _result(i))
    kept = store.history("a")
    assert [r.timestamp for r in kept] == [1_700_000_000.0 + i for i in range(8, 13)]
    assert [r.success for r in kept] == [i % 3 != 0 for i in range(8, 13)]
    assert [r.error for r in kept] == [None if i % 3 else f"failed {i}" for i in range(8, 13)]
    assert [r.duration for r in kept] == [i / 100 for i in range(8, 13)]


def test_history_before_the_ring_is_full_and_unknown_checks() -> None:
    """A young check shows only what it ran; an unknown or removed one has no history."""
    store = ResultStore(history=20)
    store.update("a", _result(1))
    store.update("a", _result(3))
    assert [(r.success, r.error) for r in store.history("a")] == [(True, None), (False, "failed 3")]
    assert store.history("nope") == []
    store.remove("a")
    assert store.history("a") == []
    assert store.latest("a") is None


def test_latest_is_the_whole_result_and_listeners_see_updates_and_removals() -> None:
    """latest() keeps the samples the exposition needs; listeners get results then None."""
    store = ResultStore()
    seen: list[tuple[str, ProbeResult | None]] = []
    store.subscribe(lambda cid, r: seen.append((cid, r)))
    result = _result(2)
    store.update("a", result)
    assert store.latest("a") is result
    assert list(store.check_ids()) == ["a"]
    store.remove("a")
    assert seen == [("a", result), ("a", None)]
