"""send_when_writable on real sockets: a full buffer waits for room instead of failing."""

from __future__ import annotations

import asyncio
import socket

from vigie.probes.nonblocking import send_when_writable


async def test_a_full_buffer_is_sent_once_the_peer_reads() -> None:
    """The send that finds the buffer full waits for the peer to drain it, then goes out."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        ours.setblocking(False)
        theirs.setblocking(False)
        filled = 0
        while True:  # fill our send buffer (the peer reads nothing yet)
            try:
                ours.send(b"x" * 512)
                filled += 1
            except BlockingIOError:
                break
        # Started now, it finds the buffer full: it must wait for room, not fail.
        sent = asyncio.ensure_future(send_when_writable(ours.fileno(), lambda: ours.send(b"last")))
        await asyncio.sleep(0)  # one scheduling step (not a wait on time): its first send
        assert not sent.done()  # found the buffer full and waits for room, not failed
        loop = asyncio.get_running_loop()
        for _ in range(filled):
            assert await loop.sock_recv(theirs, 1024) == b"x" * 512
        await asyncio.wait_for(sent, 10)
        assert await loop.sock_recv(theirs, 1024) == b"last"


async def test_a_send_with_room_goes_out_at_once() -> None:
    """With room in the buffer there is no waiting: the datagram is there when it returns."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        ours.setblocking(False)
        await send_when_writable(ours.fileno(), lambda: ours.send(b"now"))
        assert theirs.recv(16) == b"now"
