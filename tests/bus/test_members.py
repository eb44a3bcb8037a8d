"""Shares by rendezvous hash, and membership as one process sees the bucket."""

from __future__ import annotations

import json

from vigie.monitor.bus.members import Membership, owner, parse_info, shares

CHECKS = [f"chk-{i}" for i in range(3000)]


def test_every_check_has_one_owner_and_the_shares_are_even() -> None:
    """Each check goes to exactly one worker; three workers get about a third each."""
    split = shares(CHECKS, ["w1", "w2", "w3"])
    assert sorted(c for ids in split.values() for c in ids) == sorted(CHECKS)
    for ids in split.values():
        assert 800 <= len(ids) <= 1200, {w: len(i) for w, i in split.items()}


def test_a_worker_leaving_moves_only_its_own_checks() -> None:
    """The survivors keep what they had and share the lost worker's checks between them."""
    before = shares(CHECKS, ["w1", "w2", "w3"])
    after = shares(CHECKS, ["w1", "w2"])
    for worker in ("w1", "w2"):
        assert before[worker] <= after[worker]
    moved = (after["w1"] - before["w1"]) | (after["w2"] - before["w2"])
    assert moved == before["w3"]
    assert after["w1"] - before["w1"] and after["w2"] - before["w2"]


def test_every_process_computes_the_same_owner_whatever_the_order() -> None:
    """The owner depends on the set of workers, not on the order a process learnt them."""
    assert all(owner(c, ["a", "b", "c"]) == owner(c, ["c", "a", "b"]) for c in CHECKS[:200])
    assert owner("x", []) is None


class Clock:
    """A settable monotonic clock, so expiry is tested without waiting."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_member_not_refreshed_for_a_ttl_is_lost_and_one_deleted_has_left() -> None:
    """Refreshes keep a member; silence for a TTL loses it; a delete is a departure."""
    clock = Clock()
    members = Membership(3.0, clock=clock, me="me")
    assert members.put("a", b"{}").joined == ("a",)
    assert members.put("b", b"{}").joined == ("b",)
    assert not members.put("a", b"{}")  # a refresh changes nothing
    clock.now += 2.0
    members.put("a", b"{}")
    clock.now += 2.0
    assert members.expire().lost == ("b",)
    assert members.live() == {"me", "a"}
    assert members.delete("a").left == ("a",)
    clock.now += 100.0
    assert not members.expire() and members.live() == {"me"}  # a worker never loses itself


def test_a_key_replayed_old_counts_its_age() -> None:
    """A key read at start, stored 2.5 s ago with a 3 s TTL, is lost 0.5 s later, not 3 s."""
    clock = Clock()
    members = Membership(3.0, clock=clock)
    members.put("a", b"{}", age=2.5)
    clock.now += 1.0
    assert members.expire().lost == ("a",)


def test_a_key_value_is_bounded_and_sanitised() -> None:
    """What a key says about its worker is short printable text, or nothing."""
    info = parse_info(json.dumps({"host": "h\x1b[2J" + "x" * 1000, "pid": 7, "n": [1]}).encode())
    assert info["pid"] == "7" and "n" not in info
    assert len(info["host"]) <= 256 and info["host"].isprintable()
    assert parse_info(b"x" * 10_000) == {} and parse_info(b"[1]") == {} and parse_info(None) == {}
