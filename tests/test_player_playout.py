"""Twilio stand-ins play agent messages of any length in real time, 20 ms a tick.

The Player sends several frames a message; the stand-ins' playout buffer (and the bench's
recording one) must play them exactly as Twilio does, and the send-cost bench must run.
"""

import pytest

from aicallerctl.playout import FRAME, PlayoutBuffer
from bench.frames import ManualClock, RecordingBuffer, reply_timing
from bench.player_send import measure


def test_a_long_message_plays_a_frame_a_tick_and_its_mark_after_it() -> None:
    buf = PlayoutBuffer()
    sentence = bytes(range(200)) * 4  # 800 bytes: five frames in one message
    buf.push_audio(sentence)
    buf.push_mark("s1")
    buf.push_audio(b"\x01" * 100)  # a ragged tail, then a frame's worth more
    buf.push_audio(b"\x02" * 220)
    ticks = [buf.tick() for _ in range(8)]
    assert b"".join(t.audio for t in ticks[:5]) == sentence
    assert [t.marks for t in ticks] == [[], [], [], [], [], ["s1"], [], []]
    assert ticks[5].audio == b"\x01" * 100 + b"\x02" * 60
    assert ticks[6].audio == b"\x02" * FRAME
    assert [t.audible for t in ticks] == [True] * 7 + [False]
    assert not any(t.underrun for t in ticks[:7])  # a gapless run, whatever the sizes


def test_recording_buffer_times_long_messages_by_their_first_byte() -> None:
    clock = ManualClock()
    buf = RecordingBuffer(clock)
    buf.push_audio(b"\x00" * 1440)  # the Player's first top-up: 180 ms
    for n in range(1, 25):
        if n in (5, 10, 15):  # one 100 ms batch each time 80 ms are left, between ticks
            clock.t = n * 0.02 - 0.01
            buf.push_audio(b"\x00" * 800)
        clock.t = n * 0.02
        buf.tick()
    got = [(round(p.arrived, 6), p.size, p.due and round(p.due, 6)) for p in buf.pushes]
    assert got == [
        (0.0, 1440, 0.02),
        (0.09, 800, 0.2),
        (0.19, 800, 0.3),
        (0.29, 800, 0.4),
    ]
    timing = reply_timing(buf, 0.0, 1.0)
    assert (timing.frames, timing.messages, timing.starved_ms) == (24, 4, 0.0)
    # 100 ms queued ahead (the 80 ms lead + the frame due next) + half the frame playing.
    assert timing.leads == pytest.approx([110.0, 110.0, 110.0])


def test_send_cost_bench_delivers_all_audio_in_fewer_messages() -> None:
    per_frame, coalesced = measure(3.0, 0.02), measure(3.0, 0.1)
    assert per_frame.received_seconds == coalesced.received_seconds == 3.0
    assert per_frame.messages_per_second > 45
    assert coalesced.messages_per_second <= 10
