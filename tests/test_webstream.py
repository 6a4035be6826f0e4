"""The Media Stream's socket transport: whole frames even when a hang-up cancels a write,
and a peer that stops reading loses its connection instead of pinning the call."""

from __future__ import annotations

import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, TextMessage

from aicallerd.webstream import WRITE_SECONDS, SocketTransport
from aicallerd.wsframes import FrameReader

BIG = "x" * 4_000_000  # more than both socket buffers hold


def pair() -> tuple[SocketTransport, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return SocketTransport(trio.SocketStream(a), FrameReader(1 << 16), b""), trio.SocketStream(b)


async def read_events(peer: trio.SocketStream, client: Connection, until: type) -> list:
    events: list = []
    while not any(isinstance(e, until) for e in events):
        data = await peer.receive_some()
        assert data, "the connection ended first"
        client.receive_data(data)
        events += list(client.events())
    return events


def test_a_write_cancelled_by_a_hang_up_still_ends_on_a_frame_boundary():
    async def scenario() -> list:
        transport, peer = pair()
        client = Connection(ConnectionType.CLIENT)
        async with trio.open_nursery() as nursery:
            writing = trio.CancelScope()

            async def write() -> None:
                with writing:
                    await transport.send(BIG)
                await transport.close(1000, "bye")

            nursery.start_soon(write)
            client.receive_data(await peer.receive_some())  # the write is under way
            writing.cancel()  # as a hang-up cancels the call's tasks mid-write
            return await read_events(peer, client, CloseConnection)

    events = trio.run(scenario)
    texts = [e for e in events if isinstance(e, TextMessage)]
    text = "".join(e.data for e in texts)
    assert (len(text), text == BIG, texts[-1].message_finished) == (len(BIG), True, True)
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1000


def test_a_peer_that_stops_reading_is_disconnected_after_the_write_deadline():
    async def scenario() -> tuple[float, bytes]:
        transport, peer = pair()
        start = trio.current_time()
        await transport.send(BIG)  # nobody reads: returns when the deadline closes it
        waited = trio.current_time() - start
        await transport.send("more")  # dropped: the connection is gone
        received = b""
        while data := await peer.receive_some():
            received += data
        return waited, received

    waited, received = trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert waited >= WRITE_SECONDS
    assert 0 < len(received) < len(BIG)  # the cut frame, then EOF: nothing after it
