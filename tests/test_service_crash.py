"""SIGKILL mid-call loses at most the turn in flight: finished turns are already committed."""

from __future__ import annotations

import signal
import sqlite3

import pytest
import trio
from service_util import launch, target, wer
from speech import speak

from aicallerctl.testcall import Utterance, new_sid, place_call

pytestmark = pytest.mark.e2e

FIRST = "What time do you open tomorrow?"
SECOND = "And are you open on Sunday as well?"


def test_sigkill_mid_call_keeps_the_finished_turns(tmp_path):
    d = launch(tmp_path)
    sid = new_sid("CA")
    script = [Utterance(speak(FIRST), FIRST), Utterance(speak(SECOND), SECOND)]

    async def scenario():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: place_call(target(d), script, call_sid=sid))
            # The first turn is logged once it is written to the call log.
            await trio.to_thread.run_sync(d.wait_for, f"[{sid}] turn 1:", 90)
            d.proc.send_signal(signal.SIGKILL)

    trio.run(scenario)
    assert d.proc.wait(timeout=30) == -signal.SIGKILL

    with sqlite3.connect(d.db_path) as db:
        call = db.execute(
            "SELECT direction, from_number, answered_at, ended_at FROM calls WHERE sid = ?", (sid,)
        ).fetchone()
        turns = db.execute(
            "SELECT seq, who, text FROM turns WHERE call_sid = ? ORDER BY seq", (sid,)
        ).fetchall()
    assert call is not None and call[0] == "in" and call[1] == "+15550001111"
    assert call[2] is not None and call[3] is None  # answered, never ended: it was killed
    # The greeting, then the first exchange, all committed before the kill.
    assert [(seq, who) for seq, who, _ in turns[:3]] == [(1, "agent"), (2, "caller"), (3, "agent")]
    assert wer(FIRST, turns[1][2]) <= 0.35, turns
    assert turns[2][2]
