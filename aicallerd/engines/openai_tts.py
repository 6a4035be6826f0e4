"""Text to speech over the OpenAI-compatible speech API (OpenAI, Kokoro-FastAPI, speaches).

`POST {base}/v1/audio/speech` `{model, input, voice, response_format, speed}`: "pcm" is
streamed raw 24 kHz s16le mono and converted piece by piece as it arrives; "wav" is read
whole and decoded. Either way the caller gets 8 kHz mu-law.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from aicallerd.engines.llm import api_root, error_text
from aicallerd.engines.transcode import PcmToUlaw, decode_to_ulaw
from aicallerd.engines.tts import TTSError

PCM_RATE = 24000  # OpenAI's "pcm": 24 kHz, 16-bit signed little-endian, mono


class OpenAISpeechTTS:
    """A cloud or self-hosted voice; the key is only ever sent as a header."""

    def __init__(
        self,
        base_url: str,
        model: str,
        voice: str,
        client: httpx.AsyncClient,
        *,
        api_key: str = "",
        response_format: str = "pcm",
        speed: float = 1.0,
    ) -> None:
        if response_format not in ("pcm", "wav"):
            raise ValueError(f"response_format must be pcm or wav, got {response_format!r}")
        self.api_root = api_root(base_url, "/audio/speech")
        self.model = model
        self.voice = voice
        self.client = client
        self.response_format = response_format
        self.speed = speed
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __repr__(self) -> str:
        return f"OpenAISpeechTTS({self.api_root!r}, {self.model!r}, {self.voice!r})"

    def _where(self) -> str:
        return f"speech at {self.api_root}"

    async def _open(self, text: str) -> httpx.Response:
        body = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": self.response_format,
            "speed": self.speed,
        }
        request = self.client.build_request(
            "POST", self.api_root + "/audio/speech", json=body, headers=self._headers
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise TTSError(f"{self._where()} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            try:
                raw = await response.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await response.aclose()
            raise TTSError(
                f"{self._where()}: HTTP {response.status_code}: {error_text(raw)}",
                status=response.status_code,
            )
        return response

    async def stream_ulaw(self, text: str) -> AsyncIterator[bytes]:
        """Yield 8 kHz mu-law as the server's audio arrives (pcm) or once it is whole (wav)."""
        if not text.strip():
            return
        response = await self._open(text)
        try:
            if self.response_format == "wav":
                try:
                    audio = decode_to_ulaw(await response.aread())
                except ValueError as exc:
                    raise TTSError(f"{self._where()}: {exc}") from exc
                if audio:
                    yield audio
                return
            converter = PcmToUlaw(PCM_RATE)
            async for piece in response.aiter_bytes():
                audio = converter.feed(piece)
                if audio:
                    yield audio
            tail = converter.flush()
            if tail:
                yield tail
        except httpx.HTTPError as exc:
            raise TTSError(f"{self._where()} failed: {type(exc).__name__}") from exc
        finally:
            await response.aclose()

    async def warm(self) -> None:
        """One short synthesis: checks the URL, key, model and voice, and warms the server."""
        async for _ in self.stream_ulaw("Hello."):
            pass

    def describe(self) -> str:
        """E.g. "openai speech kokoro voice af_heart at http://127.0.0.1:8880/v1"."""
        return f"openai speech {self.model} voice {self.voice} at {self.api_root}"
