"""Per-frame timing on the stand-in's side: when each agent message arrived and when it played.

The daemon sends a reply's audio in ``media`` messages of any length (several 20 ms frames
each once it is queued ahead); a push here is one such message.

``aicallerctl.testcall`` keeps only per-turn aggregates (first frame, gap frames, underruns).
:class:`RecordingBuffer` is the stand-in's playout buffer that also timestamps every
``push_audio`` and ``tick``; the benchmark (frame lead and jitter) and the session tests
(pacing) hand it to the stand-in through its ``buffer_factory``.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from aicallerctl.playout import PlayoutBuffer, Tick

FRAME_MS = 20.0
BYTES_PER_MS = 8.0
FRAME_BYTES = 160
STEADY_AFTER_MS = 100.0  # arrivals in a run's first 100 ms of audio: the sender's lead burst


@dataclass
class Pushed:
    """One agent media message at the stand-in: when it arrived and when playout reached
    its first byte."""

    arrived: float
    offset: int  # byte offset in the audio since the last clear
    queued: int  # bytes already queued ahead of it when it arrived
    due: float | None = None  # None: not played (yet), or cleared before it played
    first_after_idle: bool = False  # the buffer was empty when it arrived
    size: int = 0  # bytes of audio it carried


@dataclass
class Played:
    """One 20 ms playout tick."""

    t: float
    queued: int  # bytes queued before the tick
    audible: bool  # agent audio played (not fill)
    underrun: bool  # the buffer ran dry mid-sentence


class ManualClock:
    """A clock the tests move by hand (``clock.t = ...``), for a RecordingBuffer."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class RecordingBuffer(PlayoutBuffer):
    """The stand-in's playout buffer, also noting when each frame arrived and was played.

    ``clock`` gives the time of each push and tick (the stand-in's trio clock by default).
    """

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        super().__init__()
        self.clock = clock
        self.pushes: list[Pushed] = []
        self.ticks: list[Played] = []
        self._pushed = 0
        self._played = 0
        self._waiting: list[Pushed] = []

    @property
    def underruns(self) -> list[float]:
        """When the buffer ran dry mid-sentence."""
        return [p.t for p in self.ticks if p.underrun]

    def push_audio(self, payload: bytes) -> None:
        if payload:
            p = Pushed(
                self.clock(),
                self._pushed,
                self.queued_bytes,
                first_after_idle=self.empty,
                size=len(payload),
            )
            self.pushes.append(p)
            self._waiting.append(p)
            self._pushed += len(payload)
        super().push_audio(payload)

    def tick(self) -> Tick:
        before = self.queued_bytes
        tick = super().tick()
        played = before - self.queued_bytes
        now = self.clock()
        while self._waiting and self._waiting[0].offset < self._played + played:
            self._waiting.pop(0).due = now
        self._played += played
        self.ticks.append(Played(now, before, tick.audible, tick.underrun))
        return tick

    def clear(self) -> list[str]:
        self._waiting.clear()
        self._played = self._pushed
        return super().clear()


@dataclass
class FrameTiming:
    """How early agent audio reached the simulated Twilio buffer during one reply.

    ``frames``: 20 ms frames of audio received, in ``messages`` media messages; ``lead_*``:
    milliseconds of audio already queued ahead of a message when it arrived (how long
    before its first byte was due), steady state only; ``jitter_ms``: their standard deviation;
    ``starved_ms``: playout ticks between the reply's first and last played frame that found
    the buffer empty (the next audio was late), unlike the stand-in's ``gap_frames``, which
    also counts digital silence the daemon sent on purpose (e.g. Piper's sentence pauses).
    """

    frames: int = 0
    messages: int = 0
    starved_ms: float | None = None
    lead_min_ms: float | None = None
    lead_p50_ms: float | None = None
    jitter_ms: float | None = None
    leads: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "frames": self.frames,
            "messages": self.messages,
            "starved_ms": self.starved_ms,
            "lead_min_ms": _r(self.lead_min_ms),
            "lead_p50_ms": _r(self.lead_p50_ms),
            "jitter_ms": _r(self.jitter_ms),
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def reply_timing(log: RecordingBuffer, start: float, end: float) -> FrameTiming:
    """Frame timing for arrivals in ``[start, end)`` (one reply's window on the stand-in clock).

    The lead of an arrival is the audio queued before it plus what is left of the frame
    playing now (``20 ms - time since the last tick`` when that tick was audible). Arrivals
    that start within ``STEADY_AFTER_MS`` of audio after the buffer was empty are the
    sender's deliberate lead burst and are left out; a run that never reaches steady state
    contributes nothing.
    """
    arrivals = [p.arrived for p in log.pushes]
    lo, hi = bisect.bisect_left(arrivals, start), bisect.bisect_left(arrivals, end)
    tick_times = [p.t for p in log.ticks]
    window = log.pushes[lo:hi]
    timing = FrameTiming(frames=-(-sum(p.size for p in window) // FRAME_BYTES), messages=hi - lo)
    run_start = window[0].offset if window else 0
    for push in window:
        t, queued = push.arrived, push.queued
        if queued == 0:
            run_start = push.offset
        if push.offset - run_start < STEADY_AFTER_MS * BYTES_PER_MS:
            continue
        i = bisect.bisect_right(tick_times, t) - 1
        playing = 0.0
        if i >= 0 and log.ticks[i].audible:
            playing = max(0.0, FRAME_MS - (t - tick_times[i]) * 1000)
        timing.leads.append(queued / BYTES_PER_MS + playing)
    t_lo = bisect.bisect_left(tick_times, start)
    t_hi = bisect.bisect_left(tick_times, end)
    played = [p.audible for p in log.ticks[t_lo:t_hi]]
    if any(played):
        first = played.index(True)
        last = len(played) - 1 - played[::-1].index(True)
        timing.starved_ms = FRAME_MS * played[first : last + 1].count(False)
    if timing.leads:
        timing.lead_min_ms = min(timing.leads)
        timing.lead_p50_ms = statistics.median(timing.leads)
        timing.jitter_ms = statistics.pstdev(timing.leads)
    return timing


def playing_fraction(log: RecordingBuffer, start: float, end: float) -> float | None:
    """Share of playout ticks in ``[start, end]`` that played agent audio (including the
    quiet inside a reply, which Twilio plays like any audio); None without ticks."""
    times = [p.t for p in log.ticks]
    lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
    played = [p.audible for p in log.ticks[lo:hi]]
    return sum(played) / len(played) if played else None
