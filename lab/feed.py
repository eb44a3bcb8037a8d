"""The lab-results HL7 feed of the simulated hospital: an interface engine in Mirth's style.

The laboratory's system sends ORU^R01 results through an interface engine to the wards. The
lab simulates that engine's two faces: its MLLP port (which ACKs every message, as a healthy
engine does whether or not the lab sends anything) and its REST API's channel statistics,
whose `received` counter grows while the lab sends. The `lab-feed-silent` scenario stops the
sending: every port stays up, only the counter stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["CHANNEL_ID", "CHANNEL_NAME", "SILENCE", "Feed", "MllpEngine", "ack", "feed_routes"]

CHANNEL_ID = "8b1e7f52-3c4d-4a6b-9e21-5f0c7d3a1b64"
CHANNEL_NAME = "LAB-RESULTS-ORU"
SERVER_ID = "4c3d2b1a-9f8e-4d7c-b6a5-0e1f2a3b4c5d"
RATE = 1.0
"""Result messages a second while the lab sends (a busy lab, so a demo sees it move)."""
SILENCE = 1800.0
"""Seconds without a result message before config/demo.yaml's rule pages (30 minutes); the
demo divides it by its --speed."""
MAX_FRAME = 64 * 1024
"""Bytes of an MLLP frame the engine reads before it drops the connection."""


@dataclass
class Feed:
    """The channel's counter: grows at `rate` a second while sending, frozen otherwise."""

    rate: float = RATE
    sending: bool = True
    base: float = 0.0
    since: float | None = None

    def received(self, now: float) -> int:
        """Return the messages received so far."""
        if not self.sending or self.since is None:
            return math.floor(self.base)
        return math.floor(self.base + (now - self.since) * self.rate)

    def set_sending(self, sending: bool, now: float) -> None:
        """Start or stop the lab's sending at now, the count so far kept."""
        self.base = float(self.received(now)) if self.since is not None else self.base
        self.sending, self.since = sending, now

    def statistics(self, now: float) -> dict[str, Any]:
        """Return Mirth's ChannelStatistics of the channel."""
        received = self.received(now)
        return {
            "serverId": SERVER_ID,
            "channelId": CHANNEL_ID,
            "received": received,
            "sent": received,
            "error": 0,
            "filtered": 0,
            "queued": 0,
        }


def feed_routes(app: web.Application, feed: Feed, clock: Any) -> None:
    """Add the engine's REST API to the lab's web app (GET statistics and statuses)."""

    async def statistics(_: web.Request) -> web.Response:
        return web.json_response({"channelStatistics": feed.statistics(clock())})

    async def statuses(_: web.Request) -> web.Response:
        status = {
            "channelId": CHANNEL_ID,
            "name": CHANNEL_NAME,
            "state": "STARTED",  # the engine runs: it simply receives nothing
            "queued": 0,
            "statusType": "CHANNEL",
        }
        return web.json_response({"list": {"dashboardStatus": [status]}})

    app.router.add_get(f"/mirth/api/channels/{CHANNEL_ID}/statistics", statistics)
    app.router.add_get("/mirth/api/channels/statuses", statuses)


class MllpEngine:
    """The engine's MLLP port: frames in, an AA acknowledgement with the control id out."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> None:
        """Listen on a free port unless one is given."""
        self._server = await asyncio.start_server(self._session, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """ACK each framed message; keep the connection open, as Mirth does."""
        try:
            while True:
                async with asyncio.timeout(30):
                    frame = await reader.readuntil(b"\x1c\x0d")
                if len(frame) > MAX_FRAME:
                    break
                writer.write(b"\x0b" + ack(frame.strip(b"\x0b\x1c\x0d")) + b"\x1c\x0d")
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the prober went away, stalled or sent garbage
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def ack(message: bytes) -> bytes:
    """Return the ACK of an HL7 v2 message: MSH swapped back, MSA|AA|its control id."""
    segments = message.replace(b"\n", b"\r").split(b"\r")
    msh = segments[0].split(b"|") if segments and segments[0].startswith(b"MSH") else []
    if len(msh) < 12:
        return b"MSH|^~\\&|LAB-ENGINE|CHU||||||ACK|0|P|2.3\rMSA|AR|\rERR|no MSH segment"
    control = msh[9]
    fields = [b"MSH", msh[1], msh[4], msh[5], msh[2], msh[3], b"", b"", b"ACK", control, msh[10]]
    fields.append(msh[11])
    return b"|".join(fields) + b"\rMSA|AA|" + control
