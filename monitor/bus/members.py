"""Worker membership from the JetStream KV bucket, and each worker's share of the checks.

NATS keeps the membership: each worker refreshes its own key, the bucket's max age drops
keys nobody refreshes. NATS 2.9 tells watchers nothing when a key ages out, so every process
also forgets a member whose key it has not seen refreshed for one TTL. The share is the
rendezvous (highest random weight) hash of check ids over the live workers: every process
computes the same owner from the same members, and a member leaving moves only its checks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vigie.core.sanitise import sanitise

MAX_INFO_BYTES = 4096
Clock = Callable[[], float]


def _score(worker: str, check_id: str) -> int:
    """Return the weight of a (worker, check) pair: a stable 64-bit hash of both."""
    digest = hashlib.blake2b(f"{worker}\0{check_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(check_id: str, workers: Iterable[str]) -> str | None:
    """Return the live worker that runs check_id (highest weight; ties by name), or None."""
    best: tuple[int, str] | None = None
    for worker in workers:
        key = (_score(worker, check_id), worker)
        if best is None or key > best:
            best = key
    return best[1] if best is not None else None


def shares(check_ids: Iterable[str], workers: Iterable[str]) -> dict[str, set[str]]:
    """Return each live worker's checks (every worker listed, even with none)."""
    names = sorted(set(workers))
    out: dict[str, set[str]] = {name: set() for name in names}
    if not names:
        return out
    for check_id in check_ids:
        chosen = owner(check_id, names)
        if chosen is not None:
            out[chosen].add(check_id)
    return out


@dataclass(slots=True)
class Member:
    """A live worker as its key says: when it was last refreshed and what it told about itself."""

    name: str
    seen: float  # on this process's monotonic clock
    info: dict[str, str] = field(default_factory=dict)


def parse_info(value: bytes | None) -> dict[str, str]:
    """Return a worker key's value (JSON object of short strings), bounded and sanitised."""
    if not value or len(value) > MAX_INFO_BYTES:
        return {}
    try:
        raw: Any = json.loads(value)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        sanitise(str(k), 64): sanitise(str(v), 256)
        for k, v in list(raw.items())[:16]
        if isinstance(v, str | int | float)
    }


@dataclass(frozen=True, slots=True)
class Change:
    """What a membership update did: who joined, who left on purpose, who was lost."""

    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joined or self.left or self.lost)


class Membership:
    """The live workers as one process sees them; expires members not refreshed for ttl."""

    def __init__(self, ttl: float, *, clock: Clock = time.monotonic, me: str | None = None) -> None:
        self.ttl = ttl
        self._clock = clock
        self._me = me
        self._members: dict[str, Member] = {}
        if me is not None:
            self._members[me] = Member(me, clock())

    def live(self) -> frozenset[str]:
        """Return the names of the live workers."""
        return frozenset(self._members)

    def members(self) -> Mapping[str, Member]:
        """Return the live workers by name."""
        return self._members

    def put(self, name: str, value: bytes | None, age: float = 0.0) -> Change:
        """A key was written (age: seconds since the server stored it, for history replays)."""
        seen = self._clock() - min(max(age, 0.0), self.ttl)
        member = self._members.get(name)
        if member is None:
            self._members[name] = Member(name, seen, parse_info(value))
            return Change(joined=(name,))
        member.seen = max(member.seen, seen)
        member.info = parse_info(value) or member.info
        return Change()

    def delete(self, name: str) -> Change:
        """A key was deleted or purged: the worker left on purpose."""
        if name == self._me or self._members.pop(name, None) is None:
            return Change()
        return Change(left=(name,))

    def expire(self) -> Change:
        """Forget members whose key was not refreshed for ttl; return them as lost."""
        now = self._clock()
        lost = tuple(
            sorted(
                name
                for name, m in self._members.items()
                if name != self._me and now - m.seen > self.ttl
            )
        )
        for name in lost:
            del self._members[name]
        return Change(lost=lost)

    def touch_me(self) -> None:
        """Refresh this process's own member (a worker always counts itself live)."""
        if self._me is not None:
            self._members[self._me].seen = self._clock()
