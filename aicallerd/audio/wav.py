"""Mono 16-bit PCM WAV files (prompts, recordings, test fixtures) via the stdlib ``wave``.

Reading is lenient about what people tend to hand us (stereo, 8-bit) and converts it
to the daemon's internal int16 mono; anything else fails with the file's name in the
message so a bad config value is easy to find.
"""

import os
import wave

import numpy as np

__all__ = ["read_wav", "write_wav"]


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a PCM WAV as (int16 mono samples, sample rate); stereo is averaged to mono."""
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels = w.getnchannels()
            width = w.getsampwidth()
            rate = w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{os.fspath(path)}: not a PCM WAV file we can read ({exc})") from exc
    if width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.int32)
    elif width == 1:  # 8-bit WAV is unsigned with a 128 offset
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.int32) - 128) << 8
    else:
        raise ValueError(
            f"{os.fspath(path)}: unsupported WAV sample width {8 * width} bits "
            "(need 8- or 16-bit PCM)"
        )
    if channels < 1:
        raise ValueError(f"{os.fspath(path)}: WAV has no channels")
    usable = samples.size - samples.size % channels
    mono = samples[:usable].reshape(-1, channels).mean(axis=1)
    return np.rint(mono).astype(np.int16), rate


def write_wav(path: str | os.PathLike[str], pcm16: np.ndarray, rate: int) -> None:
    """Write int16 mono samples as a 16-bit PCM WAV."""
    pcm = np.asarray(pcm16)
    if pcm.dtype != np.int16:
        raise TypeError(f"write_wav needs int16 samples, got {pcm.dtype}")
    if pcm.ndim != 1:
        raise ValueError(f"write_wav expects mono (1-D) audio, got shape {pcm.shape}")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.astype("<i2").tobytes())
