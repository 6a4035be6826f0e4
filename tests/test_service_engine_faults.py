"""A real daemon whose cloud engines fail on cue: the caller still hears every reply.

The cloud services are stood in for by local servers speaking their documented protocols
(tests/fakes: ElevenLabs HTTP streaming, an OpenAI-compatible chat server); the local
engines behind them (Piper, the embedded llama.cpp) are the real ones.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import trio
from fakes.elevenlabs_server import FakeElevenLabs
from fakes.ollama_server import FakeOllama
from service_util import ctl, launch, target
from speech import speak

from aicallerctl.testcall import Utterance, place_call
from aicallerd.audio.mulaw import ulaw_decode

pytestmark = pytest.mark.e2e

FIRST = "What time do you open tomorrow?"
SECOND = "Do you have parking?"


def audible_seconds(ulaw: bytes) -> float:
    pcm = ulaw_decode(bytes(ulaw)).astype(np.float64)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    return float((np.sqrt((frames**2).mean(axis=1)) > 200).sum() * 0.02)


def test_cut_voice_stream_and_stalled_llm_never_leave_the_caller_in_silence(tmp_path):
    """ElevenLabs cuts every stream mid-sentence; the LLM sends one token, then only
    keep-alives. Each turn is still answered aloud (the local voice and model take over),
    the call log holds every turn, and status shows both engines degraded."""
    with FakeElevenLabs() as eleven, FakeOllama(reply="We open at nine.") as llm:
        eleven.drop_after_chunks = 1
        llm.stall_after = 1
        d = launch(
            tmp_path,
            f"""
[llm]
backend = "openai"
url = "{llm.base_url}"
model = "gemma3:1b"
[tts]
engine = "elevenlabs"
elevenlabs_api_key = "sk_test_key"
elevenlabs_voice_id = "voice123"
elevenlabs_url = "{eleven.base_url}"
""",
        )
        try:
            script = [Utterance(speak(FIRST), FIRST), Utterance(speak(SECOND), SECOND)]
            result = trio.run(lambda: place_call(target(d), script, reply_timeout=30))
            status = json.loads(ctl(d, "status", "--json").stdout)
        finally:
            d.stop()

    assert result.refused is None and not result.closed_by_daemon
    assert len(result.turns) == 2
    for turn in result.turns:
        assert turn.latency is not None, turn
        assert audible_seconds(turn.agent_audio) >= 0.5, turn  # a reply, not a click
    with sqlite3.connect(d.db_path) as db:
        turns = db.execute(
            "SELECT who, text FROM turns WHERE call_sid = ? ORDER BY seq", (result.call_sid,)
        ).fetchall()
    assert [who for who, _ in turns[1:5]] == ["caller", "agent", "caller", "agent"]
    assert all(text for _, text in turns[1:5])
    health = {e["name"]: e["health"] for e in status["engines"]}
    assert health["llm"] != "ok" and health["tts"] != "ok", health
