"""Event-loop CPU a Player spends sending a minute of agent audio, by message size.

The Player runs in its own thread's trio loop behind a real trio-websocket server on
loopback; a reader in another thread plays Twilio and drains the socket. The sender's loop
runs on a virtual clock that jumps over the pacing waits (so no timeouts there: it would
jump to them while a socket waits), so a minute of audio takes a fraction of a second, and
``time.thread_time()`` of that thread is the CPU its event loop spends on it: JSON, base64,
the WebSocket frame, the socket write and the timer wake-up per message.

    python -m bench.player_send [--seconds 60] [--batch 0.02 0.1 0.2]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import threading
import time
from dataclasses import asdict, dataclass

import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)

from aicallerd.call.player import Player
from aicallerd.twilio import media

SENTENCE_SECONDS = 3.0


@dataclass
class SendCost:
    batch_ms: float
    audio_seconds: float
    messages: int
    messages_per_second: float
    cpu_seconds: float
    cpu_ms_per_audio_second: float
    received_seconds: float = 0.0  # audio the reader got: all of it, or the run is void


class _WsTransport:
    """trio-websocket's connection behind the Player's Transport interface."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.messages = 0

    async def receive(self) -> str | bytes:
        return await self.ws.get_message()

    async def send(self, data: str) -> None:
        self.messages += 1
        await self.ws.send_message(data)

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.aclose(code, reason)


def _sender(seconds: float, batch: float, port: list[int], ready: threading.Event) -> SendCost:
    result: list[SendCost] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        transport = _WsTransport(ws)
        player = Player(transport, batch=batch, stream_sid="MZbench", write_timeout=math.inf)
        sentence = b"\x55" * round(SENTENCE_SECONDS * 8000)
        start = time.thread_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(player.run)
            for i in range(round(seconds / SENTENCE_SECONDS)):
                player.enqueue_audio(sentence)
                player.enqueue_mark(f"s{i}")
            player.close(1000, "done")
        cpu = time.thread_time() - start
        media = transport.messages - round(seconds / SENTENCE_SECONDS)
        result.append(
            SendCost(
                batch_ms=round(batch * 1000, 1),
                audio_seconds=seconds,
                messages=media,
                messages_per_second=round(media / seconds, 1),
                cpu_seconds=round(cpu, 4),
                cpu_ms_per_audio_second=round(cpu * 1000 / seconds, 3),
            )
        )
        server_scope.cancel()

    async def main() -> None:
        nonlocal server_scope
        with trio.CancelScope() as server_scope:
            async with trio.open_nursery() as nursery:
                # No timeouts: the virtual clock would jump to them while a socket waits.
                serve = functools.partial(
                    serve_websocket, connect_timeout=math.inf, disconnect_timeout=math.inf
                )
                server = await nursery.start(serve, handler, "127.0.0.1", 0, None)
                port.append(server.port)
                ready.set()

    server_scope = trio.CancelScope()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return result[0]


def _reader(port: int) -> int:
    """Twilio's end: read every message until the sender closes; the audio bytes received."""
    received = 0

    async def main() -> None:
        nonlocal received
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
            try:
                while True:
                    event = media.parse_outbound(await ws.get_message())
                    if isinstance(event, media.OutMedia):
                        received += len(event.payload)
            except ConnectionClosed:
                return

    trio.run(main)
    return received


def measure(seconds: float, batch: float) -> SendCost:
    """Send ``seconds`` of audio in ``batch``-bounded messages; the sender loop's CPU."""
    port: list[int] = []
    ready = threading.Event()
    out: list[SendCost] = []
    sender = threading.Thread(target=lambda: out.append(_sender(seconds, batch, port, ready)))
    sender.start()
    ready.wait()
    received: list[int] = []
    reader = threading.Thread(target=lambda: received.append(_reader(port[0])))
    reader.start()
    sender.join()
    reader.join()
    out[0].received_seconds = received[0] / 8000
    return out[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch", type=float, nargs="+", default=[0.02, 0.06, 0.1, 0.2, 0.4])
    args = parser.parse_args()
    for batch in args.batch:
        print(json.dumps(asdict(measure(args.seconds, batch))))


if __name__ == "__main__":
    main()
