"""load_engines with every cloud engine unreachable: a warning each, the local engines answer.

Loads the real bundled models (Whisper tiny.en, Piper, SmolLM2 in llama.cpp): a few seconds.
"""

import logging
import os
from contextlib import aclosing
from pathlib import Path

import numpy as np
import pytest
import trio

from aicallerd.config import load_config
from aicallerd.engines.fallback import FallbackChat, FallbackSynthesizer, FallbackTranscriber
from aicallerd.engines.llama_server import LLM_NICER
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

    async def main() -> tuple[dict[str, str], str, bytes, dict[str, set[int]]]:
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
            nices = thread_nices()
            return status, text, engines.canned.get("sorry", b""), nices
        finally:
            await engines.aclose()
            if engines.llama is not None:  # the daemon leaves it to its exit; a test stops it
                await trio.to_thread.run_sync(engines.llama.close)

    with caplog.at_level(logging.WARNING, logger="aicallerd.engines"):
        status, text, sorry, nices = trio.run(main)
    # Each failure skips the engine for a few seconds, so on a slow machine start-up may try
    # it often enough to open the breaker: either way it is shown as failing, not "ok".
    assert all(s.startswith(("degraded: ", "open until ")) for s in status.values()), status
    assert text.strip()  # the embedded model answered the turn
    assert len(sorry) > 8000  # the apology was rendered by Piper
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "stt" in warned and "llm" in warned and "tts" in warned
    # The embedded model writes the rest of a reply at a lower priority than the voice and
    # Whisper, whose output is awaited sooner.
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert base < 19 and min(nices["aic-llm"]) > base, nices
    assert nices["aic-llm"] == {min(19, base + LLM_NICER)}, nices
    assert nices["aic-tts"] == nices["aic-stt"] == {base}, nices


def thread_nices() -> dict[str, set[int]]:
    """The nice values of this process's threads, by thread name (/proc stat field 19)."""
    found: dict[str, set[int]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            line = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        comm = line[line.index("(") + 1 : line.rindex(")")]
        nice = int(line[line.rindex(")") + 2 :].split()[16])
        found.setdefault(comm, set()).add(nice)
    return found
