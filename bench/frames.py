"""Per-frame timing on the stand-in's side: when each agent frame arrived and how early.

``aicallerctl.testcall`` keeps only per-turn aggregates (first frame, gap frames, underruns).
To see frame arrival jitter the benchmark swaps the stand-in's ``PlayoutBuffer`` for a
subclass that timestamps every ``push_audio`` and ``tick``; a context variable set by the
benchmark's caller task tells each buffer which :class:`FrameLog` to write to, so concurrent
calls keep separate logs. If the stand-in changes shape, timing is simply not recorded.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

FRAME_MS = 20.0
BYTES_PER_MS = 8.0
STEADY_AFTER = 5  # arrivals at the start of a run of audio are the sender's lead burst


@dataclass
class FrameLog:
    """Arrivals ``(t, queued bytes before)`` and ticks ``(t, queued before, audible)``."""

    arrivals: list[tuple[float, int]] = field(default_factory=list)
    ticks: list[tuple[float, int, bool]] = field(default_factory=list)


_current: contextvars.ContextVar[FrameLog | None] = contextvars.ContextVar(
    "bench_frame_log", default=None
)


@contextlib.contextmanager
def recording(log: FrameLog) -> Iterator[None]:
    """Buffers created by the stand-in in this task (and its children) record into ``log``."""
    token = _current.set(log)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def instrument_standin() -> Iterator[bool]:
    """Patch ``aicallerctl.testcall.PlayoutBuffer`` for the duration; yields whether it could."""
    from aicallerctl import testcall

    original = getattr(testcall, "PlayoutBuffer", None)
    if not isinstance(original, type) or not all(
        hasattr(original, name) for name in ("push_audio", "tick")
    ):
        yield False
        return

    class RecordingBuffer(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self._bench_log = _current.get()

        def push_audio(self, payload: bytes) -> None:
            if self._bench_log is not None and payload:
                queued = int(getattr(self, "queued_bytes", 0))
                self._bench_log.arrivals.append((trio.current_time(), queued))
            super().push_audio(payload)

        def tick(self):  # type: ignore[no-untyped-def]
            queued = int(getattr(self, "queued_bytes", 0))
            tick = super().tick()
            if self._bench_log is not None:
                self._bench_log.ticks.append(
                    (trio.current_time(), queued, bool(getattr(tick, "audible", False)))
                )
            return tick

    testcall.PlayoutBuffer = RecordingBuffer  # type: ignore[misc]
    try:
        yield True
    finally:
        testcall.PlayoutBuffer = original  # type: ignore[misc]


@dataclass
class FrameTiming:
    """How early agent frames reached the simulated Twilio buffer during one reply.

    ``lead_*``: milliseconds of audio already queued ahead of a frame when it arrived (how
    long before it was due), steady state only; ``jitter_ms``: their standard deviation;
    ``starved_ms``: playout ticks between the reply's first and last played frame that found
    the buffer empty (the next audio was late), unlike the stand-in's ``gap_frames``, which
    also counts digital silence the daemon sent on purpose (e.g. Piper's sentence pauses).
    """

    frames: int = 0
    starved_ms: float | None = None
    lead_min_ms: float | None = None
    lead_p50_ms: float | None = None
    jitter_ms: float | None = None
    leads: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "frames": self.frames,
            "starved_ms": self.starved_ms,
            "lead_min_ms": _r(self.lead_min_ms),
            "lead_p50_ms": _r(self.lead_p50_ms),
            "jitter_ms": _r(self.jitter_ms),
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def reply_timing(log: FrameLog, start: float, end: float) -> FrameTiming:
    """Frame timing for arrivals in ``[start, end)`` (one reply's window on the stand-in clock).

    The lead of an arrival is the audio queued before it plus what is left of the frame
    playing now (``20 ms - time since the last tick`` when that tick was audible). The first
    ``STEADY_AFTER`` arrivals after the buffer was empty are the sender's deliberate lead
    burst and are left out; a run that never reaches steady state contributes nothing.
    """
    lo = bisect.bisect_left(log.arrivals, (start, -1))
    hi = bisect.bisect_left(log.arrivals, (end, -1))
    tick_times = [t for t, _, _ in log.ticks]
    timing = FrameTiming(frames=hi - lo)
    run = 0
    for t, queued in log.arrivals[lo:hi]:
        run = 0 if queued == 0 else run + 1
        if run < STEADY_AFTER:
            continue
        i = bisect.bisect_right(tick_times, t) - 1
        playing = 0.0
        if i >= 0 and log.ticks[i][2]:
            playing = max(0.0, FRAME_MS - (t - tick_times[i]) * 1000)
        timing.leads.append(queued / BYTES_PER_MS + playing)
    t_lo = bisect.bisect_left(tick_times, start)
    t_hi = bisect.bisect_left(tick_times, end)
    played = [audible for _, _, audible in log.ticks[t_lo:t_hi]]
    if any(played):
        first = played.index(True)
        last = len(played) - 1 - played[::-1].index(True)
        timing.starved_ms = FRAME_MS * played[first : last + 1].count(False)
    if timing.leads:
        timing.lead_min_ms = min(timing.leads)
        timing.lead_p50_ms = statistics.median(timing.leads)
        timing.jitter_ms = statistics.pstdev(timing.leads)
    return timing


def playing_fraction(log: FrameLog, start: float, end: float) -> float | None:
    """Share of playout ticks in ``[start, end]`` that played agent audio (including the
    quiet inside a reply, which Twilio plays like any audio); None without ticks."""
    times = [t for t, _, _ in log.ticks]
    lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
    played = [audible for _, _, audible in log.ticks[lo:hi]]
    return sum(played) / len(played) if played else None
