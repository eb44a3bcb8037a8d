"""The lab servers' BMCs: a small Redfish tree per server, generated from Python state.

Each BMC listens on its own loopback port (the redfish probe wants the BMC at the root of an
origin) and serves the service root, one System (health, PowerState) and one Chassis with the
older Power (two PSUs and their redundancy) and Thermal (an inlet temperature with thresholds,
a fan) resources, behind HTTP basic auth. Faults change the state; the tree follows.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ROOT = "/redfish/v1"
USERNAME = "vigie"
PSUS = 2
NORMAL_INLET_CELSIUS = 22.0
INLET_THRESHOLDS = (40.0, 45.0, 50.0)
"""Inlet warning, critical and fatal thresholds (°C), as an iDRAC reports them."""

Json = dict[str, Any]


def _status(ok: bool, enabled: bool = True) -> Json:
    return {"State": "Enabled" if enabled else "Disabled", "Health": "OK" if ok else "Critical"}


def _link(path: str) -> Json:
    return {"@odata.id": f"{ROOT}/{path}"}


@dataclass
class Bmc:
    """One server's BMC: its power state, PSUs, inlet temperature, and whether it answers."""

    server: str
    powered_on: bool = True
    psu_ok: list[bool] = field(default_factory=lambda: [True] * PSUS)
    inlet_celsius: float = NORMAL_INLET_CELSIUS
    answering: bool = True

    def set_psu(self, psu: int, ok: bool) -> None:
        """Mark PSU number psu (1-based, as printed on the bay) healthy or failed."""
        if not 1 <= psu <= PSUS:
            raise ValueError(f"{self.server}: psu must be 1 to {PSUS}, got {psu}")
        self.psu_ok[psu - 1] = ok

    def resource(self, path: str) -> Json | None:
        """Return the Redfish resource at path (under ROOT, no trailing slash), None if none."""
        healthy = all(self.psu_ok) and self.inlet_celsius < INLET_THRESHOLDS[1]
        warn, crit, fatal = INLET_THRESHOLDS
        resources: dict[str, Json] = {
            "": {
                "@odata.id": ROOT,
                "Id": "RootService",
                "Name": f"{self.server} BMC",
                "RedfishVersion": "1.6.0",
                "Systems": _link("Systems"),
                "Chassis": _link("Chassis"),
            },
            "Systems": {"Members": [_link("Systems/1")], "Members@odata.count": 1},
            "Systems/1": {
                "@odata.id": f"{ROOT}/Systems/1",
                "Id": "1",
                "Name": self.server,
                "PowerState": "On" if self.powered_on else "Off",
                "Status": {**_status(healthy), "HealthRollup": "OK" if healthy else "Critical"},
            },
            "Chassis": {"Members": [_link("Chassis/1")], "Members@odata.count": 1},
            "Chassis/1": {
                "@odata.id": f"{ROOT}/Chassis/1",
                "Id": "1",
                "Name": f"{self.server} chassis",
                "Status": _status(healthy),
                "Power": _link("Chassis/1/Power"),
                "Thermal": _link("Chassis/1/Thermal"),
            },
            "Chassis/1/Power": {
                "@odata.id": f"{ROOT}/Chassis/1/Power",
                "Id": "Power",
                "PowerSupplies": [
                    {"MemberId": f"PSU{i + 1}", "Name": f"PSU{i + 1}", "Status": _status(ok)}
                    for i, ok in enumerate(self.psu_ok)
                ],
                "Redundancy": [
                    {
                        "MemberId": "PSURedundancy",
                        "Name": "PSU redundancy",
                        "Mode": "N+m",
                        "Status": _status(all(self.psu_ok)),
                    }
                ],
            },
            "Chassis/1/Thermal": {
                "@odata.id": f"{ROOT}/Chassis/1/Thermal",
                "Id": "Thermal",
                "Temperatures": [
                    {
                        "MemberId": "InletTemp",
                        "Name": "Inlet Temp",
                        "ReadingCelsius": self.inlet_celsius,
                        "UpperThresholdNonCritical": warn,
                        "UpperThresholdCritical": crit,
                        "UpperThresholdFatal": fatal,
                        "Status": _status(True),
                    }
                ],
                "Fans": [
                    {
                        "MemberId": "Fan1",
                        "Name": "Fan1",
                        "Reading": 4800,
                        "ReadingUnits": "RPM",
                        "Status": _status(True),
                    }
                ],
            },
        }
        return resources.get(path)


class BmcServer:
    """Serves one Bmc over HTTP on a free loopback port, behind basic auth."""

    def __init__(self, bmc: Bmc, password: str, host: str = "127.0.0.1") -> None:
        self.bmc = bmc
        self.host = host
        self.port = 0
        self._expected = f"{USERNAME}:{password}".encode()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind a free port."""
        app = web.Application()
        app.router.add_get(ROOT, self._get)
        app.router.add_get(ROOT + "/", self._get)
        app.router.add_get(ROOT + "/{path:.+}", self._get)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the port."""
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:], validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)

    async def _get(self, request: web.Request) -> web.Response:
        """A Redfish GET: 503 when the BMC is dark, 401 without the right credentials."""
        if not self.bmc.answering:
            raise web.HTTPServiceUnavailable(text="BMC unreachable\n")
        if not self._authorized(request):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="Redfish"'})
        doc = self.bmc.resource(request.match_info.get("path", "").strip("/"))
        if doc is None:
            raise web.HTTPNotFound(text="no such resource\n")
        return web.json_response(doc)
