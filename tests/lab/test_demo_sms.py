"""The demo hospital pages its on-call through the lab's SMS gateway, whose page shows it."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from tests.waiting import wait_for
from vigie.monitor.demo import running_demo

SPEED = 20.0
LINK = re.compile(r"ACK (http://\S+)")


async def test_power_cut_texts_the_on_call_and_the_link_acknowledges() -> None:
    """The power cut sends an SMS with a link; /sms lists it; posting the link acknowledges."""
    async with running_demo("127.0.0.1:0") as demo:
        assert demo.sms is not None
        sms = demo.sms
        await asyncio.wait_for(demo.daemon.scheduler.first_round_done.wait(), 60)
        demo.controller.start("power-cut", SPEED)
        await wait_for(lambda: sms.received, "an SMS at the lab's gateway", within=120)
        first = sms.received[0]
        assert first.to.startswith("+3360000000")
        assert first.text.startswith("Vigie: ")
        match = LINK.search(first.text)
        assert match is not None and match.group(1).startswith(demo.url + "/ack/")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{sms.url}/sms") as response:
                page = await response.text()
            assert "Passerelle SMS" in page and f"href='{match.group(1)}'" in page
            async with session.post(match.group(1)) as response:
                assert response.status == 200
                assert "Pris en compte par" in await response.text()
            async with session.get(f"{demo.url}/api/v1/escalations") as response:
                escalations = await response.json()
        assert any(e["acknowledged_via"] == "link" for e in escalations)
