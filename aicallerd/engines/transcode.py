"""Cloud voices' audio to Twilio's 8 kHz mu-law, with PyAV (libav, shipped with faster-whisper).

`decode_to_ulaw` handles a whole file in any container libav reads (ElevenLabs' MP3 file
mode, a WAV from an OpenAI-compatible speech server); `PcmToUlaw` converts raw s16le PCM
that arrives in arbitrary pieces (OpenAI `response_format: "pcm"`, 24 kHz). Both resample
with libswresample, whose state carries across pieces, so chunk edges leave no clicks.
"""

from __future__ import annotations

import io

import av
import numpy as np

from aicallerd.audio.mulaw import ulaw_encode

CALL_RATE = 8000


def _resampler() -> av.AudioResampler:
    return av.AudioResampler(format="s16", layout="mono", rate=CALL_RATE)


def _ulaw_of(frames: list[av.AudioFrame]) -> bytes:
    parts = [f.to_ndarray().reshape(-1) for f in frames]
    if not parts:
        return b""
    return ulaw_encode(np.concatenate(parts).astype(np.int16))


def decode_to_ulaw(data: bytes) -> bytes:
    """A whole encoded file (MP3, WAV, ...) as 8 kHz mono mu-law; ValueError if unreadable."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            resampler = _resampler()
            frames: list[av.AudioFrame] = []
            for frame in container.decode(audio=0):
                frames.extend(resampler.resample(frame))
            frames.extend(resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode audio: {exc}") from exc
    return _ulaw_of(frames)


class PcmToUlaw:
    """Streaming s16le mono PCM at `rate` -> 8 kHz mu-law; `feed()` pieces, then `flush()`."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = _resampler()
        self._odd = b""  # a piece may end in the middle of a sample
        self._pts = 0

    def feed(self, data: bytes) -> bytes:
        """Convert what can be converted of `data` now (may return b"")."""
        data = self._odd + data
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        if not cut:
            return b""
        pcm = np.frombuffer(data[:cut], dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += pcm.shape[1]
        return _ulaw_of(self._resampler.resample(frame))

    def flush(self) -> bytes:
        """The resampler's last samples."""
        return _ulaw_of(self._resampler.resample(None))
