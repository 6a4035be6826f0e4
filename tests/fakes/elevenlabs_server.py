"""A fake ElevenLabs text-to-speech API on a real loopback socket.

`POST /v1/text-to-speech/{voice_id}/stream?output_format=ulaw_8000` checks the
`xi-api-key` header, the voice, the query and the body fields the way the real API
does (401 `invalid_api_key`, 404 `voice_not_found`, 422 validation errors with
`detail` lists), then streams mu-law bytes in several chunks. `GET /v1/voices/{id}`
answers for the warm-up check. `fail_status` forces an error (401, 422, 500, ...).
"""

from typing import Any

import numpy as np

from aicallerd.audio.mulaw import ulaw_encode

from . import FakeHandler, LoopbackFake, Recorded

SECONDS_PER_CHAR = 0.06
CHUNK_BYTES = 800  # 100 ms of 8 kHz mu-law per chunk


def fake_audio(text: str) -> bytes:
    """A 220 Hz tone whose length follows the text, as 8 kHz mu-law."""
    n = max(CHUNK_BYTES, int(len(text) * SECONDS_PER_CHAR * 8000))
    t = np.arange(n) / 8000
    return ulaw_encode((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16))


class FakeElevenLabs(LoopbackFake):
    def __init__(self, api_key: str = "sk_test_key", voices: tuple[str, ...] = ("voice123",)):
        super().__init__()
        self.api_key = api_key
        self.voices = set(voices)
        self.fail_status: int | None = None
        self.streamed_chunks = 0

    def handle(self, h: FakeHandler, rec: Recorded) -> None:
        parts = rec.path.strip("/").split("/")
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
        h.send_json(404, {"detail": "Not Found"})

    def _voice_ok(self, h: FakeHandler, voice_id: str) -> bool:
        if voice_id not in self.voices:
            message = f"A voice with the voice_id {voice_id} was not found."
            h.send_json(404, {"detail": {"status": "voice_not_found", "message": message}})
            return False
        return True

    def _tts(self, h: FakeHandler, rec: Recorded, voice_id: str) -> None:
        if not self._voice_ok(h, voice_id):
            return
        errors = self._validate(rec)
        if self.fail_status == 422 and not errors:
            errors = [{"type": "value_error", "loc": ["body", "text"], "msg": "forced error"}]
        if errors:
            h.send_json(422, {"detail": errors})
            return
        if self.fail_status is not None:
            h.send_json(
                self.fail_status,
                {"detail": {"status": "internal_error", "message": "Something went wrong"}},
            )
            return
        audio = fake_audio(rec.body["text"])
        h.start_chunked(200, "audio/basic")
        self.streamed_chunks = 0
        for i in range(0, len(audio), CHUNK_BYTES):
            h.write_chunk(audio[i : i + CHUNK_BYTES])
            self.streamed_chunks += 1
        h.end_chunked()

    @staticmethod
    def _validate(rec: Recorded) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []

        def err(loc: list[str], msg: str) -> None:
            errors.append({"type": "value_error", "loc": loc, "msg": msg})

        if "output_format=ulaw_8000" not in rec.query.split("&"):
            err(["query", "output_format"], "expected ulaw_8000 for this fake")
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
