"""The recording playout buffer the benchmark and the session tests hand to the stand-in,
and the frame lead / starvation the benchmark reads from it, on a hand-driven clock."""

from aicallerctl.playout import FRAME
from bench.frames import ManualClock, RecordingBuffer, playing_fraction, reply_timing

AUDIO = b"\x00" * FRAME  # one 20 ms frame (mu-law zero is loud enough to count as audio)


def test_steady_sender_lead_and_a_late_frame_show_as_starved() -> None:
    clock = ManualClock()
    buf = RecordingBuffer(clock)
    # The sender bursts 8 frames at t=0, sends one per tick for 4 ticks, then pauses: tick
    # 13 finds the buffer empty, and audio resumes at tick 14.
    for _ in range(8):
        buf.push_audio(AUDIO)
    sent = 8
    for n in range(1, 16):
        clock.t = n * 0.02 - 0.01  # arrivals half-way between ticks
        if sent < 12 or n >= 14:
            buf.push_audio(AUDIO)
            sent += 1
        clock.t = n * 0.02
        buf.tick()
    timing = reply_timing(buf, 0.0, 1.0)

    assert timing.frames == sent == 14
    assert timing.starved_ms == 20.0  # one empty tick between played frames
    # Past the burst's first 5, leads are the queue ahead (+ the rest of the frame playing):
    # 100/120/140 ms inside the burst, then 8 queued frames + 10 ms = 170 ms.
    assert timing.leads == [100.0, 120.0, 140.0, 160.0, 170.0, 170.0, 170.0]
    assert timing.lead_min_ms == 100.0 and timing.lead_p50_ms == 160.0
    assert buf.pushes[0].first_after_idle and not buf.pushes[1].first_after_idle
    assert [p.due for p in buf.pushes[:2]] == [0.02, 0.04]  # each played by the next tick
    assert playing_fraction(buf, 0.0, 0.2) == 1.0


def test_clear_drops_what_is_queued_so_it_never_plays() -> None:
    clock = ManualClock()
    buf = RecordingBuffer(clock)
    for _ in range(3):
        buf.push_audio(AUDIO)
    clock.t = 0.02
    buf.tick()
    buf.clear()
    clock.t = 0.04
    buf.tick()
    assert [p.due for p in buf.pushes] == [0.02, None, None]
    assert buf.underruns == []  # a clear is not a gap mid-sentence
    assert playing_fraction(buf, 0.03, 0.05) == 0.0
