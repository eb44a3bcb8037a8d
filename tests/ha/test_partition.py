"""A partition between the two datacenters: pages may double on the direct sinks, none is lost.

The replicas reach each other through relays the test cuts (conftest.Relay, a firewall's cut:
connections reset, new ones unanswered): each replica then sees its peer dead and becomes a
sender, so Vigie's webhook gets the page from both (the duplicate docs/ha.md accepts), while
Alertmanager, still one cluster, notifies once. Healed, the pair converges back to one sender.
In the second case the Alertmanager members gossip through relays too (each advertises its
relay's address), and each replica reaches the other datacenter's member through one: the cut
splits the cluster, and each half notifies once.

The fault starts at a random offset within a check interval of the cut, and ends at one of
the heal (seeded: the seed is printed, so shown on failure; PARTITION_SEED=<seed> replays it).
"""

from __future__ import annotations

import asyncio
import os
import random
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from tests.alerting.conftest import Alertmanager, AlertmanagerFactory, Receiver
from tests.ha.conftest import NAMES, Pair, Replica, cluster_size, start_pair
from tests.waiting import wait_for

SITE = "VigieSiteIncident"
LOST = "VigieRedundancyLost"
CHECK_INTERVAL = 0.5
"""The checks' interval in conftest.ha_config: the span of the random phases."""


def seeded() -> random.Random:
    """The random phases' generator; its seed printed (pytest shows it on failure)."""
    seed = int(os.environ.get("PARTITION_SEED") or random.randrange(2**32))
    print(f"PARTITION_SEED={seed}")
    return random.Random(seed)


async def quiet(pair: Pair) -> None:
    """Wait until nothing more is due from the Alertmanagers or a replica's direct sink."""
    await wait_for(pair.settled, "the Alertmanagers to flush every group twice", 30)
    await asyncio.sleep(4.5)  # the handoff (4 s): a direct notification left to a peer is due
    await wait_for(pair.settled, "the Alertmanagers to flush again", 30)


def instances(alerts: list[dict[str, Any]]) -> list[str]:
    """The vigie_instance annotation of each alert, sorted."""
    return sorted(str(a["annotations"].get("vigie_instance")) for a in alerts)


def half(receiver: Receiver, member: str, alertname: str, status: str) -> list[dict[str, Any]]:
    """The alerts one Alertmanager member notified with that name and status."""
    return [
        alert
        for body in receiver.on(f"/am/{member}")
        for alert in body["alerts"]
        if alert["labels"]["alertname"] == alertname and alert["status"] == status
    ]


def lost(alerts: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    """The VigieRedundancyLost alerts about one replica's component."""
    return [a for a in alerts if a["labels"]["component"] == component]


async def sends(pair: Pair, name: str, sender: bool = True) -> bool:
    """Whether a replica answers and says it sends (or not) to the direct sinks."""
    status = await pair.replica_status(name)
    return status is not None and status["sender"] is sender


def far_member_recovered(replica: Replica) -> bool:
    """Whether a replica logged an Alertmanager sink failing, then delivering again."""
    failed = {e["sink"] for e in replica.events("alert_delivery_failed")}
    recovered = {e["sink"] for e in replica.events("alert_sink_recovered")}
    return any(s.startswith("alertmanager:") for s in failed & recovered)


async def sized(pair: Pair, am: Alertmanager, size: int) -> bool:
    """Whether an Alertmanager member sees that many members in its cluster (itself included)."""
    return await cluster_size(am, pair.session) == size


async def cut_while_nord_fails(pair: Pair, rng: random.Random) -> None:
    """Cut every link, start Nord's fault within a check interval; wait for both to see it."""
    pair.partition()
    await asyncio.sleep(rng.uniform(0, CHECK_INTERVAL))  # the random phase, not a wait
    pair.targets.down.add("nord")
    for a, b in (NAMES, NAMES[::-1]):
        await wait_for(partial(pair.sees_alive, a, b, alive=False), f"{a} to see {b} dead")


async def heal_while_nord_recovers(pair: Pair, rng: random.Random) -> None:
    """Heal every link, end the fault within a check interval; wait for one sender again."""
    pair.heal()
    await asyncio.sleep(rng.uniform(0, CHECK_INTERVAL))  # the random phase, not a wait
    pair.targets.down.clear()
    for a, b in (NAMES, NAMES[::-1]):
        await wait_for(partial(pair.sees_alive, a, b), f"{a} to see {b} alive again")
    await wait_for(partial(sends, pair, "nord", False), "Nord to leave the sending to Bellevue")
    assert await sends(pair, "bellevue")


async def test_partition_both_replicas_send_direct_the_cluster_pages_once(
    tmp_path: Path,
    alertmanagers: AlertmanagerFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
) -> None:
    """Cut between the replicas while Datacenter Nord fails: each sees the other dead and
    sends the webhook page (twice in all, once each); Alertmanager's cluster, which both still
    reach, notifies once. Healed, Bellevue alone sends again; each resolve comes once through
    the cluster, once or twice through the webhook."""
    rng = seeded()
    async with start_pair(tmp_path, alertmanagers, receiver, session, relayed=True) as pair:
        await cut_while_nord_fails(pair, rng)
        await wait_for(lambda: pair.am_notifications(SITE, "firing"), "the site page", 30)
        await wait_for(lambda: len(pair.direct(SITE, "firing")) == 2, "both direct pages", 30)
        await quiet(pair)
        assert [await sends(pair, n) for n in NAMES] == [True, True]  # both are senders
        held = await pair.held(SITE)
        assert len(held) == 2, held  # one alert per member: both replicas' posts merged
        assert held[0]["labels"] == held[1]["labels"]
        assert len(pair.am_notifications(SITE, "firing")) == 1
        assert instances(pair.direct(SITE, "firing")) == ["bellevue", "nord"]
        # Nord, cut off, pages Bellevue's loss (both paths: it is a sender); Bellevue's view
        # of Nord's loss joins the site incident when it forms within lost_hold (3 s).
        assert len(lost(pair.am_notifications(LOST, "firing"), "vigie-bellevue")) == 1
        assert instances(lost(pair.direct(LOST, "firing"), "vigie-bellevue")) == ["nord"]

        await heal_while_nord_recovers(pair, rng)
        await wait_for(lambda: pair.am_notifications(SITE, "resolved"), "the resolve", 30)
        await wait_for(lambda: pair.direct(SITE, "resolved"), "the direct resolve", 30)
        await quiet(pair)
        assert len(pair.am_notifications(SITE, "firing")) == 1
        assert len(pair.am_notifications(SITE, "resolved")) == 1
        assert len(lost(pair.am_notifications(LOST, "resolved"), "vigie-bellevue")) == 1
        direct = instances(pair.direct(SITE, "resolved"))
        # Bellevue resolves; Nord too if the fault ended before it saw Bellevue again.
        assert direct in (["bellevue"], ["bellevue", "nord"]), direct
        assert len(pair.direct(SITE, "firing")) == 2  # nothing paged again
        # Nord sent the page of Bellevue's loss, so Nord sends its resolve, though it stops
        # being sender the moment it sees Bellevue again (Bellevue never had that alert).
        await wait_for(
            lambda: lost(pair.direct(LOST, "resolved"), "vigie-bellevue"),
            "the direct resolve of Bellevue's loss",
            30,
        )
        assert instances(lost(pair.direct(LOST, "resolved"), "vigie-bellevue")) == ["nord"]


async def test_partition_splitting_the_alertmanager_cluster_each_half_notifies_once(
    tmp_path: Path,
    alertmanagers: AlertmanagerFactory,
    receiver: Receiver,
    session: aiohttp.ClientSession,
) -> None:
    """The cut splits the Alertmanager cluster too (each member alone, each replica reaching
    its own datacenter's member only): each half notifies the site page once, from its own
    replica, and the webhook has it from both. Healed, the cluster is whole again, no page is
    repeated, and the resolve comes once or twice."""
    rng = seeded()
    async with start_pair(
        tmp_path, alertmanagers, receiver, session, relayed=True, split_alertmanagers=True
    ) as pair:
        await cut_while_nord_fails(pair, rng)
        for i, am in enumerate(pair.ams):
            await wait_for(partial(sized, pair, am, 1), f"am{i} to see its peer gone", 30)
        for path in ("/am/am0", "/am/am1"):
            await wait_for(
                partial(receiver.notified, path, SITE, "firing"), f"the site page on {path}", 30
            )
        await quiet(pair)
        # am0 stands in Bellevue, am1 in Nord: each notified once, its own replica's alert.
        assert instances(half(receiver, "am0", SITE, "firing")) == ["bellevue"]
        assert instances(half(receiver, "am1", SITE, "firing")) == ["nord"]
        assert instances(pair.direct(SITE, "firing")) == ["bellevue", "nord"]

        await heal_while_nord_recovers(pair, rng)
        for i, am in enumerate(pair.ams):
            await wait_for(partial(sized, pair, am, 2), f"am{i} to rejoin the cluster", 30)
        for name, replica in pair.replicas.items():  # its outbox held the far member's posts
            await wait_for(
                partial(far_member_recovered, replica), f"{name} to reach the far member", 30
            )
        await wait_for(lambda: pair.am_notifications(SITE, "resolved"), "the resolve", 30)
        await wait_for(lambda: pair.direct(SITE, "resolved"), "the direct resolve", 30)
        await quiet(pair)
        for member in ("am0", "am1"):  # rejoined, neither half pages again
            assert len(half(receiver, member, SITE, "firing")) == 1, member
        assert 1 <= len(pair.am_notifications(SITE, "resolved")) <= 2
        assert 1 <= len(pair.direct(SITE, "resolved")) <= 2
        assert len(pair.direct(SITE, "firing")) == 2
