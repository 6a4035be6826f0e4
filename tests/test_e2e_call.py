"""End to end: the real daemon, the real embedded models, a call through the Twilio stand-in.

Twilio itself is stood in for by ``aicallerctl.testcall`` (signed webhook, Media Streams
protocol, real-time playout buffer). Everything else is real: faster-whisper tiny.en,
SmolLM2 under the embedded llama.cpp server, Piper, Silero VAD, SQLite.
"""

from __future__ import annotations

import sqlite3

import httpx
import numpy as np
import pytest
import trio
from service_util import launch, target
from speech import speak

from aicallerctl.testcall import Utterance, place_call
from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.twilio.signature import compute_signature
from bench.wer import normalize, wer

pytestmark = pytest.mark.e2e

# tiny.en on telephone-band (8 kHz mu-law) audio of a synthetic voice: measured 0-0.2 WER.
MAX_CALLER_WER = 0.35


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = launch(tmp_path_factory.mktemp("e2e"))
    yield d
    code = d.stop()
    assert code == 0, d.log_text()[-3000:]


@pytest.fixture(scope="module")
def stt():
    from aicallerd.engines.stt import Transcriber

    t = Transcriber()
    t.load()
    return t


def caller_turns(db_path, call_sid: str) -> list[str]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT text FROM turns WHERE call_sid = ? AND who = 'caller' ORDER BY id", (call_sid,)
        ).fetchall()
    return [r[0] for r in rows]


SAID = ["What time do you open tomorrow?", "Okay, thank you very much. Bye bye."]


def test_two_turn_call(daemon, stt):
    script = [Utterance(speak(text), text) for text in SAID]
    result = trio.run(lambda: place_call(target(daemon), script))
    assert result.refused is None
    # Every turn is in the call log (and its log line written) by the time the call has ended.
    daemon.wait_for(f"[{result.call_sid}] call ended")

    # The greeting was played and is speech.
    greeting = stt.transcribe_sync(ulaw_decode(bytes(result.greeting_audio)))
    assert (
        wer("Hello! You've reached the aicaller assistant. How can I help you today?", greeting)
        < 0.5
    ), greeting

    # The daemon heard what the caller said, turn by turn.
    heard = caller_turns(daemon.db_path, result.call_sid)
    assert len(heard) == 2, (heard, daemon.log_text()[-2000:])
    for said, got in zip(SAID, heard, strict=True):
        assert wer(said, got) <= MAX_CALLER_WER, (said, got)

    # Each reply is audible speech that transcribes back to words, and came promptly.
    for turn in result.turns:
        assert turn.latency is not None, "no reply audio"
        pcm = ulaw_decode(bytes(turn.agent_audio))
        assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 200, "reply is not audible"
        words = normalize(stt.transcribe_sync(pcm)).split()
        assert len(words) >= 2, words

    # One log line per model turn with the caller text, the reply and the latency legs; the
    # goodbye is answered with the farewell line and the daemon ends the call.
    turn_lines = [
        line for line in daemon.lines if result.call_sid in line and "voice_to_voice=" in line
    ]
    assert len(turn_lines) == 1
    assert "stt_tail=" in turn_lines[0] and "llm_first_token=" in turn_lines[0]
    assert result.closed_by_daemon
    daemon.wait_for(f"[{result.call_sid}] call ended: caller_goodbye")


def test_forged_signature_is_refused(daemon):
    params = {"CallSid": "CA" + "0" * 32, "From": "+15550001111", "To": "+15550002222"}
    good = compute_signature(daemon.auth_token, daemon.public_url + "/voice", params)
    forged = compute_signature("not-the-token", daemon.public_url + "/voice", params)
    with httpx.Client() as client:
        bad = client.post(
            daemon.base_url + "/voice", data=params, headers={"X-Twilio-Signature": forged}
        )
        missing = client.post(daemon.base_url + "/voice", data=params)
        ok = client.post(
            daemon.base_url + "/voice", data=params, headers={"X-Twilio-Signature": good}
        )
    assert bad.status_code == 403
    assert missing.status_code == 403
    assert ok.status_code == 200 and "<Connect><Stream" in ok.text
    daemon.wait_for("bad X-Twilio-Signature")


def test_wrong_token_is_refused_while_another_call_works(daemon):
    said = "Can you tell me where you are located?"

    async def both():
        results = {}

        async def good():
            results["good"] = await place_call(target(daemon), [Utterance(speak(said), said)])

        async def forged():
            results["forged"] = await place_call(
                target(daemon), [Utterance(speak("hello"), "hello")], token_override="guessed"
            )

        async with trio.open_nursery() as n:
            n.start_soon(good)
            n.start_soon(forged)
        return results

    results = trio.run(both)
    forged = results["forged"]
    assert forged.closed_by_daemon and not forged.greeting_audio and forged.marks_echoed == 0
    good = results["good"]
    assert good.refused is None and len(good.turns) == 1
    assert good.turns[0].latency is not None
    heard = caller_turns(daemon.db_path, good.call_sid)
    assert heard and wer(said, heard[0]) <= MAX_CALLER_WER
    daemon.wait_for("stream refused: bad or missing token")
