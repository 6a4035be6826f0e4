"""The Media Stream WebSocket, served on the socket itself.

Every 20 ms frame of every call arrives here. Through hypercorn each one crossed wsproto's
general decoder, hypercorn's stream object, an ASGI queue and a task switch: with 200
calls held that was over half the daemon's CPU. So `aicallerd.httpserve` hands a
connection whose request line asks for the stream route to :class:`MediaStreamServer`,
which does the upgrade and reads frames with `aicallerd.wsframes` in the call's own task.

What the endpoint guarantees is what the ASGI route did: only an upgrade signed by Twilio
for our public stream URL is accepted (403 otherwise), at most `handshake_limit` sockets may
wait for a verified ``start`` (503 beyond), messages over ``max_message`` bytes close the
stream with 1009, and the call service then owns the stream
(`aicallerd.ports.Calls.run_stream`).
"""

from __future__ import annotations

import logging
import os
from collections import deque

import h11
import trio

from aicallerd.ports import Calls
from aicallerd.twilio.signature import validate_signature
from aicallerd.wsframes import (
    OP_PONG,
    OP_TEXT,
    Close,
    FrameReader,
    Ping,
    WebSocketError,
    accept_key,
    close_frame,
    frame,
)

log = logging.getLogger("aicallerd.web")

__all__ = ["MediaStreamServer", "StreamDisconnected", "handshake_limit", "is_stream_request"]

MAX_RECV = 1 << 16
MAX_HEAD = 16 * 1024  # as h11's default: a request head larger than this is refused
HEAD_SECONDS = 10.0  # to send the upgrade request once connected
WRITE_SECONDS = 5.0  # for the peer to take one frame (as the player's write deadline)
LINGER_SECONDS = 2.0  # after our close frame, for the peer's (so it reads ours, not a reset)
READ_FIRST_SECONDS = 0.05  # a reader away this long (a quiet call's tick) tries a read first


class StreamDisconnected(ConnectionError):
    """The peer (Twilio) closed the stream, or the connection dropped."""


def handshake_limit(max_calls: int) -> int:
    """Sockets that may be open without a verified ``start`` yet: a few per line, so a
    flood of idle upgrades cannot hold the event loop's file descriptors."""
    return max_calls * 2 + 8


def is_stream_request(head: bytes, route: str) -> bool | None:
    """Whether the request starting with ``head`` is ``GET <route>`` (None: not known yet)."""
    prefix = b"GET " + route.encode()
    if head[: len(prefix)] != prefix[: len(head)]:
        return False
    if len(head) <= len(prefix):
        return None
    return head[len(prefix)] in b" ?"


class SocketTransport:
    """One accepted stream behind the session's small Transport interface.

    Closable from any task (a hang-up from aicallerctl, the shutdown drain); writes are
    serialised, and those after the connection is gone are dropped.
    """

    def __init__(self, stream: trio.SocketStream, reader: FrameReader, early: bytes) -> None:
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._reader = reader
        self._inbox: deque[str | bytes] = deque()
        self._early = early  # frames the client sent with its request head
        self._send_lock = trio.StrictFIFOLock()
        self.closed = False
        self._gone = False  # the peer closed or hung up: nothing more to read
        self._broken = False  # the peer broke the protocol: its frames cannot be followed
        self._dead = False  # a write failed: nothing more can be sent
        self._read_at = -float("inf")  # when the socket was last read (or found empty)

    async def receive(self) -> str | bytes:
        """The next message's text (or bytes); StreamDisconnected once the peer is gone."""
        inbox = self._inbox
        while not inbox:
            if self._gone or self._broken:
                raise StreamDisconnected("websocket disconnected")
            data, self._early = self._early, b""
            if not data:
                # A reader back from a quiet call's tick finds frames waiting: it reads at
                # once. Otherwise it waits, then reads: trying first, as trio's recv does,
                # costs a failed syscall and an exception per frame of a stream whose next
                # frame is 20 ms away.
                try:
                    if trio.current_time() - self._read_at < READ_FIRST_SECONDS:
                        await trio.lowlevel.wait_readable(self._fd)
                    self._read_at = trio.current_time()
                    data = os.read(self._fd, MAX_RECV)
                except BlockingIOError:
                    continue  # found empty just now: the next try waits
                except (OSError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self._gone = True
                    continue
            try:
                items = self._reader.feed(data)
            except WebSocketError as exc:
                self._broken = True
                await self.close(exc.code, exc.reason)
                continue
            for item in items:
                if type(item) is str or type(item) is bytes:
                    inbox.append(item)
                elif type(item) is Ping:
                    await self._write(frame(OP_PONG, item.payload))
                elif type(item) is Close:
                    self._gone = True
                    await self.close(1000 if item.code == 1005 else item.code)
                    break
        return inbox.popleft()

    def buffered(self) -> int:
        return len(self._inbox) + bool(self._early)

    async def accept(self, key: str) -> None:
        """Switch protocols: the 101 answer to the upgrade."""
        await self._write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: " + accept_key(key).encode() + b"\r\n\r\n"
        )

    async def send(self, data: str) -> None:
        if not self.closed:  # after our close frame nothing more may follow it
            await self._write(frame(OP_TEXT, data.encode()))

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        await self._write(close_frame(code, reason))

    async def _write(self, data: bytes) -> None:
        """One whole frame or nothing: a write cut by a cancellation (a hang-up ends the
        call's tasks) would leave half a frame, and the peer would read our close frame as
        part of it. So the write is shielded, with its own deadline: a peer that stops
        reading for that long has its connection closed."""
        async with self._send_lock:
            if self._dead:
                return
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + WRITE_SECONDS
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._dead = self._gone = True
                    log.debug("websocket write: %s", exc.__class__.__name__)
            if scope.cancelled_caught:
                log.warning("websocket peer read nothing for %gs: closing it", WRITE_SECONDS)
                self._dead = self._gone = True
                await trio.aclose_forcefully(self._stream)

    async def linger(self) -> None:
        """After our close: wait briefly for the peer's (reading and dropping what comes
        before it), then the caller closes the socket first, as RFC 6455 has servers do.
        Closing at once could lose our close frame to a reset from unread data. After a
        protocol error the frames cannot be followed: what comes is dropped until EOF."""
        with trio.move_on_after(LINGER_SECONDS):
            while not self._gone:
                try:
                    data = await self._stream.receive_some(MAX_RECV)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                if self._broken:
                    continue
                try:
                    items = self._reader.feed(data)
                except WebSocketError:
                    self._broken = True
                    continue
                self._gone = any(type(item) is Close for item in items)


def _response(status: int, body: str, *extra: tuple[str, str]) -> bytes:
    data = body.encode()
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
    lines += [f"{k}: {v}" for k, v in extra]
    lines += [
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(data)}",
        "connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class _Upgrade:
    """A parsed upgrade request: its headers (lower-cased names) and any bytes after."""

    def __init__(self, headers: dict[bytes, bytes], rest: bytes) -> None:
        self.headers = headers
        self.rest = rest

    def header(self, name: bytes) -> str:
        return self.headers.get(name, b"").decode("latin-1")


def parse_upgrade(head: bytes) -> _Upgrade | str:
    """The request head (up to and past its blank line) as an upgrade, or what is wrong."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return f"malformed request: {exc}"
    if not isinstance(event, h11.Request):
        return "malformed request"
    headers: dict[bytes, bytes] = {}
    for name, value in event.headers:
        headers[name] = headers[name] + b", " + value if name in headers else value
    rest = head[head.index(b"\r\n\r\n") + 4 :]
    upgrade = _Upgrade(headers, rest)
    tokens = {t.strip().lower() for t in upgrade.header(b"connection").split(",")}
    if upgrade.header(b"upgrade").lower() != "websocket" or "upgrade" not in tokens:
        return "not a WebSocket upgrade"
    if not upgrade.header(b"sec-websocket-key"):
        return "no Sec-WebSocket-Key"
    return upgrade


class MediaStreamServer:
    """The Media Stream route (``calls.config.stream_route``) on accepted connections."""

    def __init__(self, calls: Calls, max_message: int) -> None:
        self.calls = calls
        self.route = calls.config.stream_route
        self.max_message = max_message
        self.handshakes = trio.CapacityLimiter(
            handshake_limit(calls.config.server.max_concurrent_calls)
        )

    def wants(self, head: bytes) -> bool | None:
        """Whether a connection that began with ``head`` is ours (None: read more)."""
        return is_stream_request(head, self.route)

    async def serve(self, stream: trio.SocketStream, head: bytes) -> None:
        """One connection that asked for the stream route: upgrade it, run the call."""
        try:
            remote = stream.socket.getpeername()[0]
        except OSError:
            return
        try:
            with trio.fail_after(HEAD_SECONDS):
                while b"\r\n\r\n" not in head and len(head) <= MAX_HEAD:
                    data = await stream.receive_some(MAX_RECV)
                    if not data:
                        return
                    head += data
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if b"\r\n\r\n" not in head[: MAX_HEAD + 4]:
            await _refuse(stream, 431, "request head too large\n")
            return
        upgrade = parse_upgrade(head)
        if isinstance(upgrade, str):
            log.warning("stream upgrade from %s refused: %s", remote, upgrade)
            await _refuse(stream, 400, upgrade + "\n")
            return
        if upgrade.header(b"sec-websocket-version") != "13":
            await _refuse(
                stream, 426, "WebSocket version 13 only\n", ("sec-websocket-version", "13")
            )
            return
        await self._upgrade(stream, remote, upgrade)

    async def _upgrade(self, stream: trio.SocketStream, remote: str, upgrade: _Upgrade) -> None:
        cfg = self.calls.config
        signature = upgrade.header(b"x-twilio-signature")
        if not validate_signature(cfg.twilio.auth_token, cfg.stream_url, {}, signature):
            log.warning(
                "stream upgrade from %s refused: %s x-twilio-signature",
                remote,
                "bad" if signature else "no",
            )
            await _refuse(stream, 403, "invalid signature\n")
            return
        transport = SocketTransport(stream, FrameReader(self.max_message), upgrade.rest)
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
            await _refuse(stream, 503, "too many streams starting\n")
            return
        held = True

        def started() -> None:
            nonlocal held
            if held:
                held = False
                handshakes.release_on_behalf_of(transport)

        try:
            await transport.accept(upgrade.header(b"sec-websocket-key"))
            await self.calls.run_stream(transport, started)
        except Exception:
            log.exception("media stream from %s failed", remote)
        finally:
            started()
        await transport.close(1000)  # a stream the call left open is closed
        await transport.linger()


async def _refuse(
    stream: trio.SocketStream, status: int, body: str, *extra: tuple[str, str]
) -> None:
    """Answer the upgrade with a plain HTTP error instead of switching protocols."""
    try:
        await stream.send_all(_response(status, body, *extra))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
