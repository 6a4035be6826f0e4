"""The cloud load bench's engine stand-ins speak what the daemon's own clients expect, with a
hosted engine's first-byte delay, and the bench's verdict counts up to the first late level."""

from __future__ import annotations

import io
import random
import time
import wave
from types import SimpleNamespace

import httpx
import numpy as np
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.engines.llm import OllamaChat, OpenAIChat
from aicallerd.engines.tts import ElevenLabsTTS
from bench.cloudload import Level, largest_on_time, reply_on_time, settings_for
from bench.engine_standins import API_KEY, MODEL, REPLIES, VOICE, Pace, create_app, fresh_reply

LINES = [("Do you have parking?", 1.4), ("I would like to make an appointment for next week.", 3.1)]
FIRST_BYTE = 0.15


async def _standins(nursery: trio.Nursery) -> str:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    app = create_app(Pace(first_byte=(FIRST_BYTE, FIRST_BYTE + 0.05)), LINES)
    bound = await nursery.start(serve, app, config)
    return bound[0]


def _wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(int(seconds * 16000), np.int16).tobytes())
    return out.getvalue()


def test_the_daemons_clients_get_whole_answers_after_the_first_byte_delay():
    async def main():
        async with trio.open_nursery() as nursery:
            base = await _standins(nursery)
            async with httpx.AsyncClient(timeout=10) as http:
                messages = [{"role": "user", "content": "Hello"}]
                for llm in (OllamaChat(base, MODEL, http), OpenAIChat(base, MODEL, http)):
                    await llm.preload()
                    assert MODEL in await llm.health()
                    t0 = time.monotonic()
                    stream = llm.stream_chat(messages, max_tokens=200, temperature=0)
                    pieces = [piece async for piece in stream]
                    assert time.monotonic() - t0 >= FIRST_BYTE
                    assert "".join(pieces) in REPLIES

                tts = ElevenLabsTTS(API_KEY, VOICE, client=http, base_url=base)
                await tts.warm()
                text = "Yes, there is free parking right behind the building."
                t0 = time.monotonic()
                chunks = []
                async for chunk in tts.stream_ulaw(text):
                    chunks.append((time.monotonic() - t0, chunk))
                assert chunks[0][0] >= FIRST_BYTE and len(chunks) > 1  # streamed, not in one go
                pcm = ulaw_decode(b"".join(c for _, c in chunks))
                assert abs(len(pcm) / 8000 - len(text) * 0.065) < 0.1  # as long as saying it
                assert np.abs(pcm).max() > 300  # audible

                for text, seconds in LINES:
                    files = {"file": ("phrase.wav", _wav(seconds), "audio/wav")}
                    r = await http.post(
                        base + "/v1/audio/transcriptions", files=files, data={"model": "whisper-1"}
                    )
                    assert r.status_code == 200 and r.json() == {"text": text}
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_the_llm_standin_never_answers_with_a_reply_the_call_already_had():
    """The daemon refuses a reply that repeats the last one (a looping model); a stand-in that
    repeated itself would put that guard's fallback line in the load figures."""
    rng = random.Random(1)
    history: list[dict[str, str]] = []
    for _ in REPLIES:
        reply = fresh_reply(rng, history)
        assert reply not in [m["content"] for m in history]
        history += [{"role": "user", "content": "And?"}, {"role": "assistant", "content": reply}]
    assert fresh_reply(rng, history) in REPLIES  # all used: any will do


def _turn(v2v: float | None, starved: float | None = 0.0, underruns: int = 0):
    return SimpleNamespace(
        v2v_frame_ms=v2v, underruns=underruns, timing=SimpleNamespace(starved_ms=starved)
    )


def test_a_reply_is_on_time_only_if_it_came_and_never_ran_dry():
    assert reply_on_time(_turn(900.0))
    assert not reply_on_time(_turn(None))
    assert not reply_on_time(_turn(900.0, starved=20.0))
    assert not reply_on_time(_turn(900.0, underruns=1))


def _level(n: int, late: int) -> Level:
    turns = [_turn(800.0) for _ in range(n - late)] + [_turn(None) for _ in range(late)]
    return Level(n, 1, [SimpleNamespace(turns=turns, error=None)])  # type: ignore[list-item]


def test_largest_n_stops_at_the_first_level_with_a_late_reply():
    assert largest_on_time([_level(10, 0), _level(25, 0), _level(50, 1)]) == 25
    assert largest_on_time([_level(10, 1), _level(25, 0)]) is None  # a lucky pass does not count
    assert _level(25, 3).late() == 3


def test_every_engine_points_at_the_standins():
    settings = settings_for("http://127.0.0.1:9", "openai", True, ["stt.model={engines}/x"])
    assert "llm.backend=openai" in settings and "tts.engine=elevenlabs" in settings
    assert "tts.elevenlabs_url=http://127.0.0.1:9" in settings
    assert "stt.use_local_whisper=false" in settings
    assert settings[-1] == "stt.model=http://127.0.0.1:9/x"
