"""Build the engines a configuration asks for, load them off the event loop, warm them.

Everything heavy happens here, before READY: a model that loads on the first call costs
that caller seconds of silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import trio

from aicallerd.call.lines import FALLBACK_LINE, TIME_LIMIT_LINE
from aicallerd.config import Config
from aicallerd.engines.llama_server import EmbeddedLlamaServer
from aicallerd.engines.llm import ChatClient, LLMError, OllamaChat, OpenAIChat
from aicallerd.engines.stt import Transcriber
from aicallerd.engines.tts import ElevenLabsTTS, PiperTTS, Synthesizer
from aicallerd.vad import RmsVad, SileroVad

log = logging.getLogger("aicallerd.engines")


@dataclass
class Engines:
    transcriber: Transcriber
    llm: ChatClient
    tts: Synthesizer
    vad_factory: Callable[[], object]
    vad_name: str
    http: httpx.AsyncClient
    llama: EmbeddedLlamaServer | None = None
    canned: dict[str, bytes] = field(default_factory=dict)
    load_seconds: float = 0.0

    def describe(self) -> str:
        llm = self.llama.describe() if self.llama is not None else self.llm.describe()
        return (
            f"VAD {self.vad_name}; STT {self.transcriber.describe()}; "
            f"LLM {llm}; TTS {self.tts.describe()}"
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.llama is not None:
            await trio.to_thread.run_sync(self.llama.close)


def _vad_factory(cfg: Config) -> tuple[Callable[[], object], str]:
    if cfg.turn.vad == "silero":
        SileroVad().probability  # load once now so a broken model fails at start  # noqa: B018
        return SileroVad, "silero-v6"
    threshold = cfg.turn.min_speech_rms_threshold
    return (lambda: RmsVad(threshold)), f"rms>={threshold:g}"


async def load_engines(cfg: Config) -> Engines:
    """Load, start and warm every engine; raises with a clear message when one cannot."""
    t0 = time.monotonic()
    http = httpx.AsyncClient(timeout=httpx.Timeout(cfg.llm.timeout_seconds, connect=5.0))
    llama: EmbeddedLlamaServer | None = None
    try:
        transcriber = Transcriber(
            model=cfg.stt.model,
            compute_type=cfg.stt.compute_type,
            beam_size=cfg.stt.beam_size,
            language=cfg.stt.language or None,
            cpu_threads=cfg.stt.cpu_threads,
        )
        tts: Synthesizer
        if cfg.tts.engine == "piper":
            tts = PiperTTS(voice=cfg.tts.voice, speed=cfg.tts.speed)
        else:
            tts = ElevenLabsTTS(
                api_key=cfg.tts.elevenlabs_api_key,
                voice_id=cfg.tts.elevenlabs_voice_id,
                model_id=cfg.tts.elevenlabs_model,
                client=http,
                base_url=cfg.tts.elevenlabs_url,
            )
        llm: ChatClient
        if cfg.llm.backend == "embedded":
            llama = EmbeddedLlamaServer(model_path=cfg.llm.embedded_model)
            await trio.to_thread.run_sync(llama.start)
            llm = OpenAIChat(llama.base_url, llama.model_name, http)
        elif cfg.llm.backend == "ollama":
            llm = OllamaChat(cfg.llm.url, cfg.llm.model, http, keep_alive=cfg.llm.keep_alive)
        else:
            llm = OpenAIChat(cfg.llm.url, cfg.llm.model, http)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, _load_and_warm, transcriber)
            nursery.start_soon(_warm_tts, tts)
        vad_factory, vad_name = _vad_factory(cfg)
        try:
            await llm.preload()
            await warm_llm(llm, cfg.llm.system_prompt)
        except LLMError as exc:
            # A dead Ollama is not fatal: calls get a graceful line until it is back.
            log.error("llm not ready: %s (calls will hear an apology until it answers)", exc)
        engines = Engines(transcriber, llm, tts, vad_factory, vad_name, http, llama)
        engines.canned = await render_lines(tts, _lines(cfg))
    except BaseException:
        await http.aclose()
        if llama is not None:
            llama.close()
        raise
    engines.load_seconds = time.monotonic() - t0
    return engines


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
