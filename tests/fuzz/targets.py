"""Fuzz targets: one function per parser of what the world sends, failing only on a crash.

A crash is an exception other than the parser's documented error type. Byte-level targets take
the raw input (atheris drives them at full speed); structured targets are Hypothesis tests,
which `make fuzz` drives through atheris (`fuzz_one_input`) and `make test` runs briefly.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.config import load_config
from vigie.probes import default_registry
from vigie.probes.base import Check, ProbeContext, ProbeLog, ProbeRegistry
from vigie.probes.nagios import parse_output, parse_perfdata, perfdata_samples
from vigie.probes.redfish import ROOT, RedfishProbe, RedfishSettings, _Run
from vigie.probes.snmp.ber import ber_decode_int, ber_decode_oid, ber_items
from vigie.probes.snmp.profiles import Collected, Profile, evaluate, load_profile_dirs, poll_plan
from vigie.probes.snmp.traps import peek_header
from vigie.probes.snmp.usm import parse_v3, v3_sender

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REPO = HERE.parents[1]
MOCKUP = REPO / "tests" / "fixtures" / "redfish" / "rackmount"


def _quiet(*_: object, **__: object) -> None:
    """A log function that drops everything (the targets run millions of times)."""


# --------------------------------------------------------------------------- byte-level


def _walk_ber(data: bytes, depth: int = 0) -> None:
    """Decode a BER value tree as the SNMP code reads it: ints, OIDs, constructed values."""
    try:
        items = ber_items(data)
    except ValueError:
        return
    for tag, body in items:
        if tag == 0x06:
            ber_decode_oid(body)
        elif tag in (0x02, 0x41, 0x42, 0x43, 0x46, 0x47):
            ber_decode_int(body)
        elif tag & 0x20 and depth < 8:  # constructed: its body is TLVs again
            _walk_ber(body, depth + 1)


def ber(data: bytes) -> None:
    """BER codec of probes/snmp.py: ber_items raises ValueError; the decoders never raise."""
    _walk_ber(data)
    sender = v3_sender(data)  # None for anything it cannot read
    assert sender is None or (isinstance(sender[0], str) and isinstance(sender[1], str))
    with contextlib.suppress(ValueError, IndexError):  # what its caller, the USM check, suppresses
        parse_v3(data)


def trap_header(data: bytes) -> None:
    """Trap screening of monitor/traps.py: peek_header raises ValueError, naming the field."""
    try:
        header = peek_header(data)
    except ValueError as exc:
        assert str(exc)
        return
    assert header.version in (0, 1, 3)


def nagios(data: bytes) -> None:
    """Nagios plugin output and perfdata (probes/nagios.py): any output parses, never raises."""
    text = data.decode("utf-8", errors="replace")  # as the probe decodes the plugin's stdout
    output = parse_output(text)
    items, bad = parse_perfdata(output.perfdata)
    assert bad >= 0
    for sample in perfdata_samples(items):
        assert isinstance(sample.value, float)


BYTE_TARGETS: dict[str, Callable[[bytes], None]] = {
    "ber": ber,
    "trap_header": trap_header,
    "nagios": nagios,
}


# --------------------------------------------------------------------------- structured

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["OK", "Warning", "Critical", "Enabled", "Absent", "On", "Off", ROOT]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@cache
def mockup_docs() -> dict[str, Any]:
    """Return the rackmount mockup's documents by Redfish path (the seeds of the redfish target)."""
    docs: dict[str, Any] = {}
    for path in sorted(MOCKUP.rglob("index.json")):
        rel = path.parent.relative_to(MOCKUP).as_posix()
        docs[ROOT if rel == "." else f"{ROOT}/{rel}"] = json.loads(path.read_text())
    return docs


def _keys(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the location of every value inside a JSON document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from _keys(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield (*prefix, index)
            yield from _keys(value, (*prefix, index))


def _replace(doc: Any, loc: tuple[Any, ...], value: Any) -> Any:
    """Return a copy of doc with the value at loc replaced."""
    if not loc:
        return value
    head, rest = loc[0], loc[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    copy = list(doc)
    copy[head] = _replace(doc[head], rest, value)
    return copy


@st.composite
def redfish_service(draw: st.DrawFn) -> dict[str, bytes]:
    """Draw a BMC: the mockup with some values replaced by arbitrary JSON, some bodies by junk."""
    docs = dict(mockup_docs())
    bodies: dict[str, bytes] = {}
    for path in draw(st.lists(st.sampled_from(sorted(docs)), max_size=6)):
        locs = list(_keys(docs[path]))
        if draw(st.booleans()) and locs:
            loc: tuple[Any, ...] = draw(st.sampled_from(locs))
            docs[path] = _replace(docs[path], loc, draw(JSON))
        else:
            docs[path] = draw(JSON)
    for path, doc in docs.items():
        bodies[path] = json.dumps(doc).encode()
    for path in draw(st.lists(st.sampled_from(sorted(docs)), max_size=2)):
        bodies[path] = draw(st.binary(max_size=64))  # not JSON at all
    return bodies


@contextmanager
def served_from(bodies: dict[str, bytes]) -> Iterator[None]:
    """Serve Redfish GETs from memory instead of HTTP while the block runs.

    A fake transport, on purpose: the target is the JSON handling, run thousands of times a
    second; the HTTP side is tested against sushy-static in tests/probes/test_redfish.py.
    """
    original = _Run._request

    async def request(self: _Run, path: str, expand: bool, token: str | None) -> tuple[int, bytes]:
        self.requests += 1
        body = bodies.get(path.split("?", maxsplit=1)[0].rstrip("/") or ROOT)
        return (200, body) if body is not None else (404, b"")

    _Run._request = request  # type: ignore[method-assign]
    try:
        yield
    finally:
        _Run._request = original  # type: ignore[method-assign]


@dataclass
class _Loop:
    """One event loop reused by every run of a structured async target."""

    loop: asyncio.AbstractEventLoop


@cache
def _loop() -> _Loop:
    """Return the shared event loop of the async targets."""
    return _Loop(asyncio.new_event_loop())


def run_redfish(bodies: dict[str, bytes]) -> None:
    """Redfish JSON handling (probes/redfish.py): hostile documents make errors, not crashes."""
    probe = RedfishProbe()
    target = probe.parse_target("http://127.0.0.1:1")
    check = Check(
        "fuzz",
        "redfish",
        target,
        60.0,
        60.0,
        RedfishSettings.model_validate({"auth": "none"}),
        host="127.0.0.1",
    )
    ctx = ProbeContext(session=None, log=ProbeLog(_QuietLogger(), keep=False))  # type: ignore[arg-type]
    with served_from(bodies):
        result = _loop().loop.run_until_complete(probe(check, ctx))
    assert isinstance(result.success, bool)
    for sample in result.samples:
        assert isinstance(sample.value, float)


class _QuietLogger:
    """A structlog-like logger that drops every event."""

    def bind(self, **_: object) -> _QuietLogger:
        """Return itself."""
        return self

    def debug(self, *_: object, **__: object) -> None:
        """Drop the event."""

    info = warning = error = debug


@cache
def shipped_profiles() -> dict[str, Profile]:
    """Return the shipped SNMP profiles."""
    return load_profile_dirs([REPO / "config" / "profiles"])


VALUE = (
    st.none()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.binary(max_size=24)
    | st.text(max_size=24)
    | st.sampled_from([math.inf, -math.inf, math.nan, 2**63 - 1, -(2**31)])
)
SUFFIX = st.lists(st.integers(min_value=0, max_value=2**32), max_size=5).map(
    lambda parts: ".".join(map(str, parts))
)


@st.composite
def poll(draw: st.DrawFn) -> tuple[list[str], Collected]:
    """Draw some shipped profiles and random varbinds for the objects they poll."""
    names = draw(st.lists(st.sampled_from(sorted(shipped_profiles())), min_size=1, max_size=3))
    plan = poll_plan(shipped_profiles()[n] for n in names)
    data = Collected()
    for oid in draw(st.lists(st.sampled_from(plan.gets), max_size=12)) if plan.gets else []:
        data.scalars[oid] = draw(VALUE)
    for oid in draw(st.lists(st.sampled_from(plan.walks), max_size=8)) if plan.walks else []:
        data.walks[oid] = draw(st.dictionaries(SUFFIX, VALUE, max_size=4))
    return names, data


def run_profiles(drawn: tuple[list[str], Collected]) -> None:
    """Profile evaluation (probes/snmp_profiles.py) on random varbinds: samples, never a crash."""
    names, data = drawn
    chosen = [shipped_profiles()[n] for n in names]
    samples, _ = evaluate(chosen, data, {}, _quiet)
    samples, _ = evaluate(chosen, data, {}, _quiet)  # a second poll: resets and memory
    for sample in samples:
        assert isinstance(sample.value, float)


@cache
def example_config() -> Any:
    """Return the shipped example config as plain data (the seed of the config target)."""
    return yaml.safe_load((REPO / "config" / "vigie.example.yaml").read_text())


YAML_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
    | st.sampled_from(["30s", "0s", "-1s", "1e9h", "http://127.0.0.1:1/", "${NOPE}", "snmp"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def config_text(draw: st.DrawFn) -> str:
    """Draw a config: the example with some values replaced, or text cut or spliced."""
    doc = example_config()
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        locs = list(_keys(doc))
        doc = _replace(doc, draw(st.sampled_from(locs)), draw(YAML_VALUE))
    text = yaml.safe_dump(doc, sort_keys=False)
    if draw(st.booleans()):
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:cut] + draw(st.text(max_size=16)) + text[cut:]
    return text


@cache
def _config_dir() -> Path:
    """Return a directory for the drawn config files, removed at exit."""
    directory = Path(tempfile.mkdtemp(prefix="vigie-fuzz-config-"))
    atexit.register(shutil.rmtree, directory, True)
    return directory


@cache
def _registry() -> ProbeRegistry:
    """Return the probe registry the config target loads with (built once)."""
    return default_registry()


def load_config_text(text: str) -> None:
    """Config loader (monitor/config.py): any text loads or raises ConfigErrors naming the line."""
    path = _config_dir() / "vigie.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path, _registry(), env={})
    except ConfigErrors as exc:
        assert exc.errors
        for error in exc.errors:
            assert str(error)


def _mutate(seed: bytes, edits: list[tuple[int, int]]) -> bytes:
    """Return seed with some bytes overwritten (positions wrap around its length)."""
    out = bytearray(seed)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    return bytes(out)


def byte_input(target: str) -> st.SearchStrategy[bytes]:
    """Draw raw bytes, or a seed of the target with a few bytes changed."""
    seeds = [p.read_bytes() for p in corpus(target)] or [b""]
    edits = st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=4)
    return st.binary(max_size=512) | st.builds(_mutate, st.sampled_from(seeds), edits)


STRUCTURED_TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
    "redfish": (redfish_service(), run_redfish),
    "profiles": (poll(), run_profiles),
    "config": (config_text(), load_config_text),
}


def given_test(target: str, examples: int) -> Any:
    """Return a Hypothesis test of a structured target (its .hypothesis.fuzz_one_input too)."""
    if target in BYTE_TARGETS:
        strategy, run = byte_input(target), BYTE_TARGETS[target]
    else:
        strategy, run = STRUCTURED_TARGETS[target]
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )(given(strategy)(run))


def corpus(target: str) -> list[Path]:
    """Return the seed and regression files of a target, in name order."""
    directory = CORPUS / target
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def _value(raw: Any) -> Any:
    """Decode a varbind value of a profiles seed: null, {"int"}, {"float"}, {"hex"}, {"text"}."""
    if raw is None:
        return None
    (kind, value), *_ = raw.items()
    decode: dict[str, Callable[[str], Any]] = {
        "int": int,
        "float": float,
        "hex": bytes.fromhex,
        "text": str,
    }
    return decode[kind](value)


def replay(target: str, path: Path) -> None:
    """Run one seed or regression file of a target through it."""
    if target in BYTE_TARGETS:
        BYTE_TARGETS[target](path.read_bytes())
    elif target == "redfish":
        bodies = json.loads(path.read_text())
        run_redfish({p: b.encode("utf-8", "surrogatepass") for p, b in bodies.items()})
    elif target == "profiles":
        seed = json.loads(path.read_text())
        data = Collected(
            scalars={oid: _value(v) for oid, v in seed.get("scalars", {}).items()},
            walks={
                oid: {suffix: _value(v) for suffix, v in rows.items()}
                for oid, rows in seed.get("walks", {}).items()
            },
        )
        run_profiles((seed["profiles"], data))
    else:
        load_config_text(path.read_text(encoding="utf-8", errors="surrogatepass"))
