"""A fake OpenAI-compatible audio API (OpenAI, speaches, Kokoro-FastAPI) on loopback.

`POST /v1/audio/transcriptions` takes the multipart form the way OpenAI does (`file`,
`model`, `language`, `response_format`) and answers `{"text": ...}`; `POST /v1/audio/speech`
answers `pcm` (24 kHz s16le mono, streamed in chunks) or `wav`; `GET /v1/models` lists the
models. Errors use OpenAI's `{"error": {"message", "type", "code"}}` body.

Faults on cue: `fail_status` (401, 429, 500, ...), `first_byte_seconds` (a slow server),
`drop_after_chunks` (the connection is cut mid-stream).
"""

import io
import wave
from email.parser import BytesParser
from typing import Any

import numpy as np

from . import FakeHandler, LoopbackFake, Recorded

PCM_RATE = 24000
CHUNK_BYTES = 4800  # 100 ms of 24 kHz s16le
SECONDS_PER_CHAR = 0.06


def tone_pcm24(text: str) -> bytes:
    """A 300 Hz tone whose length follows the text, as 24 kHz s16le."""
    n = max(CHUNK_BYTES // 2, int(len(text) * SECONDS_PER_CHAR * PCM_RATE))
    t = np.arange(n) / PCM_RATE
    return (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes()


def parse_multipart(rec: Recorded) -> dict[str, Any]:
    """field name -> str value, or (filename, bytes) for a file."""
    head = f"Content-Type: {rec.headers.get('content-type', '')}\r\n\r\n".encode()
    message = BytesParser().parsebytes(head + rec.raw_body)
    fields: dict[str, Any] = {}
    for part in message.get_payload() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        fields[name] = (filename, data) if filename else data.decode()
    return fields


class FakeOpenAIAudio(LoopbackFake):
    def __init__(self, api_key: str = "sk-test", transcript: str = "I would like a table.") -> None:
        super().__init__()
        self.api_key = api_key
        self.transcript = transcript
        self.models = {"whisper-1", "tts-1", "kokoro"}
        self.fail_status: int | None = None
        self.first_byte_seconds = 0.0
        self.drop_after_chunks: int | None = None
        self.forms: list[dict[str, Any]] = []

    def error(self, h: FakeHandler, status: int, message: str, code: str | None = None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        h.send_json(status, {"error": {"message": message, "type": kind, "code": code}})

    def handle(self, h: FakeHandler, rec: Recorded) -> None:
        if self.first_byte_seconds:
            self.release.wait(self.first_byte_seconds)
        if self.api_key and rec.headers.get("authorization") != f"Bearer {self.api_key}":
            self.error(h, 401, "Incorrect API key provided.", "invalid_api_key")
            return
        if self.fail_status == 429:
            self.error(h, 429, "Rate limit reached for requests", "rate_limit_exceeded")
            return
        if self.fail_status is not None:
            self.error(h, self.fail_status, "The server had an error processing your request.")
            return
        route = (rec.method, rec.path)
        if route == ("GET", "/v1/models"):
            data = [{"id": m, "object": "model", "owned_by": "fake"} for m in sorted(self.models)]
            h.send_json(200, {"object": "list", "data": data})
        elif route == ("POST", "/v1/audio/transcriptions"):
            self._transcribe(h, rec)
        elif route == ("POST", "/v1/audio/speech"):
            self._speech(h, rec)
        else:
            self.error(h, 404, f"Invalid URL ({rec.method} {rec.path})")

    def _transcribe(self, h: FakeHandler, rec: Recorded) -> None:
        form = parse_multipart(rec)
        self.forms.append(form)
        if form.get("model") not in self.models:
            self.error(h, 400, f"Invalid model {form.get('model')!r}", "model_not_found")
            return
        upload = form.get("file")
        if not isinstance(upload, tuple):
            self.error(h, 400, "1 validation error: file field required")
            return
        try:
            with wave.open(io.BytesIO(upload[1])) as w:
                ok = w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getnframes() > 0
        except (wave.Error, EOFError):
            ok = False
        if not ok:
            self.error(h, 400, "Invalid file format.")
            return
        if form.get("response_format", "json") == "json":
            h.send_json(200, {"text": self.transcript})
        else:
            self.error(h, 400, "this fake only speaks response_format=json")

    def _speech(self, h: FakeHandler, rec: Recorded) -> None:
        body = rec.body if isinstance(rec.body, dict) else {}
        if body.get("model") not in self.models or not body.get("input") or not body.get("voice"):
            self.error(h, 400, "model, input and voice are required")
            return
        pcm = tone_pcm24(body["input"])
        fmt = body.get("response_format", "mp3")
        if fmt == "wav":
            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(PCM_RATE)
                w.writeframes(pcm)
            data = buf.getvalue()
            h.send_response(200)
            h.send_header("Content-Type", "audio/wav")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        if fmt != "pcm":
            self.error(h, 400, f"this fake does not encode {fmt!r}")
            return
        h.start_chunked(200, "audio/pcm")
        for i, start in enumerate(range(0, len(pcm), CHUNK_BYTES - 1)):  # odd: splits samples
            if self.drop_after_chunks is not None and i == self.drop_after_chunks:
                h.drop()
                return
            h.write_chunk(pcm[start : start + CHUNK_BYTES - 1])
        h.end_chunked()
