"""ElevenLabs WebSocket input streaming (`/v1/text-to-speech/{voice}/stream-input`).

One connection per sentence: an initial `{"text": " ", voice_settings, generation_config}`,
the sentence with `flush: true`, then `{"text": ""}` to close; audio comes back as base64
`ulaw_8000` in `{"audio": ...}` messages until `{"isFinal": true}`.

The WebSocket is driven with wsproto (trio-websocket's own protocol layer) straight over a
trio stream rather than through trio-websocket's connection object: that one needs a
nursery for its reader task, and `stream_ulaw` is an async generator, which must not yield
while a nursery is open (the caller's deadlines would corrupt trio's cancel stack).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from aicallerd.engines.tts import TTSError, eleven_error

CHUNK_LENGTH_SCHEDULE = [120, 160, 250, 290]  # ElevenLabs' default buffering before audio
_RECEIVE = 65536


class _Socket:
    """A client WebSocket on a trio stream: connect, send text, receive whole messages."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._pending: list[Event] = []
        self._parts: list[str | bytes] = []

    async def _events(self) -> Event | None:
        """The next protocol event, reading from the network as needed; None on EOF."""
        while not self._pending:
            data = await self.stream.receive_some(_RECEIVE)
            self.ws.receive_data(data or None)
            self._pending.extend(self.ws.events())
            if not data and not self._pending:
                return None
        return self._pending.pop(0)

    async def handshake(self, host: str, target: str, headers: list[tuple[bytes, bytes]]) -> None:
        await self.stream.send_all(
            self.ws.send(Request(host=host, target=target, extra_headers=headers))
        )
        body = b""
        status = 0
        while True:
            event = await self._events()
            if event is None:
                raise TTSError("elevenlabs websocket: connection closed during the handshake")
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    break
            elif isinstance(event, RejectData):
                body += event.data
                if event.body_finished:
                    break
        raise TTSError(
            f"elevenlabs websocket: HTTP {status}: {_detail(body)}", status=status or None
        )

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def receive(self) -> str | bytes:
        """The next whole message; TTSError when the server closes first."""
        while True:
            event = await self._events()
            if event is None:
                raise TTSError("elevenlabs websocket: connection dropped")
            if isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                reason = f"{event.code} {event.reason or ''}".strip()
                raise TTSError(f"elevenlabs websocket closed before the end: {reason}")
            elif isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    return parts[0][:0].join(parts)  # type: ignore[arg-type]

    async def close(self) -> None:
        try:
            with trio.move_on_after(0.5):
                await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
            pass
        await trio.aclose_forcefully(self.stream)


def _detail(body: bytes) -> str:
    return eleven_error(body) if body else "(no body)"


class ElevenLabsWebSocketTTS:
    """ElevenLabs' stream-input WebSocket, one connection per sentence, `ulaw_8000` out."""

    def __init__(
        self,
        api_key: str,
        voice_id: str,
        model_id: str = "eleven_flash_v2_5",
        *,
        base_url: str = "https://api.elevenlabs.io",
        speed: float = 0.9,
        stability: float = 0.5,
        similarity_boost: float = 0.75,
        connect_timeout: float = 5.0,
    ) -> None:
        if not api_key:
            raise ValueError("ElevenLabs needs an API key")
        self._api_key = api_key
        self.voice_id = voice_id
        self.model_id = model_id
        self.base_url = base_url.rstrip("/")
        self.speed = min(1.2, max(0.7, speed))
        self.voice_settings = {
            "stability": stability,
            "similarity_boost": similarity_boost,
            "speed": self.speed,
        }
        self.connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"ElevenLabsWebSocketTTS(voice_id={self.voice_id!r}, model_id={self.model_id!r})"

    async def _connect(self) -> _Socket:
        parts = urlsplit(self.base_url)
        tls = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        query = urlencode({"model_id": self.model_id, "output_format": "ulaw_8000"})
        target = f"{parts.path}/v1/text-to-speech/{self.voice_id}/stream-input?{query}"
        try:
            with trio.fail_after(self.connect_timeout):
                if tls:
                    stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                        host, port, ssl_context=ssl.create_default_context(), https_compatible=True
                    )
                else:
                    stream = await trio.open_tcp_stream(host, port)
                sock = _Socket(stream)
                try:
                    await sock.handshake(host, target, [(b"xi-api-key", self._api_key.encode())])
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
        except trio.TooSlowError as exc:
            raise TTSError(f"elevenlabs websocket at {self.base_url}: connect timed out") from exc
        except (OSError, trio.BrokenResourceError, RemoteProtocolError) as exc:
            raise TTSError(
                f"elevenlabs websocket at {self.base_url} unreachable: {type(exc).__name__}"
            ) from exc
        return sock

    async def stream_ulaw(self, text: str) -> AsyncIterator[bytes]:
        """Send the sentence, yield its mu-law audio as the messages arrive."""
        if not text.strip():
            return
        sock = await self._connect()
        try:
            init = {
                "text": " ",
                "voice_settings": self.voice_settings,
                "generation_config": {"chunk_length_schedule": CHUNK_LENGTH_SCHEDULE},
            }
            await sock.send_text(json.dumps(init))
            await sock.send_text(json.dumps({"text": text.strip() + " ", "flush": True}))
            await sock.send_text(json.dumps({"text": ""}))
            while True:
                raw = await sock.receive()
                try:
                    data = json.loads(raw)
                except ValueError as exc:
                    raise TTSError(f"elevenlabs websocket: bad message {raw[:80]!r}") from exc
                if not isinstance(data, dict):
                    raise TTSError(f"elevenlabs websocket: bad message {raw[:80]!r}")
                if data.get("error") or ("message" in data and "audio" not in data):
                    message = data.get("message") or data.get("error")
                    raise TTSError(f"elevenlabs websocket: {data.get('error')}: {message}")
                if data.get("audio"):
                    yield base64.b64decode(data["audio"])
                if data.get("isFinal"):
                    return
        except (trio.BrokenResourceError, RemoteProtocolError, LocalProtocolError) as exc:
            raise TTSError(f"elevenlabs websocket failed: {type(exc).__name__}") from exc
        finally:
            with trio.CancelScope(shield=True):
                await sock.close()

    async def warm(self) -> None:
        """Open and close one connection: checks the address, the key and the voice."""
        sock = await self._connect()
        await sock.close()

    def describe(self) -> str:
        """E.g. "elevenlabs websocket eleven_flash_v2_5 voice XYZ x0.9"."""
        return f"elevenlabs websocket {self.model_id} voice {self.voice_id} x{self.speed:g}"
