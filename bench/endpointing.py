"""End-of-turn benchmark: adaptive vs fixed, on the real daemon through the Twilio stand-in.

    make bench-endpointing                    # both rules, printed as a markdown table
    make bench-endpointing ARGS="--repeat 2"

(a) Phone numbers and spelled names read with 0.8-1.2 s pauses inside: a cut-off is a call
    whose one utterance the daemon logged as more than one caller turn (it answered before
    the caller had finished). (b) Complete questions: the daemon's end-of-turn wait
    (``endpoint_wait``: end of speech to the decision) and voice-to-voice as the caller hears
    it. The caller's voice is espeak-ng, made at run time.
"""

from __future__ import annotations

import argparse
import io
import re
import sqlite3
import subprocess
import wave

import numpy as np
import trio

from aicallerctl.testcall import Utterance, place_call
from aicallerd.call.metrics import percentile
from bench.daemon import running_daemon

SR = 8000
# (pieces said with a pause between them, the pause)
READ_OUT = [
    (["My number is five five five,", "one two three,", "four five six seven."], 1.0),
    (["My name is Smith, spelled S,", "M, I,", "T, H."], 0.8),
    (["The code is seven,", "nine,", "two, four."], 1.2),
    (["You can reach me on oh seven seven,", "nine double three,", "one two one."], 1.0),
    (["My surname is Nowak, that's N,", "O, W,", "A, K."], 1.1),
]
QUESTIONS = [
    "What time do you open tomorrow?",
    "Where is your shop?",
    "Do you deliver on Sundays?",
    "How much is a loaf of bread?",
    "Can I book a table for two?",
]


def espeak(text: str) -> np.ndarray:
    """espeak-ng at 8 kHz mono int16 (its streaming WAV header carries bogus sizes)."""
    raw = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate = w.getframerate()
    pcm = np.frombuffer(raw[44 : 44 + (len(raw) - 44) // 2 * 2], dtype="<i2").astype(np.float64)
    idx = np.arange(0, len(pcm), rate / SR)
    return np.clip(np.interp(idx, np.arange(len(pcm)), pcm), -32768, 32767).astype(np.int16)


def read_out(pieces: list[str], pause: float) -> np.ndarray:
    gap = np.zeros(round(pause * SR), dtype=np.int16)
    parts: list[np.ndarray] = []
    for i, piece in enumerate(pieces):
        parts += [gap, espeak(piece)] if i else [espeak(piece)]
    return np.concatenate(parts)


def caller_turns(db_path, call_sid: str) -> int:
    with sqlite3.connect(db_path) as db:
        (n,) = db.execute(
            "SELECT count(*) FROM turns WHERE call_sid = ? AND who = 'caller'", (call_sid,)
        ).fetchone()
    return n


def run_rule(rule: str, repeat: int) -> dict[str, object]:
    cut, calls, waits, v2v = 0, 0, [], []
    with running_daemon(settings=[f"turn.end_of_turn={rule}"]) as d:
        target = d.target()
        for _ in range(repeat):
            for pieces, pause in READ_OUT:
                pcm = read_out(pieces, pause)
                result = trio.run(lambda pcm=pcm: place_call(target, [Utterance(pcm, "")]))
                calls += 1
                cut += caller_turns(d.db_path, result.call_sid) > 1
            for question in QUESTIONS:
                pcm = espeak(question)
                result = trio.run(lambda pcm=pcm: place_call(target, [Utterance(pcm, "")]))
                line = next(
                    (ln for ln in d.lines if result.call_sid in ln and "endpoint_wait=" in ln), ""
                )
                if m := re.search(r"endpoint_wait=(\d+)ms", line):
                    waits.append(int(m.group(1)) / 1000)
                if result.turns and result.turns[0].latency is not None:
                    v2v.append(result.turns[0].latency)
    return {"rule": rule, "calls": calls, "cut": cut, "waits": waits, "v2v": v2v}


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows = [run_rule(rule, args.repeat) for rule in ("adaptive", "fixed")]
    print(
        "| end_of_turn | read-out calls | cut off | question end-of-turn wait p50 / p95 "
        "| question voice-to-voice p50 / p95 |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        w, v = r["waits"], r["v2v"]
        print(
            f"| {r['rule']} | {r['calls']} | {r['cut']} "
            f"| {_s(percentile(w, 50))} / {_s(percentile(w, 95))} s "
            f"| {_s(percentile(v, 50))} / {_s(percentile(v, 95))} s |"
        )


if __name__ == "__main__":
    main()
