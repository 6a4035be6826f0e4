"""A fake ElevenLabs text-to-speech API on a real loopback socket.

`POST /v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000` checks the
`xi-api-key` header, the voice, the query and the body fields the way the real API
does (401 `invalid_api_key`, 404 `voice_not_found`, 422 validation errors with
`detail` lists), then streams mu-law bytes in several chunks. `POST
/v1/text-to-speech/{voice_id}?output_format=mp3_44100_128` answers a whole MP3 (encoded
at test time with PyAV's libmp3lame). `GET /v1/voices/{id}` answers for the warm-up check.
`serve_websocket` runs the WebSocket input streaming endpoint (`.../stream-input`) on a
second port, in the test's trio loop.

Faults on cue: `fail_status` (401, 422, 429, 500, ...), `first_byte_seconds` (a slow
first byte, or a slow first audio message), `drop_after_chunks` (the connection is cut
mid-stream). `model_seconds` is the synthesis latency before the first audio.
"""

import base64
import io
import json
from typing import Any

import av
import numpy as np
import trio
import trio_websocket

from aicallerd.audio.mulaw import ulaw_encode

from . import FakeHandler, LoopbackFake, Recorded

SECONDS_PER_CHAR = 0.06
CHUNK_BYTES = 800  # 100 ms of 8 kHz mu-law per chunk


def tone(text: str, rate: int = 8000) -> np.ndarray:
    """A 220 Hz int16 tone whose length follows the text."""
    n = max(CHUNK_BYTES * rate // 8000, int(len(text) * SECONDS_PER_CHAR * rate))
    t = np.arange(n) / rate
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)


def fake_audio(text: str) -> bytes:
    """The tone as 8 kHz mu-law, what `ulaw_8000` streams."""
    return ulaw_encode(tone(text))


def mp3_of(pcm: np.ndarray, rate: int) -> bytes:
    """int16 mono as a 128 kbit/s MP3 file (PyAV's bundled libmp3lame)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        stream.bit_rate = 128000
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


class FakeElevenLabs(LoopbackFake):
    def __init__(self, api_key: str = "sk_test_key", voices: tuple[str, ...] = ("voice123",)):
        super().__init__()
        self.api_key = api_key
        self.voices = set(voices)
        self.fail_status: int | None = None
        self.first_byte_seconds = 0.0
        self.model_seconds = 0.0
        self.drop_after_chunks: int | None = None
        self.streamed_chunks = 0
        self.ws_messages: list[dict[str, Any]] = []

    def handle(self, h: FakeHandler, rec: Recorded) -> None:
        parts = rec.path.strip("/").split("/")
        if self.first_byte_seconds:
            self.release.wait(self.first_byte_seconds)
        if h.headers.get("xi-api-key") != self.api_key or self.fail_status == 401:
            h.send_json(
                401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
            )
            return
        if rec.method == "GET" and parts[:2] == ["v1", "voices"] and len(parts) == 3:
            if not self._voice_ok(h, parts[2]):
                return
            h.send_json(200, {"voice_id": parts[2], "name": "Fake Voice", "category": "premade"})
            return
        if (
            rec.method == "POST"
            and parts[:2] == ["v1", "text-to-speech"]
            and parts[3:] == ["stream"]
        ):
            self._tts(h, rec, parts[2])
            return
        if rec.method == "POST" and parts[:2] == ["v1", "text-to-speech"] and len(parts) == 3:
            self._tts(h, rec, parts[2], mp3=True)
            return
        h.send_json(404, {"detail": "Not Found"})

    def _voice_ok(self, h: FakeHandler, voice_id: str) -> bool:
        if voice_id not in self.voices:
            message = f"A voice with the voice_id {voice_id} was not found."
            h.send_json(404, {"detail": {"status": "voice_not_found", "message": message}})
            return False
        return True

    def _tts(self, h: FakeHandler, rec: Recorded, voice_id: str, mp3: bool = False) -> None:
        if not self._voice_ok(h, voice_id):
            return
        errors = self._validate(rec, "mp3_44100_128" if mp3 else "ulaw_8000")
        if self.fail_status == 422 and not errors:
            errors = [{"type": "value_error", "loc": ["body", "text"], "msg": "forced error"}]
        if errors:
            h.send_json(422, {"detail": errors})
            return
        if self.fail_status == 429:
            message = "Too many concurrent requests for your subscription."
            detail = {"status": "too_many_concurrent_requests", "message": message}
            h.send_json(429, {"detail": detail})
            return
        if self.fail_status is not None:
            h.send_json(
                self.fail_status,
                {"detail": {"status": "internal_error", "message": "Something went wrong"}},
            )
            return
        if self.model_seconds:
            self.release.wait(self.model_seconds)
        if mp3:
            data = mp3_of(tone(rec.body["text"], 44100), 44100)
            h.send_response(200)
            h.send_header("Content-Type", "audio/mpeg")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if self.drop_after_chunks is not None:
                h.wfile.write(data[: len(data) // 2])
                h.drop()
                return
            h.wfile.write(data)
            return
        audio = fake_audio(rec.body["text"])
        h.start_chunked(200, "audio/basic")
        self.streamed_chunks = 0
        drop_at = self.drop_after_chunks
        for i in range(0, len(audio), CHUNK_BYTES):
            if drop_at is not None and self.streamed_chunks == drop_at:
                h.drop()
                return
            h.write_chunk(audio[i : i + CHUNK_BYTES])
            self.streamed_chunks += 1
        h.end_chunked()

    # -- WebSocket input streaming -------------------------------------------------------
    async def serve_websocket(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve `/v1/text-to-speech/{voice}/stream-input` on a free port; `task_status`
        gets the base URL ("http://127.0.0.1:PORT", as the client is configured)."""

        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, self._ws_handler, "127.0.0.1", 0, None
            )
            task_status.started(f"http://127.0.0.1:{server.port}")

    async def _ws_handler(self, request: trio_websocket.WebSocketRequest) -> None:
        path, _, query = request.path.partition("?")
        parts = path.strip("/").split("/")
        await trio.sleep(self.connect_seconds + self.rtt_seconds)  # TCP, TLS, the upgrade
        if parts[:2] != ["v1", "text-to-speech"] or parts[3:] != ["stream-input"]:
            await request.reject(404, body=b'{"detail":"Not Found"}')
            return
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if self.fail_status is not None and self.fail_status != 401:
            await request.reject(self.fail_status, body=b'{"detail":"Something went wrong"}')
            return
        ws = await request.accept()
        if headers.get("xi-api-key") != self.api_key or self.fail_status == 401:
            await ws.send_message(
                json.dumps({"message": "Invalid API key", "error": "invalid_api_key", "code": 1008})
            )
            await ws.aclose(1008, "Invalid API key")
            return
        if parts[2] not in self.voices or "output_format=ulaw_8000" not in query.split("&"):
            await ws.aclose(1008, "voice_not_found or bad output_format")
            return
        text = ""
        try:
            while True:
                msg = json.loads(await ws.get_message())
                self.ws_messages.append(msg)
                if msg.get("text") == "":
                    break
                if msg.get("text", "").strip():
                    text += msg["text"]
            await trio.sleep(self.rtt_seconds + self.model_seconds + self.first_byte_seconds)
            audio = fake_audio(text.strip())
            for i, start in enumerate(range(0, len(audio), CHUNK_BYTES)):
                if self.drop_after_chunks is not None and i == self.drop_after_chunks:
                    await ws.aclose(1011, "internal error")
                    return
                chunk = base64.b64encode(audio[start : start + CHUNK_BYTES]).decode()
                await ws.send_message(json.dumps({"audio": chunk, "isFinal": None}))
            await ws.send_message(json.dumps({"isFinal": True}))
            await ws.aclose()
        except trio_websocket.ConnectionClosed:
            pass

    @staticmethod
    def _validate(rec: Recorded, output_format: str) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []

        def err(loc: list[str], msg: str) -> None:
            errors.append({"type": "value_error", "loc": loc, "msg": msg})

        if f"output_format={output_format}" not in rec.query.split("&"):
            err(["query", "output_format"], f"expected {output_format} for this fake")
        body = rec.body
        if not isinstance(body, dict):
            err(["body"], "Input should be a valid dictionary")
            return errors
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            err(["body", "text"], "Field required")
        if body.get("model_id") not in {"eleven_flash_v2_5", "eleven_turbo_v2_5"}:
            err(["body", "model_id"], f"unknown model {body.get('model_id')!r}")
        settings = body.get("voice_settings") or {}
        speed = settings.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.7 <= speed <= 1.2:
            err(["body", "voice_settings", "speed"], "speed must be between 0.7 and 1.2")
        for key in ("stability", "similarity_boost"):
            value = settings.get(key, 0.5)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                err(["body", "voice_settings", key], f"{key} must be between 0 and 1")
        return errors
