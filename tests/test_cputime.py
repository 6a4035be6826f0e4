"""CPU per leg: the /proc stat parser, the split into legs, and real engines measured.

The engine tests load the bundled Piper voice and Silero VAD for real and make them work:
their CPU must show up in their own leg, not in the others.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest
import trio

from aicallerd.cputime import (
    LEDGER,
    LEGS,
    CpuLedger,
    call_charged,
    leg_of,
    parse_stat,
    run_named,
    split_ticks,
)
from aicallerd.engines.tts import PiperTTS
from aicallerd.vad import SileroVad, probabilities

T = TypeVar("T")

TAIL = "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"


def stat_line(tid: int, comm: str, utime: int, stime: int, start: int) -> str:
    # state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice num_threads itrealvalue starttime ...
    return (
        f"{tid} ({comm}) S 1 1 1 0 -1 4194368 10 0 0 0 {utime} {stime} 7 8 20 0 4 0 {start} {TAIL}"
    )


@pytest.mark.parametrize(
    "comm",
    ["aic-stt", "python", "my thread", "a) b (c", "x) S 1 2 3 (y", ")", ""],
)
def test_stat_parser_takes_comm_between_the_first_and_last_parenthesis(comm: str) -> None:
    t = parse_stat(stat_line(4321, comm, 150, 25, 99999))
    assert (t.tid, t.comm, t.ticks, t.start) == (4321, comm, 175, 99999)


def test_stat_parser_reads_a_real_thread() -> None:
    with open(f"/proc/self/task/{threading.get_native_id()}/stat") as f:
        t = parse_stat(f.read())
    assert t.tid == threading.get_native_id() and t.ticks >= 0 and t.start > 0


def test_threads_are_classified_by_name_and_the_main_thread_is_framing() -> None:
    assert leg_of("python", 100, 100) == "framing"
    assert leg_of("aic-stt", 101, 100) == "stt"
    assert leg_of("aic-llm", 102, 100) == "llm"
    assert leg_of("aic-nonsense", 103, 100) is None
    assert leg_of("Trio thread 3", 104, 100) is None


def test_split_puts_unnamed_and_exited_threads_in_other_and_applies_moves() -> None:
    threads = {(100, 1): ("framing", 300), (101, 2): ("stt", 500), (102, 3): ("tts", 200)}
    moved = {("other", "vad"): 0.5, ("framing", "vad"): 0.25, ("other", "stt"): 0.1}
    out = split_ticks(threads, process_ticks=1400, moved=moved, hz=100)
    assert out == pytest.approx(
        {"vad": 0.75, "stt": 5.1, "llm": 0.0, "tts": 2.0, "framing": 2.75, "other": 3.4}
    )
    assert set(out) == set(LEGS)


def test_a_move_never_drives_a_coarse_bucket_below_zero() -> None:
    out = split_ticks({(1, 1): ("framing", 0)}, 0, {("framing", "vad"): 0.004}, hz=100)
    assert out["framing"] == 0.0 and out["vad"] == pytest.approx(0.004)


def _here_and_in_a_child(probe: Callable[[], T]) -> tuple[T, T]:
    """``probe()`` in the calling thread and in a thread it starts, as an engine's pool."""
    seen: list[T] = []
    child = threading.Thread(target=lambda: seen.append(probe()))
    child.start()
    child.join()
    return probe(), seen[0]


def test_named_thread_and_what_it_starts_carry_the_leg_name() -> None:
    def comm() -> str:
        with open("/proc/thread-self/comm") as f:
            return f.read().strip()

    assert run_named("stt", _here_and_in_a_child, comm) == ("aic-stt", "aic-stt")
    with pytest.raises(ZeroDivisionError):
        run_named("llm", lambda: 1 / 0)
    with pytest.raises(ValueError):
        run_named("framing", comm)


def test_a_nicer_named_thread_hands_its_nice_value_to_the_threads_it_starts() -> None:
    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, 0)

    base = nice()
    expected = min(19, base + 3)
    assert run_named("llm", _here_and_in_a_child, nice, nicer=3) == (expected, expected)
    assert run_named("tts", _here_and_in_a_child, nice) == (base, base)
    assert nice() == base  # the calling thread keeps its own


def test_an_engine_loads_at_the_daemons_priority_where_it_may_not_lower_its_own(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refused)
    with caplog.at_level(logging.WARNING, logger="aicallerd.engines"):
        assert run_named("llm", lambda: "loaded", nicer=5) == "loaded"
    assert [r.getMessage() for r in caplog.records] == [
        "llm engine threads run at the daemon's priority: [Errno 1] Operation not permitted"
    ]


def test_turns_and_seconds_count_from_the_baseline() -> None:
    ledger = CpuLedger()
    ledger.count_turn()
    ledger.mark_baseline()
    ledger.count_turn()
    ledger.count_turn()
    report = ledger.report()
    assert report["turns"] == 2
    assert set(report["seconds"]) == set(LEGS)
    assert all(v >= 0 for v in report["seconds"].values())


def _burn(seconds: float) -> None:
    t0 = time.thread_time()
    while time.thread_time() - t0 < seconds:
        pass


def test_calling_thread_cpu_moves_to_the_leg_it_was_spent_on() -> None:
    before = LEDGER.totals()

    async def main() -> None:
        await trio.to_thread.run_sync(call_charged, "vad", _burn, 0.2)

    trio.run(main)
    after = LEDGER.totals()
    assert after["vad"] - before["vad"] == pytest.approx(0.2, abs=0.02)
    # The worker's own (unnamed) CPU was moved, not counted twice.
    assert after["other"] - before["other"] < 0.1


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {leg: after[leg] - before[leg] for leg in LEGS}


def test_piper_loaded_in_its_named_thread_shows_its_work_as_tts() -> None:
    tts = PiperTTS()
    text = (
        "Thank you for calling. We are open from nine in the morning until six in the "
        "evening, Monday to Saturday, and you can book a table for up to eight people."
    )

    async def main() -> tuple[int, dict[str, float]]:
        await tts.warm()  # loads in an aic-tts thread: onnxruntime's pool is named after it
        before = LEDGER.totals()
        size = 0
        for _ in range(2):
            async for chunk in tts.stream_ulaw(text):
                size += len(chunk)
        return size, _delta(before, LEDGER.totals())

    size, delta = trio.run(main)
    assert size > 8000
    assert delta["tts"] > 0.1, delta
    # The other legs did not absorb it: all they did meanwhile is bookkeeping.
    assert delta["tts"] > 4 * (delta["framing"] + delta["other"]), delta
    assert delta["stt"] + delta["llm"] + delta["vad"] < 0.05, delta
    if len(os.sched_getaffinity(0)) > 1:
        # onnxruntime's intra-op pool (cores - 1 threads) was created by the named thread.
        assert LEDGER.threads_by_leg()["tts"] >= 1


def test_silero_vad_work_in_a_worker_thread_is_vad_cpu() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.normal(0, 3000, 160).astype(np.int16) for _ in range(1500)]
    levels = [3000.0] * len(frames)

    async def main() -> dict[str, float]:
        vad = await trio.to_thread.run_sync(run_named, "vad", SileroVad)
        before = LEDGER.totals()
        await trio.to_thread.run_sync(probabilities, vad, frames, levels, 100.0)
        return _delta(before, LEDGER.totals())

    delta = trio.run(main)
    assert delta["vad"] > 0.02, delta
    assert delta["stt"] + delta["llm"] + delta["tts"] < 0.02, delta
    assert delta["vad"] > 2 * (delta["framing"] + delta["other"]), delta
