"""The redfish probe against sushy-static serving mockup trees, and an aiohttp BMC for sessions.

sushy-static (sushy-tools) serves tests/fixtures/redfish/<tree> as a real Redfish service; it
reads a file per request, so faults are injected by rewriting files. It has no sessions, no
`$expand` and no errors but 404, so those are tested against `Bmc`, an aiohttp server that
serves the same mockup files behind a real SessionService (tokens, 401, DELETE).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from tests.conftest import require_binary
from tests.probes.conftest import Pki, make_check, refused_port, sample, serve_http
from tests.waiting import wait_for_sync
from vigie.core.results import ProbeResult
from vigie.monitor.exposition import Exposition
from vigie.monitor.health.engine import HealthEngine, Topology
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import ComponentSpec, SiteSpec
from vigie.probes.base import ProbeContext, ProbeLog, ProbeRegistry
from vigie.probes.redfish import MAX_LABEL_CHARS, RedfishProbe, RedfishSettings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "redfish"
SUSHY = str(Path(sys.executable).parent / "sushy-static")
USER, PASSWORD = "vigie", "bmc-s3cret-pw"
ROOT = "/redfish/v1"


# --------------------------------------------------------------------------- peers


@dataclass
class Sushy:
    """A running sushy-static: its base URL and the mockup directory it serves."""

    url: str
    root: Path

    def path(self, resource: str) -> Path:
        """Return the index.json file of a resource path under /redfish/v1."""
        return self.root / resource.removeprefix(ROOT).strip("/") / "index.json"

    def edit(self, resource: str, change: Any) -> None:
        """Rewrite a resource file with change(doc) applied (sushy-static reads per request)."""
        file = self.path(resource)
        doc = json.loads(file.read_text())
        change(doc)
        file.write_text(json.dumps(doc))


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Wait until 127.0.0.1:port accepts connections; False if the process died."""

    def listening_or_dead() -> bool:
        """True once the port accepts or the process exited."""
        if proc.poll() is not None:
            return True
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    wait_for_sync(listening_or_dead, f"sushy-static listening on {port}")
    return proc.poll() is None


@contextlib.contextmanager
def sushy_static(tree: Path, tls: tuple[Path, Path] | None = None) -> Iterator[Sushy]:
    """Run sushy-static on a free loopback port serving tree (retried if the port was taken)."""
    require_binary(SUSHY, "sushy-tools (pip)")
    for _ in range(5):
        port = refused_port()  # sushy-static cannot report a port it chose itself
        cmd = [SUSHY, "-i", "127.0.0.1", "-p", str(port), "-m", str(tree)]
        if tls is not None:
            cmd += ["-c", str(tls[0]), "-k", str(tls[1])]
        # stdout gets request headers (credentials included): discard it.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if _wait_port(port, proc):
                yield Sushy(f"{'https' if tls else 'http'}://127.0.0.1:{port}", tree)
                return
        finally:
            proc.terminate()
            proc.wait(5)
    raise RuntimeError("sushy-static could not start")


@pytest.fixture
def tree(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A writable copy of the mockup tree named by the test's parameter (default rackmount)."""
    name = getattr(request, "param", "rackmount")
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    return dest


@pytest.fixture
def sushy(tree: Path) -> Iterator[Sushy]:
    """sushy-static serving a writable copy of a mockup tree."""
    with sushy_static(tree) as server:
        yield server


@dataclass
class Bmc:
    """An aiohttp Redfish service over a mockup tree, with a real SessionService and counters."""

    root: Path
    auth: str = "session"
    expand: bool = False
    delay: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    logins: int = 0
    deleted: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def app(self) -> web.Application:
        """Return the aiohttp application."""
        app = web.Application()
        app.router.add_post(f"{ROOT}/SessionService/Sessions", self.login)
        app.router.add_delete(f"{ROOT}/SessionService/Sessions/{{sid}}", self.logout)
        app.router.add_get(ROOT + "{tail:.*}", self.get)
        return app

    async def login(self, request: web.Request) -> web.Response:
        """Create a session for the right credentials: 201, X-Auth-Token and Location."""
        body = await request.json()
        if body != {"UserName": USER, "Password": PASSWORD}:
            return web.json_response({"error": "bad credentials"}, status=401)
        self.logins += 1
        sid, token = str(self.logins), f"token-{self.logins}-{time.monotonic_ns()}"
        self.tokens[sid] = token
        location = f"{ROOT}/SessionService/Sessions/{sid}"
        return web.json_response(
            {"@odata.id": location, "Id": sid},
            status=201,
            headers={"X-Auth-Token": token, "Location": location},
        )

    async def logout(self, request: web.Request) -> web.Response:
        """Delete a session (its own token required)."""
        sid = request.match_info["sid"]
        if self.tokens.get(sid) != request.headers.get("X-Auth-Token"):
            return web.Response(status=401)
        del self.tokens[sid]
        self.deleted.append(sid)
        return web.Response(status=204)

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries valid credentials for the auth mode."""
        if self.auth == "session":
            return request.headers.get("X-Auth-Token") in self.tokens.values()
        if self.auth == "basic":
            return request.headers.get("Authorization") == aiohttp.encode_basic_auth(USER, PASSWORD)
        return True

    def load(self, path: str) -> Any:
        """Return the JSON of a resource file, or None if there is none."""
        file = self.root / path.removeprefix(ROOT).strip("/") / "index.json"
        return json.loads(file.read_text()) if file.exists() else None

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Serve a resource; the service root unauthenticated, as real BMCs do."""
        path = request.path.rstrip("/")
        self.requests.append(request.path_qs)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if path != ROOT and not self.authorized(request):
                return web.json_response({"error": "unauthorized"}, status=401)
            if path in self.statuses:
                return web.Response(status=self.statuses[path], text="internal error")
            if path in self.bodies:
                return web.Response(body=self.bodies[path], content_type="application/json")
            doc = self.load(path)
            if doc is None:
                return web.Response(status=404)
            if path == ROOT and self.expand:
                doc["ProtocolFeaturesSupported"] = {
                    "ExpandQuery": {"Levels": True, "NoLinks": True, "MaxLevels": 1}
                }
            if "$expand" in request.query and isinstance(doc.get("Members"), list):
                assert request.query["$expand"] == ".($levels=1)"
                doc["Members"] = [self.load(m["@odata.id"]) or m for m in doc["Members"]]
            return web.json_response(doc)
        finally:
            self.in_flight -= 1


@contextlib.asynccontextmanager
async def bmc_server(bmc: Bmc, pki: Pki | None = None) -> AsyncIterator[str]:
    """Serve bmc on a free loopback port; yield its base URL."""
    async with serve_http(bmc.app(), pki.server_context() if pki else None) as url:
        yield url


@pytest.fixture
def probe() -> RedfishProbe:
    """A fresh redfish probe, registered as the daemon would."""
    found = ProbeRegistry([RedfishProbe()])["redfish"]
    assert isinstance(found, RedfishProbe)
    return found


def values(result: ProbeResult, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Return the samples of one family by label set."""
    return {s.labels: s.value for s in result.samples if s.name == name}


def holding_rules(settings: Any, result: ProbeResult) -> set[str]:
    """Return the names of the default rules whose condition holds on the result."""
    return {
        r.name for r in settings.health_rules() if r.condition.evaluate(result.samples)[0] is True
    }


# --------------------------------------------------------------------------- mockups


async def test_rackmount_power_thermal_storage(
    probe: RedfishProbe, sushy: Sushy, ctx: ProbeContext
) -> None:
    """A rackmount server with the older Power/Thermal resources: PSU2 failed, redundancy lost."""
    result = await probe(make_check(probe, sushy.url, auth="none"), ctx)
    assert result.success, result.error
    assert sample(result, "redfish_up") == 1
    assert sample(result, "server_power_supply_ok", chassis="1U", psu="PSU1") == 1
    assert sample(result, "server_power_supply_ok", chassis="1U", psu="PSU2") == 0
    assert (
        sample(result, "server_power_supply_redundancy_ok", chassis="1U", group="PSRedundancy") == 0
    )
    cpu = {"chassis": "1U", "sensor": "CPU1"}
    assert sample(result, "server_temperature_celsius", **cpu) == 62
    assert sample(result, "server_temperature_upper_critical_celsius", **cpu) == 95
    assert sample(result, "server_temperature_upper_fatal_celsius", **cpu) == 100
    assert sample(result, "server_temperature_alert_level", **cpu) == 0
    assert sample(result, "server_fan_speed_rpm", chassis="1U", fan="Fan1") == 6120
    assert sample(result, "server_fan_speed_ratio", chassis="1U", fan="Fan2") == 0.35
    assert ("fan", "Fan3") not in {lb for s in result.samples for lb in s.labels}  # bay empty
    assert sample(result, "redfish_health", type="System", resource="Systems/1") == 1
    assert sample(result, "redfish_health_rollup", type="System", resource="Systems/1") == 2
    assert sample(result, "server_power_state", system="1", state="On") == 1
    assert sample(result, "server_power_state", system="1", state="Off") == 0
    raid = "Systems/1/Storage/RAID1"
    assert sample(result, "storage_drive_ok", storage=raid, drive="Disk.1") == 1
    assert sample(result, "storage_controller_ok", storage=raid, controller="0") == 1
    assert sample(result, "storage_volume_capacity_bytes", storage=raid, volume="VD0") == (
        959119884288
    )
    assert sample(result, "redfish_expand") == 0
    assert sample(result, "redfish_probe_requests") == 13


@pytest.mark.parametrize("tree", ["subsystem"], indirect=True)
async def test_power_and_thermal_subsystems(
    probe: RedfishProbe, sushy: Sushy, ctx: ProbeContext
) -> None:
    """The newer PowerSubsystem, ThermalSubsystem and Sensors give the same families."""
    result = await probe(make_check(probe, sushy.url, auth="none"), ctx)
    assert result.success, result.error
    assert values(result, "server_power_supply_ok") == {
        (("chassis", "Enclosure"), ("psu", "PSU-A")): 1.0,
        (("chassis", "Enclosure"), ("psu", "PSU-B")): 1.0,
    }
    assert sample(result, "server_power_supply_redundancy_ok", chassis="Enclosure", group="0") == 1
    fan = {"chassis": "Enclosure", "fan": "Fan1"}
    assert sample(result, "server_fan_speed_ratio", **fan) == pytest.approx(0.43)
    assert sample(result, "server_fan_speed_rpm", **fan) == 8400
    cpu = {"chassis": "Enclosure", "sensor": "CPU0Temp"}
    assert sample(result, "server_temperature_celsius", **cpu) == 71
    assert sample(result, "server_temperature_upper_warning_celsius", **cpu) == 90
    assert sample(result, "server_temperature_upper_critical_celsius", **cpu) == 98
    sensors = {dict(s.labels)["sensor"] for s in result.samples if s.name.startswith("server_temp")}
    assert sensors == {"CPU0Temp", "InletTemp"}  # the power sensor is not a temperature
    assert holding_rules(probe.Settings.model_validate({"auth": "none"}), result) == set()


@pytest.mark.parametrize("tree", ["swordfish"], indirect=True)
async def test_swordfish_pools_and_volumes(
    probe: RedfishProbe, sushy: Sushy, ctx: ProbeContext
) -> None:
    """A Swordfish array: pool capacity and used ratio, volume capacity and use, a drive warning."""
    check = make_check(probe, sushy.url, auth="none")
    result = await probe(check, ctx)
    assert result.success, result.error
    array = {"storage": "Storage/Array1"}
    tib = 1024**4
    assert sample(result, "storage_pool_capacity_bytes", **array, pool="Pool-Gold") == 20 * tib
    assert sample(result, "storage_pool_used_bytes", **array, pool="Pool-Gold") == 19 * tib
    assert sample(result, "storage_pool_used_ratio", **array, pool="Pool-Gold") == 0.95
    assert sample(result, "storage_pool_used_ratio", **array, pool="Pool-Silver") == 0.25
    assert sample(result, "storage_volume_capacity_bytes", **array, volume="LUN-PACS") == 12 * tib
    assert sample(result, "storage_volume_used_bytes", **array, volume="LUN-PACS") == 11 * tib
    assert sample(result, "storage_drive_ok", **array, drive="2") == 0
    assert sample(result, "storage_controller_ok", **array, controller="SPB") == 1
    assert sample(result, "redfish_health_rollup", type="Storage", resource="Storage/Array1") == 1
    assert holding_rules(check.settings, result) == {"pool_nearly_full", "drive_failed"}


async def test_faults_injected_by_rewriting_files(
    probe: RedfishProbe, sushy: Sushy, ctx: ProbeContext
) -> None:
    """A repaired PSU and an overheating CPU show on the next run; the default rules follow."""
    check = make_check(probe, sushy.url, auth="none")
    before = await probe(check, ctx)
    assert holding_rules(check.settings, before) == {
        "server_health_warning",
        "power_supply_failed",
        "power_redundancy_lost",
    }

    def repair(doc: Any) -> None:
        doc["PowerSupplies"][1]["Status"] = {"State": "Enabled", "Health": "OK"}
        doc["Redundancy"][0]["Status"] = {"State": "Enabled", "Health": "OK"}

    def overheat(doc: Any) -> None:
        doc["Temperatures"][0]["ReadingCelsius"] = 97

    sushy.edit(f"{ROOT}/Chassis/1U/Power", repair)
    sushy.edit(f"{ROOT}/Chassis/1U/Thermal", overheat)
    after = await probe(check, ctx)
    assert after.success, after.error
    assert sample(after, "server_power_supply_ok", chassis="1U", psu="PSU2") == 1
    assert sample(after, "server_temperature_alert_level", chassis="1U", sensor="CPU1") == 2
    rules = holding_rules(check.settings, after)
    assert rules == {"server_health_warning", "temperature_warning", "temperature_critical"}
    severities = {r.name: r.severity for r in check.settings.health_rules()}
    assert severities["temperature_critical"] == "down"
    assert severities["power_supply_failed"] == "warning"
    assert severities["power_redundancy_lost"] == "degraded"


@pytest.mark.parametrize(
    "case",
    [
        ("Chassis/1U/Thermal", "<html>oops</html>", "Chassis/1U/Thermal: not JSON"),
        ("Chassis/1U/Thermal", "[" * 100_000 + "]" * 100_000, "Chassis/1U/Thermal: not JSON"),
        ("Chassis/1U/Thermal", "[1, 2]", "Chassis/1U/Thermal: not a JSON object but list"),
        (
            "Chassis/1U/Power",
            '{"PowerSupplies": "x", "Redundancy": 3}',
            "Chassis/1U/Power: PowerSupplies is not a list",
        ),
        ("Chassis/1U/Thermal", None, "Chassis/1U/Thermal: status 404"),
        ("Chassis", '{"Members": {"a": 1}}', "Chassis: Members is missing or not a list"),
    ],
)
async def test_bad_answer_gives_partial_result(
    probe: RedfishProbe,
    sushy: Sushy,
    ctx: ProbeContext,
    case: tuple[str, str | None, str],
) -> None:
    """A bad resource makes the run partial, its reason naming it; the rest is still reported."""
    resource, content, reason = case
    file = sushy.path(resource)
    if content is None:
        file.unlink()
    else:
        file.write_text(content)
    result = await probe(make_check(probe, sushy.url, auth="none"), ctx)
    assert result.success
    assert result.error is not None and result.error.startswith("partial read, 1 error: ")
    assert reason in result.error, result.error
    assert sample(result, "redfish_probe_errors") == 1
    assert (
        sample(result, "storage_drive_ok", storage="Systems/1/Storage/RAID1", drive="Disk.0") == 1
    )


async def test_hostile_values_are_bounded(
    probe: RedfishProbe, sushy: Sushy, ctx: ProbeContext
) -> None:
    """Huge ids are cut; bad types, non-finite numbers and foreign links are dropped."""

    def hostile(doc: Any) -> None:
        doc["PowerSupplies"][0]["MemberId"] = "P" * 100_000 + "\n<script>"
        doc["PowerSupplies"][1]["Status"] = "Critical"  # not an object

    sushy.edit(f"{ROOT}/Chassis/1U/Power", hostile)
    sushy.edit(
        f"{ROOT}/Chassis/1U/Thermal",
        lambda doc: doc["Temperatures"][0].update(
            ReadingCelsius="hot", UpperThresholdFatal=10**400, UpperThresholdCritical=1e999
        ),
    )
    sushy.edit(
        f"{ROOT}/Systems/1/Storage/RAID1",
        lambda doc: doc["Drives"].append({"@odata.id": "http://169.254.169.254/redfish/v1/x"}),
    )
    result = await probe(make_check(probe, sushy.url, auth="none"), ctx)
    psus = values(result, "server_power_supply_ok")
    assert len(psus) == 1
    (labels,) = psus
    assert len(dict(labels)["psu"]) == MAX_LABEL_CHARS
    assert dict(labels)["psu"].isprintable()
    cpu = (("chassis", "1U"), ("sensor", "CPU1"))
    assert cpu not in values(result, "server_temperature_upper_fatal_celsius")
    assert cpu not in values(result, "server_temperature_upper_critical_celsius")
    assert values(result, "server_temperature_upper_warning_celsius")[cpu] == 85
    assert (("chassis", "1U"), ("sensor", "CPU1")) not in values(
        result, "server_temperature_celsius"
    )
    assert result.error is not None and "link outside the service root" in result.error


async def test_budget_caps_stop_the_run(
    probe: RedfishProbe, sushy: Sushy, ctx: ProbeContext
) -> None:
    """max_requests and max_bytes stop a run with a clear reason; samples read so far are kept."""
    few = await probe(make_check(probe, sushy.url, auth="none", max_requests=4), ctx)
    assert not few.success
    assert few.error is not None and "stopped after 4 requests (max_requests)" in few.error
    assert sample(few, "redfish_up") == 1
    assert sample(few, "redfish_probe_requests") == 4
    small = await probe(make_check(probe, sushy.url, auth="none", max_bytes=2000), ctx)
    assert not small.success
    assert small.error is not None and "(max_bytes)" in small.error
    assert sample(small, "redfish_probe_response_bytes") <= 2000 + 64 * 1024


async def test_unreachable_bmc(probe: RedfishProbe, ctx: ProbeContext) -> None:
    """A BMC that refuses connections gives redfish_up 0 and a reason naming the address."""
    port = refused_port()
    result = await probe(make_check(probe, f"http://127.0.0.1:{port}", auth="none"), ctx)
    assert not result.success
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"
    assert sample(result, "redfish_up") == 0


@pytest.mark.parametrize("tree", ["rackmount", "subsystem", "swordfish"], indirect=True)
async def test_families_pass_promtool_lint(
    probe: RedfishProbe, sushy: Sushy, ctx: ProbeContext
) -> None:
    """Every family of each mockup, as /metrics renders it, passes `promtool check metrics`."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    result = await probe(make_check(probe, sushy.url, auth="none"), ctx)
    exp = Exposition(CollectorRegistry())
    text = exp.render_text(exp.render_samples('check="bmc-07"', result.samples))
    lint = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await lint.communicate(text.encode())
    assert lint.returncode == 0 and not out, out.decode()


# --------------------------------------------------------------------------- sessions, auth


def _session_check(probe: RedfishProbe, url: str, **settings: Any) -> Any:
    """Return a check with session auth as USER."""
    return make_check(probe, url, username=USER, password=PASSWORD, **settings)


async def test_session_login_reuse_relogin_and_logout(
    probe: RedfishProbe, ctx: ProbeContext
) -> None:
    """One login serves many runs; a 401 logs in again once; close() deletes the session."""
    bmc = Bmc(FIXTURES / "rackmount")
    async with bmc_server(bmc) as url:
        check = _session_check(probe, url)
        for _ in range(3):
            result = await probe(check, ctx)
            assert result.success, result.error
        assert bmc.logins == 1
        bmc.tokens.clear()  # the BMC restarted: every token is void
        result = await probe(check, ctx)
        assert result.success, result.error
        assert bmc.logins == 2
        await probe.close()
        assert bmc.deleted == ["2"]
        assert bmc.tokens == {}
        result = await probe(check, ctx)  # a later run logs in again
        assert result.success and bmc.logins == 3


async def test_close_with_bmc_gone(probe: RedfishProbe, ctx: ProbeContext) -> None:
    """close() does not raise nor hang when the BMC went away; the session is forgotten."""
    bmc = Bmc(FIXTURES / "rackmount")
    async with bmc_server(bmc) as url:
        assert (await probe(_session_check(probe, url), ctx)).success
    async with asyncio.timeout(2):
        await probe.close()
    assert bmc.deleted == []
    async with asyncio.timeout(2):
        await probe.close()  # nothing left to close


async def test_session_wrong_password_is_not_shown(probe: RedfishProbe) -> None:
    """A refused login fails the run naming the SessionService; the password appears nowhere."""

    bmc = Bmc(FIXTURES / "rackmount")
    async with bmc_server(bmc) as url, aiohttp.ClientSession() as session:
        log = ProbeLog(structlog.get_logger())
        check = make_check(probe, url, username=USER, password="wrong-pw-123")
        result = await probe(check, ProbeContext(session=session, log=log))
    assert not result.success
    assert result.error == "login to SessionService/Sessions failed: status 401"
    text = " ".join([result.error, *log.lines, repr(check), str(check.settings)])
    assert "wrong-pw-123" not in text
    assert bmc.requests == [ROOT]  # nothing fetched without a session


async def test_basic_auth(probe: RedfishProbe, ctx: ProbeContext, tmp_path: Path) -> None:
    """Basic auth with the password read from a file; a wrong one gives 401 per resource."""
    secret = tmp_path / "bmc-password"
    secret.write_text(PASSWORD + "\n")
    bmc = Bmc(FIXTURES / "rackmount", auth="basic")
    async with bmc_server(bmc) as url:
        good = make_check(probe, url, auth="basic", username=USER, password_file=str(secret))
        result = await probe(good, ctx)
        assert result.success, result.error
        assert bmc.logins == 0
        bad = make_check(probe, url, auth="basic", username=USER, password="nope")
        result = await probe(bad, ctx)
    assert not result.success
    assert result.error == "Systems: status 401 (the BMC refuses the credentials)"
    assert "nope" not in result.error


async def test_server_error_names_resource(probe: RedfishProbe, ctx: ProbeContext) -> None:
    """A 500 on one resource names it; the other resources are still reported."""
    bmc = Bmc(FIXTURES / "rackmount", auth="none", statuses={f"{ROOT}/Chassis/1U/Power": 500})
    async with bmc_server(bmc) as url:
        result = await probe(make_check(probe, url, auth="none"), ctx)
    assert result.success
    assert result.error == "partial read, 1 error: Chassis/1U/Power: status 500"
    assert sample(result, "server_fan_ok", chassis="1U", fan="Fan1") == 1


async def test_many_bad_members_are_counted_not_listed(
    probe: RedfishProbe, ctx: ProbeContext
) -> None:
    """5,000 members without @odata.id are counted; the reason stays short."""
    bad = json.dumps({"Members": [{"x": i} for i in range(5000)]}).encode()
    bmc = Bmc(FIXTURES / "rackmount", auth="none", bodies={f"{ROOT}/Chassis": bad})
    async with bmc_server(bmc) as url:
        result = await probe(make_check(probe, url, auth="none"), ctx)
    assert result.success
    assert sample(result, "redfish_probe_errors") == 5000
    assert result.error is not None and result.error.startswith(
        "partial read, 5000 errors: Chassis: a member has no @odata.id; "
    )
    assert result.error.endswith("(+4997 more)")
    assert len(ctx.log.lines) < 40


async def test_expand_when_advertised(probe: RedfishProbe, ctx: ProbeContext) -> None:
    """Collections are read with $expand when the root advertises it: fewer requests, same data."""
    crawl_bmc = Bmc(FIXTURES / "swordfish", auth="none")
    expand_bmc = Bmc(FIXTURES / "swordfish", auth="none", expand=True)
    async with bmc_server(crawl_bmc) as url:
        crawled = await probe(make_check(probe, url, auth="none"), ctx)
    async with bmc_server(expand_bmc) as url:
        expanded = await probe(make_check(probe, url, auth="none"), ctx)
        off = await probe(make_check(probe, url, auth="none", expand=False), ctx)
    assert crawled.success and expanded.success and off.success
    assert sample(expanded, "redfish_expand") == 1
    assert sample(off, "redfish_expand") == 0
    assert any("$expand=.($levels=1)" in r for r in expand_bmc.requests)
    assert sample(expanded, "redfish_probe_requests") < sample(crawled, "redfish_probe_requests")

    def data(r: ProbeResult) -> set[tuple[str, Any, float]]:
        return {(s.name, s.labels, s.value) for s in r.samples if s.name.startswith("storage_")}

    assert data(expanded) == data(crawled)


@pytest.mark.parametrize("limit", [1, 3])
async def test_concurrency_limit(probe: RedfishProbe, ctx: ProbeContext, limit: int) -> None:
    """Requests in flight to one BMC never exceed max_concurrency, and reach it."""
    bmc = Bmc(FIXTURES / "swordfish", auth="none", delay=0.02)
    async with bmc_server(bmc) as url:
        result = await probe(make_check(probe, url, auth="none", max_concurrency=limit), ctx)
    assert result.success, result.error
    assert bmc.max_in_flight == limit


async def test_tls_with_ca_file(
    probe: RedfishProbe, ctx: ProbeContext, pki: Pki, tree: Path, tmp_path: Path
) -> None:
    """A private-CA BMC certificate verifies with ca_file, fails without, passes unverified."""
    cert, key = tmp_path / "bmc.pem", tmp_path / "bmc.key"
    pki.server_cert.cert_chain_pems[0].write_to_path(str(cert))
    pki.server_cert.private_key_pem.write_to_path(str(key))
    with sushy_static(tree, tls=(cert, key)) as server:
        trusted = make_check(probe, server.url, auth="none", tls={"ca_file": str(pki.ca_file)})
        result = await probe(trusted, ctx)
        assert result.success, result.error
        untrusted = await probe(make_check(probe, server.url, auth="none"), ctx)
        assert not untrusted.success
        assert untrusted.error is not None
        assert untrusted.error.startswith("TLS: certificate verify failed")
        unverified = make_check(probe, server.url, auth="none", tls={"verify": False})
        assert (await probe(unverified, ctx)).success


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("https://bmc-07.chu.local", "https://bmc-07.chu.local"),
        ("https://10.0.0.7:8443/redfish/v1/", "https://10.0.0.7:8443"),
        ("http://[::1]:8000/", "http://[::1]:8000"),
    ],
)
def test_parse_target_valid(probe: RedfishProbe, target: str, expected: str) -> None:
    """A BMC base URL is normalised to its origin."""
    assert probe.parse_target(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("bmc-07:443", "must be an http or https URL with a host"),
        ("https://root:pw@bmc", "must not contain credentials"),
        ("https://bmc/redfish/v1/Systems", "must be the BMC's base URL"),
    ],
)
def test_parse_target_invalid(probe: RedfishProbe, target: str, message: str) -> None:
    """A target that is not a BMC base URL is refused with the reason."""
    with pytest.raises(ValueError, match=message):
        probe.parse_target(target)


def test_settings_validation(tmp_path: Path) -> None:
    """Credentials must go with the auth mode; a password file is read and never shown."""
    with pytest.raises(ValidationError, match="auth session needs username and password"):
        RedfishSettings.model_validate({"username": USER})
    with pytest.raises(ValidationError, match="set either password or password_file"):
        RedfishSettings.model_validate(
            {"username": USER, "password": "a", "password_file": str(tmp_path / "x")}
        )
    with pytest.raises(ValidationError, match="max_concurrency"):
        RedfishSettings.model_validate({"auth": "none", "max_concurrency": 50})
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    settings = RedfishSettings.model_validate({"username": USER, "password_file": str(secret)})
    assert settings.password is not None
    assert settings.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings) + str(settings.model_dump())
    assert RedfishSettings.model_validate(settings.model_dump()) == settings
    assert settings.health_rules()
    assert (
        RedfishSettings.model_validate({"auth": "none", "default_rules": False}).health_rules()
        == []
    )


async def test_health_engine_applies_default_rules(
    probe: RedfishProbe, sushy: Sushy, ctx: ProbeContext
) -> None:
    """The health engine takes the probe's rules: redundancy lost is DEGRADED, one PSU WARNING."""
    check = make_check(probe, sushy.url, auth="none")
    server = ComponentSpec(id="srv-dpi", kind="server", site="nord", checks=[check.id])
    engine = HealthEngine(Topology([SiteSpec(id="nord")], [server]), clock=lambda: 1000.0)
    engine.set_plan({check.id: check})
    sushy.edit(f"{ROOT}/Systems/1", lambda doc: doc["Status"].update(Health="OK"))
    engine.observe(check.id, await probe(check, ctx))
    status = engine.evaluate().components["srv-dpi"]
    assert status.state == State.DEGRADED
    assert any("power_redundancy_lost" in r for r in status.reasons), status.reasons

    def redundant(doc: Any) -> None:
        doc["Redundancy"][0]["Status"] = {"State": "Enabled", "Health": "OK"}

    sushy.edit(f"{ROOT}/Chassis/1U/Power", redundant)
    engine.observe(check.id, await probe(check, ctx))
    status = engine.evaluate().components["srv-dpi"]
    assert status.state == State.WARNING
    assert status.reasons == (
        "a power supply failed (test: power_supply_failed: server_power_supply_ok (0) == 0)",
    )


async def test_partial_read_is_a_warning_not_a_server_down(
    probe: RedfishProbe, ctx: ProbeContext
) -> None:
    """A 500 on one resource adds redfish_partial_read (WARNING) and never puts the server DOWN."""
    bmc = Bmc(FIXTURES / "rackmount", auth="none")
    async with bmc_server(bmc) as url:
        check = make_check(probe, url, auth="none")
        server = ComponentSpec(id="srv-dpi", kind="server", site="nord", checks=[check.id])
        engine = HealthEngine(Topology([SiteSpec(id="nord")], [server]), clock=lambda: 1000.0)
        engine.set_plan({check.id: check})
        engine.observe(check.id, await probe(check, ctx))
        whole = engine.evaluate().components["srv-dpi"]
        bmc.statuses[f"{ROOT}/Chassis/1U/Thermal"] = 500
        engine.observe(check.id, await probe(check, ctx))
    partial = engine.evaluate().components["srv-dpi"]
    assert whole.state == partial.state == State.DEGRADED  # the fixture lost PSU redundancy
    assert not any("redfish_partial_read" in r for r in whole.reasons)
    assert any("redfish_partial_read" in r for r in partial.reasons), partial.reasons
    assert not any("probe_failed" in r for r in partial.reasons), partial.reasons
