"""Build the engines a configuration asks for, load them off the event loop, warm them.

Everything heavy happens here, before READY: a model that loads on the first call costs
that caller seconds of silence. A cloud engine always comes with its local counterpart
loaded behind it (`aicallerd.engines.fallback`); a cloud engine that does not answer at
start-up is a warning, and calls use the local engine until it does.
"""

from __future__ import annotations

import os

# CTranslate2 (Whisper) and llama.cpp's ggml each bring a libgomp, whose idle team threads
# spin by default: on a small, busy box they take the cores from the engine doing the work.
# Measured on 2 cores shared with other work (load ~5): Whisper 2.5-4x the CPU per utterance
# and llama.cpp 3-10x, each as much slower, against sleeping at once. libgomp reads this when
# it loads, at the first model load, after this module is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import httpx
import trio

from aicallerd.call.lines import FALLBACK_LINE, TIME_LIMIT_LINE
from aicallerd.config import Config
from aicallerd.cputime import LEDGER, run_named
from aicallerd.engines.elevenlabs_ws import ElevenLabsWebSocketTTS
from aicallerd.engines.fallback import FallbackChat, FallbackSynthesizer, FallbackTranscriber
from aicallerd.engines.llama_server import LLM_NICER, EmbeddedLlamaServer
from aicallerd.engines.llm import ChatClient, LlamaCppChat, LLMError, OllamaChat, OpenAIChat
from aicallerd.engines.openai_stt import OpenAITranscriber
from aicallerd.engines.openai_tts import OpenAISpeechTTS
from aicallerd.engines.stt import SpeechToText, STTError, Transcriber
from aicallerd.engines.tts import ElevenLabsTTS, PiperTTS, Synthesizer
from aicallerd.vad import RmsVad, SileroVad, load_session

log = logging.getLogger("aicallerd.engines")

# Ollama may load a model from disk at start-up; longer than a turn's deadline, not for ever.
PRELOAD_SECONDS = 120.0
MAX_LLM_SLOTS = 8
CLOUD_WARM_SECONDS = 15.0  # a cloud LLM with the local fallback behind it


@dataclass
class Engines:
    transcriber: SpeechToText
    llm: ChatClient
    tts: Synthesizer
    vad_factory: Callable[[], object]
    vad_name: str
    http: httpx.AsyncClient
    llama: EmbeddedLlamaServer | None = None
    canned: dict[str, bytes] = field(default_factory=dict)
    load_seconds: float = 0.0

    def describe(self) -> str:
        embedded = self.llama is not None and not isinstance(self.llm, FallbackChat)
        llm = self.llama.describe() if embedded and self.llama else self.llm.describe()
        return (
            f"VAD {self.vad_name}; STT {self.transcriber.describe()}; "
            f"LLM {llm}; TTS {self.tts.describe()}"
        )

    def status(self) -> dict[str, str]:
        """Per engine ("stt", "llm", "tts"): "ok", "degraded: <why>" or "open until ..."
        for a cloud engine's breaker; a local engine is always "ok"."""
        engines = {"stt": self.transcriber, "llm": self.llm, "tts": self.tts}
        return {
            name: engine.status() if hasattr(engine, "status") else "ok"
            for name, engine in engines.items()
        }

    async def aclose(self) -> None:
        """Close the HTTP clients. The embedded llama.cpp server is left to the process's
        exit (see ``aicallerd.__main__``): xllamacpp's stop sometimes aborts the process
        ("terminate called without an active exception") while its threads wind down."""
        await self.http.aclose()


async def _vad_factory(cfg: Config) -> tuple[Callable[[], object], str]:
    if cfg.turn.vad == "silero":
        # Load once now, so a broken model fails at start, in a thread named for its leg.
        await trio.to_thread.run_sync(run_named, "vad", load_session, None)
        return SileroVad, "silero-v6"
    threshold = cfg.turn.min_speech_rms_threshold
    return (lambda: RmsVad(threshold)), f"rms>={threshold:g}"


def _cloud_tts(cfg: Config, http: httpx.AsyncClient) -> Synthesizer:
    t = cfg.tts
    if t.engine == "openai":
        return OpenAISpeechTTS(
            t.api_url,
            t.api_model,
            t.api_voice,
            http,
            api_key=t.api_key,
            response_format=t.api_format,
        )
    if t.elevenlabs_streaming and t.elevenlabs_transport == "websocket":
        return ElevenLabsWebSocketTTS(
            t.elevenlabs_api_key,
            t.elevenlabs_voice_id,
            t.elevenlabs_model,
            base_url=t.elevenlabs_url,
            speed=t.elevenlabs_speed,
        )
    return ElevenLabsTTS(
        api_key=t.elevenlabs_api_key,
        voice_id=t.elevenlabs_voice_id,
        model_id=t.elevenlabs_model,
        client=http,
        base_url=t.elevenlabs_url,
        speed=t.elevenlabs_speed,
        streaming=t.elevenlabs_streaming,
    )


def _cloud_llm(cfg: Config, http: httpx.AsyncClient) -> ChatClient:
    if cfg.llm.backend == "ollama":
        return OllamaChat(cfg.llm.url, cfg.llm.model, http, keep_alive=cfg.llm.keep_alive)
    return OpenAIChat(cfg.llm.url, cfg.llm.model, http, api_key=cfg.llm.api_key or None)


async def load_engines(cfg: Config) -> Engines:
    """Load, start and warm every engine; raises with a clear message when a local one
    cannot (a cloud one that cannot is a warning: its local fallback takes the calls)."""
    t0 = time.monotonic()
    http = httpx.AsyncClient(timeout=httpx.Timeout(cfg.llm.timeout_seconds, connect=5.0))
    llama: EmbeddedLlamaServer | None = None
    try:
        whisper = Transcriber(
            model=cfg.stt.model,
            compute_type=cfg.stt.compute_type,
            beam_size=cfg.stt.beam_size,
            language=cfg.stt.language or None,
            cpu_threads=cfg.stt.cpu_threads,
        )
        transcriber: SpeechToText = whisper
        if not cfg.stt.use_local_whisper:
            cloud_stt = OpenAITranscriber(
                cfg.stt.api_url,
                cfg.stt.api_model,
                http,
                api_key=cfg.stt.api_key,
                language=cfg.stt.language or None,
            )
            transcriber = FallbackTranscriber(
                cloud_stt, whisper, deadline=cfg.stt.api_timeout_seconds
            )
        piper = PiperTTS(voice=cfg.tts.voice, speed=cfg.tts.speed)
        tts: Synthesizer = piper
        if cfg.tts.engine != "piper":
            speed = cfg.tts.elevenlabs_speed if cfg.tts.engine == "elevenlabs" else 1.0
            tts = FallbackSynthesizer(
                _cloud_tts(cfg, http),
                piper,
                first_audio_seconds=cfg.tts.first_audio_seconds,
                speed=speed,
            )
        llm: ChatClient
        local_llm: ChatClient | None = None
        if cfg.llm.backend == "embedded" or cfg.llm.local_fallback:
            # One slot per call it may serve at once: each call's prompt and history stay in
            # its slot's cache, and simultaneous turns decode together instead of queueing.
            slots = max(1, min(cfg.server.max_concurrent_calls, MAX_LLM_SLOTS))
            llama = EmbeddedLlamaServer(model_path=cfg.llm.embedded_model, parallel=slots)
            await trio.to_thread.run_sync(partial(run_named, "llm", llama.start, nicer=LLM_NICER))
            local_llm = LlamaCppChat(
                llama.base_url, llama.model_name, http, api_key=llama.api_key, slots=slots
            )
        if cfg.llm.backend == "embedded":
            assert local_llm is not None
            llm = local_llm
        elif local_llm is not None:
            llm = FallbackChat(
                _cloud_llm(cfg, http), local_llm, first_token_seconds=cfg.llm.first_token_seconds
            )
        else:
            llm = _cloud_llm(cfg, http)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, run_named, "stt", _load_and_warm, whisper)
            nursery.start_soon(_warm_tts, tts)
            if isinstance(transcriber, FallbackTranscriber):
                nursery.start_soon(_check_cloud_stt, transcriber)
        vad_factory, vad_name = await _vad_factory(cfg)
        await _warm_llm(llm, cfg.llm.system_prompt)
        engines = Engines(transcriber, llm, tts, vad_factory, vad_name, http, llama)
        engines.canned = await render_lines(tts, _lines(cfg))
    except BaseException:
        await http.aclose()
        if llama is not None:
            llama.close()
        raise
    engines.load_seconds = time.monotonic() - t0
    threads = LEDGER.threads_by_leg()
    log.info("engine threads: %s", ", ".join(f"{leg} {n}" for leg, n in threads.items()))
    LEDGER.mark_baseline()  # CPU per turn counts turns, not loading and warming
    return engines


async def _warm_llm(llm: ChatClient, system_prompt: str) -> None:
    """Preload and warm the model(s); a server that fails is logged, never fatal."""
    if isinstance(llm, FallbackChat):
        await _warm_llm(llm.local, system_prompt)
        try:
            # The local model answers meanwhile: a cloud server that is slow or stalled
            # must not hold READY back (a stalled one would hold it forever).
            with trio.fail_after(CLOUD_WARM_SECONDS):
                await llm.cloud.preload()
                await warm_llm(llm.cloud, system_prompt)
        except (LLMError, trio.TooSlowError) as exc:
            llm.breaker.failure(trio.current_time(), str(exc) or "preload timed out")
            log.warning(
                "llm %s not ready: %s (the local model answers until it is)",
                llm.cloud.describe(),
                exc,
            )
        return
    try:
        await llm.preload()
        await warm_llm(llm, system_prompt)
    except LLMError as exc:
        # A dead Ollama is not fatal: calls get a graceful line until it is back.
        log.error("llm not ready: %s (calls will hear an apology until it answers)", exc)


async def _check_cloud_stt(transcriber: FallbackTranscriber) -> None:
    """One cheap request (GET /v1/models) so a wrong URL or key shows at start-up."""
    try:
        with trio.fail_after(10):
            cloud = transcriber.cloud
            if isinstance(cloud, OpenAITranscriber):
                await cloud.check()
    except (STTError, trio.TooSlowError) as exc:
        transcriber.breaker.failure(trio.current_time(), str(exc) or "check timed out")
        log.warning(
            "stt %s not ready: %s (the local model transcribes until it is)",
            transcriber.cloud.describe(),
            exc,
        )


async def warm_llm(llm: ChatClient, system_prompt: str) -> None:
    """One tiny chat with the real system prompt: loads the model and leaves the prompt's
    KV cache in the server, so the first caller pays only for their own words."""
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": "Hello"},
    ]
    async for _ in llm.stream_chat(messages, max_tokens=4, temperature=0.0):
        pass


def _load_and_warm(transcriber: Transcriber) -> None:
    """Load and run once: CTranslate2 starts its OpenMP team at the first inference, and
    run in a thread named for the leg, that team is counted as STT too."""
    transcriber.load()
    transcriber.warm()


async def _warm_tts(tts: Synthesizer) -> None:
    await tts.warm()


def _lines(cfg: Config) -> dict[str, str]:
    return {
        "greeting": cfg.call.greeting,
        "goodbye": cfg.call.goodbye,
        "time_limit": TIME_LIMIT_LINE,
        "farewell": cfg.call.farewell,
        "hold": cfg.call.hold_line,
        "sorry": FALLBACK_LINE,
    }


async def render_lines(tts: Synthesizer, lines: dict[str, str]) -> dict[str, bytes]:
    """Pre-synthesize the fixed lines, so a greeting starts at once and a broken TTS
    still leaves an apology to play."""
    out: dict[str, bytes] = {}
    for tag, text in lines.items():
        if not text:
            continue
        audio = bytearray()
        try:
            async for chunk in tts.stream_ulaw(text):
                audio += chunk
        except Exception as exc:
            log.error("could not pre-render the %s line: %s", tag, exc)
            continue
        out[tag] = bytes(audio)
    return out
