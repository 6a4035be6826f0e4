"""The stored caller script: ``bench/utterances/*.wav`` listed in ``script.txt``."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UTTERANCE_DIR = Path(__file__).parent / "utterances"
SCRIPT = UTTERANCE_DIR / "script.txt"
RATE = 8000


@dataclass(frozen=True)
class Line:
    """One caller utterance: its WAV file, its text and its samples (int16, 8 kHz)."""

    file: str
    text: str
    pcm8: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.pcm8) / RATE


def read_wav8(path: Path) -> np.ndarray:
    """A mono 16-bit 8 kHz WAV as int16 samples (anything else is an error)."""
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, RATE):
            raise ValueError(f"{path}: need mono 16-bit {RATE} Hz WAV")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def write_wav8(path: Path, pcm8: np.ndarray) -> None:
    """Write int16 samples as a mono 16-bit 8 kHz WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.asarray(pcm8, dtype="<i2").tobytes())


def load_script(script: Path = SCRIPT) -> list[Line]:
    """The lines of ``script.txt`` (``file<TAB>text``; ``#`` comments) with their audio."""
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run python -m bench.make_utterances")
    lines = []
    for raw in script.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        file, text = raw.split("\t", 1)
        lines.append(Line(file, text.strip(), read_wav8(script.parent / file)))
    return lines
