"""CPU seconds per leg of a turn (VAD, STT, LLM, TTS, framing), so cost shows next to latency.

The engines burn their CPU in native thread pools they create themselves (CTranslate2 and
its OpenMP team for Whisper, onnxruntime's intra-op pool for Piper, llama.cpp's ggml and
httplib threads). Linux copies a thread's name (``comm``) to the threads it creates, so each
engine is loaded in a short-lived thread named ``aic-<leg>`` (`run_named`): every pool it
creates carries that name, and `/proc/self/task/*/stat` tells whose CPU is whose. What the
calling Python worker thread spends in an engine call (resampling, feature extraction, the
caller's own share of onnxruntime's work; all of Silero VAD, which runs single-threaded in
the caller) is measured with `time.thread_time` around the call (`charged`) and moved from
that thread's bucket to the leg. ``framing`` is the event loop's thread: JSON, base64,
WebSocket, mu-law, HTTP to the LLM. ``other`` is the rest of the process (idle trio workers,
OpenBLAS threads, threads that have exited).

`LEDGER` is the process's one ledger: CPU time is a property of the process, like its threads.
Parsing (`parse_stat`, `leg_of`, `split_ticks`) is pure; `CpuLedger` does the /proc reading.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aicallerd.control.protocol import CpuReport

log = logging.getLogger("aicallerd.engines")

ENGINE_LEGS = ("vad", "stt", "llm", "tts")
LEGS = (*ENGINE_LEGS, "framing", "other")
PREFIX = "aic-"

T = TypeVar("T")


@dataclass(frozen=True)
class ThreadStat:
    """One line of /proc/<pid>/task/<tid>/stat, the fields we use."""

    tid: int
    comm: str
    start: int  # clock ticks after boot: (tid, start) names a thread uniquely
    ticks: int  # utime + stime, clock ticks


def parse_stat(line: str) -> ThreadStat:
    """Parse a /proc stat line. ``comm`` is in parentheses and may itself hold spaces and
    parentheses, so it runs from the first "(" to the last ")"."""
    open_, close = line.index("("), line.rindex(")")
    fields = line[close + 2 :].split()
    # After comm: state(0) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    # cmajflt utime(11) stime(12) cutime cstime priority nice num_threads itrealvalue
    # starttime(19).
    return ThreadStat(
        tid=int(line[:open_]),
        comm=line[open_ + 1 : close],
        start=int(fields[19]),
        ticks=int(fields[11]) + int(fields[12]),
    )


def leg_of(comm: str, tid: int, pid: int) -> str | None:
    """The leg a thread's CPU belongs to: ``framing`` for the main thread (the event loop),
    an engine leg for an ``aic-<leg>`` thread, None for the rest."""
    if tid == pid:
        return "framing"
    if comm.startswith(PREFIX) and comm[len(PREFIX) :] in ENGINE_LEGS:
        return comm[len(PREFIX) :]
    return None


def split_ticks(
    threads: dict[tuple[int, int], tuple[str, int]],
    process_ticks: int,
    moved: dict[tuple[str, str], float],
    hz: float,
) -> dict[str, float]:
    """Seconds per leg: the named threads' ticks, the rest of the process as ``other``, then
    the calling threads' measured shares moved (``moved[(from, to)]`` seconds)."""
    out = dict.fromkeys(LEGS, 0.0)
    named = 0
    for leg, ticks in threads.values():
        out[leg] += ticks / hz
        named += ticks
    out["other"] = max(0, process_ticks - named) / hz
    for (src, dst), seconds in moved.items():
        out[src] -= seconds
        out[dst] += seconds
    # The kernel's ticks are 10 ms coarse: a bucket a move empties may dip a tick below 0.
    return {leg: max(0.0, value) for leg, value in out.items()}


_local = threading.local()


def set_os_thread_name(name: str) -> bool:
    """Name the calling OS thread (Linux, 15 characters); False where that is impossible."""
    try:
        with open("/proc/thread-self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        return False
    return True


def run_named(leg: str, fn: Callable[..., T], *args: Any, nicer: int = 0) -> T:
    """Run ``fn(*args)`` in a fresh thread named ``aic-<leg>`` and return its result, so the
    thread pools ``fn`` creates (an engine's load or first inference) are counted as ``leg``.
    With ``nicer``, that thread and every thread it creates run that much nicer than the
    daemon (Linux gives each thread its own nice value and a new thread its creator's).
    Blocking: call it from a worker thread."""
    if leg not in ENGINE_LEGS:
        raise ValueError(f"unknown engine leg {leg!r}")
    result: list[T] = []
    error: list[BaseException] = []

    def main() -> None:
        set_os_thread_name(PREFIX + leg)
        _local.leg = leg
        if nicer:
            try:
                lower_thread_priority(nicer)
            except OSError as exc:  # a sandbox that filters setpriority: run at equal priority
                log.warning("%s engine threads run at the daemon's priority: %s", leg, exc)
        try:
            result.append(fn(*args))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=main, name=PREFIX + leg, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def lower_thread_priority(by: int) -> int:
    """Make the calling OS thread ``by`` nicer (at most 19) and return its nice value.

    On Linux ``setpriority(PRIO_PROCESS, 0, ...)`` applies to the calling thread only.
    Raising a nice value needs no privilege; the daemon never lowers one."""
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + by)
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    return nice


def _own_bucket() -> str:
    """Where the calling thread's CPU is counted before a `charge` moves it."""
    if threading.current_thread() is threading.main_thread():
        return "framing"
    return getattr(_local, "leg", "other")


class CpuLedger:
    """Per-leg CPU of this process, read from /proc on demand. Thread-safe."""

    def __init__(self, proc: str = "/proc", pid: int | None = None) -> None:
        self._proc = proc
        self._pid = os.getpid() if pid is None else pid
        self._hz = float(os.sysconf("SC_CLK_TCK"))
        self._lock = threading.Lock()
        # Named threads ever seen and their last ticks: one that exits keeps its share.
        self._threads: dict[tuple[int, int], tuple[str, int]] = {}
        self._moved: dict[tuple[str, str], float] = {}
        self._turns = 0
        self._base: dict[str, float] = dict.fromkeys(LEGS, 0.0)
        self._base_turns = 0
        self._base_at = time.monotonic()

    def charge(self, leg: str, seconds: float) -> None:
        """The calling thread just spent ``seconds`` of its CPU on ``leg``."""
        src = _own_bucket()
        if src == leg or seconds <= 0:
            return
        with self._lock:
            self._moved[(src, leg)] = self._moved.get((src, leg), 0.0) + seconds

    def count_turn(self) -> None:
        """An agent turn was answered (the denominator of CPU per turn)."""
        with self._lock:
            self._turns += 1

    def _read(self) -> tuple[list[ThreadStat], int]:
        task = f"{self._proc}/{self._pid}/task"
        threads = []
        for name in os.listdir(task):
            try:
                with open(f"{task}/{name}/stat") as f:
                    threads.append(parse_stat(f.read()))
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
        with open(f"{self._proc}/{self._pid}/stat") as f:
            process = parse_stat(f.read()).ticks  # includes exited threads
        return threads, process

    def totals(self) -> dict[str, float]:
        """CPU seconds per leg since the process started."""
        threads, process = self._read()
        with self._lock:
            for t in threads:
                leg = leg_of(t.comm, t.tid, self._pid)
                if leg is not None:
                    self._threads[(t.tid, t.start)] = (leg, t.ticks)
            return split_ticks(self._threads, process, self._moved, self._hz)

    def threads_by_leg(self) -> dict[str, int]:
        """How many live threads each leg has now (to check that an engine's pools are named)."""
        threads, _ = self._read()
        out = dict.fromkeys(LEGS, 0)
        for t in threads:
            out[leg_of(t.comm, t.tid, self._pid) or "other"] += 1
        return out

    def mark_baseline(self) -> None:
        """Count from now on: loading and warming the engines is start-up, not turns."""
        totals = self.totals()
        with self._lock:
            self._base = totals
            self._base_turns = self._turns
            self._base_at = time.monotonic()

    def report(self) -> CpuReport:
        """CPU per leg and turns answered since `mark_baseline` (or since this ledger began)."""
        totals = self.totals()
        with self._lock:
            seconds = {leg: round(max(0.0, totals[leg] - self._base[leg]), 3) for leg in LEGS}
            return {
                "since_s": round(time.monotonic() - self._base_at, 1),
                "turns": self._turns - self._base_turns,
                "seconds": seconds,
            }


LEDGER = CpuLedger()


@contextlib.contextmanager
def charged(leg: str, ledger: CpuLedger = LEDGER) -> Iterator[None]:
    """Charge the calling thread's CPU inside the block to ``leg``."""
    started = time.thread_time()
    try:
        yield
    finally:
        ledger.charge(leg, time.thread_time() - started)


def call_charged(leg: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with the calling thread's CPU charged to ``leg`` (for trio.to_thread)."""
    with charged(leg):
        return fn(*args)
