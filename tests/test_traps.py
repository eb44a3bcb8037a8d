"""SNMP trap receiver: real net-snmp senders (snmptrap, snmpinform) on loopback, v1/v2c/v3,
wrong credentials and garbage counted not applied, and a daemon whose UPS goes on battery."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, SecretStr
from structlog.testing import capture_logs

from tests.conftest import free_port, require_binary
from tests.snmp_peers import (
    UPS_ON_BATTERY,
    UPS_ONLINE,
    free_udp_port,
    ipv6_loopback,
    running_snmpd,
    snmp_check,
)
from tests.waiting import wait_for
from vigie.core.results import ProbeResult, Sample
from vigie.core.yamlpos import ConfigErrors
from vigie.monitor.app import Daemon
from vigie.monitor.config import TrapSettings, load_config
from vigie.monitor.store import ResultStore
from vigie.monitor.traps import SourceBuckets, TrapMetrics, TrapReceiver, merge_trap
from vigie.probes import ProbeRegistry
from vigie.probes.base import Check
from vigie.probes.http import make_session
from vigie.probes.snmp import SnmpAuth, SnmpProbe, SnmpSection
from vigie.probes.snmp.ber import ber_int, ber_seq, ber_tlv
from vigie.probes.snmp.profiles import TrapDef
from vigie.probes.traps import TrapDecoder, TrapNotification, TrapOptions, TrapRefusal

SNMPTRAP = "/usr/bin/snmptrap"
SNMPINFORM = "/usr/bin/snmpinform"
ON_BATTERY = "1.3.6.1.2.1.33.2.0.1"  # upsTrapOnBattery
ALARM_REMOVED = "1.3.6.1.2.1.33.2.0.4"  # upsTrapAlarmEntryRemoved: re-poll only
SENDER_ENGINE_ID = "8000000001020304aa"
COMMUNITY = "trap-comm"
USER = "trapuser"
AUTH_PW = "trap-auth-pw"
PRIV_PW = "trap-priv-pw"

AUTHS = {
    "traps_v2": SnmpAuth(version=2, community=SecretStr(COMMUNITY)),
    "traps_v3": SnmpAuth(
        version=3,
        username=USER,
        auth_protocol="SHA",
        auth_password=SecretStr(AUTH_PW),
        priv_protocol="AES",
        priv_password=SecretStr(PRIV_PW),
    ),
}
SECTION = SnmpSection(auths=AUTHS)
"""The `snmp:` block the receiver takes its credentials from."""
V3_ARGS = [
    *("-v3", "-u", USER, "-l", "authPriv"),
    *("-a", "SHA", "-A", AUTH_PW, "-x", "AES", "-X", PRIV_PW),
]


def snmp_decoder() -> TrapDecoder:
    """A new SNMP trap decoder, as the daemon gets it from the snmp probe."""
    return SnmpProbe().trap_decoder()


async def send(*args: str, binary: str = SNMPTRAP) -> tuple[int, str]:
    """Run a net-snmp sender (no MIBs: Debian ships none, OIDs are numeric); return rc, output."""
    require_binary(binary, "snmp")
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        env={**os.environ, "MIBS": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@dataclass
class Harness:
    """A receiver on a free port with a result store and a recording re-poll trigger."""

    receiver: TrapReceiver
    store: ResultStore
    registry: CollectorRegistry
    triggered: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The receiver as a net-snmp destination."""
        return f"127.0.0.1:{self.receiver.port}"

    def count(self, result: str) -> float:
        """Return vigie_snmp_traps_received_total for one result."""
        value = self.registry.get_sample_value(
            "vigie_snmp_traps_received_total", {"result": result}
        )
        return value or 0.0

    def on_battery(self, check_id: str) -> float | None:
        """Return the ups_on_battery value of a check's latest result, if any."""
        result = self.store.latest(check_id)
        found = [s.value for s in result.samples if s.name == "ups_on_battery"] if result else []
        return found[0] if found else None


def ups_plan(*targets: tuple[str, str]) -> dict[str, Check]:
    """Return a plan of ups-mib checks (id, target) using the trap v2c auth."""
    return {
        cid: snmp_check(
            target,
            auths={"traps_v2": {"version": 2, "community": COMMUNITY}},
            auth="traps_v2",
            profiles=("system", "ups-mib"),
            check_id=cid,
        )
        for cid, target in targets
    }


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    """A started receiver knowing a UPS at 127.0.0.1 and another at 127.0.0.2."""
    store = ResultStore()
    registry = CollectorRegistry()
    triggered: list[str] = []

    def trigger(check_id: str) -> bool:
        triggered.append(check_id)
        return True

    settings = TrapSettings(
        listen="127.0.0.1:0",
        auths=["traps_v2", "traps_v3"],
        engine_ids=[SENDER_ENGINE_ID],
        log_interval=60,
    )
    receiver = TrapReceiver(settings, store, trigger, TrapMetrics(registry), decoder=snmp_decoder())
    await receiver.start(ups_plan(("ups-a", "127.0.0.1:1161"), ("ups-b", "127.0.0.2:161")), SECTION)
    try:
        yield Harness(receiver, store, registry, triggered)
    finally:
        await receiver.stop()


async def test_v2c_trap_sets_metric_and_asks_a_repoll(harness: Harness) -> None:
    """A v2c upsTrapOnBattery from the UPS's address sets ups_on_battery 1 and re-polls it."""
    rc, out = await send("-v2c", "-c", COMMUNITY, harness.address, "", ON_BATTERY)
    assert rc == 0, out
    await wait_for(lambda: harness.count("matched") == 1, "a matched trap")
    assert harness.on_battery("ups-a") == 1.0
    assert harness.triggered == ["ups-a"]
    assert harness.on_battery("ups-b") is None


async def test_v3_authpriv_trap_with_the_senders_engine_id(harness: Harness) -> None:
    """A v3 authPriv (SHA/AES) trap from a configured sender engine ID is applied."""
    args = ["-e", SENDER_ENGINE_ID, *V3_ARGS, harness.address, "", ON_BATTERY]
    rc, out = await send(*args)
    assert rc == 0, out
    await wait_for(lambda: harness.count("matched") == 1, "a matched v3 trap")
    assert harness.on_battery("ups-a") == 1.0


@pytest.mark.parametrize(
    ("engine_id", "password"),
    [(SENDER_ENGINE_ID, "not-the-password"), ("8000000001020304bb", AUTH_PW)],
    ids=["wrong-password", "unknown-engine-id"],
)
async def test_v3_trap_with_wrong_credentials_is_refused(
    harness: Harness, engine_id: str, password: str
) -> None:
    """A v3 trap with a wrong password or an unlisted engine ID is counted and logged, not applied.

    The log names the sender's engine ID and user; for an unlisted engine ID it says to add it.
    """
    args = ["-e", engine_id, *V3_ARGS, harness.address, "", ON_BATTERY]
    args[args.index(AUTH_PW)] = password
    with capture_logs() as logs:
        rc, out = await send(*args)
        assert rc == 0, out
        await wait_for(lambda: harness.count("auth_failed") == 1, "an auth failure")
    assert harness.on_battery("ups-a") is None and harness.triggered == []
    (event,) = [e for e in logs if e["event"] == "trap_auth_failed"]
    assert event["engine_id"] == engine_id.lower().removeprefix("0x")
    assert event["user"] == V3_ARGS[V3_ARGS.index("-u") + 1]
    listed = engine_id == SENDER_ENGINE_ID
    assert ("hint" in event) is not listed, event
    assert password not in str(event)


async def test_v1_trap_is_matched_by_its_agent_addr(harness: Harness) -> None:
    """A v1 trap sent from 127.0.0.1 naming agent-addr 127.0.0.2 applies to the UPS at .2."""
    # enterprise upsTraps 1.3.6.1.2.1.33.2, enterpriseSpecific (6) 1 -> 1.3.6.1.2.1.33.2.0.1
    args = ["-v1", "-c", COMMUNITY, harness.address, "1.3.6.1.2.1.33.2", "127.0.0.2", "6", "1", ""]
    rc, out = await send(*args)
    assert rc == 0, out
    await wait_for(lambda: harness.count("matched") == 1, "a matched v1 trap")
    assert harness.on_battery("ups-b") == 1.0
    assert harness.on_battery("ups-a") is None
    assert harness.triggered == ["ups-b"]


@pytest.mark.parametrize("version", ["v2c", "v3"])
async def test_inform_is_acknowledged(harness: Harness, version: str) -> None:
    """snmpinform gets its acknowledgement (exit 0) and the notification is applied."""
    auth = ["-v2c", "-c", COMMUNITY] if version == "v2c" else V3_ARGS
    args = ["-t", "2", "-r", "0", *auth, harness.address, "", ON_BATTERY]
    rc, out = await send(*args, binary=SNMPINFORM)
    assert rc == 0, f"INFORM not acknowledged: {out}"
    await wait_for(lambda: harness.count("matched") == 1, "the INFORM applied")  # thread hop
    assert harness.on_battery("ups-a") == 1.0


async def test_wrong_community_is_counted_not_applied(harness: Harness) -> None:
    """A trap with an unknown community is counted as auth_failed and sets nothing."""
    rc, out = await send("-v2c", "-c", "guessed", harness.address, "", ON_BATTERY)
    assert rc == 0, out
    await wait_for(lambda: harness.count("auth_failed") == 1, "an auth failure")
    assert harness.count("matched") == 0
    assert harness.on_battery("ups-a") is None and harness.triggered == []


async def test_unmatched_traps_are_counted_and_logged_once_per_source(harness: Harness) -> None:
    """Traps of an OID no profile knows count as unmatched; the log is rate-limited."""
    with capture_logs() as logs:
        for _ in range(3):
            rc, out = await send("-v2c", "-c", COMMUNITY, harness.address, "", "1.3.6.1.4.1.9.9.9")
            assert rc == 0, out
        await wait_for(lambda: harness.count("unmatched") == 3, "three unmatched traps")
    unmatched = [e for e in logs if e["event"] == "trap_unmatched"]
    assert len(unmatched) == 1, logs
    assert unmatched[0]["source"] == "127.0.0.1"
    assert unmatched[0]["reason"] == "unknown trap for this device"
    assert harness.triggered == []


async def test_garbage_datagrams_are_dropped_and_the_receiver_still_works(
    harness: Harness,
) -> None:
    """Random and truncated datagrams are counted as malformed; a real trap then still applies."""
    rng = random.Random(1628)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))) for _ in range(50)]
    payloads += [b"\x30", b"\x30\x82\xff\xff", b"\x30\x03\x02\x01\x07", b"\x00" * 2000]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for payload in payloads:
            sock.sendto(payload, ("127.0.0.1", harness.receiver.port or 0))
    await wait_for(lambda: harness.count("malformed") >= 40, "garbage counted as malformed")
    rc, out = await send("-v2c", "-c", COMMUNITY, harness.address, "", ON_BATTERY)
    assert rc == 0, out
    await wait_for(lambda: harness.count("matched") == 1, "a trap after the garbage")
    assert harness.on_battery("ups-a") == 1.0


async def test_reload_rematches_checks(harness: Harness) -> None:
    """After an update without the UPS, its traps are unmatched; credentials are re-registered."""
    await harness.receiver.update(ups_plan(("ups-b", "127.0.0.2:161")), SECTION)
    rc, out = await send("-v2c", "-c", COMMUNITY, harness.address, "", ON_BATTERY)
    assert rc == 0, out
    await wait_for(lambda: harness.count("unmatched") == 1, "an unmatched trap")
    assert harness.triggered == []
    rc, out = await send("-v2c", "-c", COMMUNITY, harness.address, "", ON_BATTERY)
    assert rc == 0, out
    await wait_for(lambda: harness.count("unmatched") == 2, "a second unmatched trap")
    assert harness.count("auth_failed") == 0


def test_merge_keeps_the_last_poll_and_overrides_the_trapped_family() -> None:
    """A trap's `set:` replaces its family's values and keeps the other samples of the poll."""
    last = ProbeResult(
        success=True,
        samples=(
            Sample("ups_on_battery", 0.0, (), "gauge", "on battery"),
            Sample("ups_battery_runtime_seconds", 2040.0, (), "gauge", "runtime"),
        ),
        error=None,
    )
    trap = TrapDef(oid=ON_BATTERY, name="upsTrapOnBattery", set={"ups_on_battery": 1})
    merged = merge_trap(last, trap, {}, "10.0.0.1", 123.0)
    assert {s.name: s.value for s in merged.samples} == {
        "ups_on_battery": 1.0,
        "ups_battery_runtime_seconds": 2040.0,
    }
    assert merged.timestamp == 123.0 and merged.success
    fresh = merge_trap(None, trap, {"ups_on_battery": "help"}, "10.0.0.1", 1.0)
    assert fresh.samples == (Sample("ups_on_battery", 1.0, (), "gauge", "help"),)


def test_traps_config_errors_name_file_and_line(tmp_path: Path) -> None:
    """A bad engine ID and an unknown auth name are reported with file:line."""
    config = tmp_path / "vigie.yaml"
    config.write_text("traps:\n  listen: 127.0.0.1:0\n  auths: [nope]\n  engine_ids: ['0x12zz']\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(config, ProbeRegistry([SnmpProbe()]), env={})
    text = str(info.value)
    assert f"{config}:4:" in text and "engine ID must be 5 to 32 octets in hex" in text
    config.write_text("traps:\n  listen: 127.0.0.1:0\n  auths: [nope]\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(config, ProbeRegistry([SnmpProbe()]), env={})
    assert f"{config}:3:" in str(info.value) and "unknown auth 'nope'" in str(info.value)


async def scrape(session: aiohttp.ClientSession, port: int) -> str:
    """Return the daemon's /metrics page."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        return await resp.text()


def metric_line(page: str, prefix: str) -> str | None:
    """Return the first exposition line starting with prefix."""
    return next((line for line in page.splitlines() if line.startswith(prefix)), None)


async def test_daemon_shows_a_ups_on_battery_within_a_second_then_repolls(
    tmp_path: Path,
) -> None:
    """End to end: snmpd's UPS goes on battery, snmptrap tells Vigie, /metrics shows it <1 s,
    and the re-poll the trap asked for confirms it from the agent."""
    with running_snmpd(tmp_path / "agent") as agent:
        config = tmp_path / "vigie.yaml"
        config.write_text(
            "web: {listen: '127.0.0.1:0'}\n"
            "snmp:\n"
            f"  auths: {{ups: {{version: 2, community: {agent.community}}}}}\n"
            "traps: {listen: '127.0.0.1:0', auths: [ups]}\n"
            "checks:\n"
            f"  - {{id: ups-nord, kind: snmp, target: '{agent.target()}', interval: 5m,"
            " timeout: 5s, snmp: {auth: ups, profiles: [ups-mib]}}\n"
        )
        registry = ProbeRegistry([SnmpProbe()])
        async with make_session() as session:
            daemon = Daemon(load_config(config, registry, env={}), registry, session)
            await daemon.start()
            try:
                assert daemon.traps is not None and daemon.listen_port is not None
                port = daemon.listen_port
                daemon.scheduler.trigger("ups-nord")  # first poll now, not at its offset
                page = ""

                async def polled() -> bool:
                    nonlocal page
                    page = await scrape(session, port)
                    return metric_line(page, "ups_on_battery{") is not None

                await wait_for(polled, "the first poll")
                assert (metric_line(page, "ups_on_battery{") or "").endswith(" 0")
                agent.set_ups(UPS_ON_BATTERY)
                sent = time.monotonic()
                rc, out = await send(
                    "-v2c", "-c", agent.community, f"127.0.0.1:{daemon.traps.port}", "", ON_BATTERY
                )
                assert rc == 0, out

                async def on_battery() -> bool:
                    nonlocal page
                    page = await scrape(session, port)
                    return (metric_line(page, "ups_on_battery{") or "").endswith(" 1")

                left = 1.0 - (time.monotonic() - sent)  # 1 s from the send, snmptrap included
                await wait_for(on_battery, "the trap in /metrics within 1 s", left, every=0.01)

                # Only a poll can set upsOutputSource: the re-poll the trap asked for.
                async def confirmed() -> bool:
                    nonlocal page
                    page = await scrape(session, port)
                    return any(
                        ln.startswith('ups_output_source{check="ups-nord"')
                        and 'state="battery"' in ln
                        and ln.endswith(" 1")
                        for ln in page.splitlines()
                    )

                await wait_for(confirmed, "a re-poll confirming the battery", 5.0)
                assert (metric_line(page, "ups_on_battery{") or "").endswith(" 1")
                assert metric_line(page, "vigie_snmp_trap_repolls_total") == (
                    "vigie_snmp_trap_repolls_total 1.0"
                )
            finally:
                await daemon.stop()


async def test_daemon_start_fails_clearly_when_the_trap_port_is_taken(tmp_path: Path) -> None:
    """A trap port already in use fails the start with OSError and a traps_listen_failed log."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = tmp_path / "vigie.yaml"
        config.write_text(
            f"web: {{listen: '127.0.0.1:0'}}\ntraps: {{listen: '127.0.0.1:{port}'}}\n"
        )
        registry = ProbeRegistry([SnmpProbe()])
        async with make_session() as session:
            daemon = Daemon(load_config(config, registry, env={}), registry, session)
            with capture_logs() as logs, pytest.raises(OSError):
                await daemon.start()
            await daemon.stop()
    failed = [e for e in logs if e["event"] == "traps_listen_failed"]
    assert failed and failed[0]["listen"] == f"127.0.0.1:{port}"


async def test_ipv6_listener_and_host_name_targets() -> None:
    """A receiver on [::1] takes a trap from ::1 for a check at [::1]; a `localhost` target
    is resolved when the plan is matched, so its traps from 127.0.0.1 apply too."""
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    store = ResultStore()
    registry = CollectorRegistry()
    triggered: list[str] = []

    def trigger(check_id: str) -> bool:
        triggered.append(check_id)
        return True

    settings = TrapSettings(listen="[::1]:0", auths=["traps_v2"])
    receiver = TrapReceiver(settings, store, trigger, TrapMetrics(registry), decoder=snmp_decoder())
    await receiver.start(ups_plan(("ups-v6", "[::1]:161")), SECTION)
    try:
        rc, out = await send("-v2c", "-c", COMMUNITY, f"udp6:[::1]:{receiver.port}", "", ON_BATTERY)
        assert rc == 0, out
        await wait_for(lambda: triggered == ["ups-v6"], "the IPv6 trap applied")
    finally:
        await receiver.stop()
    settings = TrapSettings(listen="127.0.0.1:0", auths=["traps_v2"])
    receiver = TrapReceiver(
        settings, store, trigger, TrapMetrics(CollectorRegistry()), decoder=snmp_decoder()
    )
    await receiver.start(ups_plan(("ups-name", "localhost:161")), SECTION)
    try:
        rc, out = await send("-v2c", "-c", COMMUNITY, f"127.0.0.1:{receiver.port}", "", ON_BATTERY)
        assert rc == 0, out
        await wait_for(lambda: triggered[-1:] == ["ups-name"], "the trap for localhost applied")
    finally:
        await receiver.stop()


# --------------------------------------------------------------------------- screening


async def capture(*args: str, binary: str = SNMPTRAP) -> bytes:
    """Return the datagram a net-snmp sender puts on the wire (sent to a plain UDP socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        port = sink.getsockname()[1]
        target = f"127.0.0.1:{port}"
        argv = [a.replace("{target}", target) for a in args]
        rc, out = await send(*argv, binary=binary)  # a trap is one datagram: it is there now
        assert rc == 0, out
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sink, 65535), 10)
    return data


def test_buckets_limit_each_source_and_stay_bounded() -> None:
    """A source gets `burst` datagrams, then `rate` a second; sources beyond the bound share
    one overflow bucket, and only a refilled (idle) bucket is forgotten for a new source."""
    now = [0.0]
    buckets = SourceBuckets(rate=2.0, burst=3, max_sources=2, clock=lambda: now[0])
    assert [buckets.allow("a") for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back for a
    assert [buckets.allow("a") for _ in range(2)] == [True, False]
    assert all(buckets.allow("b") for _ in range(3))
    # Table full (a, b), neither refilled: c and d share the overflow bucket.
    assert [buckets.allow(x) for x in "cdcd"] == [True, True, True, False]
    assert len(buckets) == 2
    now[0] = 10.0  # a (least recently seen) has refilled: c takes its place, with a full bucket
    assert all(buckets.allow("c") for _ in range(3)) and len(buckets) == 2
    assert buckets.allow("a")  # a is new again: b was idle too and makes room


async def raw_send(port: int, payloads: list[bytes], source: str = "127.0.0.1") -> None:
    """Send datagrams from a source address of the loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for payload in payloads:
            sock.sendto(payload, ("127.0.0.1", port))


def v2c_trap(community: bytes, body: bytes = b"", pdu: int = 0xA7) -> bytes:
    """Return an SNMPv2c message with this community and PDU body (raw, maybe not BER)."""
    return ber_seq(ber_int(1), ber_tlv(0x04, community), ber_tlv(pdu, body))


def dropped(harness: Harness, reason: str) -> float:
    """Return vigie_snmp_traps_dropped_total for one reason."""
    value = harness.registry.get_sample_value("vigie_snmp_traps_dropped_total", {"reason": reason})
    return value or 0.0


async def test_oversize_datagrams_are_dropped_unread(harness: Harness) -> None:
    """A datagram over max_datagram_bytes (8 KiB) is dropped as oversize, logged once with its
    size; one of exactly 8 KiB is read (here refused for its community, which proves it)."""
    big = v2c_trap(COMMUNITY.encode(), b"\x00" * 9000)
    edge = v2c_trap(b"guessed", b"")
    edge = v2c_trap(b"guessed", b"\x00" * (8192 - len(edge) - 4))  # two lengths grow by 2
    assert len(edge) == 8192, len(edge)
    with capture_logs() as logs:
        await raw_send(harness.receiver.port or 0, [big, big, edge])
        await wait_for(lambda: dropped(harness, "community") == 1, "the 8 KiB datagram read")
        await wait_for(lambda: dropped(harness, "oversize") == 2, "two oversize drops")
    events = [e for e in logs if e["event"] == "trap_dropped"]
    assert [(e["reason"], e["size"]) for e in events] == [("oversize", len(big))]
    assert harness.count("matched") + harness.count("malformed") == 0


async def test_community_is_checked_before_the_varbinds_are_decoded(harness: Harness) -> None:
    """A wrong community is refused on the header alone: its PDU, not even BER, is never
    decoded (counted community, not malformed); with the right community the same PDU is."""
    garbage = bytes(range(256)) * 20
    await raw_send(harness.receiver.port or 0, [v2c_trap(b"guessed", garbage)])
    await wait_for(lambda: dropped(harness, "community") == 1, "the community refusal")
    assert dropped(harness, "malformed") == 0 and harness.count("auth_failed") == 1
    await raw_send(harness.receiver.port or 0, [v2c_trap(COMMUNITY.encode(), garbage)])
    await wait_for(lambda: dropped(harness, "malformed") == 1, "pysnmp refusing the PDU")
    await raw_send(harness.receiver.port or 0, [v2c_trap(COMMUNITY.encode(), b"", pdu=0xA0)])
    await wait_for(lambda: dropped(harness, "malformed") == 2, "a GetRequest refused")


async def test_unknown_v3_user_is_refused_on_the_header(harness: Harness) -> None:
    """An SNMPv3 trap from an unknown user is dropped as user, logged with engine ID and user."""
    args = ["-e", SENDER_ENGINE_ID, *V3_ARGS, harness.address, "", ON_BATTERY]
    args[args.index(USER)] = "mallory"
    with capture_logs() as logs:
        rc, out = await send(*args)
        assert rc == 0, out
        await wait_for(lambda: dropped(harness, "user") == 1, "the unknown user refused")
    (event,) = [e for e in logs if e["event"] == "trap_auth_failed"]
    assert (event["reason"], event["user"], event["engine_id"]) == (
        "user",
        "mallory",
        SENDER_ENGINE_ID,
    )
    assert harness.count("auth_failed") == 1 and harness.triggered == []


async def test_rate_limit_is_per_source() -> None:
    """Past its burst, a source's datagrams (empty ones too) are dropped as rate (its bucket
    does not refill on this frozen clock), while another source's trap is still applied."""
    store, registry, triggered = ResultStore(), CollectorRegistry(), []

    def trigger(check_id: str) -> bool:
        triggered.append(check_id)
        return True

    settings = TrapSettings(
        listen="127.0.0.1:0", auths=["traps_v2"], source_rate=1.0, source_burst=5
    )
    receiver = TrapReceiver(
        settings,
        store,
        trigger,
        TrapMetrics(registry),
        decoder=snmp_decoder(),
        clock=lambda: 0.0,
    )
    await receiver.start(ups_plan(("ups-a", "127.0.0.1:161"), ("ups-b", "127.0.0.2:161")), SECTION)
    harness = Harness(receiver, store, registry, triggered)
    try:
        junk = [v2c_trap(b"guessed")] * 3 + [b""] * 2 + [v2c_trap(b"guessed")] * 7
        await raw_send(receiver.port or 0, junk, source="127.0.0.2")
        await wait_for(lambda: dropped(harness, "rate") == 7, "seven datagrams over the rate")
        assert dropped(harness, "community") == 3 and dropped(harness, "malformed") == 2
        rc, out = await send("-v2c", "-c", COMMUNITY, harness.address, "", ON_BATTERY)
        assert rc == 0, out
        await wait_for(lambda: triggered == ["ups-a"], "the other source's trap applied")
        assert dropped(harness, "rate") == 7
    finally:
        await receiver.stop()


# --------------------------------------------------------------------------- flood

FLOOD_SCRIPT = r'''
"""Flood a trap port from one loopback address with large junk; print how many were sent.

argv: port, source address, count, datagrams per tick, tick (s; 0: as fast as possible),
and optionally a community. Without it, three payloads in turn: a 49 KB v2c trap with a
guessed community (the issue's), an 8 KB one with many varbinds, and 8 KB of random bytes.
With it, only 8 KB traps of many varbinds with that community: costly to decode.
"""
import random, signal, socket, sys, time

def tlv(tag, body):
    n = len(body)
    head = bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([tag]) + head + body

def trap(size, community=b"guessed"):
    vb = tlv(0x30, tlv(0x06, b"\x2b\x06\x01\x04\x01\x09\x09") + tlv(0x04, b"x" * 30))
    vbs = tlv(0x30, vb * (size // len(vb)))
    pdu = tlv(0xA7, tlv(0x02, b"\x01") + tlv(0x02, b"\x00") + tlv(0x02, b"\x00") + vbs)
    return tlv(0x30, tlv(0x02, b"\x01") + tlv(0x04, community) + pdu)

port, source, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
per_tick, tick = int(sys.argv[4]), float(sys.argv[5])
rng = random.Random(1628)
payloads = [trap(49000), trap(8000), rng.randbytes(8000)]
if len(sys.argv) > 6:
    payloads = [trap(8000, sys.argv[6].encode())]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((source, 0))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sent, due = 0, time.monotonic()
try:
    while sent < count:
        for _ in range(per_tick):
            try:
                sock.sendto(payloads[sent % len(payloads)], ("127.0.0.1", port))
                sent += 1
            except OSError:  # ENOBUFS: the flood is its own limit
                pass
        if tick:
            due += tick
            time.sleep(max(0.0, due - time.monotonic()))
finally:
    print(sent, flush=True)
'''
"""A junk flooder, run as its own process so it shares neither the GIL nor the loop."""


@dataclass
class Flood:
    """A flooder process and what it is sending."""

    proc: asyncio.subprocess.Process
    count: int

    async def stop(self) -> int:
        """Stop the flood (if still running) and return how many datagrams it sent."""
        if self.proc.returncode is None:
            self.proc.terminate()
        out, _ = await self.proc.communicate()
        return int(out)


async def start_flood(
    port: int, count: int, per_tick: int, tick: float, community: str | None = None
) -> Flood:
    """Start flooding 127.0.0.1:port from 127.0.0.2 (with community: costly valid traps)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOD_SCRIPT,
        *(str(port), "127.0.0.2", str(count), str(per_tick), str(tick)),
        *([community] if community is not None else []),
        stdout=asyncio.subprocess.PIPE,
    )
    return Flood(proc, count)


def sample_value(page: str, name: str, labels: str = "") -> float:
    """Return a sample's value from an exposition page, 0 when absent."""
    line = metric_line(page, f"{name}{{{labels}}} " if labels else f"{name} ")
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


HEALTHY_SCRIPT = r'''
"""Time GET /-/healthy (keep-alive) every 20 ms until stdin closes and at least argv[2]
(default 0) are timed; print the times (s)."""
import http.client, sys, threading, time

port = int(sys.argv[1])
minimum = int(sys.argv[2]) if len(sys.argv) > 2 else 0
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
times = []
while len(times) < 10_000:
    time.sleep(0.02)
    if done.is_set() and len(times) >= minimum:
        break
    start = time.perf_counter()
    conn.request("GET", "/-/healthy")
    response = conn.getresponse()
    response.read()
    times.append(time.perf_counter() - start)
    if response.status != 200:
        sys.exit(f"/-/healthy answered {response.status}")
print(" ".join(f"{t:.6f}" for t in times), flush=True)
'''
"""A /-/healthy timer, run as its own process so nothing of the test's shares its clock."""

RATE = 'reason="rate"'


@asynccontextmanager
async def vigie_run(config: Path, log_file: Path) -> AsyncIterator[None]:
    """Run the real daemon (`vigie run`) for the block."""
    with log_file.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "vigie.monitor.cli", "run", "--config", str(config)),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_junk_flood_neither_stalls_the_web_nor_loses_a_trap(tmp_path: Path) -> None:
    """Flooded from 127.0.0.2 with 49 KB and 8 KB junk (2,000 datagrams/s), `vigie run`
    answers every /-/healthy (100 or more, timed by a process of its own) in under 50 ms,
    and each of 10 snmptrap traps from 127.0.0.1 is counted and re-polls its UPS (snmpd):
    the UPS's state changes between traps and its check's interval is 5 min, so only a
    re-poll can show it."""
    web_port, trap_port = free_port(), free_udp_port()
    metrics_url = f"http://127.0.0.1:{web_port}/metrics"
    with running_snmpd(tmp_path / "agent") as agent:
        config = tmp_path / "vigie.yaml"
        config.write_text(
            f"web: {{listen: '127.0.0.1:{web_port}'}}\n"
            "snmp:\n"
            f"  auths: {{ups: {{version: 2, community: {agent.community}}}}}\n"
            f"traps: {{listen: '127.0.0.1:{trap_port}', auths: [ups]}}\n"
            "checks:\n"
            f"  - {{id: ups-nord, kind: snmp, target: '{agent.target()}', interval: 5m,"
            " timeout: 5s, snmp: {auth: ups, profiles: [ups-mib]}}\n"
        )
        async with (
            vigie_run(config, tmp_path / "vigie.log"),
            aiohttp.ClientSession() as session,
        ):

            async def page() -> str:
                try:
                    async with session.get(metrics_url) as resp:
                        return await resp.text()
                except aiohttp.ClientError:
                    return ""

            def source(state: str) -> Callable[[], Awaitable[bool]]:
                async def shown() -> bool:
                    return any(
                        line.startswith("ups_output_source{")
                        and f'state="{state}"' in line
                        and line.endswith(" 1")
                        for line in (await page()).splitlines()
                    )

                return shown

            async def trap(oid: str) -> None:
                rc, out = await send(
                    "-v2c", "-c", agent.community, f"127.0.0.1:{trap_port}", "", oid
                )
                assert rc == 0, out

            async def flooding() -> bool:
                return sample_value(await page(), "vigie_snmp_traps_dropped_total", RATE) > 100

            await wait_for(page, "the daemon serving /metrics")
            await trap(ALARM_REMOVED)  # the first poll now, not at the check's offset
            await wait_for(source("normal"), "the first poll")
            timer = await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", HEALTHY_SCRIPT, str(web_port), "100"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            flood = await start_flood(trap_port, count=120_000, per_tick=20, tick=0.01)
            try:
                await wait_for(flooding, "the flood reaching the receiver", every=0.05)
                for i in range(5):
                    agent.set_ups(UPS_ON_BATTERY)
                    await trap(ON_BATTERY)
                    await wait_for(source("battery"), f"re-poll after trap {2 * i + 1}", every=0.05)
                    agent.set_ups(UPS_ONLINE)
                    await trap(ALARM_REMOVED)
                    await wait_for(source("normal"), f"re-poll after trap {2 * i + 2}", every=0.05)
            finally:
                out, _ = await asyncio.wait_for(timer.communicate(b""), 60)
                flooded = flood.proc.returncode is None
                await flood.stop()
            assert flooded, "the flood ended before the traps and the timing"
            final = await page()
    assert timer.returncode == 0, out
    healthy = [float(t) for t in out.split()]
    received = "vigie_snmp_traps_received_total"
    assert sample_value(final, received, 'result="matched"') == 11  # with the first one
    assert sample_value(final, "vigie_snmp_trap_repolls_total") == 11
    drops = {
        r: sample_value(final, "vigie_snmp_traps_dropped_total", f'reason="{r}"')
        for r in ("oversize", "rate", "community", "malformed")
    }
    assert all(drops.values()), drops
    assert len(healthy) >= 100, f"only {len(healthy)} /-/healthy timed"
    worst = max(healthy)
    assert worst < 0.05, (
        f"/-/healthy worst {worst * 1000:.0f} ms over {len(healthy)} requests; drops {drops}"
    )


async def test_reload_applies_new_limits(harness: Harness) -> None:
    """A reload with a smaller max_datagram_bytes and a new rate applies at once."""
    settings = harness.receiver.settings.model_copy(
        update={"max_datagram_bytes": 1000, "source_burst": 1, "source_rate": 0.001}
    )
    await harness.receiver.update(ups_plan(("ups-a", "127.0.0.1:1161")), SECTION, settings)
    await raw_send(harness.receiver.port or 0, [v2c_trap(b"guessed", b"\x00" * 1500)])
    await wait_for(lambda: dropped(harness, "oversize") == 1, "the 1.5 KB datagram refused")
    await raw_send(harness.receiver.port or 0, [v2c_trap(b"guessed")] * 3)
    await wait_for(lambda: dropped(harness, "rate") == 2, "the new burst of 1 applied")
    assert dropped(harness, "community") == 1


async def test_every_mutated_datagram_is_accounted_for() -> None:
    """600 mutations of real v1/v2c/v3 traps with valid credentials, through the socket: each
    one is counted exactly once (a drop by reason, or received), and a real trap still
    applies after them."""
    seeds = [
        await capture("-v1", "-c", COMMUNITY, "{target}", "1.3.6.1.2.1.33.2", "", "6", "1", ""),
        await capture("-v2c", "-c", COMMUNITY, "{target}", "", ON_BATTERY),
        await capture("-e", SENDER_ENGINE_ID, *V3_ARGS, "{target}", "", ON_BATTERY),
    ]
    rng = random.Random(1157)
    payloads = []
    for _ in range(600):
        data = bytearray(rng.choice(seeds))
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        payloads.append(bytes(data[: rng.randrange(len(data) // 2, len(data) + 1)]))
    store, registry, triggered = ResultStore(), CollectorRegistry(), []

    def trigger(check_id: str) -> bool:
        triggered.append(check_id)
        return True

    settings = TrapSettings(
        listen="127.0.0.1:0",
        auths=["traps_v2", "traps_v3"],
        engine_ids=[SENDER_ENGINE_ID],
        source_burst=10_000,
    )
    receiver = TrapReceiver(settings, store, trigger, TrapMetrics(registry), decoder=snmp_decoder())
    await receiver.start(ups_plan(("ups-a", "127.0.0.1:1161")), SECTION)
    harness = Harness(receiver, store, registry, triggered)

    def accounted() -> float:
        drops = sum(dropped(harness, r) for r in ("oversize", "rate", "backlog"))
        return drops + sum(
            harness.count(r) for r in ("matched", "unmatched", "malformed", "auth_failed")
        )

    def at_least(count: int) -> bool:
        return accounted() >= count

    try:
        for start in range(0, len(payloads), 50):  # in steps: the socket buffer is finite
            await raw_send(receiver.port or 0, payloads[start : start + 50])
            await wait_for(functools.partial(at_least, start + 50), f"datagrams up to {start + 49}")
        before = harness.count("matched")
        rc, out = await send("-v2c", "-c", COMMUNITY, harness.address, "", ON_BATTERY)
        assert rc == 0, out
        await wait_for(lambda: harness.count("matched") == before + 1, "a real trap applied")
        assert accounted() == len(payloads) + 1
    finally:
        await receiver.stop()


# --------------------------------------------------------------------------- any protocol


class WordsDecoder:
    """A protocol of its own, `N KEY` datagrams: the receiver needs nothing of SNMP."""

    def screen(self, data: memoryview) -> TrapRefusal | None:
        """Refuse what does not start with `N `."""
        return None if bytes(data[:2]) == b"N " else TrapRefusal("malformed", {"error": "no N"})

    def open(self, sock: socket.socket, family: int, options: TrapOptions) -> str:
        """Nothing to open: no engine, no ID."""
        return "words"

    def configure(
        self, plan: Mapping[str, Check], section: BaseModel | None, options: TrapOptions
    ) -> None:
        """No credentials."""

    def decode(self, address: tuple[Any, ...], data: bytes) -> TrapNotification | None:
        """The key is the second word; the sender is the source address."""
        return TrapNotification(data.decode().split(" ", 1)[1], (str(address[0]),))

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class PowerLost:
    """What `power-lost` means: the device runs on battery."""

    name: str = "power-lost"
    oid: str = "power-lost"
    set: Mapping[str, float] = field(default_factory=lambda: {"on_battery": 1.0})


class WordsSettings(BaseModel):
    """Settings of a check whose device sends `N power-lost`."""

    def trap_meanings(self) -> dict[str, PowerLost]:
        """One notification, `power-lost`."""
        return {"power-lost": PowerLost()}

    def family_helps(self) -> dict[str, str]:
        """The HELP of what it sets."""
        return {"on_battery": "On battery."}


async def test_the_receiver_takes_any_protocols_decoder() -> None:
    """A decoder of another protocol plugs in: screened, decoded, matched by host, applied."""
    store, registry, triggered = ResultStore(), CollectorRegistry(), []

    def trigger(check_id: str) -> bool:
        triggered.append(check_id)
        return True

    settings = TrapSettings(listen="127.0.0.1:0")
    metrics = TrapMetrics(registry)
    receiver = TrapReceiver(settings, store, trigger, metrics, decoder=WordsDecoder())
    check = Check("ups", "words", "127.0.0.1:9", 60.0, 5.0, WordsSettings(), host="127.0.0.1")
    await receiver.start({"ups": check}, None)
    harness = Harness(receiver, store, registry, triggered)
    try:
        await raw_send(receiver.port or 0, [b"junk", b"N unknown", b"N power-lost"])
        await wait_for(lambda: harness.count("matched") == 1, "the notification applied")
        assert harness.count("malformed") == 1 and harness.count("unmatched") == 1
        latest = store.latest("ups")
        assert latest is not None
        assert [(s.name, s.value, s.help) for s in latest.samples] == [
            ("on_battery", 1.0, "On battery.")
        ]
        assert triggered == ["ups"]
    finally:
        await receiver.stop()
