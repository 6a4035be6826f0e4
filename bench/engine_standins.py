"""Stand-ins for the three remote engines, for the load bench (``bench.cloudload``).

One loopback HTTP server speaks each service's streaming API with the delays of a hosted
engine, so that the daemon under test only moves audio, as it does when its engines run
elsewhere:

- STT, OpenAI-compatible ``POST /v1/audio/transcriptions`` (multipart ``file``): answers
  ``{"text": ...}`` after the first-byte delay; the text is the bench script line whose length
  is closest to the audio's (the stand-in does not listen, it only has to answer plausibly).
- LLM, Ollama ``POST /api/chat`` (NDJSON; ``/api/version``, ``/api/tags``, the empty-messages
  preload) and OpenAI ``POST /v1/chat/completions`` (SSE; ``/v1/models``): a canned reply
  streamed token by token after the first-byte delay.
- TTS, ElevenLabs ``POST /v1/text-to-speech/{voice}/stream?output_format=ulaw_8000`` (and
  ``GET /v1/voices/{voice}``): voice-like mu-law audio whose length follows the text, streamed
  faster than real time after the first-byte delay.

The first byte of every answer comes after a delay drawn uniformly from ``--first-byte``
(150-300 ms by default, a hosted engine's time to first byte). Run as a process of its own
(``python -m bench.engine_standins --port N``) so its CPU is not the bench's; it prints
``listening on http://...`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import sys
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio
from quart import Response, request
from quart_trio import QuartTrio

from aicallerd.audio.mulaw import ulaw_encode

MODEL = "bench-model"
VOICE = "bench-voice"
API_KEY = "bench-key"
RATE = 8000
SECONDS_PER_CHAR = 0.065  # ~15 characters a second, a calm speaking rate
REPLIES = (
    "Sure, we open at nine tomorrow morning. Is there anything else I can help you with?",
    "Yes, there is free parking right behind the building. Just follow the signs.",
    "I can book that for you. What name should I put the appointment under?",
    "We close at six on weekdays and at two on Saturdays. Sundays we are closed.",
    "Thanks for asking! A standard visit takes about thirty minutes.",
    "Of course. I will pass your message on, and someone will call you back today.",
)


@dataclass(frozen=True)
class Pace:
    """How fast the stand-ins answer: first byte, then the streaming rate."""

    first_byte: tuple[float, float] = (0.150, 0.300)  # seconds, uniform
    token_interval: float = 0.015  # LLM: ~65 tokens/s, a hosted model
    audio_speedup: float = 4.0  # TTS: seconds of audio sent per second of wall time
    chunk_seconds: float = 0.1  # TTS: audio per streamed chunk


def fresh_reply(rng: random.Random, messages: list[dict[str, Any]]) -> str:
    """A canned reply this call has not had yet: a real model does not answer a new question
    with its last reply word for word, and the daemon (rightly) refuses a reply that repeats
    one, which would make the bench measure its repeat guard instead of its audio path."""
    said = {m.get("content") for m in messages if m.get("role") == "assistant"}
    return rng.choice([r for r in REPLIES if r not in said] or list(REPLIES))


def tokens_of(text: str) -> list[str]:
    """Streaming pieces the way a tokenizer cuts them: words with their leading space."""
    return re.findall(r"\s*\S+", text)


def voice_audio(text: str, seed: int) -> bytes:
    """Speech-like mu-law for ``text``: a 130 Hz voice with harmonics, its loudness rising and
    falling at syllable rate (never silent), as long as the text takes to say."""
    n = max(RATE // 4, int(len(text) * SECONDS_PER_CHAR * RATE))
    t = np.arange(n) / RATE
    rng = np.random.default_rng(seed)
    f0 = 130 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    tone = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    return ulaw_encode((tone * envelope * 5000).astype(np.int16))


def wav_seconds(data: bytes) -> float | None:
    """Duration of a WAV upload; None if it is not one."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError):
        return None


def closest_line(seconds: float, lines: list[tuple[str, float]]) -> str:
    """The script line whose spoken length is closest to ``seconds``."""
    return min(lines, key=lambda line: abs(line[1] - seconds))[0] if lines else ""


def create_app(pace: Pace, lines: list[tuple[str, float]], seed: int = 0) -> QuartTrio:
    """The stand-ins' routes; ``lines`` = (text, seconds) of what callers say."""
    app = QuartTrio("engine-standins")
    rng = random.Random(seed)

    async def first_byte() -> None:
        await trio.sleep(rng.uniform(*pace.first_byte))

    def authorized() -> bool:
        return request.headers.get("xi-api-key") == API_KEY

    # -- STT -----------------------------------------------------------------------------
    @app.post("/v1/audio/transcriptions")
    async def transcriptions() -> Response:
        files = await request.files
        upload = files.get("file")
        if upload is None:
            return _json({"error": {"message": "file is required", "type": "invalid_request"}}, 400)
        data = upload.read()
        seconds = wav_seconds(data) or len(data) / (2 * 16000)
        await first_byte()
        return _json({"text": closest_line(seconds, lines)}, 200)

    # -- LLM -----------------------------------------------------------------------------
    @app.get("/api/version")
    async def version() -> Response:
        return _json({"version": "0.6.5"}, 200)

    @app.get("/api/tags")
    async def tags() -> Response:
        return _json({"models": [{"name": MODEL, "model": MODEL}]}, 200)

    @app.get("/v1/models")
    async def models() -> Response:
        return _json({"object": "list", "data": [{"id": MODEL, "object": "model"}]}, 200)

    @app.post("/api/chat")
    async def ollama_chat() -> Response:
        body = await request.get_json(force=True)
        if not body.get("messages"):  # preload
            done = {"model": MODEL, "message": {"role": "assistant", "content": ""}, "done": True}
            return _json(done, 200)
        limit = int((body.get("options") or {}).get("num_predict", 1000))
        toks = tokens_of(fresh_reply(rng, body["messages"]))[:limit]
        await first_byte()

        async def lines_out() -> AsyncIterator[bytes]:
            for i, tok in enumerate(toks):
                if i:
                    await trio.sleep(pace.token_interval)
                piece = {"model": MODEL, "message": {"role": "assistant", "content": tok}}
                yield json.dumps({**piece, "done": False}).encode() + b"\n"
            last = {"model": MODEL, "message": {"role": "assistant", "content": ""}}
            yield json.dumps({**last, "done": True, "eval_count": len(toks)}).encode() + b"\n"

        return Response(lines_out(), content_type="application/x-ndjson")

    @app.post("/v1/chat/completions")
    async def openai_chat() -> Response:
        body = await request.get_json(force=True)
        toks = tokens_of(fresh_reply(rng, body.get("messages") or []))
        toks = toks[: int(body.get("max_tokens") or 1000)]
        await first_byte()

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": MODEL}
            return f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            for i, tok in enumerate(toks):
                if i:
                    await trio.sleep(pace.token_interval)
                yield event({"content": tok})
            yield event({}, "stop")
            yield b"data: [DONE]\n\n"

        return Response(events(), content_type="text/event-stream")

    # -- TTS -----------------------------------------------------------------------------
    @app.get("/v1/voices/<voice>")
    async def voice_info(voice: str) -> Response:
        if not authorized():
            return _json({"detail": {"status": "invalid_api_key"}}, 401)
        return _json({"voice_id": voice, "name": "Bench", "category": "premade"}, 200)

    @app.post("/v1/text-to-speech/<voice>/stream")
    async def speech(voice: str) -> Response:
        if not authorized():
            return _json({"detail": {"status": "invalid_api_key"}}, 401)
        if request.args.get("output_format") != "ulaw_8000":
            return _json({"detail": "this stand-in only speaks ulaw_8000"}, 422)
        text = str((await request.get_json(force=True)).get("text", ""))
        audio = voice_audio(text, rng.randrange(1 << 30))
        await first_byte()
        step = int(pace.chunk_seconds * RATE)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(audio), step):
                if i:
                    await trio.sleep(pace.chunk_seconds / pace.audio_speedup)
                yield audio[i : i + step]

        return Response(chunks(), content_type="audio/basic")

    return app


def _json(obj: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(obj), status=status, content_type="application/json")


async def serve(port: int, pace: Pace, lines: list[tuple[str, float]]) -> None:
    """Serve until killed; say where once listening."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.keep_alive_timeout = 75  # the daemon keeps its connections warm
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(hypercorn_serve, create_app(pace, lines), config)
        print(f"listening on {bound[0]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from bench.utterances import load_script

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--first-byte", default="150,300", help="ms range, e.g. 150,300")
    args = p.parse_args(argv)
    lo, hi = (float(x) / 1000 for x in args.first_byte.split(","))
    lines = [(line.text, line.seconds) for line in load_script()]
    try:
        trio.run(serve, args.port, Pace(first_byte=(lo, hi)), lines)
    except KeyboardInterrupt:
        pass
    print(f"stand-ins stopped at {time.strftime('%H:%M:%S')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
