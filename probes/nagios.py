"""The nagios probe: run a Nagios/Centreon/monitoring-plugins command and read its verdict.

The plugin runs without a shell, from `/`, in a clean environment (PATH=/usr/bin:/bin,
LC_ALL=C, plus the check's `env` and `env_files`), in its own process group, which is killed
when the run is cancelled (the scheduler's timeout), so no plugin or child outlives its check.

Exit codes follow the plugin guidelines: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (anything
else, or death by a signal, is UNKNOWN as Nagios does). OK and WARNING are successes (the
service answers; WARNING is reported through `nagios_status` = 1 for a `warning` health rule),
CRITICAL and UNKNOWN are failures whose reason is the plugin's first output line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from yarl import URL

from vigie.core.hostport import split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.core.secrets import ConfigPath, read_secret_file
from vigie.probes.base import Check, ProbeContext

__all__ = [
    "STATES",
    "NagiosProbe",
    "NagiosSettings",
    "PerfData",
    "PluginOutput",
    "parse_output",
    "parse_perfdata",
    "perfdata_samples",
]

BASE_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
STATES: dict[int, str] = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
MAX_PERFDATA_ITEMS = 256
"""Bound on perfdata items kept from one run: the output is untrusted."""
MAX_LABEL_CHARS = 128
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHUNK = 64 * 1024
_REAP_GRACE = 5.0

# --------------------------------------------------------------------------- perfdata


@dataclass(frozen=True, slots=True)
class Unit:
    """How a perfdata unit of measure maps to a metric family: suffix and scale to base unit."""

    suffix: str
    scale: float
    counter: bool = False


# Plugin guidelines: no unit, s/ms/us, %, B/KB/MB/GB/TB, c. KB... are powers of 1024, as
# monitoring-plugins' check_disk and check_swap mean them; the IEC spellings are accepted too.
UNITS: dict[str, Unit] = {
    "": Unit("", 1.0),
    "s": Unit("_seconds", 1.0),
    "ms": Unit("_seconds", 1e-3),
    "us": Unit("_seconds", 1e-6),
    "%": Unit("_ratio", 0.01),
    "B": Unit("_bytes", 1.0),
    "KB": Unit("_bytes", 1024.0),
    "MB": Unit("_bytes", 1024.0**2),
    "GB": Unit("_bytes", 1024.0**3),
    "TB": Unit("_bytes", 1024.0**4),
    "KiB": Unit("_bytes", 1024.0),
    "MiB": Unit("_bytes", 1024.0**2),
    "GiB": Unit("_bytes", 1024.0**3),
    "TiB": Unit("_bytes", 1024.0**4),
    "c": Unit("_total", 1.0, counter=True),
}

_VALUE = re.compile(r"^(?P<num>[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?)(?P<uom>[^;]*)$")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?$")


@dataclass(frozen=True, slots=True)
class PerfData:
    """One parsed perfdata item: value in base units; thresholds only when a plain number."""

    label: str
    value: float
    unit: Unit
    warn: float | None = None
    crit: float | None = None
    min: float | None = None
    max: float | None = None


def _number(text: str) -> float | None:
    """Return a perfdata number (a decimal comma accepted) or None if it is not one."""
    text = text.strip()
    if not _NUMBER.match(text):
        return None
    return float(text.replace(",", "."))


def _split_items(text: str) -> tuple[list[tuple[str, str]], int]:
    """Split perfdata into (label, rest) pairs; return them and the count of unreadable items.

    Labels may be quoted with single quotes (spaces inside, '' for a quote); items are
    separated by whitespace.
    """
    items: list[tuple[str, str]] = []
    bad = 0
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "'":
            label, j = [], i + 1
            while j < n:
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        label.append("'")
                        j += 2
                        continue
                    break
                label.append(text[j])
                j += 1
            if j >= n:  # unterminated quote: skip this token only, not the rest
                bad += 1
                i = _skip_token(text, i)
                continue
            if j + 1 >= n or text[j + 1] != "=":
                bad += 1
                i = _skip_token(text, j + 1)
                continue
            name, i = "".join(label), j + 2
        else:
            j = i
            while j < n and text[j] != "=" and not text[j].isspace():
                j += 1
            if j >= n or text[j] != "=" or j == i:
                bad += 1
                i = _skip_token(text, j)
                continue
            name, i = text[i:j], j + 1
        j = _skip_token(text, i)
        items.append((name, text[i:j]))
        i = j
    return items, bad


def _skip_token(text: str, i: int) -> int:
    """Return the index of the first whitespace at or after i (or the end)."""
    while i < len(text) and not text[i].isspace():
        i += 1
    return i


def parse_perfdata(text: str) -> tuple[list[PerfData], int]:
    """Parse perfdata text; return the items read and the number of items skipped as invalid.

    An item is `'label'=value[UOM];[warn];[crit];[min];[max]`. A value of `U` (undetermined)
    is NaN; an unknown unit, a bad number or an empty label is skipped and counted.
    """
    out: list[PerfData] = []
    seen: set[str] = set()
    items, bad = _split_items(text)
    for raw_label, rest in items:
        fields = rest.split(";")
        label = sanitise(raw_label, MAX_LABEL_CHARS)
        if not label.strip() or label in seen or len(out) >= MAX_PERFDATA_ITEMS:
            bad += 1
            continue
        head = fields[0]
        if head == "U" or (head.startswith("U") and head[1:] in UNITS):
            value, unit = math.nan, UNITS.get(head[1:], UNITS[""])
        else:
            m = _VALUE.match(head)
            if m is None or m["uom"] not in UNITS:
                bad += 1
                continue
            unit = UNITS[m["uom"]]
            num = _number(m["num"])
            if num is None:
                bad += 1
                continue
            value = num * unit.scale
        extra = [*fields[1:5], "", "", "", ""][:4]
        scaled = [(_number(f) if f else None) for f in extra]
        warn, crit, low, high = (None if v is None else v * unit.scale for v in scaled)
        seen.add(label)
        out.append(PerfData(label, value, unit, warn, crit, low, high))
    return out, bad


@dataclass(frozen=True, slots=True)
class PluginOutput:
    """A plugin's output split per the guidelines: first line, long text and perfdata."""

    first_line: str
    long_text: str
    perfdata: str


def parse_output(text: str) -> PluginOutput:
    """Split plugin output: `TEXT | PERF` on line one, long text, then `| PERF` on later lines."""
    lines = text.splitlines()
    if not lines:
        return PluginOutput("", "", "")
    first, _, perf = lines[0].partition("|")
    long_lines: list[str] = []
    perf_parts = [perf]
    for k, line in enumerate(lines[1:], start=1):
        text_part, sep, perf_part = line.partition("|")
        long_lines.append(text_part)
        if sep:
            # Everything after the first `|` of the long text is perfdata, later lines included.
            perf_parts.append(perf_part)
            perf_parts.extend(lines[k + 1 :])
            break
    return PluginOutput(first.strip(), "\n".join(long_lines).strip(), " ".join(perf_parts))


_HELP = {
    "": "Plugin performance data without a unit, by label.",
    "_seconds": "Plugin performance data in seconds (from s, ms, us), by label.",
    "_ratio": "Plugin performance data as a ratio (from %), by label.",
    "_bytes": "Plugin performance data in bytes (from B, KB, MB, GB, TB), by label.",
    "_total": "Plugin performance data counter (unit c), by label.",
}


def perfdata_samples(items: Sequence[PerfData]) -> list[Sample]:
    """Return the samples of perfdata items: value, and warn/crit thresholds when numeric."""
    out: list[Sample] = []
    for item in items:
        labels = (("label", item.label),)
        suffix = item.unit.suffix
        out.append(
            Sample(
                f"nagios_perfdata{suffix}",
                item.value,
                labels,
                "counter" if item.unit.counter else "gauge",
                _HELP[suffix],
            )
        )
        # Thresholds are gauges even for counters: only counters may end in _total.
        unit = "" if item.unit.counter else suffix
        for kind, value in (("warning", item.warn), ("critical", item.crit)):
            if value is not None:
                out.append(
                    Sample(
                        f"nagios_perfdata_{kind}{unit}",
                        value,
                        labels,
                        "gauge",
                        f"Plugin's {kind} threshold of a perfdata label, when a plain number.",
                    )
                )
    return out


# --------------------------------------------------------------------------- settings


class NagiosSettings(BaseModel):
    """Settings of a nagios check: the plugin's argv, environment and output bound."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] = Field(
        min_length=1,
        description="Plugin argv, no shell: an absolute program path then its arguments;"
        " `{target}` in an argument is replaced by the check's target. No secrets here"
        " (argv is visible to every local user): use env_files.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables (the base is PATH=/usr/bin:/bin, LC_ALL=C).",
    )
    env_files: dict[str, ConfigPath] = Field(
        default_factory=dict,
        description="Environment variables read from secret files at load (never logged).",
    )
    max_output_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        description="Keep at most this many bytes of stdout (and of stderr); the rest is read"
        " and dropped so the plugin never blocks.",
    )
    _secrets: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Check the program path and variable names; read env_files into secrets."""
        program = self.command[0]
        if not os.path.isabs(program):
            raise ValueError(f"command[0] must be an absolute path, got {program!r}")
        for arg in self.command:
            if "\0" in arg:
                raise ValueError("command arguments must not contain NUL characters")
        for name, value in self.env.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"env name {name!r} is not a valid variable name")
            if "\0" in value:
                raise ValueError(f"env {name!r} must not contain NUL characters")
        secrets: dict[str, SecretStr] = {}
        for name, path in self.env_files.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"env_files name {name!r} is not a valid variable name")
            if name in self.env:
                raise ValueError(f"{name!r} is set in both env and env_files")
            secret = read_secret_file(path)
            if "\0" in secret.get_secret_value():
                raise ValueError(f"env_files {name!r}: file holds a NUL character")
            secrets[name] = secret
        self._secrets = secrets
        return self

    def environment(self) -> dict[str, str]:
        """Return the plugin's whole environment, secrets included."""
        env = {**BASE_ENV, **self.env}
        env.update((k, v.get_secret_value()) for k, v in self._secrets.items())
        return env


# --------------------------------------------------------------------------- running


async def _read_bounded(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, int]:
    """Read a pipe to EOF; keep the first limit bytes, return them and the count dropped."""
    if stream is None:
        return b"", 0
    kept = bytearray()
    dropped = 0
    while chunk := await stream.read(_CHUNK):
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
        dropped += max(0, len(chunk) - max(room, 0))
    return bytes(kept), dropped


def _kill_group(pid: int) -> None:
    """SIGKILL the plugin's process group (its children too); it may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class _Run:
    """What a finished plugin left: exit code (negative: killed by that signal) and output."""

    code: int
    stdout: bytes
    stderr: bytes
    dropped: int


async def run_plugin(argv: Sequence[str], env: dict[str, str], limit: int) -> _Run:
    """Run argv to completion with bounded output; on cancel kill its process group and reap it."""
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,  # its own process group, killed as a whole on timeout
            close_fds=True,
        )
    )
    try:
        # Shielded: cancelled mid-spawn, asyncio would kill the plugin alone and wait for its
        # pipes, which its children keep open (a timeout under load overran by their runtime).
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            started = await spawn
            _kill_group(started.pid)
            await asyncio.wait_for(started.wait(), _REAP_GRACE)
        raise
    try:
        (out, out_dropped), (err, _), code = await asyncio.gather(
            _read_bounded(proc.stdout, limit), _read_bounded(proc.stderr, limit), proc.wait()
        )
    except BaseException:
        # Safe: Linux does not hand out a pid still in use as a process group id.
        _kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.wait_for(proc.wait(), _REAP_GRACE))
        raise
    return _Run(code, out, err, out_dropped)


def _first_line(text: str) -> str:
    """Return the first non-empty line of text."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _reason(state: str, code: int, first: str, stderr: str) -> str:
    """Return the failure reason: the plugin's first line, prefixed by the state if absent."""
    text = first or _first_line(stderr)
    shown = f"exit {code}" if state == "UNKNOWN" and code != 3 else state
    if not text:
        return f"{shown}, no output"
    if state in text[:40].upper() and shown == state:
        return text
    return f"{shown}: {text}"


class NagiosProbe:
    """Probe kind "nagios": run a plugin; its exit code is the verdict, its perfdata metrics."""

    kind: ClassVar[str] = "nagios"
    Settings: ClassVar[type[BaseModel]] = NagiosSettings

    def parse_target(self, target: str) -> str:
        """Return the target (what the plugin checks, e.g. a host), or raise ValueError."""
        text = target.strip()
        if not text or len(text) > 1024 or any(not c.isprintable() or c.isspace() for c in text):
            raise ValueError(
                f"must be a host, host:port or URL without spaces, got {bound_text(target, 200)!r}"
            )
        return text

    def host_of(self, target: str) -> str:
        """Return the host of a URL, host:port or host target (the target itself otherwise)."""
        if "://" in target:
            with contextlib.suppress(ValueError):
                return URL(target).host or target
        with contextlib.suppress(ValueError):  # only the host matters: any port stands in
            return split_host_port(target, default_port=1)[0]
        return target

    async def __call__(self, check: Check[NagiosSettings], ctx: ProbeContext) -> ProbeResult:
        """Run the plugin once and turn its exit code and perfdata into a result."""
        settings = check.settings
        argv = [arg.replace("{target}", check.target) for arg in settings.command]
        # Only the program and arg count: arguments may carry things not meant for logs.
        ctx.log("nagios_exec", program=argv[0], args=len(argv) - 1)
        try:
            run = await run_plugin(argv, settings.environment(), settings.max_output_bytes)
        except OSError as exc:
            reason = bound_text(f"cannot run {argv[0]}: {exc.strerror or exc}")
            ctx.log("nagios_failed", error=reason)
            return ProbeResult(success=False, error=reason, samples=(_status(3),))

        code = run.code if run.code in STATES else 3
        state = STATES[code]
        stdout = run.stdout.decode("utf-8", errors="replace")
        stderr = run.stderr.decode("utf-8", errors="replace")
        output = parse_output(stdout)
        items, bad = parse_perfdata(output.perfdata)
        ctx.log(
            "nagios_exit",
            code=run.code,
            state=state,
            perfdata=len(items),
            invalid=bad,
            dropped_bytes=run.dropped,
            output=bound_text(output.first_line, 200),
        )
        samples = [
            _status(code),
            Sample(
                "nagios_perfdata_invalid",
                float(bad),
                help="Perfdata items of the last run skipped as unreadable (bad syntax or unit).",
            ),
            *perfdata_samples(items),
        ]
        if code <= 1:
            return ProbeResult(success=True, samples=tuple(samples))
        if run.code < 0:
            reason = f"UNKNOWN: plugin killed by signal {-run.code}"
        else:
            reason = _reason(state, run.code, output.first_line, stderr)
        reason = bound_text(reason)
        ctx.log("nagios_failed", error=reason)
        return ProbeResult(success=False, error=reason, samples=tuple(samples))


def _status(code: int) -> Sample:
    """Return the nagios_status sample."""
    return Sample(
        "nagios_status",
        float(code),
        help="Plugin state of the last run: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    )
