"""The Media Stream WebSocket, served on hypercorn's ASGI callables directly.

Every 20 ms frame of every call arrives here, so this path is kept short: quart's websocket
would add a reader task and a queue of its own per connection (one more task switch and
channel hop per frame). Everything else (the webhooks, a 404 for other WebSocket paths, the
lifespan) still goes to the quart app this wraps.

What the stream endpoint guarantees is what quart's route did: only an upgrade signed by
Twilio for our public stream URL is accepted (403 otherwise), at most `handshake_limit`
sockets may wait for a verified ``start`` (503 beyond), and the call service then owns the
stream (`aicallerd.ports.Calls.run_stream`). hypercorn still enforces the message size cap.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from aicallerd.ports import Calls
from aicallerd.twilio.signature import validate_signature

log = logging.getLogger("aicallerd.web")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["MediaStreamApp", "StreamDisconnected", "handshake_limit"]


class StreamDisconnected(ConnectionError):
    """The peer (Twilio) closed the stream, or the connection dropped."""


def handshake_limit(max_calls: int) -> int:
    """Sockets that may be open without a verified ``start`` yet: a few per line, so a
    flood of idle upgrades cannot hold the event loop's file descriptors."""
    return max_calls * 2 + 8


class AsgiTransport:
    """One accepted stream behind the session's small Transport interface.

    Closable from any task (a hang-up from aicallerctl, the shutdown drain); hypercorn
    serialises the writes and drops those after the connection is gone.
    """

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.closed = False
        self._gone = False

    async def receive(self) -> str | bytes:
        """The next message's text (or bytes); StreamDisconnected once the peer is gone."""
        if not self._gone:
            message = await self._receive()
            if message["type"] == "websocket.receive":
                data = message.get("bytes")
                return message["text"] if data is None else data
            self._gone = True
        raise StreamDisconnected("websocket disconnected")

    async def send(self, data: str) -> None:
        await self._send({"type": "websocket.send", "text": data})

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception as exc:  # already gone
            log.debug("websocket close: %s", exc)


async def _refuse(send: Send, status: int, body: str) -> None:
    """Answer the upgrade with a plain HTTP error instead of switching protocols."""
    data = body.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(data)),
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": data, "more_body": False})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


class MediaStreamApp:
    """``app`` with the Media Stream route (``calls.config.stream_route``) served here."""

    def __init__(self, app: ASGIApp, calls: Calls) -> None:
        self.app = app
        self.calls = calls
        self.route = calls.config.stream_route
        self.handshakes = trio.CapacityLimiter(
            handshake_limit(calls.config.server.max_concurrent_calls)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.route:
            await self.stream(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One Media Stream upgrade: check it, accept it, hand it to the call service."""
        await receive()  # websocket.connect
        cfg = self.calls.config
        remote = (scope.get("client") or ("<local>",))[0]
        signature = _header(scope, b"x-twilio-signature")
        if not validate_signature(cfg.twilio.auth_token, cfg.stream_url, {}, signature):
            log.warning(
                "stream upgrade from %s refused: %s x-twilio-signature",
                remote,
                "bad" if signature else "no",
            )
            await _refuse(send, 403, "invalid signature\n")
            return
        transport = AsgiTransport(receive, send)
        handshakes = self.handshakes
        handshakes.total_tokens = handshake_limit(cfg.server.max_concurrent_calls)
        try:
            handshakes.acquire_on_behalf_of_nowait(transport)
        except trio.WouldBlock:
            log.warning(
                "stream upgrade from %s refused: %d sockets still to send start",
                remote,
                handshakes.borrowed_tokens,
            )
            await _refuse(send, 503, "too many streams starting\n")
            return
        held = True

        def started() -> None:
            nonlocal held
            if held:
                held = False
                handshakes.release_on_behalf_of(transport)

        try:
            await send({"type": "websocket.accept"})
            await self.calls.run_stream(transport, started)
        except Exception:
            log.exception("media stream from %s failed", remote)
        finally:
            started()
        await transport.close(1000)  # as quart did: a stream the call left open is closed
