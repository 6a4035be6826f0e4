"""Speech to text over the OpenAI-compatible transcription API.

`POST {base}/v1/audio/transcriptions` (multipart: `file` a WAV, `model`, `language`,
`response_format=json`) answers `{"text": ...}`: the OpenAI Whisper API, and self-hosted
servers (speaches, vLLM, LocalAI) alike. The phrase is sent as the call's own 8 kHz 16-bit
WAV, half the upload of 16 kHz and no less than the telephone line carried.
"""

from __future__ import annotations

import io
import json
import wave

import httpx
import numpy as np

from aicallerd.audio.resample import rms
from aicallerd.engines.llm import api_root, error_text
from aicallerd.engines.stt import CALL_RATE, STTError, clean_transcript


def wav_bytes(pcm8: np.ndarray, rate: int = CALL_RATE) -> bytes:
    """int16 mono samples as a WAV file in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm8, dtype="<i2").tobytes())
    return buf.getvalue()


class OpenAITranscriber:
    """A cloud or self-hosted Whisper; the key is only ever sent as a header."""

    def __init__(
        self,
        base_url: str,
        model: str,
        client: httpx.AsyncClient,
        *,
        api_key: str = "",
        language: str | None = "en",
    ) -> None:
        self.api_root = api_root(base_url, "/audio/transcriptions")
        self.model = model
        self.client = client
        self.language = language
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __repr__(self) -> str:
        return f"OpenAITranscriber({self.api_root!r}, {self.model!r})"

    async def transcribe(self, pcm8: np.ndarray) -> str:
        """POST the phrase; raise STTError (with the HTTP status if any) on every failure."""
        pcm8 = np.asarray(pcm8, dtype=np.int16).reshape(-1)
        if pcm8.size < CALL_RATE // 10:  # under 100 ms: nothing a recogniser can use
            return ""
        data = {"model": self.model, "response_format": "json"}
        if self.language:
            data["language"] = self.language
        files = {"file": ("phrase.wav", wav_bytes(pcm8), "audio/wav")}
        url = self.api_root + "/audio/transcriptions"
        try:
            response = await self.client.post(url, data=data, files=files, headers=self._headers)
        except httpx.HTTPError as exc:
            raise STTError(f"transcription at {url} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise STTError(
                f"transcription at {url}: HTTP {response.status_code}: "
                f"{error_text(response.content)}",
                status=response.status_code,
            )
        try:
            text = json.loads(response.content)["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise STTError(f"transcription at {url}: no text in {response.text[:100]!r}") from exc
        if not isinstance(text, str):
            raise STTError(f"transcription at {url}: text is not a string")
        return clean_transcript(text.strip(), rms(pcm8))

    async def check(self) -> None:
        """GET /v1/models: is the server there and the key accepted? Raises STTError."""
        url = self.api_root + "/models"
        try:
            response = await self.client.get(url, headers=self._headers)
        except httpx.HTTPError as exc:
            raise STTError(f"transcription at {url} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise STTError(
                f"transcription at {url}: HTTP {response.status_code}: "
                f"{error_text(response.content)}",
                status=response.status_code,
            )

    def describe(self) -> str:
        """E.g. "whisper-1 at https://api.openai.com/v1"."""
        return f"{self.model} at {self.api_root}"
