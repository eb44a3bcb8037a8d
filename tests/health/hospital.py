"""Test hospitals as config: a fixed small one, and generated ones of any size from a seed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

APPS = [
    ("dpi", "Dossier patient", 1, "Procédure dégradée DP-12: dossiers papier, appeler le 4412"),
    ("labo", "Résultats de laboratoire", 1, "Résultats par fax depuis le labo, poste 5120"),
    ("pacs", "Imagerie PACS", 2, "Consulter les images sur la console de la modalité"),
    ("rdv", "Prise de rendez-vous", 2, "Agenda papier, rappeler les patients"),
    ("mail", "Messagerie", 3, "Téléphone et messagerie sécurisée de secours"),
    ("intranet", "Intranet", 4, ""),
]


def hospital(base_url: str = "http://127.0.0.1:9", interval: str = "1s") -> dict[str, Any]:
    """Return the config of the test hospital; each component has one http check at base_url."""
    sites = [
        {"id": "nord", "name": "Datacenter Nord"},
        {"id": "nord-salle-1", "name": "Nord salle 1", "parent": "nord"},
        {"id": "nord-salle-2", "name": "Nord salle 2", "parent": "nord"},
        {"id": "bellevue", "name": "Datacenter Bellevue"},
    ]
    comps: list[dict[str, Any]] = []

    def add(cid: str, kind: str, site: str, **extra: Any) -> None:
        comps.append({"id": cid, "kind": kind, "site": site, "checks": [f"chk-{cid}"], **extra})

    add("ups-nord-1", "ups", "nord-salle-1")
    add("ups-nord-2", "ups", "nord-salle-2")
    add("ups-bellevue-1", "ups", "bellevue")
    add("ups-bellevue-2", "ups", "bellevue")
    add("san-nord", "san_array", "nord-salle-1", powered_by=["ups-nord-1", "ups-nord-2"])
    add("san-bellevue", "san_array", "bellevue", powered_by=["ups-bellevue-1", "ups-bellevue-2"])
    for i in range(20):
        site, san, ups = (
            (("nord-salle-1" if i < 5 else "nord-salle-2"), "san-nord", "nord")
            if (i < 10)
            else ("bellevue", "san-bellevue", "bellevue")
        )
        add(
            f"srv-{i:02d}",
            "server",
            site,
            depends_on=[san],
            powered_by=[f"ups-{ups}-1", f"ups-{ups}-2"],
        )
    for i in range(40):
        code, name, tier, degraded = APPS[i % len(APPS)]
        cid = f"app-{code}-{i:02d}"
        server = f"srv-{i % 20:02d}"
        deps: list[Any] = [server]
        if i >= 30:  # these run on both sites: one server per site is enough
            deps = [{"any_of": [f"srv-{i % 10:02d}", f"srv-{10 + i % 10:02d}"], "need": 1}]
        site = "nord-salle-1" if i % 20 < 10 else "bellevue"
        add(
            cid,
            "application",
            site,
            name=f"{name} {i:02d}",
            criticality=tier,
            degraded_mode=degraded,
            runbook_url=f"https://wiki.chu.local/runbooks/{code}",
            team="astreinte-dsi",
            depends_on=deps,
        )
    checks = [
        {
            "id": c["checks"][0],
            "kind": "http",
            "target": f"{base_url}/{c['id']}",
            "interval": interval,
            "timeout": "500ms",
            "labels": {"component": c["id"]},
        }
        for c in comps
    ]
    rules = [
        {
            "name": "on_battery",
            "expr": "ups_on_battery == 1",
            "severity": "warning",
            "selector": {},
            "checks": [f"chk-{c['id']}" for c in comps if c["kind"] == "ups"],
        },
        {
            "name": "runtime_low",
            "expr": "ups_battery_runtime_seconds < 600",
            "severity": "down",
            "checks": [f"chk-{c['id']}" for c in comps if c["kind"] == "ups"],
        },
    ]
    return {"sites": sites, "components": comps, "checks": checks, "rules": rules}


# --- Generated hospitals ---------------------------------------------------------------------

GEN_INTERVALS = (5.0, 10.0, 15.0)
GEN_TIMEOUT = 2.0


def generated_hospital(
    seed: int,
    *,
    datacenters: Sequence[str] = ("nord", "sud"),
    rooms: int = 2,
    hypervisors: int = 24,
    vms_per_host: int = 2,
    apps: int = 240,
    checks_per_component: int = 1,
    intervals: Sequence[float] = GEN_INTERVALS,
) -> dict[str, Any]:
    """Return a config: datacenters of `rooms` rooms each, built at random from a seed.

    Per room an A/B UPS pair, a PDU per UPS, a switch on both PDUs and `hypervisors` servers
    (on the room's switch, the datacenter's SAN array and both PDUs). Per datacenter a SAN
    array on the PDUs of its first room. VMs run on a random hypervisor; applications (tiers
    1 to 4) need a VM, and one in three has a VM in the next datacenter too (any_of). Each
    check has its own interval (one of `intervals`). The defaults give 2 + 4 x (2+2+1+24) +
    192 + 240 = 550 components. Same seed, same hospital. The property test and the health
    bench (thousands of components, several checks each) both build theirs here.
    """
    rng = random.Random(seed)
    dcs = tuple(datacenters)
    sites: list[dict[str, Any]] = []
    comps: list[dict[str, Any]] = []

    def add(cid: str, kind: str, site: str, **extra: Any) -> None:
        checks = [f"chk-{cid}"] + [f"chk-{cid}-{k}" for k in range(1, checks_per_component)]
        comps.append({"id": cid, "kind": kind, "site": site, "checks": checks, **extra})

    vms: dict[str, list[str]] = {}
    for dc in dcs:
        sites.append({"id": dc, "name": f"Datacenter {dc.capitalize()}"})
        room_ids = [f"{dc}-salle-{r + 1}" for r in range(rooms)]
        sites += [{"id": room, "name": room, "parent": dc} for room in room_ids]
        hosts: list[str] = []
        for room in room_ids:
            for side in "ab":
                add(f"ups-{room}-{side}", "ups", room)
                add(f"pdu-{room}-{side}", "pdu", room, powered_by=[f"ups-{room}-{side}"])
            feeds = [f"pdu-{room}-a", f"pdu-{room}-b"]
            add(f"sw-{room}", "switch", room, powered_by=feeds)
            for i in range(hypervisors):
                host = f"hv-{room}-{i:02d}"
                hosts.append(host)
                add(
                    host,
                    "server",
                    room,
                    depends_on=[f"san-{dc}", f"sw-{room}"],
                    powered_by=feeds,
                )
        add(f"san-{dc}", "san_array", room_ids[0], powered_by=[f"pdu-{room_ids[0]}-a"])
        comps[-1]["powered_by"].append(f"pdu-{room_ids[0]}-b")
        vms[dc] = []
        for i in range(hypervisors * rooms * vms_per_host):
            host = rng.choice(hosts)
            vm = f"vm-{dc}-{i:03d}"
            vms[dc].append(vm)
            add(vm, "vm", _room_of(host), depends_on=[host])
    room_of = {c["id"]: c["site"] for c in comps}
    for i in range(apps):
        dc = dcs[i % len(dcs)]
        code, name, _, degraded = APPS[i % len(APPS)]
        vm = rng.choice(vms[dc])
        deps: list[Any] = [vm]
        if rng.random() < 1 / 3:  # runs on both sites: one VM per site is enough
            other = rng.choice(vms[dcs[(i + 1) % len(dcs)]])
            deps = [{"any_of": [vm, other], "need": 1}]
        add(
            f"app-{code}-{i:03d}",
            "application",
            room_of[vm],
            name=f"{name} {i:03d}",
            criticality=rng.randint(1, 4),
            degraded_mode=degraded,
            runbook_url=f"https://wiki.chu.local/runbooks/{code}",
            team="astreinte-dsi",
            depends_on=deps,
        )
    checks = [
        {
            "id": check_id,
            "kind": "http",
            "target": f"http://127.0.0.1:9/{c['id']}",
            "interval": f"{rng.choice(intervals):g}s",
            "timeout": f"{GEN_TIMEOUT:g}s",
            "labels": {"component": c["id"]},
        }
        for c in comps
        for check_id in c["checks"]
    ]
    rules = [
        {
            "name": "on_battery",
            "expr": "ups_on_battery == 1",
            "severity": "warning",
            "checks": [c["checks"][0] for c in comps if c["kind"] == "ups"],
        }
    ]
    return {"sites": sites, "components": comps, "checks": checks, "rules": rules}


def _room_of(host: str) -> str:
    """Return the room of a generated hypervisor from its id (hv-<room>-<n>)."""
    return host.removeprefix("hv-").rsplit("-", 1)[0]
