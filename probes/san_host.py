"""A host's own view of its SAN paths: the fixed commands the ssh probe may run and their parsers.

Pure functions from command output to samples, so they are tested on recorded outputs. Every
output is untrusted: sizes are bounded by the caller, names and label values by the parsers,
and a malformed output raises SanParseError with a short reason, never another exception.

`multipathd show maps json` (multipath-tools, libmultipath/print.h, JSON format 0.1) prints
maps with `dm_st` ("active" or "suspend"), `paths` (the number of *active* paths, nr_active)
and `path_faults`, their `path_groups`, and each group's `paths` with `dm_st`
(active/failed/undef), `chk_st` (ready, faulty, shaky, ghost, i/o pending, i/o timeout,
delayed, undef) and `dev_st` (running, offline, transport-offline...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vigie.core.results import Sample
from vigie.core.sanitise import sanitise

__all__ = [
    "COMMANDS",
    "FC_HOST_COMMAND",
    "MULTIPATH_COMMAND",
    "SanCommand",
    "SanParseError",
    "parse_fc_host",
    "parse_multipath",
]

MULTIPATH_COMMAND = "multipathd show maps json"
# One line per FC HBA port: "hostN<TAB>port_name<TAB>port_state", for any POSIX login shell.
FC_HOST_COMMAND = (
    "for h in /sys/class/fc_host/host*; do"
    ' [ -r "$h/port_state" ] || continue;'
    " printf '%s\\t%s\\t%s\\n' \"${h##*/}\""
    ' "$(cat "$h/port_name" 2>/dev/null)" "$(cat "$h/port_state")";'
    " done"
)
MAX_MAPS = 4096
MAX_PATHS_PER_MAP = 256
MAX_FC_HOSTS = 256
_LABEL_CHARS = 128

# Checker and device states that mean the path cannot carry I/O now.
FAILED_CHECKER_STATES = frozenset({"faulty", "shaky", "i/o timeout", "undef"})
FAILED_DEVICE_STATES = frozenset({"offline", "transport-offline", "blocked", "quiesce"})
_FC_HOST = re.compile(r"^host[0-9]{1,6}$")


class SanParseError(ValueError):
    """A command's output could not be read; the message says where and why."""


def _gauge(name: str, value: float, labels: tuple[tuple[str, str], ...], help: str) -> Sample:
    """Return a gauge sample."""
    return Sample(name, value, labels, "gauge", help)


def _label(value: object) -> str:
    """Return a device-supplied value fit for a label: text, bounded, control chars replaced."""
    return sanitise(str(value), _LABEL_CHARS)


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    """Return obj[key] as a list or raise SanParseError naming the place."""
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise SanParseError(f"{where}.{key} is not a list")
    return value


def _object(value: object, where: str) -> dict[str, Any]:
    """Return value as a JSON object or raise SanParseError naming the place."""
    if not isinstance(value, dict):
        raise SanParseError(f"{where} is not an object")
    return value


def _int(value: object, where: str) -> int:
    """Return a JSON integer or raise SanParseError naming the place."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SanParseError(f"{where} is not an integer")
    return value


@dataclass(frozen=True, slots=True)
class PathState:
    """One path of a map as multipathd sees it."""

    dev: str
    dm_st: str
    chk_st: str
    dev_st: str
    host_wwpn: str
    target_wwpn: str

    @property
    def failed(self) -> bool:
        """Whether the path cannot carry I/O (kernel failed it, checker or device says so)."""
        return (
            self.dm_st == "failed"
            or self.chk_st in FAILED_CHECKER_STATES
            or self.dev_st in FAILED_DEVICE_STATES
        )

    @property
    def active(self) -> bool:
        """Whether the path carries I/O now (a ghost path is a healthy standby, not active)."""
        return not self.failed and self.chk_st == "ready"


def _path(raw: object, where: str) -> PathState:
    """Read one path object."""
    obj = _object(raw, where)

    def text(key: str) -> str:
        value = obj.get(key, "")
        return _label(value).strip().lower() if key.endswith("_st") else _label(value)

    return PathState(
        dev=text("dev"),
        dm_st=text("dm_st"),
        chk_st=text("chk_st"),
        dev_st=text("dev_st"),
        host_wwpn=text("host_wwpn"),
        target_wwpn=text("target_wwpn"),
    )


def parse_multipath(text: str) -> list[Sample]:
    """Return the samples of `multipathd show maps json` output, per map and per path."""
    try:
        # strict=False: multipathd prints names and strings without escaping control chars.
        doc = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise SanParseError(
            f"multipathd output is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise SanParseError("multipathd output is nested too deeply") from None
    doc = _object(doc, "output")
    if "maps" not in doc:
        raise SanParseError("multipathd output has no maps list (not `show maps json` output?)")
    maps = _list(doc, "maps", "output")
    if len(maps) > MAX_MAPS:
        raise SanParseError(f"more than {MAX_MAPS} maps")
    samples = [_gauge("multipath_maps", len(maps), (), "Multipath maps multipathd knows.")]
    seen: set[str] = set()
    for i, raw_map in enumerate(maps):
        where = f"maps[{i}]"
        mp = _object(raw_map, where)
        name = _label(mp.get("name") or mp.get("uuid") or f"#{i}")
        if name in seen:
            raise SanParseError(f"{where}: map {name!r} listed twice")
        seen.add(name)
        paths = [
            _path(p, f"{where}.path_groups[{g}].paths[{k}]")
            for g, group in enumerate(_list(mp, "path_groups", where))
            for k, p in enumerate(
                _list(_object(group, f"{where}.path_groups[{g}]"), "paths", where)
            )
        ]
        if len(paths) > MAX_PATHS_PER_MAP:
            raise SanParseError(f"{where}: more than {MAX_PATHS_PER_MAP} paths")
        samples += _map_samples(name, mp, paths, where)
    return samples


def _map_samples(name: str, mp: dict[str, Any], paths: list[PathState], where: str) -> list[Sample]:
    """Return the samples of one map."""
    labels = (("map", name),)
    active = sum(p.active for p in paths)
    failed = sum(p.failed for p in paths)
    dm_active = str(mp.get("dm_st", "")).strip().lower() == "active"
    out = [
        _gauge("multipath_paths", len(paths), labels, "Paths of a multipath map."),
        _gauge("multipath_paths_active", active, labels, "Paths carrying I/O (checker ready)."),
        _gauge(
            "multipath_paths_failed",
            failed,
            labels,
            "Paths failed by the kernel, the path checker or the device state.",
        ),
        _gauge(
            "multipath_map_ok",
            1.0 if dm_active and active > 0 else 0.0,
            labels,
            "1 when the map is active (not suspended) and has at least one active path.",
        ),
    ]
    if "path_faults" in mp:
        out.append(
            Sample(
                "multipath_path_faults_total",
                _int(mp["path_faults"], f"{where}.path_faults"),
                labels,
                "counter",
                "Path failures multipathd counted on this map since it started.",
            )
        )
    for p in paths:
        path_labels = [("map", name), ("dev", p.dev)]
        path_labels += [
            (k, v)
            for k, v in (("host_wwpn", p.host_wwpn), ("target_wwpn", p.target_wwpn))
            if v and v != "[undef]"
        ]
        out.append(
            _gauge(
                "multipath_path_up",
                1.0 if p.active else 0.0,
                tuple(path_labels),
                "1 when the path carries I/O; FC WWPNs tie it to an HBA and an array port.",
            )
        )
    return out


def parse_fc_host(text: str) -> list[Sample]:
    """Return the samples of FC_HOST_COMMAND output: one port state line per HBA port."""
    samples: list[Sample] = []
    hosts: set[str] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not _FC_HOST.match(parts[0]):
            raise SanParseError(f"fc_host line {n} is not 'hostN<TAB>wwpn<TAB>state'")
        host, wwpn, state = parts[0], _label(parts[1].strip()), _label(parts[2].strip())
        if host in hosts:
            raise SanParseError(f"fc_host line {n}: {host} listed twice")
        hosts.add(host)
        if len(hosts) > MAX_FC_HOSTS:
            raise SanParseError(f"more than {MAX_FC_HOSTS} FC hosts")
        samples.append(
            _gauge(
                "fc_host_port_online",
                1.0 if state == "Online" else 0.0,
                (("host", host),),
                "1 when the FC HBA port's state is Online (link up and logged in the fabric).",
            )
        )
        samples.append(
            Sample(
                "fc_host_port_info",
                1.0,
                (("host", host), ("port_name", wwpn), ("port_state", state)),
                "info",
                "FC HBA port's WWPN and raw state (Online, Linkdown, Offline, Blocked...).",
            )
        )
    if not hosts:
        raise SanParseError("no FC host found under /sys/class/fc_host")
    samples.insert(0, _gauge("fc_hosts", len(hosts), (), "FC HBA ports found on the host."))
    return samples


@dataclass(frozen=True, slots=True)
class SanCommand:
    """An allowed command: the fixed command line and the parser of its output."""

    line: str
    parse: Callable[[str], list[Sample]]
    needs_root: bool


COMMANDS: dict[str, SanCommand] = {
    "multipath": SanCommand(MULTIPATH_COMMAND, parse_multipath, needs_root=True),
    "fc_host": SanCommand(FC_HOST_COMMAND, parse_fc_host, needs_root=False),
}
"""The only commands the ssh probe runs, by the name a check gives."""
