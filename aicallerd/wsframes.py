"""The server side of RFC 6455 WebSocket framing, sans I/O, for the Media Stream.

Every caller sends 50 frames a second, so reading one is kept to a few slices and one XOR:
wsproto's general decoder (extensions, per-frame events, incremental UTF-8) costs several
times more per frame and dominated the daemon's CPU with many calls held. What the stream
needs is all here: masked client frames, fragmented messages, ping/pong, the close
handshake, a cap on message size (1009) and the protocol errors (1002, 1007) as
:class:`WebSocketError`. Extensions are never negotiated, so any RSV bit is an error.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Close",
    "FrameReader",
    "Ping",
    "WebSocketError",
    "accept_key",
    "close_frame",
    "frame",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)
# Close codes a peer may send (RFC 6455 7.4): the defined ones and the private range.
_VALID_CLOSE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


class WebSocketError(Exception):
    """The peer broke the protocol; close with ``code`` (and say ``reason``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's close frame: its code (1005 when it gave none) and reason."""

    code: int
    reason: str


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit a control frame (123 bytes)."""
    data = reason.encode()[:123]
    while True:  # never cut a character in half
        try:
            data.decode()
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return frame(OP_CLOSE, struct.pack("!H", code) + data)


class FrameReader:
    """Bytes from a client in, complete messages (``str`` or ``bytes``), pings and the close
    out. Raises :class:`WebSocketError` on anything RFC 6455 forbids, and for a message
    over ``max_message`` bytes (before buffering it)."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buf = b""
        self._parts: list[bytes] = []
        self._size = 0
        self._opcode: int | None = None  # of the fragmented message under way

    def feed(self, data: bytes) -> list[str | bytes | Ping | Close]:
        """Everything ``data`` completes, in order; a partial frame waits for more."""
        buf = self._buf + data if self._buf else data
        out: list[str | bytes | Ping | Close] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if end - pos < 4:
                    break
                n, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif n == 127:
                if end - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            self._check_head(b0, b1, n)
            if end - pos < head + 4 + n:
                break
            mask = buf[pos + head : pos + head + 4]
            start = pos + head + 4
            payload = _unmask(buf[start : start + n], mask)
            pos = start + n
            item = self._frame(b0 & 0x0F, bool(b0 & 0x80), payload)
            if item is not None:
                out.append(item)
        self._buf = buf[pos:]
        return out

    def _check_head(self, b0: int, b1: int, n: int) -> None:
        if b0 & 0x70:
            raise WebSocketError(1002, "reserved bits set")
        if not b1 & 0x80:
            raise WebSocketError(1002, "client frame not masked")
        opcode = b0 & 0x0F
        if opcode in _CONTROL:
            if n > 125 or not b0 & 0x80:
                raise WebSocketError(1002, "bad control frame")
        elif opcode not in _DATA:
            raise WebSocketError(1002, f"unknown opcode {opcode}")
        elif self._size + n > self.max_message:
            raise WebSocketError(1009, "message too big")

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> str | bytes | Ping | Close | None:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return None
        if opcode == OP_CLOSE:
            return _close(payload)
        if opcode == OP_CONTINUATION:
            if self._opcode is None:
                raise WebSocketError(1002, "continuation without a message")
        elif self._opcode is not None:
            raise WebSocketError(1002, "new message inside a fragmented one")
        elif fin:  # the usual case: one frame, one message
            return _message(opcode, payload)
        else:
            self._opcode = opcode
        self._parts.append(payload)
        self._size += len(payload)
        if not fin:
            return None
        opcode, data = self._opcode, b"".join(self._parts)
        self._opcode, self._parts, self._size = None, [], 0
        return _message(opcode, data)


def _message(opcode: int, payload: bytes) -> str | bytes:
    if opcode == OP_BINARY:
        return payload
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise WebSocketError(1007, "text message is not UTF-8") from None


def _close(payload: bytes) -> Close:
    if not payload:
        return Close(1005, "")
    if len(payload) == 1:
        raise WebSocketError(1002, "close frame of one byte")
    code = struct.unpack_from("!H", payload)[0]
    if code not in _VALID_CLOSE and not 3000 <= code < 5000:
        raise WebSocketError(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise WebSocketError(1007, "close reason is not UTF-8") from None
    return Close(code, reason)
