"""load_engines with every cloud engine unreachable: a warning each, the local engines answer.

Loads the real bundled models (Whisper tiny.en, Piper, SmolLM2 in llama.cpp): a few seconds.
"""

import logging
from contextlib import aclosing
from pathlib import Path

import numpy as np
import pytest
import trio

from aicallerd.config import load_config
from aicallerd.engines.fallback import FallbackChat, FallbackSynthesizer, FallbackTranscriber
from aicallerd.engines.loader import load_engines
from bench.daemon import free_port


def test_unreachable_cloud_engines_start_on_the_local_ones(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    conf = tmp_path / "aicaller.conf"
    conf.write_text(f'[tts]\nelevenlabs_url = "{dead}"\n')
    cfg = load_config(
        conf,
        {
            "USE_LOCAL_WHISPER": "false",
            "OPENAI_STT_URL": dead,
            "OPENAI_API_KEY": "sk-x",
            "LLM_BACKEND": "ollama",
            "OLLAMA_URL": dead + "/api/chat",
            "TTS_ENGINE": "elevenlabs",
            "ELEVENLABS_API_KEY": "sk_x",
            "ELEVENLABS_VOICE_ID": "voice123",
            "STATE_DIRECTORY": "/tmp",
        },
    )

    async def main() -> tuple[dict[str, str], str, bytes]:
        engines = await load_engines(cfg)
        try:
            assert isinstance(engines.transcriber, FallbackTranscriber)
            assert isinstance(engines.llm, FallbackChat)
            assert isinstance(engines.tts, FallbackSynthesizer)
            status = engines.status()
            text = ""
            messages = [{"role": "user", "content": "Hello, are you open today?"}]
            stream = engines.llm.stream_chat(messages, max_tokens=12, temperature=0.0)
            async with aclosing(stream) as it:
                async for delta in it:
                    text += delta
            await engines.transcriber.transcribe(np.zeros(8000, dtype=np.int16))
            return status, text, engines.canned.get("sorry", b"")
        finally:
            await engines.aclose()
            if engines.llama is not None:  # the daemon leaves it to its exit; a test stops it
                await trio.to_thread.run_sync(engines.llama.close)

    with caplog.at_level(logging.WARNING, logger="aicallerd.engines"):
        status, text, sorry = trio.run(main)
    # Each failure skips the engine for a few seconds, so on a slow machine start-up may try
    # it often enough to open the breaker: either way it is shown as failing, not "ok".
    assert all(s.startswith(("degraded: ", "open until ")) for s in status.values()), status
    assert text.strip()  # the embedded model answered the turn
    assert len(sorry) > 8000  # the apology was rendered by Piper
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "stt" in warned and "llm" in warned and "tts" in warned
