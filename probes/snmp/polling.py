"""The gufo-snmp poll: GET a plan's scalars in few PDUs, walk its columns with GETBULK.

`walk_groups`, `WalkRows` and `stopped_mid_walk` are shared with the pysnmp path of context
polls (probes/snmp/context.py), so both stop walks, cap them and word failures alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gufo.snmp import SnmpDecodeError
from gufo.snmp._fast import GetIter

from vigie.probes.snmp.client import Client, NoAnswer
from vigie.probes.snmp.failures import SnmpFailure, stopped_mid_walk
from vigie.probes.snmp.profiles.plan import Collected, PollPlan, Value
from vigie.probes.snmp.settings import SnmpCheckSettings

__all__ = ["PollStats", "WalkRows", "poll", "walk_groups"]


@dataclass(slots=True)
class PollStats:
    """What a poll cost: seconds spent walking, varbinds received (PDUs sent, context path)."""

    walk_seconds: float = 0.0
    varbinds: int = 0
    pdus: int = 0


async def poll(
    client: Client,
    settings: SnmpCheckSettings,
    plan: PollPlan,
    stats: PollStats,
    log: Callable[..., None],
) -> Collected:
    """Run the plan: GET the scalars in as few PDUs as allowed, then walk each column."""
    sock = client.sock
    data = Collected()
    gets = list(plan.gets)
    step = settings.max_varbinds

    async def get(oids: list[str]) -> dict[str, Value]:
        """GET oids in one PDU; absent ones (noSuchObject, noSuchInstance) are left out."""

        def send() -> None:
            sock.send_get_many(oids)

        return await client.exchange(send, sock.recv_get_many)

    async def get_readable(oids: list[str]) -> dict[str, Value]:
        """GET oids; an answer too large to read is asked again OID by OID.

        An OID whose own answer is too large (a 10 KB string) is left out, as unreadable.
        """
        try:
            return await get(oids)
        except SnmpDecodeError as exc:
            if str(exc) != "incomplete":
                raise
        if len(oids) == 1:
            data.unreadable.add(oids[0])
            log("snmp_answer_too_large", oid=oids[0])
            return {}
        values: dict[str, Value] = {}
        for oid in oids:
            values.update(await get_readable([oid]))
        return values

    for start in range(0, len(gets), step):
        chunk = gets[start : start + step]
        values = await get_readable(chunk)
        if settings.resolved_auth.version == 1 and len(chunk) > 1 and len(values) < len(chunk):
            # v1 answers noSuchName for the whole PDU: ask the missing ones one by one.
            for oid in chunk:
                if oid not in values:
                    values.update(await get([oid]))
        stats.varbinds += len(values)
        data.scalars.update(values)
        log("snmp_get", oids=len(chunk), values=len(values))
    for subtree, columns in walk_groups(plan.walks):
        repetitions = settings.max_repetitions
        while True:
            began = time.monotonic()
            try:
                walked = await _walk(
                    client, subtree, columns, settings, stats, max_repetitions=repetitions
                )
                break
            except SnmpDecodeError as exc:
                # A GETBULK answer over gufo-snmp's 4 KiB (long strings): ask fewer rows.
                v1 = settings.resolved_auth.version == 1  # GETNEXT: one row is all it asks
                if str(exc) != "incomplete" or repetitions == 1 or v1:
                    raise
                repetitions = max(1, repetitions // 2)
                log("snmp_walk_answer_too_large", oid=subtree, max_repetitions=repetitions)
            finally:
                stats.walk_seconds += time.monotonic() - began
        data.walks.update(walked)
        for column in columns:
            log("snmp_walk", oid=column, rows=len(walked[column]))
    return data


def walk_groups(walks: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Return (subtree, columns) walks: dense columns of one table entry share one walk.

    A walk of the table entry returns every column from the first, in order; when the wanted
    columns fill at least half of the columns up to the last wanted one, one walk of the entry
    (stopped after that column) costs far fewer PDUs than a walk per column: 4 instead of 22
    for ifTable. Sparse columns of wide tables keep a walk of their own.
    """
    by_entry: dict[str, list[str]] = {}
    for column in walks:
        by_entry.setdefault(column.rpartition(".")[0], []).append(column)
    groups: list[tuple[str, list[str]]] = []
    for entry, columns in by_entry.items():
        last = max(int(c.rpartition(".")[2]) for c in columns)
        if len(columns) > 1 and 2 * len(columns) >= last:
            groups.append((entry, columns))
        else:
            groups.extend((c, [c]) for c in columns)
    return groups


class WalkRows:
    """The rows of one walk by column, fed batch by batch by either SNMP engine.

    Stops at the subtree's end or after the last wanted column, and at walk_cap varbinds per
    column so a runaway agent cannot exhaust memory.
    """

    __slots__ = ("by_arc", "cap", "grouped", "last_arc", "out", "prefix", "received", "subtree")

    def __init__(self, subtree: str, columns: Sequence[str], walk_cap: int) -> None:
        self.subtree = subtree
        self.out: dict[str, dict[str, Value]] = {c: {} for c in columns}
        # column number -> rows
        self.by_arc = {c.rpartition(".")[2]: rows for c, rows in self.out.items()}
        self.grouped = subtree not in columns
        self.last_arc = max(int(c.rpartition(".")[2]) for c in columns)
        self.cap = walk_cap * (self.last_arc if self.grouped else 1)
        self.received = 0
        self.prefix = subtree + "."

    def take(self, batch: Sequence[tuple[str, Value] | None], stats: PollStats) -> bool:
        """Store a batch of (oid, value) (None: left the subtree); return True when done."""
        # Locals: this loop runs once per varbind.
        out, by_arc, grouped, last_arc = self.out, self.by_arc, self.grouped, self.last_arc
        prefix, subtree, cap = self.prefix, self.subtree, self.cap
        received = start = self.received
        try:
            for item in batch:
                if item is None:
                    return True  # left the subtree: the table's end
                oid, value = item
                if not oid.startswith(prefix):
                    return True
                if received >= cap:
                    raise SnmpFailure(
                        "walk_cap",
                        f"walk cap reached: {subtree} has more than {cap} varbinds "
                        "(raise walk_cap if the table is really that large)",
                    )
                received += 1
                if not grouped:
                    out[subtree][oid[len(prefix) :]] = value
                    continue
                arc, _, suffix = oid[len(prefix) :].partition(".")
                rows = by_arc.get(arc)
                if rows is not None:
                    rows[suffix] = value
                elif not arc.isdigit() or int(arc) > last_arc:
                    return True  # past the last wanted column: the rest is not needed
            return False
        finally:
            self.received = received
            stats.varbinds += received - start


async def _walk(
    client: Client,
    subtree: str,
    columns: Sequence[str],
    settings: SnmpCheckSettings,
    stats: PollStats,
    *,
    max_repetitions: int,
) -> dict[str, dict[str, Value]]:
    """Walk a column, or the entry holding columns, with GETBULK (GETNEXT for v1).

    Returns rows by column (see WalkRows for where the walk stops).
    """
    sock = client.sock
    rows = WalkRows(subtree, columns, settings.walk_cap)
    bulk = settings.resolved_auth.version != 1
    it = GetIter(subtree, max_repetitions) if bulk else GetIter(subtree)
    while True:
        try:
            if bulk:
                batch = await client.exchange(
                    lambda: sock.send_get_bulk(it), lambda: sock.recv_get_bulk(it)
                )
            else:
                batch = [
                    await client.exchange(
                        lambda: sock.send_get_next(it), lambda: sock.recv_get_next(it)
                    )
                ]
        except StopAsyncIteration:
            return rows.out  # endOfMibView or nothing more in the subtree
        except NoAnswer as exc:
            if rows.received or client.answered:
                raise stopped_mid_walk(
                    subtree, rows.received, exc.tries, client.request_timeout
                ) from None
            raise
        if rows.take(batch, stats):
            return rows.out
