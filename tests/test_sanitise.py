"""The one sanitiser of device text, and /metrics staying parseable while a device is hostile.

The end-to-end test runs the daemon against snmpsim serving sysDescr, sysName, ifDescr,
ifName, ifAlias and a string table index full of CR, LF, ESC, BEL, NUL, DEL and long (3 KB,
10 KB) strings, then has both prometheus_client's text parser and `promtool check metrics`
read the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_binary
from tests.snmp_peers import Snmpsim, start_snmpsim
from tests.waiting import wait_for
from vigie.core.results import bound_text
from vigie.core.sanitise import LABEL_VALUE_CHARS, sanitise
from vigie.monitor.app import Daemon
from vigie.monitor.config import load_config
from vigie.probes import default_registry
from vigie.probes.http import make_session

HOSTILE = "\r\n\x1b[31m\x07\x00\x7f"
"""CR, LF, ESC (with an ANSI colour), BEL, NUL and DEL."""


@pytest.mark.parametrize("char", [chr(c) for c in [*range(0x20), 0x7F, 0x85, 0x9B]])
def test_every_control_character_becomes_a_space(char: str) -> None:
    """Each C0 control, DEL and C1 control (NEL, CSI) is replaced by a space."""
    assert sanitise(f"a{char}b") == "a b"


def test_printable_text_is_kept_as_is() -> None:
    """Printable text within the bound comes back unchanged, accents and quotes included."""
    text = 'Salle 1, baie "A" \\ rangée C — onduleur ⚡'
    assert sanitise(text) is text


def test_long_text_is_cut_to_the_bound_with_an_ellipsis() -> None:
    """A 10 KB string is cut to exactly the bound, the cut marked, controls replaced."""
    text = "\x1b" + "x" * 10_240
    out = sanitise(text)
    assert len(out) == LABEL_VALUE_CHARS
    assert out == " " + "x" * (LABEL_VALUE_CHARS - 2) + "…"
    assert sanitise("abcdef", 4) == "abc…"
    assert sanitise("abcd", 4) == "abcd"


def test_a_bound_below_one_is_refused() -> None:
    """A bound of 0 cannot hold the ellipsis: it is a programming error, said clearly."""
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        sanitise("abc", 0)


def test_bound_text_is_the_same_sanitiser() -> None:
    """Error texts go through the same function, with their own larger bound."""
    text = "error\r\n" + "y" * 1000
    assert bound_text(text) == sanitise(text, 512)


# --------------------------------------------------------------------------- end to end


def octets(text: str) -> str:
    """Return an snmprec OCTET STRING value as hex (snmpsim's `4x` type), any byte allowed."""
    return "4x|" + text.encode("utf-8").hex()


# Within gufo-snmp's 4 KiB datagram, yet far beyond the label bound.
SYS_DESCR = f"Evil UPS{HOSTILE}firmware " + "D" * 3_000
SYS_NAME = "\x1b]0;pwned\x07ups-evil\r"
SYS_LOCATION = 'quote " backslash \\ new\nline'
IF_DESCR_1 = "eth0\r\x1b[2J"
IF_NAME_1 = "".join(map(chr, range(1, 0x20))) + "\x7f"
IF_DESCR_2 = "\n" + "I" * 300
IF_ALIAS_1 = "uplink\x00to\x1b[5mcore\x07"
# A string index (implied): sub-ids 7 (BEL), 27 (ESC), 13 (CR), then "x".
INDEX = "7.27.13.120"
# The interface columns with snake_case labels: the shipped if-mib's ifIndex/ifName (as
# snmp_exporter names them) are camelCase, which `promtool check metrics` lints.
HOSTILE_PROFILE = """source: test
metrics:
  - name: evil_if_oper_status
    oid: 1.3.6.1.2.1.2.2.1.8
    type: gauge
    help: "ifOperStatus labelled by device text."
    indexes: [{label: if_index, type: integer}]
    lookups:
      - {label: if_descr, oid: 1.3.6.1.2.1.2.2.1.2}
      - {label: if_name, oid: 1.3.6.1.2.1.31.1.1.1.1}
      - {label: if_alias, oid: 1.3.6.1.2.1.31.1.1.1.18}
  - name: evil_index_value
    oid: 1.3.6.1.4.1.99999.1.1.2
    type: gauge
    help: "A value indexed by a device-chosen string."
    indexes: [{label: key, type: implied_string}]
"""
# 10 KB: more than gufo-snmp reads of one datagram. As sysDescr (required by the system
# profile) the poll fails saying so; as sysLocation the rest is read, the location left out.
HUGE_TEXT = f"Huge{HOSTILE}" + "H" * 10_240


def recording(rows: list[tuple[str, str]]) -> str:
    """Return an snmprec of (OID, type|value) rows."""
    return "".join(f"{oid}|{value}\n" for oid, value in rows)


def hostile_recording() -> str:
    """Return an snmprec of a device answering with hostile strings (sorted by OID)."""
    return recording(
        [
            ("1.3.6.1.2.1.1.1.0", octets(SYS_DESCR)),
            ("1.3.6.1.2.1.1.2.0", "6|1.3.6.1.4.1.99999"),
            ("1.3.6.1.2.1.1.3.0", "67|4242"),
            ("1.3.6.1.2.1.1.5.0", octets(SYS_NAME)),
            ("1.3.6.1.2.1.1.6.0", octets(SYS_LOCATION)),
            ("1.3.6.1.2.1.2.2.1.2.1", octets(IF_DESCR_1)),
            ("1.3.6.1.2.1.2.2.1.2.2", octets(IF_DESCR_2)),
            ("1.3.6.1.2.1.2.2.1.7.1", "2|1"),
            ("1.3.6.1.2.1.2.2.1.7.2", "2|1"),
            ("1.3.6.1.2.1.2.2.1.8.1", "2|1"),
            ("1.3.6.1.2.1.2.2.1.8.2", "2|2"),
            ("1.3.6.1.2.1.31.1.1.1.1.1", octets(IF_NAME_1)),
            ("1.3.6.1.2.1.31.1.1.1.1.2", octets("eth1")),
            ("1.3.6.1.2.1.31.1.1.1.18.1", octets(IF_ALIAS_1)),
            ("1.3.6.1.2.1.31.1.1.1.18.2", octets("")),
            (f"1.3.6.1.4.1.99999.1.1.2.{INDEX}", "2|5"),
        ]
    )


def huge_recording(descr: str, location: str) -> str:
    """Return an snmprec of a device's system group with this sysDescr and sysLocation."""
    return recording(
        [
            ("1.3.6.1.2.1.1.1.0", octets(descr)),
            ("1.3.6.1.2.1.1.2.0", "6|1.3.6.1.4.1.99999"),
            ("1.3.6.1.2.1.1.3.0", "67|4242"),
            ("1.3.6.1.2.1.1.5.0", octets("long-one")),
            ("1.3.6.1.2.1.1.6.0", octets(location)),
        ]
    )


@pytest.fixture
def hostile_agent(tmp_path: Path) -> Iterator[Snmpsim]:
    """snmpsim serving the hostile devices: communities `evil`, `huge` and `long`."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "evil.snmprec").write_text(hostile_recording())
    (data / "huge.snmprec").write_text(huge_recording(HUGE_TEXT, "here"))
    (data / "long.snmprec").write_text(huge_recording("a switch", HUGE_TEXT))
    sim = start_snmpsim(data, tmp_path)
    try:
        yield sim.wait_ready("evil")
    finally:
        sim.stop()


async def test_metrics_stay_parseable_while_a_device_sends_hostile_strings(
    hostile_agent: Snmpsim, tmp_path: Path
) -> None:
    """/metrics, with devices sending controls and long strings, is read by prometheus_client's
    parser and passes `promtool check metrics`; labels keep the text, cleaned and bounded.

    gufo-snmp reads 4 KiB of a datagram: a device with a 10 KB sysLocation is read without
    it (counted missing); one with a 10 KB sysDescr, which the system profile requires,
    fails with a reason saying so. The page stays valid.
    """
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "hostile.yaml").write_text(HOSTILE_PROFILE)
    config = tmp_path / "vigie.yaml"
    target = hostile_agent.target()
    config.write_text(
        "web: {listen: '127.0.0.1:0'}\n"
        "snmp:\n"
        "  auths:\n"
        "    evil: {version: 2, community: evil}\n"
        "    huge: {version: 2, community: huge}\n"
        "    long: {version: 2, community: long}\n"
        f"  profile_dirs: ['{profiles}']\n"
        "checks:\n"
        f"  - {{id: evil, kind: snmp, target: '{target}', interval: 5s, timeout: 3s,"
        " snmp: {auth: evil, profiles: [system, hostile]}}\n"
        f"  - {{id: huge, kind: snmp, target: '{target}', interval: 5s, timeout: 3s,"
        " snmp: {auth: huge, profiles: [system]}}\n"
        f"  - {{id: long, kind: snmp, target: '{target}', interval: 5s, timeout: 3s,"
        " snmp: {auth: long, profiles: [system]}}\n"
    )
    registry = default_registry()
    async with make_session() as session:
        daemon = Daemon(load_config(config, registry, env={}), registry, session)
        await daemon.start()
        try:
            await wait_for(
                lambda: all(daemon.store.latest(c) for c in ("evil", "huge", "long")),
                "the first poll of the three devices",
            )
            url = f"http://127.0.0.1:{daemon.listen_port}/metrics"
            async with aiohttp.ClientSession() as client, client.get(url) as resp:
                assert resp.status == 200
                page = await resp.text()
            evil, huge = daemon.store.latest("evil"), daemon.store.latest("huge")
            long = daemon.store.latest("long")
        finally:
            await daemon.stop()

    assert evil is not None and evil.success, evil and evil.error
    assert huge is not None and not huge.success
    assert huge.error == (
        f"{target} answered required 1.3.6.1.2.1.1.1.0 (snmp_system_info) with more than the "
        "4 KiB gufo-snmp reads of one datagram (a very long string)"
    )
    assert long is not None and long.success, long and long.error
    families = {f.name: f for f in text_string_to_metric_families(page)}
    infos = {s.labels["check"]: s.labels for s in families["snmp_system_info"].samples}
    assert infos["long"]["name"] == "long-one" and infos["long"]["location"] == ""
    missing = {s.labels["check"]: s.value for s in families["snmp_objects_missing"].samples}
    assert missing["long"] == 1.0
    info = next(s for s in families["snmp_system_info"].samples if s.labels["check"] == "evil")
    assert info.labels["descr"] == sanitise(SYS_DESCR)
    assert info.labels["descr"].startswith("Evil UPS   [31m   firmware DDD")
    assert len(info.labels["descr"]) == LABEL_VALUE_CHARS
    assert info.labels["name"] == " ]0;pwned ups-evil "
    assert info.labels["location"] == 'quote " backslash \\ new line'
    rows = {s.labels["if_index"]: s.labels for s in families["evil_if_oper_status"].samples}
    assert rows["1"]["if_descr"] == "eth0  [2J"
    assert rows["1"]["if_name"] == " " * 32
    assert rows["1"]["if_alias"] == "uplink to [5mcore "
    assert rows["2"]["if_descr"] == " " + "I" * (LABEL_VALUE_CHARS - 2) + "…"
    (indexed,) = families["evil_index_value"].samples
    assert indexed.labels["key"] == "   x" and indexed.value == 5.0
    success = {s.labels["check"]: s.value for s in families["probe_success"].samples}
    assert success == {"evil": 1.0, "huge": 0.0, "long": 1.0}
    for line in page.splitlines():
        assert line.isprintable(), f"raw control character in {line[:80]!r}"
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(page.encode()), 30)
    assert proc.returncode == 0, out + err
