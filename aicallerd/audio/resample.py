"""Sample-rate conversion between the call (8 kHz), Whisper (16 kHz) and TTS voices.

A rational polyphase resampler: upsample by ``up``, low-pass with one Kaiser-windowed
sinc, downsample by ``down`` (``up/down = dst/src`` in lowest terms), computing only
the output samples that are kept. Plain numpy, because scipy is not a dependency.
The low-pass sits just under the lower Nyquist frequency, so downsampling does not
fold speech-band hiss back into the call and upsampling leaves no images.
"""

import math
from functools import lru_cache
from math import gcd

import numpy as np

__all__ = ["float_to_pcm16", "pcm16_to_float", "resample", "rms"]

# Filter design, as fractions of the lower Nyquist frequency: flat to ~0.85 (3.4 kHz
# at 8 kHz, the whole telephone band), >= ~70 dB down from ~1.05 (a sliver of
# 4.0-4.2 kHz folds back into the unused 3.8-4.0 kHz band).
_CUTOFF = 0.95
_HALF_WIDTH = 20  # filter half-length in units of max(up, down) input-equivalent samples
_KAISER_BETA = 7.0


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 in [-1, 1), the scale Whisper and DSP code expect."""
    return np.asarray(pcm, dtype=np.int16).astype(np.float32) / np.float32(32768.0)


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16, clipping instead of wrapping around on overshoot."""
    scaled = np.rint(np.asarray(x, dtype=np.float32) * np.float32(32768.0))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def rms(pcm16: np.ndarray) -> float:
    """Root mean square in int16 units (like ``audioop.rms``, but not truncated); 0.0 if empty."""
    samples = np.asarray(pcm16, dtype=np.float64).reshape(-1)
    if samples.size == 0:
        return 0.0
    # One dot product: this runs for every 20 ms frame of every call.
    return math.sqrt(float(samples @ samples) / samples.size)


@lru_cache(maxsize=32)
def _polyphase_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """Polyphase bank (up, taps), each row reversed for a dot product, and the filter delay."""
    ratio = max(up, down)
    half = _HALF_WIDTH * ratio
    n = np.arange(-half, half + 1, dtype=np.float64)
    cutoff = _CUTOFF / ratio  # relative to the Nyquist frequency of the upsampled signal
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(n.size, _KAISER_BETA)
    h *= up / h.sum()  # unity DC gain after zero-stuffing by `up`
    taps = -(-h.size // up)
    h = np.concatenate([h, np.zeros(taps * up - h.size)])
    bank = h.reshape(taps, up).T[:, ::-1]  # bank[p, j] = h[p + j*up], reversed along j
    return np.ascontiguousarray(bank, dtype=np.float32), half


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono audio from src_rate to dst_rate; returns float32 of length ceil(n*dst/src).

    int16 input is treated as PCM16 and scaled to [-1, 1) first (so the result can go
    straight to Whisper or through :func:`float_to_pcm16`); float input keeps its scale.
    The output is aligned with the input (the filter delay is compensated).
    """
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"resample expects mono (1-D) audio, got shape {arr.shape}")
    if arr.dtype == np.int16:
        signal = pcm16_to_float(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        signal = arr.astype(np.float32)
    else:
        raise TypeError(f"resample needs int16 or float samples, got {arr.dtype}")

    g = gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    if up == down:
        return signal.copy()
    n_out = -(-signal.size * up // down)
    if n_out == 0:
        return np.zeros(0, dtype=np.float32)

    bank, delay = _polyphase_filter(up, down)
    taps = bank.shape[1]
    # Output n reads input samples base(n) - j for j < taps, with phase (n*down + delay) % up.
    last_base = ((n_out - 1) * down + delay) // up
    right = max(0, last_base + 1 - signal.size)
    padded = np.concatenate([np.zeros(taps - 1, np.float32), signal, np.zeros(right, np.float32)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)  # windows[b] ends at x[b]
    out = np.empty(n_out, dtype=np.float32)
    # Phases repeat every `up` outputs, and each such output advances `down` inputs:
    # one strided matrix-vector product per phase.
    for r in range(min(up, n_out)):
        offset = r * down + delay
        count = len(range(r, n_out, up))
        start = offset // up
        rows = windows[start : start + (count - 1) * down + 1 : down]
        out[r::up] = np.einsum("ij,j->i", rows, bank[offset % up])
    return out
