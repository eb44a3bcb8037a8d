"""A test hospital: 2 sites, 4 UPS, 2 SAN arrays, 20 servers and 40 applications, as config."""

from __future__ import annotations

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
