"""End to end, the phone behaviours of issue 11: the real daemon and models, a spoken caller.

One daemon whose system prompt carries a small business's facts (as the README shows an
owner how to write), four calls through the Twilio stand-in: a question about the opening
hours then a goodbye; keys; a phone number read out with pauses; a complete question.
"""

from __future__ import annotations

import re
import sqlite3
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import trio
from service_util import launch, target
from speech import speak
from trio_websocket import open_websocket_url

from aicallerctl.testcall import (
    CallResult,
    StandInCall,
    Utterance,
    _stream_target,
    _wait_reply,
    new_sid,
    place_call,
)
from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.twilio import media
from aicallerd.twilio.signature import compute_signature

pytestmark = pytest.mark.e2e

FACTS = "We are open from nine to five, Monday to Friday. We are at 12 Harbour Street."
PROMPT = (
    "You are the phone assistant of Rosa's Bakery. Answer in one or two short sentences. " + FACTS
)
FIXED_END_OF_TURN = 0.6  # [turn] done_speaking_silence_seconds: the fixed rule


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = launch(tmp_path_factory.mktemp("e2e-phone"), f'[llm]\nsystem_prompt = "{PROMPT}"\n')
    yield d
    code = d.stop()
    assert code == 0, d.log_text()[-3000:]


def turns(db_path, call_sid: str, who: str) -> list[str]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT text FROM turns WHERE call_sid = ? AND who = ? ORDER BY id", (call_sid, who)
        ).fetchall()
    return [r[0] for r in rows]


def end_reason(db_path, call_sid: str) -> str | None:
    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT end_reason FROM calls WHERE sid = ?", (call_sid,)).fetchone()
    return row[0] if row else None


def seconds_from_last_sound_to_close(result: CallResult) -> float:
    """The stand-in plays one 20 ms frame per tick until the stream closes."""
    pcm = ulaw_decode(bytes(result.agent_track)).astype(np.float64)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 200)
    assert len(loud), "the agent said nothing"
    return (len(frames) - 1 - int(loud[-1])) * 0.02


def test_opening_hours_then_goodbye_ends_the_call(daemon):
    said = ["When are you open?", "Okay, thank you very much. Goodbye."]
    result = trio.run(lambda: place_call(target(daemon), [Utterance(speak(s), s) for s in said]))
    daemon.wait_for(f"[{result.call_sid}] call ended")  # all recorded
    heard = turns(daemon.db_path, result.call_sid, "caller")
    assert len(heard) == 2, (heard, daemon.log_text()[-2000:])
    # The owner's facts are in the model's prompt, but SmolLM2-135M does not reliably repeat
    # them ("I'm happy to assist with any requests..." in our runs): only an answer is asserted.
    _greeting, answer, farewell = turns(daemon.db_path, result.call_sid, "agent")
    assert answer.strip(), daemon.log_text()[-2000:]
    assert farewell == "Thank you for calling. Goodbye!"
    # The goodbye: the farewell line, then the stream closed by the daemon within 3 s.
    assert result.closed_by_daemon
    assert seconds_from_last_sound_to_close(result) <= 3.0
    assert end_reason(daemon.db_path, result.call_sid) == "caller_goodbye"


async def key_call(d, digits: str) -> CallResult:
    """A call that waits for the greeting, presses ``digits`` and waits for the answer."""
    t = target(d)
    call_sid, account_sid, stream_sid = new_sid("CA"), new_sid("AC"), new_sid("MZ")
    form = {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "From": "+15550001111",
        "To": "+15550002222",
        "Direction": "inbound",
        "CallStatus": "ringing",
    }
    url = t.public_url.rstrip("/") + "/voice"
    async with httpx.AsyncClient() as client:
        resp = await client.post(
            t.connect + "/voice",
            data=form,
            headers={"X-Twilio-Signature": compute_signature(t.auth_token, url, form)},
        )
    stream_url, params = _stream_target(resp.text)
    ws_url = f"ws://{urlsplit(t.connect).netloc}{urlsplit(stream_url).path}"
    headers = [(b"x-twilio-signature", compute_signature(t.auth_token, stream_url, {}).encode())]
    result = CallResult(call_sid=call_sid)
    async with open_websocket_url(ws_url, extra_headers=headers) as ws:
        call = StandInCall(ws, result, stream_sid, account_sid)
        await call.send(media.connected_event())
        await call.send(media.start_event(1, stream_sid, call_sid, account_sid, params))
        call.seq = 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.receive_loop)
            nursery.start_soon(call.clock_loop)
            await _wait_reply(call, 20.0, 1.2)
            for digit in digits:
                await call.send(media.dtmf_event(call.next_seq(), stream_sid, digit))
                await trio.sleep(0.25)
            call.last_audible = -1.0
            await _wait_reply(call, 20.0, 1.2)
            call.hanging_up = True
            await call.send(media.stop_event(call.next_seq(), stream_sid, call_sid, account_sid))
            await ws.aclose()
            nursery.cancel_scope.cancel()
    return result


def test_keys_reach_the_model_and_the_call_log(daemon):
    result = trio.run(key_call, daemon, "123#")
    assert turns(daemon.db_path, result.call_sid, "caller") == ["The caller pressed 1 2 3."]
    _greeting, answer = turns(daemon.db_path, result.call_sid, "agent")
    assert answer.strip()
    # The model got the keys as the caller's words: its turn is logged with them.
    daemon.wait_for("caller='The caller pressed 1 2 3.'")


def test_a_number_read_with_pauses_is_one_turn(daemon):
    parts = ["My number is five five five,", "one two three,", "four five six seven."]
    pause = np.zeros(int(1.0 * 8000), dtype=np.int16)  # a caller's 1 s pause mid-number
    pcm = np.concatenate([speak(parts[0]), pause, speak(parts[1]), pause, speak(parts[2])])
    result = trio.run(lambda: place_call(target(daemon), [Utterance(pcm, " ".join(parts))]))
    daemon.wait_for(f"[{result.call_sid}] call ended")  # all recorded
    heard = turns(daemon.db_path, result.call_sid, "caller")
    assert len(heard) == 1, heard  # not cut off at a pause
    # The last digits, after both pauses, are in the same turn as "my number is".
    assert "number" in heard[0].lower(), heard
    assert "4567" in re.sub(r"\D", "", heard[0]) or "seven" in heard[0].lower(), heard


def test_a_complete_question_is_answered_sooner_than_the_fixed_rule(daemon):
    said = "Where is the bakery?"
    result = trio.run(lambda: place_call(target(daemon), [Utterance(speak(said), said)]))
    daemon.wait_for(f"[{result.call_sid}] call ended")  # all recorded
    line = next(
        line for line in daemon.lines if result.call_sid in line and "endpoint_wait=" in line
    )
    waited = int(re.search(r"endpoint_wait=(\d+)ms", line).group(1)) / 1000
    # The words decide: the question was classified complete, so the turn ended 0.5 s after
    # the speech or as soon as its words were in, whichever came later. Sooner than the fixed
    # 0.6 s only when Whisper beats 0.6 s; on a CPU shared with other work it may not, and
    # then the answer starts when the words are in under either rule.
    assert any(result.call_sid in ln and "is complete: 0.5s pause" in ln for ln in daemon.lines), (
        daemon.log_text()[-2000:]
    )
    assert waited < 1.8, line  # never the unfinished limit
