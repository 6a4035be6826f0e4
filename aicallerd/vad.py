"""Voice activity detection for 8 kHz call audio, one 20 ms frame at a time.

Two detectors share one interface (`probability(pcm8) -> float`, `reset()`) so the endpointer does
not care which one runs:

- `SileroVad`: the Silero v6 model bundled with faster-whisper, run with onnxruntime. That build
  only accepts 16 kHz audio in 512-sample windows with 64 samples of left context and LSTM state
  ``h``/``c`` (inputs ``input`` [N, 576], ``h``/``c`` [1, 1, 128]; outputs ``speech_probs`` [N],
  ``hn``, ``cn``); there is no ``sr`` input and no 8 kHz mode. So each 8 kHz frame is upsampled 2x
  with a small half-band FIR, buffered into 32 ms windows, and the recurrent state is carried from
  window to window. A 20 ms frame holds 0.625 windows: the probability of the latest complete window
  is returned, and kept while the next one fills.
- `RmsVad`: the seed's energy threshold, for machines or tests that want no model at all.

`probabilities` runs a detector over a batch of frames. Frames below the endpointer's RMS gate
cannot be speech whatever the model says, so they cost no inference at all: a call of silence
or line noise is nearly free, and the model only runs (off the event loop) while someone talks.
"""

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # must precede the onnxruntime import

from aicallerd.audio.resample import rms
from aicallerd.cputime import charged

SAMPLE_RATE = 8000
QUIET_RESET_SAMPLES = 1600  # 200 ms below the gate: the next speech starts the model afresh
WINDOW = 512  # model samples per inference (32 ms at 16 kHz)
CONTEXT = 64  # left context the v6 model expects in front of each window
STATE_SHAPE = (1, 1, 128)


def default_model_path() -> Path:
    """Locate the Silero v6 model inside faster-whisper, so no weights are ever downloaded."""
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


@functools.cache
def load_session(path: str | None = None) -> Any:
    """One quiet single-threaded session per process; calls share it (run() is thread-safe)."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 3
    model = path if path is not None else str(default_model_path())
    return onnxruntime.InferenceSession(
        model, sess_options=opts, providers=["CPUExecutionProvider"]
    )


def _halfband_taps(half: int = 12) -> np.ndarray:
    """Kaiser-windowed sinc interpolator for 8 -> 16 kHz: cheap, yet keeps images above 4 kHz
    (which would look like fricative noise to the model) about 50 dB down."""
    n = np.arange(-(2 * half - 1), 2 * half, dtype=np.float64)
    taps = np.sinc(n / 2.0) * np.kaiser(len(n), 6.0)
    return taps.astype(np.float32)


class Upsampler2x:
    """Streaming 2x interpolator: frames of any length in, twice as many samples out, no seams."""

    def __init__(self) -> None:
        self._taps = _halfband_taps()
        self._hist_len = (len(self._taps) + 1) // 2
        self._hist = np.zeros(self._hist_len, dtype=np.float32)

    def reset(self) -> None:
        self._hist[:] = 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        z = np.concatenate([self._hist, x.astype(np.float32, copy=False)])
        stuffed = np.zeros(2 * len(z), dtype=np.float32)
        stuffed[::2] = z
        y = np.convolve(stuffed, self._taps, mode="full")
        start = 2 * self._hist_len
        self._hist = z[-self._hist_len :].copy()
        return y[start : start + 2 * n]


class SileroVad:
    """Silero v6 speech probability for streaming 8 kHz int16 frames (stateful per call)."""

    in_thread = True  # inference is too slow for the event loop

    def __init__(self, model_path: str | None = None, session: Any = None) -> None:
        self._session = session if session is not None else load_session(model_path)
        self._up = Upsampler2x()
        self.reset()

    def reset(self) -> None:
        """Forget the call so far: recurrent state, context, partial window, last probability."""
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._up.reset()
        self._last = 0.0
        self._quiet = 0

    def skip(self, samples: int) -> None:
        """A frame was not worth inference (below the RMS gate): after a while of those,
        forget the state so stale speech context cannot leak into the next phrase."""
        self._quiet += samples
        if self._quiet >= QUIET_RESET_SAMPLES and self._quiet - samples < QUIET_RESET_SAMPLES:
            self.reset()
            self._quiet = QUIET_RESET_SAMPLES

    def probability(self, pcm8: np.ndarray) -> float:
        """Feed one frame; return the probability of the newest complete 32 ms window."""
        if len(pcm8) == 0:
            return self._last
        self._quiet = 0
        x16 = self._up.process(np.asarray(pcm8, dtype=np.float32) * (1.0 / 32768.0))
        buf = np.concatenate([self._pending, x16])
        pos = 0
        while len(buf) - pos >= WINDOW:
            window = buf[pos : pos + WINDOW]
            inp = np.concatenate([self._context, window])[None, :]
            out, self._h, self._c = self._session.run(
                None, {"input": inp, "h": self._h, "c": self._c}
            )
            self._last = float(np.asarray(out).reshape(-1)[-1])
            self._context = window[-CONTEXT:].copy()
            pos += WINDOW
        self._pending = buf[pos:]
        return self._last


class RmsVad:
    """The seed's energy gate behind the VAD interface: 1.0 at or above the threshold, else 0.0."""

    in_thread = False

    def __init__(self, threshold_rms: float) -> None:
        self.threshold_rms = threshold_rms

    def reset(self) -> None:
        """Stateless; present so either VAD can be swapped in."""

    def skip(self, samples: int) -> None:
        """Stateless: nothing to forget."""

    def probability(self, pcm8: np.ndarray) -> float:
        return 1.0 if rms(pcm8) >= self.threshold_rms else 0.0


def probabilities(
    vad: Any, frames: list[np.ndarray], levels: list[float], gate: float
) -> list[float]:
    """Speech probability of each frame; 0.0 without inference for frames whose RMS
    (``levels``) is below ``gate``, which the endpointer would not count as speech anyway.
    The calling thread's CPU here is counted as the VAD leg (`aicallerd.cputime`)."""
    out = []
    with charged("vad"):
        for pcm, level in zip(frames, levels, strict=True):
            if level < gate:
                vad.skip(len(pcm))
                out.append(0.0)
            else:
                out.append(vad.probability(pcm))
    return out
