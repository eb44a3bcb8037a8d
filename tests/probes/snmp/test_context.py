"""SNMPv3 context names in the snmp probe: pysnmp polls against snmpsim and a net-snmp proxy."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from gufo.snmp.aio.client import SnmpSession
from pydantic import ValidationError

from tests.snmp_peers import (
    FIXTURES,
    Snmpd,
    Snmpsim,
    free_udp_port,
    running_context_proxy,
    snmp_check,
    start_snmpsim,
    v3_auth,
    value,
    values,
    write_big_table,
)
from tests.waiting import wait_for
from vigie.core.results import ProbeResult
from vigie.monitor.config import load_config
from vigie.probes.base import Check, ProbeContext, ProbeLog, ProbeRegistry
from vigie.probes.snmp import SnmpAuth, SnmpCheckSettings, SnmpProbe
from vigie.probes.snmp.context import ContextPoller
from vigie.probes.snmp.polling import PollStats
from vigie.probes.snmp.profiles import PollPlan

CONTEXT_FIXTURES = Path(__file__).parents[2] / "fixtures" / "snmp-context"
USERS = ("sha_aes", "md5", "sha512_aes256")
RECORDINGS = sorted(p.stem for p in FIXTURES.glob("*.prom"))  # recording = profile name
TYPES = "1.3.6.1.4.1.99999.1"
BIG_ROWS = 3000


def udp_sockets() -> int:
    """Count this process's open UDP sockets: each pysnmp engine holds one until it is closed.

    What close() and keep_only() release is seen from outside, as the kernel sees it; a
    collection first frees what only waits for the garbage collector (a poll's gufo socket).
    """
    gc.collect()
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as rows:
            next(rows)  # the header
            inodes.update(row.split()[9] for row in rows)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
            count += target.startswith("socket:[") and target[8:-1] in inodes
    return count


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    """snmpsim serving v2c and SNMPv3 users; a recording's file name is its context name.

    ups-a is the UPS-MIB recording on mains, ups-b the one on battery; big has 3000 rows.
    """
    root = tmp_path_factory.mktemp("snmpsim-context")
    data = root / "data"
    shutil.copytree(FIXTURES, data, ignore=shutil.ignore_patterns("*.prom"))
    shutil.copy(FIXTURES / "ups-mib.snmprec", data / "ups-a.snmprec")
    shutil.copy(FIXTURES / "ups-mib-on-battery.snmprec", data / "ups-b.snmprec")
    shutil.copy(CONTEXT_FIXTURES / "types.snmprec", data / "types.snmprec")
    write_big_table(data / "big.snmprec", BIG_ROWS)
    server = start_snmpsim(data, root, v3_users=USERS)
    yield server.wait_ready("system")
    server.stop()


@pytest.fixture(scope="module")
def proxy(sim: Snmpsim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """A net-snmp snmpd serving contexts ups-a and ups-b by proxying them to the simulator."""
    with running_context_proxy(
        tmp_path_factory.mktemp("snmpd-proxy"), sim.port, ["ups-a", "ups-b"]
    ) as snmpd:
        yield snmpd


@pytest.fixture
async def probe() -> AsyncIterator[SnmpProbe]:
    """A fresh snmp probe, closed (its pysnmp engines released) after the test."""
    made = SnmpProbe()
    yield made
    await made.close()


def ctx_auth(user: str, context: str, **override: Any) -> dict[str, Any]:
    """Return `snmp.auths` with entry `c`: the v3 user in context."""
    return {"c": v3_auth(user, context_name=context, **override)}


async def poll(probe: SnmpProbe, check: Check[Any], ctx: ProbeContext) -> ProbeResult:
    """Run the probe once under the check's timeout, as the scheduler does."""
    async with asyncio.timeout(check.timeout):
        return await probe(check, ctx)


async def build_engine(probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext, user: str) -> None:
    """Poll context ups-a as user once, so the probe holds the user's pysnmp engine.

    Building one costs about 0.5 s of MIB loading on the event loop (more under load), once
    per credential set in the daemon: tests timing a poll's tries start with it built.
    """
    check = snmp_check(sim.target(), auths=ctx_auth(user, "ups-a"), auth="c", timeout=10)
    warm = await poll(probe, check, ctx)
    assert warm.success, warm.error


def device_samples(result: ProbeResult) -> list[tuple[Any, ...]]:
    """Return a result's samples except the poll's own cost metrics, in a stable order."""
    return sorted(
        (s.name, s.labels, s.value, s.type)
        for s in result.samples
        if not s.name.startswith("snmp_scrape_")
    )


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"version": 2, "community": "c", "context_name": "ups-a"}, "only for version 3"),
        ({"version": 1, "community": "c", "context_name": "ups-a"}, "only for version 3"),
        (
            {"version": 3, "username": "u", "context_name": "x" * 33},
            r"context_name must be at most 32 octets \(SnmpAdminString\), got 33",
        ),
        (
            {"version": 3, "username": "u", "context_name": "é" * 17},
            "at most 32 octets .* got 34",
        ),
    ],
)
def test_context_name_is_checked(raw: dict[str, Any], message: str) -> None:
    """context_name is for v3 only and holds at most 32 octets of UTF-8."""
    with pytest.raises(ValidationError, match=message):
        SnmpAuth.model_validate(raw)


def test_describe_shows_the_context_not_the_secrets() -> None:
    """describe() names the context of a v3 auth and never a password."""
    auth = SnmpAuth.model_validate(v3_auth("sha_aes", context_name="ups-a"))
    assert auth.describe() == "v3 user 'sha_aes' authPriv SHA/AES context 'ups-a'"
    assert (
        len(SnmpAuth.model_validate(v3_auth("sha_aes", context_name="x" * 32)).context_name) == 32
    )
    assert "pw" not in auth.describe()


def test_config_file_with_a_context(tmp_path: Path) -> None:
    """A config whose v3 auth has context_name loads; the check carries the context."""
    (tmp_path / "auth").write_text("sha_aes-auth-pw\n")
    (tmp_path / "priv").write_text("sha_aes-priv-pw\n")
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "snmp:\n"
        "  auths:\n"
        "    ups_proxy:\n"
        "      {version: 3, username: sha_aes, auth_password_file: auth,\n"
        "       priv_password_file: priv, context_name: ups-a}\n"
        "checks:\n"
        "  - id: ups-a\n"
        "    kind: snmp\n"
        "    target: 10.0.0.9\n"
        "    snmp: {auth: ups_proxy, profiles: [system, ups-mib]}\n"
    )
    loaded = load_config(config, ProbeRegistry([SnmpProbe()]))
    settings = loaded.plan["ups-a"].settings
    assert isinstance(settings, SnmpCheckSettings)
    assert settings.resolved_auth.context_name == "ups-a"
    assert settings.resolved_auth.security_level == "authPriv"


# --------------------------------------------------------------------------- polling


@pytest.mark.parametrize("user", USERS)
async def test_each_context_gives_its_own_recording(
    probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext, user: str
) -> None:
    """Contexts ups-a and ups-b of one agent give each recording's values (authPriv, authNoPriv)."""
    results = {}
    for context in ("ups-a", "ups-b"):
        check = snmp_check(
            sim.target(), auths=ctx_auth(user, context), auth="c", profiles=("ups-mib",)
        )
        results[context] = await poll(probe, check, ctx)
        assert results[context].success, results[context].error
    assert value(results["ups-a"], "ups_time_on_battery_seconds") == 0
    assert value(results["ups-b"], "ups_time_on_battery_seconds") == 372
    assert value(results["ups-a"], "ups_output_source", state="normal") == 1
    assert value(results["ups-b"], "ups_output_source", state="battery") == 1


async def test_concurrent_polls_of_two_contexts_share_one_engine(
    probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext
) -> None:
    """Polls of two contexts in flight at once each get their own values, over one engine."""
    checks = [
        snmp_check(
            sim.target(),
            auths=ctx_auth("sha_aes", context),
            auth="c",
            profiles=("ups-mib",),
            probe=probe,
            check_id=f"{context}-{i}",
        )
        for i in range(5)
        for context in ("ups-a", "ups-b")
    ]
    before = udp_sockets()
    assert (await poll(probe, checks[0], ctx)).success
    one_engine = udp_sockets() - before
    assert one_engine > 0  # a pysnmp engine holds its socket until closed
    results = await asyncio.gather(*(poll(probe, check, ctx) for check in checks))
    seconds = [value(r, "ups_time_on_battery_seconds") for r in results]
    assert seconds == [0, 372] * 5, [r.error for r in results]
    assert udp_sockets() - before == one_engine  # no second engine for the other context
    await probe.close()


@pytest.mark.parametrize("recording", RECORDINGS)
async def test_context_path_gives_the_gufo_path_samples(
    sim: Snmpsim, ctx: ProbeContext, recording: str
) -> None:
    """Each shipped recording gives the same samples by v2c (gufo) and in a v3 context (pysnmp)."""
    gufo, context = SnmpProbe(), SnmpProbe()
    v2 = snmp_check(
        sim.target(),
        auths={"c": {"community": recording}},
        auth="c",
        profiles=(recording,),
        probe=gufo,
    )
    v3 = snmp_check(
        sim.target(),
        auths=ctx_auth("sha_aes", recording),
        auth="c",
        profiles=(recording,),
        probe=context,
    )
    try:
        by_gufo, by_context = await poll(gufo, v2, ctx), await poll(context, v3, ctx)
    finally:
        await context.close()
    assert by_gufo.success, by_gufo.error
    assert by_context.success, by_context.error
    assert device_samples(by_context) == device_samples(by_gufo)
    assert device_samples(by_gufo), "the recording gives no samples"
    assert value(by_context, "snmp_scrape_varbinds_received") == value(
        by_gufo, "snmp_scrape_varbinds_received"
    )


async def test_values_have_the_types_gufo_returns(sim: Snmpsim) -> None:
    """Every ASN.1 type polled in a context has gufo-snmp's Python type and value; NULL left out."""
    oids = [f"{TYPES}.{i}.0" for i in range(1, 16)]  # .15 is absent
    # gufo's async client, as the probe's: its blocking one reads with a socket timeout,
    # which a SIGCHLD interrupts (EINTR) once uvloop has spawned a process in this one.
    async with SnmpSession(
        addr="127.0.0.1", port=sim.port, community="types", timeout=2
    ) as session:
        want_get = await session.get_many(oids)
        want_walk = {oid: value async for oid, value in session.getbulk(TYPES)}
    check = snmp_check(sim.target(), auths=ctx_auth("sha_aes", "types"), auth="c")
    assert isinstance(check.settings, SnmpCheckSettings)
    settings = check.settings.model_copy(
        update={"plan": PollPlan(gets=tuple(oids), walks=(TYPES,), required=())}
    )
    poller = ContextPoller()
    loop = asyncio.get_running_loop()
    try:
        got = await poller.poll(
            check.target,
            settings,
            PollStats(),
            lambda *a, **k: None,
            request_timeout=1.0,
            deadline=loop.time() + 5,
        )
    finally:
        poller.close()
    assert got.scalars == want_get
    assert {k: type(v) for k, v in got.scalars.items()} == {k: type(v) for k, v in want_get.items()}
    walked = {f"{TYPES}.{k}": v for k, v in got.walks[TYPES].items()}
    assert walked == want_walk
    assert {k: type(v) for k, v in walked.items()} == {k: type(v) for k, v in want_walk.items()}
    assert got.scalars[f"{TYPES}.8.0"] == "10.20.30.40"  # IpAddress: dotted text
    assert got.scalars[f"{TYPES}.7.0"] == "1.3.6.1.4.1.705.1"  # OID: dotted text
    assert got.scalars[f"{TYPES}.13.0"] == 2**64 - 1  # Counter64
    assert f"{TYPES}.6.0" not in got.scalars  # NULL, as gufo-snmp leaves it out


async def test_walk_cap_holds_through_a_context(
    probe: SnmpProbe, sim: Snmpsim, tmp_path: Path, ctx: ProbeContext
) -> None:
    """A walk in a context stops at walk_cap with 'walk cap reached'; PDUs as on the gufo path."""
    (tmp_path / "ifdescr.yaml").write_text(
        "source: test\nmetrics:\n"
        "  - {name: if_descr_info, oid: 1.3.6.1.2.1.2.2.1.2, type: info, label: descr, help: h,"
        " indexes: [{label: ifIndex}]}\n"
    )
    check = snmp_check(
        sim.target(),
        auths=ctx_auth("sha_aes", "big"),
        auth="c",
        profiles=("ifdescr",),
        profile_dirs=(tmp_path,),
        timeout=10.0,
        walk_cap=1000,
        max_repetitions=50,
    )
    result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error == (
        "walk cap reached: 1.3.6.1.2.1.2.2.1.2 has more than 1000 varbinds "
        "(raise walk_cap if the table is really that large)"
    )
    assert value(result, "snmp_scrape_varbinds_received") == 1000
    # 21 GETBULKs of 50 (the 21st holds varbind 1001), plus pysnmp's engine discovery.
    assert value(result, "snmp_scrape_pdus_sent") == 21 + 1


async def test_pdus_match_the_gufo_path_once_discovered(
    probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext
) -> None:
    """The first context poll adds one discovery PDU; later ones send what v2c sends."""
    v2 = snmp_check(
        sim.target(), auths={"c": {"community": "if-mib"}}, auth="c", profiles=("if-mib",)
    )
    v3 = snmp_check(
        sim.target(), auths=ctx_auth("md5", "if-mib"), auth="c", profiles=("if-mib",), probe=probe
    )
    gufo_pdus = value(await poll(SnmpProbe(), v2, ctx), "snmp_scrape_pdus_sent")
    first = await poll(probe, v3, ctx)
    second = await poll(probe, v3, ctx)
    assert value(first, "snmp_scrape_pdus_sent") == gufo_pdus + 1
    assert value(second, "snmp_scrape_pdus_sent") == gufo_pdus
    assert value(second, "snmp_scrape_walk_duration_seconds") > 0


async def test_close_releases_the_engines(sim: Snmpsim, ctx: ProbeContext) -> None:
    """close() releases pysnmp's engines; a later poll builds one again; no context, no engine."""
    probe = SnmpProbe()
    before = udp_sockets()
    plain = snmp_check(sim.target(), auths={"c": {"community": "system"}}, auth="c", probe=probe)
    assert (await poll(probe, plain, ctx)).success
    assert udp_sockets() == before  # the gufo path never builds a pysnmp engine
    check = snmp_check(sim.target(), auths=ctx_auth("md5", "system"), auth="c", probe=probe)
    assert (await poll(probe, check, ctx)).success
    assert udp_sockets() > before
    await probe.close()  # the transports close on the loop's next turn
    await wait_for(lambda: udp_sockets() == before, "the engine's socket closed")
    again = await poll(probe, check, ctx)
    assert again.success, again.error
    await probe.close()
    await wait_for(lambda: udp_sockets() == before, "the new engine's socket closed")


async def test_reload_closes_the_engines_of_old_credentials(
    sim: Snmpsim, ctx: ProbeContext
) -> None:
    """An engine whose credentials no check uses any more (rotated, removed) is closed."""
    probe = SnmpProbe()
    before = udp_sockets()
    old = snmp_check(sim.target(), auths=ctx_auth("md5", "system"), auth="c", probe=probe)
    assert (await poll(probe, old, ctx)).success
    one_engine = udp_sockets() - before
    assert one_engine > 0
    probe.keep_only({old.id})  # the same plan again: the engine stays
    assert udp_sockets() - before == one_engine
    rotated = ctx_auth("md5", "system", auth_password="rotated-password")
    new = snmp_check(sim.target(), auths=rotated, auth="c", probe=probe)
    assert new.id == old.id
    assert not (await poll(probe, new, ctx)).success  # the agent still has the old password
    # The old credentials' engine is closed: one engine's socket, the new one's.
    await wait_for(lambda: udp_sockets() - before == one_engine, "only the new engine left")
    probe.keep_only(set())  # the check left the plan: its engine is closed
    await wait_for(lambda: udp_sockets() == before, "the engine's socket closed")
    await probe.close()


# --------------------------------------------------------------------------- failures


async def test_unknown_context_is_named(probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext) -> None:
    """snmpsim drops requests for a context it has no recording for: unknown context, in time.

    `poll` raising TimeoutError is what "not in time" would look like, so a result at all
    proves the deadline was kept.
    """
    await build_engine(probe, sim, ctx, "sha_aes")
    check = snmp_check(
        sim.target(),
        auths=ctx_auth("sha_aes", "ups-z"),
        auth="c",
        profiles=("ups-mib",),
        timeout=1.0,
    )
    result = await poll(probe, check, ctx)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith(
        "SNMPv3 unknown context 'ups-z': the agent serves no such context"
    )
    assert "pw" not in result.error
    assert values(result, "ups_time_on_battery_seconds") == {}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"auth_password": "not-the-auth-pw"},
            "SNMPv3 wrong digest: auth password or auth protocol (SHA) does not match the agent's",
        ),
        (
            {"priv_password": "not-the-priv-pw"},
            "SNMPv3 decryption error: privacy password or protocol (AES) does not match the "
            "agent's",
        ),
        ({"username": "nobody"}, "SNMPv3 unknown user 'nobody': the agent has no such user"),
    ],
)
async def test_usm_errors_through_a_context(
    probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext, override: dict[str, str], message: str
) -> None:
    """snmpsim's USM reports (wrong digest, decryption error, unknown user) are named."""
    check = snmp_check(
        sim.target(), auths=ctx_auth("sha_aes", "ups-a", **override), auth="c", timeout=2.0
    )
    result = await poll(probe, check, ctx)
    assert result.error == message
    assert value(result, "snmp_scrape_pdus_sent") == 2  # discovery, then the reported request


async def test_stopped_agent_times_out(probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext) -> None:
    """With no agent on the port, the poll times out after its tries, within the check timeout."""
    await build_engine(probe, sim, ctx, "sha_aes")
    port = free_udp_port()
    check = snmp_check(
        f"127.0.0.1:{port}", auths=ctx_auth("sha_aes", "ups-a"), auth="c", timeout=1.0
    )
    result = await poll(probe, check, ctx)
    assert result.error == f"timeout: no answer from 127.0.0.1:{port} after 2 tries of 0.333s"
    assert value(result, "snmp_scrape_pdus_sent") == 2


class _PauseAfterGet(ProbeLog):
    """A probe log that freezes the agent (SIGSTOP) once the poll's GET is answered."""

    def __init__(self, agent: subprocess.Popen[bytes]) -> None:
        super().__init__(structlog.get_logger())
        self.agent = agent

    def __call__(self, event: str, **fields: object) -> None:
        """Record the event; on the GET's, stop the agent before the walks begin."""
        super().__call__(event, **fields)
        if event == "snmp_get":
            self.agent.send_signal(signal.SIGSTOP)


async def test_agent_stopping_mid_poll_is_stopped_mid_walk(
    probe: SnmpProbe, sim: Snmpsim, ctx: ProbeContext
) -> None:
    """An agent that answers the GET then goes silent fails as stopped_mid_walk, in time."""
    check = snmp_check(
        sim.target(), auths=ctx_auth("md5", "ups-b"), auth="c", profiles=("ups-mib",), timeout=1.0
    )
    await build_engine(probe, sim, ctx, "md5")
    paused = ProbeContext(session=ctx.session, log=_PauseAfterGet(sim.process))
    try:
        result = await poll(probe, check, paused)  # TimeoutError if not in time
    finally:
        sim.process.send_signal(signal.SIGCONT)
    assert result.error == (
        "agent stopped answering mid-walk of 1.3.6.1.2.1.33.1.3.3.1 after 0 varbinds "
        "(2 tries of 0.333s)"
    )
    assert values(result, "ups_time_on_battery_seconds") == {}


# --------------------------------------------------------------------------- net-snmp


async def test_net_snmp_proxy_contexts(
    probe: SnmpProbe, sim: Snmpsim, proxy: Snmpd, ctx: ProbeContext
) -> None:
    """net-snmp snmpd proxying contexts: each context's values (IPv4, IPv6); unknown one named."""
    for context, on_battery in (("ups-a", 0), ("ups-b", 372)):
        check = snmp_check(
            proxy.target(), auths=ctx_auth("sha_aes", context), auth="c", profiles=("ups-mib",)
        )
        result = await poll(probe, check, ctx)
        assert result.success, result.error
        assert value(result, "ups_time_on_battery_seconds") == on_battery
    if proxy.ipv6:
        check = snmp_check(
            proxy.target(ipv6=True),
            auths=ctx_auth("sha_aes", "ups-b"),
            auth="c",
            profiles=("ups-mib",),
        )
        result = await poll(probe, check, ctx)
        assert result.success, result.error
        assert value(result, "ups_time_on_battery_seconds") == 372
    check = snmp_check(proxy.target(), auths=ctx_auth("sha_aes", "vlan-10"), auth="c", timeout=1.0)
    result = await poll(probe, check, ctx)
    assert result.error is not None
    assert result.error.startswith(
        "SNMPv3 unknown context 'vlan-10': the agent serves no such context"
    )
