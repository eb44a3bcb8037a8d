"""Operator state shared by the pair (issue 15 point 3): a maintenance window ended early on
either replica ends on both, and an incident update posted on one shows on the other and rides
on both replicas' alerts alike.

Two `vigie run` processes, a two-member Alertmanager cluster and a receiver: the `pair`
fixture of conftest.py. What each replica posts to Alertmanager is read from its outbox file
(`active` table: the alert as it last posted it and re-posts it), since the cluster merges the
two replicas' posts into one alert and shows only the last one's annotations.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

from tests.ha.conftest import Pair, Replica
from tests.waiting import wait_for

SITE = "VigieSiteIncident"
UPDATE = "La DSI rétablit le courant du datacenter Nord"


async def quiet(pair: Pair) -> None:
    """Wait until nothing more is due from the Alertmanagers or a replica's direct sink."""
    await wait_for(pair.settled, "the Alertmanagers to flush every group twice", 30)
    await asyncio.sleep(4.5)  # the handoff (4 s): a direct notification left to a peer is due
    await wait_for(pair.settled, "the Alertmanagers to flush again", 30)


async def get(pair: Pair, replica: Replica, path: str) -> Any:
    """A replica's JSON answer."""
    async with pair.session.get(f"{replica.url}{path}") as response:
        assert response.status == 200, (path, response.status)
        return await response.json()


async def site_incident(pair: Pair, replica: Replica) -> dict[str, Any] | None:
    """The replica's open incident of Datacenter Nord."""
    incidents = await get(pair, replica, "/api/v1/incidents")
    return next((i for i in incidents if i["key"] == "site:nord"), None)


def fired(replica: Replica) -> int:
    """How many times a replica logged firing the site incident."""
    return sum(e["alertname"] == SITE for e in replica.events("alert_fired"))


def posted(replica: Replica) -> dict[str, str] | None:
    """The annotations of the site incident's alert as the replica last posted it (its
    outbox's `active` row, what it re-posts to every Alertmanager member)."""
    db = sqlite3.connect(f"{(replica.state / 'outbox.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT alert FROM active").fetchall()
    finally:
        db.close()
    for (text,) in rows:
        alert = json.loads(text)
        if alert["labels"].get("alertname") == SITE and alert["ends_at"] is None:
            annotations: dict[str, str] = alert["annotations"]
            return annotations
    return None


async def test_a_window_opened_on_one_and_ended_on_the_other_ends_on_both(pair: Pair) -> None:
    """Nord opens a window on its datacenter, Bellevue reads it from the cluster; the site
    fails with no page. Bellevue's operator ends the window: its silence is expired, Nord's
    pull ends Nord's window too, and both replicas page the site incident: once through the
    cluster, once through the webhook (Bellevue sends)."""
    nord, bellevue = pair.replicas["nord"], pair.replicas["bellevue"]
    end = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    window = {"target": "nord", "end": end, "reason": "UPS replacement"}
    async with pair.session.post(f"{nord.url}/api/v1/maintenance", json=window) as response:
        assert response.status == 201, await response.text()

    async def pulled() -> str | None:
        windows = await get(pair, bellevue, "/api/v1/maintenance")
        found = [w for w in windows if w["source"] == "alertmanager" and w["target"] == "nord"]
        return found[0]["id"] if found else None

    await wait_for(pulled, "Bellevue to read Nord's window from the cluster", 30)
    bellevue_window = await pulled()
    pair.targets.down.add("nord")

    async def held(replica: Replica) -> bool:
        found = await site_incident(pair, replica)
        return found is not None and found["maintenance"]

    for replica in (nord, bellevue):
        await wait_for(partial(held, replica), f"{replica.name}'s incident, held", 30)
    await quiet(pair)
    assert pair.am_notifications(SITE, "firing") == [] and pair.direct(SITE, "firing") == []
    assert fired(nord) == fired(bellevue) == 0

    url = f"{bellevue.url}/api/v1/maintenance/{bellevue_window}"
    async with pair.session.delete(url) as response:
        assert response.status == 200, await response.text()
        ended = await response.json()
    assert ended["ended_early"]["by"] == "anonymous"  # the pair runs without web auth

    async def nord_ended() -> bool:
        windows: list[Any] = await get(pair, nord, "/api/v1/maintenance")
        return not windows

    await wait_for(nord_ended, "Nord to end its window (its silence gone)", 30)
    assert nord.events("maintenance_ended_by_peer")
    for replica in (nord, bellevue):
        await wait_for(partial(fired, replica), f"{replica.name} to page the site incident", 30)
    await wait_for(lambda: pair.am_notifications(SITE, "firing"), "the page through the cluster")
    await wait_for(lambda: pair.direct(SITE, "firing"), "the page through the webhook", 30)
    await quiet(pair)
    assert len(pair.am_notifications(SITE, "firing")) == 1
    direct = pair.direct(SITE, "firing")
    assert [a["annotations"].get("vigie_instance") for a in direct] == ["bellevue"]
    for am in pair.ams:  # the window's silence is expired in the whole cluster
        async with pair.session.get(f"{am.url}/api/v2/silences") as response:
            silences = await response.json()
        assert not [s for s in silences if s["status"]["state"] == "active"], silences


async def test_an_update_posted_on_one_replica_shows_and_annotates_on_both(pair: Pair) -> None:
    """The site fails and is paged; an update posted on Nord's incident is pulled by Bellevue
    (shown on its incident page and API, by its author at its time), and both replicas post
    the incident's alert with the same update annotations."""
    nord, bellevue = pair.replicas["nord"], pair.replicas["bellevue"]
    pair.targets.down.add("nord")
    await wait_for(lambda: pair.am_notifications(SITE, "firing"), "the site page", 30)
    mine = await site_incident(pair, nord)
    theirs = await site_incident(pair, bellevue)
    assert mine is not None and theirs is not None
    body = {"text": UPDATE, "expected_recovery": "16:00"}
    url = f"{nord.url}/api/v1/incidents/{quote(mine['id'], safe='')}/updates"
    async with pair.session.post(url, json=body) as response:
        assert response.status == 201, await response.text()
        sent = await response.json()

    async def shown() -> list[dict[str, Any]]:
        path = f"/api/v1/incidents/{quote(theirs['id'], safe='')}/updates"
        found: list[dict[str, Any]] = await get(pair, bellevue, path)
        return found

    await wait_for(shown, "Bellevue to show Nord's update", 30)
    [update] = await shown()
    assert (update["text"], update["by"], update["at"], update["expected_recovery"]) == (
        sent["text"],
        sent["by"],
        sent["at"],
        sent["expected_recovery"],
    )
    async with pair.session.get(f"{bellevue.url}/incident/{quote(theirs['id'], safe='')}") as r:
        assert UPDATE in await r.text()
    audit = await get(pair, bellevue, "/api/v1/audit")
    assert [(a["via"], a["who"]) for a in audit if a["action"] == "incident_update"] == [
        ("replica nord", "anonymous")
    ]

    def alike() -> bool:
        both = [posted(nord), posted(bellevue)]
        return all(a is not None and a.get("update") == UPDATE for a in both)

    await wait_for(alike, "both replicas to post the update on the incident's alert", 30)
    keys = ("update", "update_by", "update_at", "expected_recovery")
    first, second = posted(nord), posted(bellevue)
    assert first is not None and second is not None
    assert {k: first.get(k) for k in keys} == {k: second.get(k) for k in keys}
    annotations = [first]
    held = await pair.held(SITE)
    assert held and all(a["annotations"].get("update") == UPDATE for a in held)
    assert {a["annotations"]["update_at"] for a in held} == {annotations[0]["update_at"]}
