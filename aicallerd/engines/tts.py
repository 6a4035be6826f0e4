"""Text to speech as 8 kHz mu-law, the format Twilio plays: local Piper or ElevenLabs.

Piper synthesises in a worker thread behind its own `trio.CapacityLimiter(1)` and yields
each sentence as soon as it is ready; ElevenLabs is streamed over a shared httpx client
with `output_format=ulaw_8000`, so its bytes go to Twilio untouched, or (file mode, the
seed's `ELEVEN_STREAMING=false`) fetched as a whole MP3 and transcoded.
"""

import os

# onnxruntime (Piper's runtime) reads this at import: the daemon must not phone home.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
import numpy as np
import trio

from aicallerd.audio.mulaw import ulaw_encode
from aicallerd.audio.resample import float_to_pcm16, resample
from aicallerd.cputime import call_charged, run_named
from aicallerd.engines import bundled
from aicallerd.engines.deadline import DeadlineLimiter
from aicallerd.engines.transcode import decode_to_ulaw

log = logging.getLogger(__name__)

CALL_RATE = 8000
MP3_FORMAT = "mp3_44100_128"  # the seed's file mode; every ElevenLabs plan offers it


class TTSError(RuntimeError):
    """Speech could not be synthesised; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class Synthesizer(Protocol):
    """What a turn needs from a voice."""

    def stream_ulaw(self, text: str) -> AsyncIterator[bytes]:
        """Yield 8 kHz mu-law audio for `text` in chunks as they become ready."""
        ...

    async def warm(self) -> None:
        """Get ready for the first caller (load, first run, connection); may raise TTSError."""
        ...

    def describe(self) -> str:
        """Short human description for logs and `aicallerctl status`."""
        ...


class PiperTTS:
    """Local Piper voice; `voice` is "bundled" (en_US joe medium) or a path to an .onnx voice."""

    def __init__(self, voice: str = "bundled", speed: float = 1.0, *, volume: float = 0.9) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.voice = voice
        self.speed = speed
        self.volume = volume
        self._piper: Any = None
        self._syn_config: Any = None
        self._name = voice
        self._load_lock = threading.Lock()
        self._limiter = DeadlineLimiter(1)

    @property
    def limiter(self) -> DeadlineLimiter:
        """Serialises Piper calls, the most urgent first (``deadline.DUE``)."""
        return self._limiter

    def _resolve(self) -> tuple[Path, Path]:
        if self.voice == "bundled":
            try:
                return bundled.piper_voice()
            except bundled.BundledModelError as exc:
                raise TTSError(f"bundled Piper voice: {exc}") from exc
        model = Path(self.voice).expanduser()
        config = model.with_name(model.name + ".json")
        for path in (model, config):
            if not path.is_file():
                raise TTSError(f"Piper voice file {path} does not exist")
        return model, config

    def load(self) -> None:
        """Load the ONNX voice (blocking, ~1 s); safe to call more than once."""
        with self._load_lock:
            if self._piper is not None:
                return
            model, config = self._resolve()
            try:
                import onnxruntime
                from piper import PiperConfig, PiperVoice, SynthesisConfig
            except ImportError as exc:
                raise TTSError(
                    "the Python package 'piper-tts' is not installed (pip install piper-tts)"
                ) from exc
            started = time.monotonic()
            try:
                options = onnxruntime.SessionOptions()
                # onnxruntime's pool spins between operators by default: with the LLM
                # writing on the other core, a spinning thread that loses its core stalls
                # the rest at every operator. First audio of a 5-word clause with one core
                # busy: 104 ms without spinning, 130 with it (idle: 77 against 70).
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                with open(config, encoding="utf-8") as f:
                    voice_config = PiperConfig.from_dict(json.load(f))
                self._piper = PiperVoice(
                    config=voice_config,
                    session=onnxruntime.InferenceSession(
                        str(model), sess_options=options, providers=["CPUExecutionProvider"]
                    ),
                )
            except Exception as exc:
                raise TTSError(f"cannot load Piper voice {model}: {exc}") from exc
            self._syn_config = SynthesisConfig(length_scale=1.0 / self.speed, volume=self.volume)
            self._name = model.name.removesuffix(".onnx")
            log.info("loaded %s in %.2f s", self.describe(), time.monotonic() - started)

    @property
    def sample_rate(self) -> int:
        """The voice's native rate (22050 for medium voices); loads the voice."""
        self.load()
        return int(self._piper.config.sample_rate)

    def _chunks(self, text: str) -> Iterator[tuple[np.ndarray, int]]:
        """(float32 audio, rate) per sentence, straight from Piper."""
        self.load()
        for chunk in self._piper.synthesize(text, syn_config=self._syn_config):
            yield chunk.audio_float_array, chunk.sample_rate

    def synthesize_pcm_sync(self, text: str) -> tuple[np.ndarray, int]:
        """All of `text` as int16 at the voice's native rate (for tools and tests); blocking."""
        parts = [float_to_pcm16(audio) for audio, _ in self._chunks(text)]
        rate = self.sample_rate
        if not parts:
            return np.zeros(0, dtype=np.int16), rate
        return np.concatenate(parts), rate

    def _next_ulaw(self, chunks: Iterator[tuple[np.ndarray, int]]) -> bytes | None:
        """Synthesise the next sentence and convert it to 8 kHz mu-law (worker thread)."""
        item = next(chunks, None)
        if item is None:
            return None
        audio, rate = item
        return ulaw_encode(float_to_pcm16(resample(audio, rate, CALL_RATE)))

    async def stream_ulaw(self, text: str) -> AsyncIterator[bytes]:
        """Yield one mu-law chunk per sentence; cancelling does not wait for the model."""
        if not text.strip():
            return
        chunks = self._chunks(text)
        try:
            while True:
                data = await trio.to_thread.run_sync(
                    call_charged,
                    "tts",
                    self._next_ulaw,
                    chunks,
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
                if data is None:
                    return
                if data:
                    yield data
        except TTSError:
            raise
        except Exception as exc:
            raise TTSError(f"piper failed on {text[:40]!r}: {exc}") from exc

    def warm_sync(self) -> None:
        """Load and run one short synthesis (blocking)."""
        self.synthesize_pcm_sync("Hello.")

    async def warm(self) -> None:
        """Load and run one short synthesis in a thread named for the TTS leg, so the
        onnxruntime pool the load creates is counted as TTS CPU (`aicallerd.cputime`)."""
        await trio.to_thread.run_sync(run_named, "tts", self.warm_sync, limiter=self._limiter)

    def describe(self) -> str:
        """E.g. "piper en_US-joe-medium x1.0"."""
        return f"piper {self._name} x{self.speed:g}"


def eleven_error(body: bytes) -> str:
    """ElevenLabs' `detail` (a dict, a validation list or a string) as one line."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    detail = data.get("detail", data) if isinstance(data, dict) else data
    if isinstance(detail, dict):
        status, message = detail.get("status"), detail.get("message")
        if message:
            return f"{status}: {message}" if status else str(message)
    if isinstance(detail, list):
        msgs = [
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', d)}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        ]
        return "; ".join(msgs)[:300]
    return str(detail)[:300]


class ElevenLabsTTS:
    """ElevenLabs over HTTP: streamed in `ulaw_8000` (Twilio's format), or with
    `streaming=False` one MP3 per sentence, decoded and resampled to 8 kHz mu-law.

    Pass the daemon's shared `httpx.AsyncClient` so the TLS connection is reused; without
    one, an own client is created (close it with `aclose()`). The API key is only ever
    sent as the `xi-api-key` header and never appears in errors, logs or repr.
    """

    def __init__(
        self,
        api_key: str,
        voice_id: str,
        model_id: str = "eleven_flash_v2_5",
        client: httpx.AsyncClient | None = None,
        *,
        base_url: str = "https://api.elevenlabs.io",
        speed: float = 0.9,
        stability: float = 0.5,
        similarity_boost: float = 0.75,
        streaming: bool = True,
    ) -> None:
        if not api_key:
            raise ValueError("ElevenLabs needs an API key")
        self._api_key = api_key
        self.voice_id = voice_id
        self.model_id = model_id
        self.base_url = base_url.rstrip("/")
        self.speed = min(1.2, max(0.7, speed))  # the API rejects speeds outside 0.7-1.2
        self.voice_settings = {
            "stability": stability,
            "similarity_boost": similarity_boost,
            "speed": self.speed,
        }
        self.streaming = streaming
        self._own_client = client is None
        self.client = client if client is not None else httpx.AsyncClient(timeout=30.0)

    def __repr__(self) -> str:
        return f"ElevenLabsTTS(voice_id={self.voice_id!r}, model_id={self.model_id!r})"

    def _request(self, text: str, path: str, output_format: str) -> httpx.Request:
        return self.client.build_request(
            "POST",
            f"{self.base_url}/v1/text-to-speech/{self.voice_id}{path}",
            params={"output_format": output_format},
            headers=self._headers(),
            json={"text": text, "model_id": self.model_id, "voice_settings": self.voice_settings},
        )

    def _headers(self) -> dict[str, str]:
        return {"xi-api-key": self._api_key}

    def _transport_error(self, exc: httpx.HTTPError) -> TTSError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return TTSError(f"elevenlabs at {self.base_url} unreachable: {type(exc).__name__}")
        if isinstance(exc, httpx.TimeoutException):
            return TTSError(f"elevenlabs at {self.base_url} timed out ({type(exc).__name__})")
        return TTSError(f"elevenlabs at {self.base_url} failed: {type(exc).__name__}")

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send (streamed); raise TTSError with ElevenLabs' message on a non-200."""
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code != 200:
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            raise TTSError(
                f"elevenlabs: HTTP {response.status_code}: {eleven_error(body)}",
                status=response.status_code,
            )
        return response

    async def stream_ulaw(self, text: str) -> AsyncIterator[bytes]:
        """Streaming: POST .../stream and yield the mu-law bytes as they arrive. File mode:
        POST /v1/text-to-speech/{voice} for an MP3 and yield it transcoded, in one piece."""
        if not text.strip():
            return
        if self.streaming:
            request = self._request(text, "/stream", "ulaw_8000")
        else:
            request = self._request(text, "", MP3_FORMAT)
        response = await self._send(request)
        try:
            if not self.streaming:
                mp3 = await response.aread()
                try:
                    audio = await trio.to_thread.run_sync(call_charged, "tts", decode_to_ulaw, mp3)
                except ValueError as exc:
                    raise TTSError(f"elevenlabs: bad MP3 from {self.base_url}: {exc}") from exc
                if audio:
                    yield audio
                return
            async for chunk in response.aiter_bytes():
                if chunk:
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()

    async def warm(self) -> None:
        """Check the key and voice (GET /v1/voices/{id}) and leave a warm connection."""
        request = self.client.build_request(
            "GET", f"{self.base_url}/v1/voices/{self.voice_id}", headers=self._headers()
        )
        response = await self._send(request)
        await response.aclose()

    async def aclose(self) -> None:
        """Close the client if this object created it."""
        if self._own_client:
            await self.client.aclose()

    def describe(self) -> str:
        """E.g. "elevenlabs eleven_flash_v2_5 voice XYZ x0.9"."""
        mode = "" if self.streaming else " (mp3 files)"
        return f"elevenlabs {self.model_id} voice {self.voice_id} x{self.speed:g}{mode}"
