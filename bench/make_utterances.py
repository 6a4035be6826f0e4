"""Regenerate the benchmark's caller utterances with espeak-ng (run once; the WAVs are committed).

    .venv/bin/python -m bench.make_utterances            # write bench/utterances/
    .venv/bin/python -m bench.make_utterances --candidates   # only score CANDIDATES

espeak-ng is a formant synthesiser, nothing like the agent's Piper voice, so the daemon never
hears itself. Each sentence is synthesised, resampled to 8 kHz 16-bit with sox, trimmed to
its speech (no leading or trailing silence, so the stand-in's "end of speech" is the end of
the words), then checked: after a mu-law round trip (what the phone line does) tiny.en must
transcribe it with a word error rate of at most ``--max-wer``. SENTENCES are the candidates
that passed, chosen to spread from about 1 to 6 seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.utterances import RATE, SCRIPT, UTTERANCE_DIR, read_wav8, write_wav8
from bench.wer import wer

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

VOICE = "en-us"
SPEED = 150  # words per minute
PEAK = 0.5  # of full scale: a loud but unclipped telephone level
PAD = 0.3  # seconds of silence around each utterance when scoring (the daemon has lead-in)

# The committed script, in call order: 12 utterances of 1.2-5.5 s, each transcribed by
# tiny.en with WER <= 0.1 (most 0.0). Dropped candidates (WER 0.25-1.7 on this voice):
# "Hello there." ("Hello, Nairr."), "How much does a large pizza cost?", "Where is the nearest
# train station?", "Can I book a table for two people tonight?", "Is it going to rain
# tomorrow in London?", "Could you explain how to reset my password?" and others.
SENTENCES = [
    "Can you help me with something?",
    "I would like to make an appointment for next week.",
    "Are you open on Sunday?",
    "We are planning a family trip to the mountains in the summer, "
    "and we need a place to stay for a week.",
    "Yes, please.",
    "What is the weather going to be like this weekend?",
    "Do you speak English?",
    "I have been thinking about learning a new language this year, what is the best way to start?",
    "Please tell me a short joke.",
    "How long does it take to drive from here to the airport?",
    "What do you recommend for a cold?",
    "My flight was canceled this morning and I need to find another way home before Monday.",
]

CANDIDATES = [
    *SENTENCES,
    "Hello there.",
    "How much does a large pizza cost?",
    "Where is the nearest train station?",
    "Can I book a table for two people tonight?",
    "Is it going to rain tomorrow in London?",
    "Could you explain how to reset my password?",
    "Tell me something interesting about the ocean.",
    "I am looking for a good restaurant in the city center "
    "where we can have dinner with six people.",
]


def synthesise(text: str, voice: str = VOICE, speed: int = SPEED) -> np.ndarray:
    """espeak-ng -> sox (8 kHz, 16-bit, mono) -> trimmed, peak-normalised int16."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            ["sox", "-D", str(raw), "-r", str(RATE), "-b", "16", "-c", "1", str(out)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        pcm = read_wav8(out).astype(np.float64)
    pcm = trim(pcm)
    return np.round(pcm * (PEAK * 32767 / max(1.0, np.abs(pcm).max()))).astype(np.int16)


def trim(pcm: np.ndarray, frame: int = 80, rel: float = 0.02) -> np.ndarray:
    """Cut leading and trailing 10 ms frames whose peak is under ``rel`` of the loudest."""
    n = len(pcm) // frame
    peaks = np.abs(pcm[: n * frame]).reshape(n, frame).max(axis=1)
    loud = np.flatnonzero(peaks >= rel * peaks.max())
    if not len(loud):
        return pcm
    return pcm[loud[0] * frame : (loud[-1] + 1) * frame]


def score(texts: list[str], pcms: list[np.ndarray]) -> list[tuple[str, float]]:
    """(transcript, WER) of each utterance after a mu-law round trip through tiny.en."""
    from aicallerd.audio.mulaw import ulaw_decode, ulaw_encode
    from aicallerd.engines.stt import Transcriber

    stt = Transcriber()
    stt.load()
    out = []
    for text, pcm in zip(texts, pcms, strict=True):
        pad = np.zeros(int(PAD * RATE), dtype=np.int16)
        heard = stt.transcribe_sync(ulaw_decode(ulaw_encode(np.concatenate([pad, pcm, pad]))))
        out.append((heard, wer(text, heard)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--candidates", action="store_true", help="score CANDIDATES, write nothing")
    ap.add_argument("--max-wer", type=float, default=0.15, help="reject above this WER")
    ap.add_argument("--voice", default=VOICE, help=f"espeak-ng voice (default {VOICE})")
    args = ap.parse_args(argv)

    texts = CANDIDATES if args.candidates else SENTENCES
    pcms = [synthesise(t, args.voice) for t in texts]
    results = score(texts, pcms)
    bad = 0
    for text, pcm, (heard, err) in zip(texts, pcms, results, strict=True):
        flag = "" if err <= args.max_wer else "  <-- too high"
        bad += bool(flag)
        print(f"{len(pcm) / RATE:4.1f}s WER {err:.2f} {text!r} -> {heard!r}{flag}")
    if args.candidates:
        return 0
    if bad:
        print(f"{bad} utterance(s) above WER {args.max_wer}; not written", file=sys.stderr)
        return 1
    UTTERANCE_DIR.mkdir(exist_ok=True)
    for old in UTTERANCE_DIR.glob("*.wav"):
        old.unlink()
    rows = [
        f"# Caller script for bench/ (espeak-ng {args.voice}, {SPEED} wpm, 8 kHz 16-bit WAV).",
        "# Regenerate with: .venv/bin/python -m bench.make_utterances",
        "# file<TAB>text",
    ]
    for i, (text, pcm) in enumerate(zip(texts, pcms, strict=True), 1):
        name = f"u{i:02d}.wav"
        write_wav8(UTTERANCE_DIR / name, pcm)
        rows.append(f"{name}\t{text}")
    SCRIPT.write_text("\n".join(rows) + "\n")
    total = sum(len(p) for p in pcms) / RATE
    print(f"wrote {len(pcms)} utterances ({total:.1f} s) to {UTTERANCE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
