"""Fast /metrics: each check's lines are rendered when its result arrives and joined on scrape.

A scrape never holds the event loop for long, whatever the number of checks: the probe families
are joined in pieces of at most PIECE_LINES checks and the loop gets control back every SLICE
seconds; the daemon's own registry (health, budgets, process) is collected in a worker thread,
as client_python's own HTTP server does; gzip, when the scraper asks for it, runs in that thread
too (zlib lets go of the GIL while it compresses). `?shard=i&of=n` serves the checks whose
CRC-32 of the id is i modulo n, so Prometheus can split a large page across scrape jobs; the
daemon's own registry goes with shard 0.
"""

from __future__ import annotations

import asyncio
import math
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from types import ModuleType
from typing import NamedTuple, Protocol

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample as ClientSample
from prometheus_client.utils import floatToGoString

from vigie.core.results import ProbeResult, Sample, format_value
from vigie.monitor.textformat import OwnRegistry, TextCollector, escape_help, escape_label_value
from vigie.probes.base import Check

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PIECE_LINES = 1000
"""Checks of one family joined at a time: a piece costs well under a millisecond."""

SLICE = 0.002
"""Seconds of rendering on the event loop before it is handed back for a turn."""

BATCH_BYTES = 1 << 20
"""Bytes gathered before a write (and, with gzip, before a compression call in the thread)."""

GZIP_LEVEL = 1
"""Level 1 compresses a page about 10 times; ISA-L's level 1 is smaller than zlib's, 5x faster."""

_deflate: ModuleType
try:  # ISA-L's deflate (the `isal` wheel): a 42 MB page in 28 ms of CPU where zlib takes 137 ms
    from isal import isal_zlib as _deflate

    INLINE_GZIP_BYTES = 2 << 20
    """Batches smaller than this are compressed on the loop: ISA-L does 1 MB in under 1 ms."""
    _crc32_combine: Callable[[int, int, int], int] | None = _deflate.crc32_combine
except ImportError:  # pragma: no cover - a platform without the wheel: the standard zlib
    _deflate = zlib
    INLINE_GZIP_BYTES = 64 << 10
    _crc32_combine = None  # no crc32_combine in Python's zlib: no kept blocks, gzip as it comes

BLOCK_CHECKS = 512
"""Checks per kept gzip block of a family: about 75 KB of text, compressed in well under 1 ms."""

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # RFC 1952: deflate, no name, no time
DEFLATE_END = b"\x03\x00"  # an empty final block: what a raw compressor's flush() writes

MAX_SHARDS = 1000


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family's header: its type and help text."""

    type: str
    help: str


class Packed(NamedTuple):
    """A run of text compressed on its own: raw deflate ending on a byte (a sync flush).

    Such runs, from separate compressors, join into one deflate stream (as pigz does); the gzip
    trailer's CRC-32 is combined from theirs, so a block of lines that did not change between
    two scrapes is not compressed again.
    """

    size: int
    crc: int
    data: bytes


def pack(text: bytes) -> Packed:
    """Compress a run of text on its own (see Packed)."""
    compressor = _deflate.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return Packed(len(text), _deflate.crc32(text), data)


COMMON_FAMILIES = {
    "probe_success": Family("gauge", "Whether the probe succeeded (1) or failed (0)."),
    "probe_duration_seconds": Family("gauge", "How long the probe took, in seconds."),
}

LABEL_CACHE_SIZE = 200_000
"""Own label texts remembered (for all checks) before the memo starts afresh."""

_TEXT_TYPES = {"gauge": "gauge", "counter": "counter", "info": "gauge", "stateset": "gauge"}


def check_labels(check: Check) -> list[tuple[str, str]]:
    """Return the labels that identify a check's series: check, kind, target, then config labels."""
    return [("check", check.id), ("kind", check.kind), ("target", check.target), *check.labels]


def label_text(labels: Iterable[tuple[str, str]]) -> str:
    """Render label pairs as `a="x",b="y"` (without braces)."""
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)


def result_samples(result: ProbeResult) -> list[Sample]:
    """Return the samples of a result including the common probe_success and duration."""
    return [
        Sample("probe_success", 1.0 if result.success else 0.0),
        Sample("probe_duration_seconds", result.duration),
        *result.samples,
    ]


def shard_key(check_id: str) -> int:
    """Return the number a check's shard is taken from: the CRC-32 of its id in UTF-8.

    Stable across restarts, machines and versions (unlike hash()), so a check stays in its shard.
    """
    return zlib.crc32(check_id.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class Shard:
    """One part of the page: the checks whose shard_key is `index` modulo `of`."""

    index: int
    of: int

    def holds(self, check_id: str) -> bool:
        """Return whether a check's series belong to this shard."""
        return shard_key(check_id) % self.of == self.index

    @property
    def own(self) -> bool:
        """Whether this shard carries the daemon's own registry (health, budgets, process)."""
        return self.index == 0


def _small_int(text: str) -> int | None:
    """Return a plain decimal integer of at most 6 digits, else None (signs, spaces, '1e3')."""
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        return None
    return int(text)


def parse_shard(query: Mapping[str, str]) -> Shard | None:
    """Read `shard` and `of` from a query: None without either; ValueError naming the bad one."""
    index, of = query.get("shard"), query.get("of")
    if index is None and of is None:
        return None
    if of is None:
        raise ValueError("parameter 'of' is missing: shard=i needs of=n, the number of shards")
    count = _small_int(of)
    if count is None or not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"parameter 'of' must be an integer from 1 to {MAX_SHARDS}")
    if index is None:
        raise ValueError(f"parameter 'shard' is missing: of={count} needs shard=0 to {count - 1}")
    number = _small_int(index)
    if number is None or not 0 <= number < count:
        raise ValueError(f"parameter 'shard' must be an integer from 0 to {count - 1}")
    return Shard(number, count)


def accepts_gzip(accept_encoding: str) -> bool:
    """Return whether an Accept-Encoding header allows gzip (gzip, x-gzip or *, q above 0)."""
    chosen: bool | None = None
    wildcard = False
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        allowed = True
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    allowed = float(value) > 0
                except ValueError:
                    allowed = False
        if coding == "*":
            wildcard = allowed
        else:
            chosen = allowed if chosen is None else chosen or allowed
    return chosen if chosen is not None else wildcard


_LEGACY_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


class _One(Collector):
    """A collector of one family, to hand a single family to generate_latest."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        """Yield the family."""
        yield self._metric


def _plain_gauge(metric: Metric) -> bool:
    """Return whether generate_latest writes a family as plain `name{...} value` gauge lines."""
    if metric.type != "gauge" or not _LEGACY_METRIC.match(metric.name):
        return False
    names: set[str] = set()
    for sample in metric.samples:
        if sample.name != metric.name or sample.timestamp is not None:
            return False
        names.update(sample.labels)
    return all(_LEGACY_LABEL.match(name) for name in names)


def _gauge_text(metric: Metric) -> bytes:
    """Render a plain gauge family byte for byte as generate_latest does, at a third of its CPU."""
    name = metric.name
    out = [f"# HELP {name} {escape_help(metric.documentation)}\n# TYPE {name} gauge\n"]
    escape = escape_label_value
    number: Callable[[float], str] = floatToGoString  # client_python's own formatting, untyped
    sample: ClientSample
    for sample in metric.samples:
        if sample.labels:
            text = ",".join([f'{k}="{escape(v)}"' for k, v in sorted(sample.labels.items())])
            out.append(f"{name}{{{text}}} {number(sample.value)}\n")
        else:
            out.append(f"{name} {number(sample.value)}\n")
    return "".join(out).encode()


def _metric_text(metric: Metric) -> bytes:
    """Render one family: plain gauges by the fast formatter, the rest by generate_latest."""
    return _gauge_text(metric) if _plain_gauge(metric) else generate_latest(_One(metric))


def render_registry(registry: Collector) -> bytes:
    """Render a registry in the text format, as generate_latest does (same bytes), faster.

    In an OwnRegistry, a TextCollector (health, down time, budgets: a series per component)
    writes its own text; other plain gauges go through a plain formatter; every other family
    (counters, histograms, info) through generate_latest.
    """
    if not isinstance(registry, OwnRegistry):
        return b"".join(_metric_text(metric) for metric in registry.collect())
    parts: list[bytes] = []
    for collector in registry.collectors():
        if isinstance(collector, TextCollector):
            parts.append(collector.text().encode())
        else:
            parts.extend(_metric_text(metric) for metric in collector.collect())
    return b"".join(parts)


_workers: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    """Return the threads that collect the own registry and compress (made on first use)."""
    global _workers  # noqa: PLW0603 - one small pool for the process, made on first scrape
    if _workers is None:
        _workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vigie-metrics")
    return _workers


def _line_chunks(
    per_check: dict[str, bytes], members: tuple[list[str], set[str]] | None
) -> Iterator[list[bytes]]:
    """Yield a family's lines (of the shard's checks, members) PIECE_LINES checks at a time."""
    if members is None:
        values = iter(per_check.values())
        while lines := list(islice(values, PIECE_LINES)):
            yield lines
    elif len(per_check) <= len(members[0]):  # walk the family, keep the shard's checks
        items, ids = iter(per_check.items()), members[1]
        while pairs := list(islice(items, PIECE_LINES)):
            yield [text for cid, text in pairs if cid in ids]
    else:  # walk the shard's checks, take those the family has
        order = members[0]
        for start in range(0, len(order), PIECE_LINES):
            ids_here = order[start : start + PIECE_LINES]
            yield [text for cid in ids_here if (text := per_check.get(cid)) is not None]


class Exposition:
    """Holds rendered lines per family and per check; renders the page, or a shard, on scrape."""

    def __init__(self, own_registry: CollectorRegistry | OwnRegistry) -> None:
        self._own = own_registry
        self._families: dict[str, Family] = dict(COMMON_FAMILIES)
        # Encoded once when a result arrives, so a scrape only joins bytes.
        self._lines: dict[str, dict[str, bytes]] = {}
        self._check_families: dict[str, frozenset[str]] = {}
        self._family_sets: dict[frozenset[str], frozenset[str]] = {}
        self._prefixes: dict[str, str] = {}
        # A sample's own labels -> their rendered text (`phase="connect"`), for every check:
        # the same series come back at every run and across checks, so they are escaped once.
        self._own_texts: dict[tuple[tuple[str, str], ...], str] = {}
        self._shard_keys: dict[str, int] = {}
        # Per (of, index): the ids of the checks in that shard, in plan order; reset by set_labels.
        self._shard_members: dict[int, list[tuple[list[str], set[str]]]] = {}
        self._generation = 0  # set_labels calls: a split made across one is not kept
        # Kept gzip blocks for the whole page: checks in plan order, BLOCK_CHECKS a block; per
        # family, a block's Packed until one of its checks' lines changes.
        self._block_of: dict[str, int] = {}
        self._blocks: list[list[str]] = []
        self._packed: dict[str, dict[int, Packed]] = {}
        self._headers: dict[str, Packed] = {}

    def set_labels(self, labels_by_check: Mapping[str, Iterable[tuple[str, str]]]) -> None:
        """Set each check's identifying labels; checks no longer listed are dropped."""
        for cid in list(self._prefixes):
            if cid not in labels_by_check:
                self.drop(cid)
        for cid, labels in labels_by_check.items():
            prefix = label_text(labels)
            if self._prefixes.get(cid) not in (None, prefix):
                self.drop(cid)
            self._prefixes[cid] = prefix
            if cid not in self._shard_keys:
                self._shard_keys[cid] = shard_key(cid)
        self._shard_members.clear()
        self._generation += 1
        ids = list(labels_by_check)
        self._blocks = [ids[i : i + BLOCK_CHECKS] for i in range(0, len(ids), BLOCK_CHECKS)]
        self._block_of = {cid: i // BLOCK_CHECKS for i, cid in enumerate(ids)}
        self._packed.clear()

    def update(self, check_id: str, result: ProbeResult | None) -> None:
        """Render a check's new result, or drop its series when result is None."""
        if result is None:
            self.drop(check_id)
            return
        prefix = self._prefixes.get(check_id)
        if prefix is None:
            return
        rendered = self.render_samples(prefix, result_samples(result))
        old = self._check_families.get(check_id)
        packed, block = self._packed, self._block_of.get(check_id, -1)
        if old is None or old != rendered.keys():  # families came or went: usually not
            for family in (old or set()) - rendered.keys():
                self._lines[family].pop(check_id, None)
                packed.get(family, {}).pop(block, None)
            families = frozenset(rendered)  # one shared set for the checks of a kind
            if len(self._family_sets) > 10_000:
                self._family_sets.clear()
            self._check_families[check_id] = self._family_sets.setdefault(families, families)
        lines = self._lines
        for family, text in rendered.items():
            per_check = lines.get(family)
            if per_check is None:
                per_check = lines[family] = {}
            line = text.encode()
            if per_check.get(check_id) != line:  # its block is compressed again at the next scrape
                per_check[check_id] = line
                kept = packed.get(family)
                if kept:
                    kept.pop(block, None)

    def render_samples(self, prefix: str, samples: Iterable[Sample]) -> dict[str, str]:
        """Render samples grouped by family, registering new families' headers.

        prefix is the check's label text; a sample's own labels are rendered once and kept
        for every check (a table's rows carry the same labels in every column's family, and
        the same series come back from run to run).
        """
        out: dict[str, list[str]] = {}
        texts = self._own_texts
        if len(texts) > LABEL_CACHE_SIZE:  # series come and go (tables' rows): start afresh
            texts.clear()
        families = self._families
        isfinite = math.isfinite
        for name, value, labels, type_, help_ in samples:
            if name not in families:
                families[name] = Family(_TEXT_TYPES[type_], help_)
            if labels:
                own = texts.get(labels)
                if own is None:
                    own = texts[labels] = label_text(labels)
                text = f"{prefix},{own}" if prefix and own else prefix or own
            else:
                text = prefix
            if value.__class__ is float and not value.is_integer() and isfinite(value):
                shown = repr(value)  # the common case, without format_value's call
            else:
                shown = format_value(value)
            line = f"{name}{{{text}}} {shown}\n" if text else f"{name} {shown}\n"
            family_lines = out.get(name)
            if family_lines is None:
                out[name] = [line]
            else:
                family_lines.append(line)
        return {name: ls[0] if len(ls) == 1 else "".join(ls) for name, ls in out.items()}

    def drop(self, check_id: str) -> None:
        """Remove every series of a check."""
        block = self._block_of.get(check_id, -1)
        for family in self._check_families.pop(check_id, frozenset()):
            self._lines[family].pop(check_id, None)
            self._packed.get(family, {}).pop(block, None)
        self._prefixes.pop(check_id, None)
        self._shard_keys.pop(check_id, None)

    def render_text(self, families: Mapping[str, str]) -> str:
        """Render a family->lines mapping with headers, e.g. for one check's debug output."""
        parts: list[str] = []
        for name, lines in families.items():
            fam = self._families[name]
            parts.append(f"# HELP {name} {escape_help(fam.help)}\n# TYPE {name} {fam.type}\n")
            parts.append(lines)
        return "".join(parts)

    def render(self, shard: Shard | None = None) -> bytes:
        """Return the whole page (or a shard) at once: probe families, then the daemon's own.

        For tests and tools; the daemon's /metrics streams it with `stream`.
        """
        own = [render_registry(self._own)] if shard is None or shard.own else []
        return b"".join([*self.pieces(shard), *own])

    def render_own(self) -> bytes:
        """Return the daemon's own registry rendered; safe to call from a worker thread."""
        return render_registry(self._own)

    def _split(self, of: int) -> Generator[bytes, None, list[tuple[list[str], set[str]]]]:
        """Sort the checks into `of` shards (ids in plan order, and as a set), memoised per `of`.

        Done a few thousand checks a step, each step yielding b"" (a turn for the loop), so
        the first scrape of a large page's shards holds nothing long either.
        """
        found = self._shard_members.get(of)
        if found is not None:
            return found
        generation, keys = self._generation, self._shard_keys
        ids = list(keys)
        buckets: list[list[str]] = [[] for _ in range(of)]
        step = 5 * PIECE_LINES
        for start in range(0, len(ids), step):
            for cid in ids[start : start + step]:
                key = keys.get(cid)
                if key is not None:
                    buckets[key % of].append(cid)
            yield b""
        split = []
        for bucket in buckets:
            split.append((bucket, set(bucket)))
            if len(bucket) > step:
                yield b""
        if generation == self._generation:
            if len(self._shard_members) >= 16:  # callers choose `of`: keep the memo small
                self._shard_members.clear()
            self._shard_members[of] = split
        return split

    def pieces(self, shard: Shard | None = None) -> Iterator[bytes]:
        """Yield the probe families of the page (or of a shard): headers, then lines in pieces.

        Each piece looks at no more than PIECE_LINES checks (an empty piece, b"", when none of
        them is in the shard, so the caller still gets a turn). Each family is copied when the
        walk reaches it (a dict copy, well under a millisecond at 20k checks, not a render),
        so results that arrive between two pieces neither break the walk nor mix two instants
        within a family.
        """
        families = [(name, self._families[name], live) for name, live in self._lines.items()]
        members = None
        if shard is not None:
            members = (yield from self._split(shard.of))[shard.index]
        for name, fam, live in families:
            header: bytes | None = (
                f"# HELP {name} {escape_help(fam.help)}\n# TYPE {name} {fam.type}\n".encode()
            )
            for lines in _line_chunks(live.copy(), members):
                if lines and header is not None:
                    yield header
                    header = None
                yield b"".join(lines)

    async def stream(self, shard: Shard | None = None) -> AsyncIterator[bytes]:
        """Yield the page (or a shard) in batches of about BATCH_BYTES, never holding the loop.

        The loop gets a turn every SLICE seconds of wall time (the consumer's own work between
        batches included); the own registry is collected and rendered in a worker thread.
        """
        async for chunk in batched(self.pieces(shard)):
            yield chunk
        if shard is None or shard.own:
            loop = asyncio.get_running_loop()
            yield await loop.run_in_executor(_executor(), self.render_own)

    def packed_pieces(self) -> Iterator[Packed]:
        """Yield the whole page's probe families as Packed runs, compressing only changed blocks.

        A block's lines are joined and compressed in one step, after its kept run was taken
        out, so a result arriving while the page is sent marks it for the next scrape.
        """
        blocks = self._blocks
        for name, live in list(self._lines.items()):
            if not live:
                continue
            header = self._headers.get(name)
            if header is None:
                fam = self._families[name]
                header = self._headers[name] = pack(
                    f"# HELP {name} {escape_help(fam.help)}\n# TYPE {name} {fam.type}\n".encode()
                )
            yield header
            kept = self._packed.setdefault(name, {})
            for number, members in enumerate(blocks):
                run = kept.get(number)
                if run is None:
                    try:  # every check of the block has its line: the usual case, in C
                        text = b"".join(map(live.__getitem__, members))
                    except KeyError:  # some have none yet (no result, or dropped)
                        get = live.get
                        text = b"".join([ln for cid in members if (ln := get(cid)) is not None])
                    run = kept[number] = pack(text)
                if run.size:
                    yield run

    async def gzip_stream(self, shard: Shard | None = None) -> AsyncIterator[bytes]:
        """Yield the page (or a shard) gzipped: the whole page from kept blocks when it can.

        One gzip member (any client decodes it): a header, the runs, the own registry compressed
        here, an empty final block, and the trailer with the CRC-32 combined from the runs'.
        """
        combine = _crc32_combine
        if shard is not None or combine is None:
            async for chunk in gzip_stream(self.stream(shard)):
                yield chunk
            return
        loop = asyncio.get_running_loop()
        # The own registry is written in a thread first, the loop free meanwhile; not beside
        # the walk: the two took turns at the GIL, and joining the changed blocks took 5 times
        # as long (measured at 20k checks).
        own = await loop.run_in_executor(_executor(), self.render_own)
        crc = size = 0

        def compressed() -> Iterator[bytes]:
            nonlocal crc, size
            yield GZIP_HEADER
            for run in self.packed_pieces():
                crc, size = combine(crc, run.crc, run.size), size + run.size
                yield run.data

        async for chunk in batched(compressed()):
            yield chunk
        run = pack(own)
        crc, size = combine(crc, run.crc, run.size), size + run.size
        yield b"".join([run.data, DEFLATE_END, struct.pack("<II", crc, size & 0xFFFFFFFF)])


async def batched(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    """Join pieces into batches of about BATCH_BYTES; the loop gets a turn every SLICE seconds
    of wall time (the consumer's own work between batches included)."""
    batch: list[bytes] = []
    size = 0
    clock = time.perf_counter
    turn = clock()
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= BATCH_BYTES:
            yield b"".join(batch)
            batch.clear()
            size = 0
        if clock() - turn >= SLICE:
            await asyncio.sleep(0)
            turn = clock()
    if batch:
        yield b"".join(batch)


async def gzip_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Compress a stream of chunks as one gzip member; big chunks are compressed in a thread."""
    compressor = _deflate.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip header, trailer
    loop = asyncio.get_running_loop()
    async for chunk in chunks:
        if len(chunk) < INLINE_GZIP_BYTES:
            out = compressor.compress(chunk)
        else:  # the thread runs it while the loop serves others: zlib releases the GIL
            out = await loop.run_in_executor(_executor(), compressor.compress, chunk)
        if out:
            yield out
    yield compressor.flush()


class MetricsPage(Protocol):
    """What /metrics serves (an Exposition): the page, or a shard of it, as a stream of bytes."""

    def stream(self, shard: Shard | None = None) -> AsyncIterator[bytes]:
        """Yield the page (or the shard) in batches."""
        ...

    def gzip_stream(self, shard: Shard | None = None) -> AsyncIterator[bytes]:
        """Yield the page (or the shard) as one gzip member."""
        ...


async def metrics_response(request: web.Request, exposition: MetricsPage) -> web.StreamResponse:
    """Serve /metrics: the page or `?shard=i&of=n`, gzip when asked, streamed in batches."""
    try:
        shard = parse_shard(request.query)
    except ValueError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    gzip = accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
    response = web.StreamResponse(
        headers={hdrs.CONTENT_TYPE: CONTENT_TYPE, hdrs.VARY: hdrs.ACCEPT_ENCODING}
    )
    if gzip:
        response.headers[hdrs.CONTENT_ENCODING] = "gzip"
    await response.prepare(request)
    async for chunk in exposition.gzip_stream(shard) if gzip else exposition.stream(shard):
        await response.write(chunk)
    await response.write_eof()
    return response
