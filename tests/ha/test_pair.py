"""Two replicas, one page: Alertmanager's cluster deduplicates, one replica sends direct sinks.

Each test runs two `vigie run` processes on one config (Vigie Bellevue and Vigie Nord, one per
datacenter), a two-member Alertmanager cluster and a receiver; see conftest.py. "Exactly one"
is asserted once both Alertmanagers flushed every group twice since their last receipt, and
the direct webhook had the handoff to deliver: the evidence that nothing more was due.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from tests.ha.conftest import Pair, Replica
from tests.waiting import wait_for

SITE = "VigieSiteIncident"
LOST = "VigieRedundancyLost"


async def quiet(pair: Pair) -> None:
    """Wait until nothing more is due from the Alertmanagers or a replica's direct sink."""
    await wait_for(pair.settled, "the Alertmanagers to flush every group twice", 30)
    await asyncio.sleep(4.5)  # the handoff (4 s): a direct notification left to a peer is due
    await wait_for(pair.settled, "the Alertmanagers to flush again", 30)


def fired(replica: Replica, alertname: str) -> int:
    """How many times a replica logged firing an alert of that name."""
    return sum(e["alertname"] == alertname for e in replica.events("alert_fired"))


def instances(alerts: list[dict[str, Any]]) -> list[str | None]:
    """The vigie_instance annotation of each alert."""
    return [a["annotations"].get("vigie_instance") for a in alerts]


async def test_site_failure_pages_once_through_the_cluster_and_the_direct_sink(
    pair: Pair,
) -> None:
    """Both replicas see Datacenter Nord fail and post the site incident with the same labels
    to both Alertmanagers: the cluster holds one alert and notifies once. The webhook, which
    nothing deduplicates, is sent by Vigie Bellevue alone (first by name). The resolve too."""
    pair.targets.down.add("nord")
    await wait_for(lambda: pair.am_notifications(SITE, "firing"), "the site page", 30)
    for name, replica in pair.replicas.items():
        await wait_for(partial(fired, replica, SITE), f"{name} to fire the site incident itself")
    await quiet(pair)
    held = await pair.held(SITE)
    assert len(held) == 2, held  # one alert per member: both replicas' posts merged
    assert held[0]["labels"] == held[1]["labels"]
    assert "vigie_instance" not in held[0]["labels"]
    assert len(pair.am_notifications(SITE, "firing")) == 1
    direct = pair.direct(SITE, "firing")
    assert instances(direct) == ["bellevue"], direct
    nord = pair.replicas["nord"].events("alert_left_to_peer")
    assert nord, "Vigie Nord must leave the webhook to Vigie Bellevue"

    pair.targets.down.clear()
    await wait_for(lambda: pair.am_notifications(SITE, "resolved"), "the resolve", 30)
    await wait_for(lambda: pair.direct(SITE, "resolved"), "the direct resolve", 30)
    await quiet(pair)
    assert len(pair.am_notifications(SITE, "firing")) == 1
    assert len(pair.am_notifications(SITE, "resolved")) == 1
    assert instances(pair.direct(SITE, "resolved")) == ["bellevue"]
    assert len(pair.direct(SITE, "firing")) == 1


async def test_sender_killed_mid_incident_survivor_resolves(pair: Pair) -> None:
    """SIGKILL of Vigie Bellevue (the sender) mid-incident, then the fault heals: still one page
    through the cluster and one through the webhook, and Vigie Nord delivers both resolves."""
    pair.targets.down.add("nord")
    await wait_for(lambda: pair.am_notifications(SITE, "firing"), "the site page", 30)
    await wait_for(lambda: pair.direct(SITE, "firing"), "the direct page", 30)
    # Killed within the handoff, Bellevue might not have delivered: Nord would send too (a
    # duplicate, accepted). Past it, Nord has left the page to Bellevue for good.
    await wait_for(
        lambda: pair.replicas["nord"].events("alert_left_to_peer"), "Nord to leave the page", 30
    )
    assert "Vigie Bellevue alive" in await pair.page("nord")
    pair.replicas["bellevue"].kill()
    await wait_for(
        lambda: pair.sees_alive("nord", "bellevue", alive=False), "Nord to see Bellevue dead"
    )
    page = await pair.page("nord")  # the status page says who answers and who is lost
    assert "Answered by Vigie Nord" in page and "Vigie Bellevue lost" in page
    await wait_for(lambda: pair.am_notifications(LOST, "firing"), "Bellevue's loss paged", 30)
    pair.targets.down.clear()
    await wait_for(lambda: pair.am_notifications(SITE, "resolved"), "the resolve", 30)
    await wait_for(lambda: pair.direct(SITE, "resolved"), "the direct resolve", 30)
    await quiet(pair)
    assert len(pair.am_notifications(SITE, "firing")) == 1
    resolved = pair.am_notifications(SITE, "resolved")
    assert instances(resolved) == ["nord"], resolved
    assert instances(pair.direct(SITE, "firing")) == ["bellevue"]
    assert instances(pair.direct(SITE, "resolved")) == ["nord"]
    lost = pair.am_notifications(LOST, "firing")
    assert len(lost) == 1
    assert lost[0]["labels"]["component"] == "vigie-bellevue"
    assert "Vigie Bellevue is DOWN" in lost[0]["annotations"]["summary"]


async def test_replica_dies_with_its_site_survivor_names_it(pair: Pair) -> None:
    """Datacenter Nord falls with its replica (devices and process together): Vigie Bellevue
    pages the site incident once, and the incident names the lost replica."""
    pair.targets.down.add("nord")
    pair.replicas["nord"].kill()
    await wait_for(lambda: pair.am_notifications(SITE, "firing"), "the site page", 30)

    async def named() -> bool:
        held = await pair.held(SITE)
        return bool(held) and all("Vigie Nord lost" in a["annotations"]["summary"] for a in held)

    await wait_for(named, "the site incident to name Vigie Nord", 30)
    await quiet(pair)
    pages = pair.am_notifications(SITE, "firing")
    assert len(pages) == 1, pages
    assert pages[0]["labels"]["site"] == "nord"
    assert instances(pair.direct(SITE, "firing")) == ["bellevue"]
    # Vigie Nord's loss is part of the site incident, not a page of its own.
    assert pair.am_notifications(LOST, "firing") == []


async def test_replica_restarting_mid_incident_sends_the_same_alert(pair: Pair) -> None:
    """A replica restarting mid-incident posts the incident with its peer's labels: the
    cluster still holds one alert and pages once."""
    pair.targets.down.add("bellevue")
    await wait_for(lambda: pair.am_notifications(SITE, "firing"), "the site page", 30)
    nord = pair.replicas["nord"]
    await nord.stop()
    shutil.rmtree(nord.state)  # a replica with no memory: as one starting late
    before = fired(nord, SITE)
    await nord.start()
    await wait_for(lambda: pair.sees_alive("bellevue", "nord"), "Nord back", 30)
    await wait_for(
        lambda: fired(nord, SITE) > before,
        "Nord to post the incident afresh",
    )
    await quiet(pair)
    held = await pair.held(SITE)
    assert len(held) == 2, held
    assert len(pair.am_notifications(SITE, "firing")) == 1


async def test_maintenance_opened_on_one_replica_holds_the_others_pages(pair: Pair) -> None:
    """A window opened on Nord's API becomes an Alertmanager silence, which the cluster shares
    and Bellevue reads into its own book: Nord's datacenter then fails with no page from
    either replica, through Alertmanager or the webhook."""
    nord, bellevue = pair.replicas["nord"], pair.replicas["bellevue"]
    end = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    window = {"target": "nord", "end": end, "reason": "UPS replacement"}
    async with pair.session.post(f"{nord.url}/api/v1/maintenance", json=window) as response:
        assert response.status == 201, await response.text()

    async def shared() -> bool:
        async with pair.session.get(f"{bellevue.url}/api/v1/maintenance") as response:
            windows = await response.json()
        return any(
            w["target"] == "nord"
            and w["source"] == "alertmanager"
            and w["reason"] == "UPS replacement"
            for w in windows
        )

    await wait_for(shared, "Bellevue to take the window from the cluster's silences", 30)
    for am in pair.ams:  # posted to one member, gossiped to the other
        async with pair.session.get(f"{am.url}/api/v2/silences") as response:
            silences = await response.json()
        assert any(
            s["status"]["state"] == "active" and s["createdBy"] == "vigie nord" for s in silences
        ), silences

    pair.targets.down.add("nord")

    async def in_maintenance(replica: Replica) -> bool:
        async with pair.session.get(f"{replica.url}/api/v1/incidents") as response:
            incidents = await response.json()
        return any(i["site"] == "nord" and i["maintenance"] for i in incidents)

    for replica in (nord, bellevue):
        await wait_for(partial(in_maintenance, replica), f"{replica.name}'s held incident", 30)
    await quiet(pair)
    assert pair.am_notifications(SITE, "firing") == []
    assert pair.direct(SITE, "firing") == []
    assert fired(nord, SITE) == fired(bellevue, SITE) == 0


async def test_both_alertmanagers_down_then_one_back_the_page_is_not_lost(pair: Pair) -> None:
    """One Alertmanager member stopped, then the other: the site fails meanwhile, both
    replicas keep the page in their outboxes, and it is notified once when one member is back."""
    am0, am1 = pair.ams
    await am1.stop()
    await am0.stop()
    pair.targets.down.add("nord")
    for name, replica in pair.replicas.items():
        await wait_for(partial(fired, replica, SITE), f"{name} to fire the site incident", 30)
    assert pair.am_notifications(SITE, "firing") == []
    await am0.start(pair.session)
    await wait_for(lambda: pair.am_notifications(SITE, "firing"), "the page after the outage", 30)
    await wait_for(lambda: am0.settled(pair.session), "the member to flush twice", 30)
    assert len(pair.am_notifications(SITE, "firing")) == 1
    assert len([a for a in await am0.alerts(pair.session) if a["labels"]["alertname"] == SITE]) == 1
