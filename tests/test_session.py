"""One CallSession end to end, in memory and in virtual time (see ``session_harness``).

The caller is the product's own Twilio stand-in speaking synthetic words; the real VAD gate,
endpointer, player and session run against fake STT, LLM and TTS with scripted latencies.
Each test asserts what a caller would hear or an operator would read in the call log.
"""

from __future__ import annotations

import dataclasses
import logging
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from session_harness import (
    FRAME_SECONDS,
    CallHarness,
    FakeLLM,
    FakeSTT,
    FakeTTS,
    FakeWebSocket,
    Link,
    MemoryTransport,
    Segment,
    decode_words,
    new_session,
    run_call,
    settings,
    speech,
)

from aicallerctl.testcall import Utterance, _trim_turn_audio
from aicallerd.audio.mulaw import ulaw_encode
from aicallerd.call.lines import FALLBACK_LINE
from aicallerd.call.reply import SECONDS_PER_CHAR
from aicallerd.call.session import QUIET_BATCH_SECONDS
from aicallerd.call.settings import ReplySettings, call_settings
from aicallerd.config import load_config
from aicallerd.engines.affinity import LEASE, SlotLease
from aicallerd.twilio import media
from bench.frames import reply_timing

DONE = 0.6  # done_speaking_silence_seconds in the harness settings
EPS = 1e-6
S1, S2, S3 = "Alpha bravo charlie.", "Delta echo foxtrot.", "Golf hotel india."
REPLY3 = f"{S1} {S2} {S3}"  # about one second of audio per sentence


def labels(segments: list[Segment]) -> list[tuple[str, bool]]:
    return [(s.label, s.complete) for s in segments]


def assert_cut_once(h: CallHarness, clear_t: float, sentences: list[str]) -> list[str]:
    """The reply of ``sentences`` played whole up to one sentence cut by the clear at
    ``clear_t``, and nothing of it after; returns the sentences heard whole (mark echoed)."""
    segs = [s for s in h.segments() if s.label in sentences]
    *whole, cut = segs
    assert [(s.label, s.complete) for s in whole] == [(x, True) for x in sentences[: len(whole)]]
    assert (cut.label, cut.complete) == (sentences[len(whole)], False)
    assert cut.last_t <= clear_t
    marks = {s.mark for s in whole}
    assert {name for t, name in h.marks_echoed() if t <= clear_t and name in marks} == marks
    return [s.label for s in whole]


async def settle(h: CallHarness) -> None:
    """Wait until the agent has answered and fallen quiet (its closing ``clear``)."""
    await h.wait_until(
        lambda: (
            bool(h.sink.agent_turns)
            and bool(h.clears())
            and h.clears()[-1] >= h.sink.agent_turns[-1].at
        )
    )


def test_fake_stt_recovers_words() -> None:
    """The synthetic speech round-trips, gaps and all, so later tests can trust the STT."""
    assert decode_words(speech("w1", "w2", "w3")) == "w1 w2 w3"
    assert decode_words(speech(0.3, "yeah", 0.4, "w7", 0.2)) == "yeah w7"
    assert decode_words(speech(0.5)) == ""


# -- 1. a normal turn ------------------------------------------------------------------------


def test_a_sentence_too_long_for_the_reply_stops_the_llm_while_it_is_written() -> None:
    """The reply holds at most max_reply_words: once the sentence being written cannot fit,
    the LLM stream is closed there (the server stops generating), not read to its end."""
    first = "We are open from nine to five on weekdays and until two on Saturdays."
    rambling = "And then" + " there is a great deal more to say about it" * 5 + "."
    llm = FakeLLM({"w1 w2 w3": f"{first} {rambling}"})

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller, llm=llm)
    # (the first sentence's opening phrase is spoken ahead of it)
    opening, rest = "We are open from nine to five", "on weekdays and until two on Saturdays."
    assert f"{opening} {rest}" == first
    assert labels(h.segments()) == [(opening, True), (rest, True)]
    (request,) = llm.requests
    assert request.outcome != "done"  # closed mid-stream: the rest was never generated
    assert request.tokens_read <= 30 + 1  # the 30-word budget and the word that broke it


@pytest.mark.parametrize("first_token_delay", [0.05, 0.8], ids=["reply-ready-early", "slow-llm"])
def test_normal_turn(first_token_delay: float) -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller, llm=FakeLLM(first_token_delay=first_token_delay))
    said = h.said[0]
    reply = "I heard w1 w2 w3."

    # The caller heard exactly the reply, whole, followed by its mark.
    assert labels(h.segments()) == [(reply, True)]
    assert [name for _, name in h.marks_echoed()] == ["t1-s1"]

    # Nothing was sent before the end-of-turn silence had elapsed.
    assert said.first_agent_audio is not None
    assert h.agent_frames()[0].t >= said.speech_end + DONE - EPS
    if first_token_delay < 0.3:
        # The speculative reply was ready early and released exactly at the endpoint.
        assert said.latency == pytest.approx(DONE, abs=FRAME_SECONDS)
    else:
        assert said.latency is not None and said.latency > DONE + 0.3

    # The turn was started speculatively at the pause and then committed.
    (request,) = h.llm.requests
    assert request.caller_text == "w1 w2 w3"
    assert request.outcome == "done"
    assert request.at < said.speech_end + DONE
    assert h.session.speculations == {"started": 1, "committed": 1, "discarded": 0}

    # The call log: one caller turn, one agent turn with legs that match the caller's clock.
    assert [t.text for t in h.sink.caller_turns] == ["w1 w2 w3"]
    (agent,) = h.sink.agent_turns
    assert (agent.text, agent.interrupted) == (reply, False)
    legs = agent.legs
    assert legs.speculative is True
    assert legs.interrupted is False
    assert legs.voice_to_voice == pytest.approx(said.latency, abs=2 * FRAME_SECONDS)
    assert legs.endpoint_wait == pytest.approx(DONE, abs=FRAME_SECONDS)
    assert legs.llm_first_token == pytest.approx(first_token_delay, abs=0.01)
    assert h.session.history[1:] == [
        {"role": "user", "content": "w1 w2 w3"},
        {"role": "assistant", "content": reply},
    ]


# -- 2. a speculation the caller talks over is dropped unheard --------------------------------


@pytest.mark.parametrize("token_delay", [0.005, 0.1], ids=["rendered-then-dropped", "cancelled"])
def test_speculation_discarded_when_caller_resumes(token_delay: float) -> None:
    # Fast engines: the speculative reply is fully synthesized behind the gate before the
    # caller resumes, so "never heard" is tested, not just "never made". Slow tokens: the
    # caller resumes mid-generation and the speculation's LLM request is cancelled.
    llm = FakeLLM(first_token_delay=0.02, token_delay=token_delay)
    tts = FakeTTS(delay=0.02)

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", 0.4, "w2")
        await settle(h)

    h = run_call(caller, stt=FakeSTT(delay=0.02), llm=llm, tts=tts)

    first, second = h.llm.requests
    assert first.caller_text == "w1"  # speculated at the 0.3 s pause
    assert second.caller_text == "w1 w2"
    if token_delay < 0.01:
        assert "I heard w1." in tts.requests  # it was rendered, and held back by the gate
    else:
        assert first.outcome == "cancelled"
        assert "I heard w1." not in tts.requests
    assert labels(h.segments()) == [("I heard w1 w2.", True)]
    assert h.session.speculations == {"started": 2, "committed": 1, "discarded": 1}

    assert [t.text for t in h.sink.caller_turns] == ["w1 w2"]
    assert [t.text for t in h.sink.agent_turns] == ["I heard w1 w2."]
    assert h.session.history[1:] == [
        {"role": "user", "content": "w1 w2"},
        {"role": "assistant", "content": "I heard w1 w2."},
    ]
    said = h.said[0]
    assert h.agent_frames()[0].t >= said.speech_end + DONE - EPS


# -- 3. barge-in ---------------------------------------------------------------------------


def reply3_llm() -> FakeLLM:
    return FakeLLM({"w1 w2 w3": REPLY3})


async def talk_over_reply(h: CallHarness, after: float, *words: str) -> float:
    """Say w1 w2 w3, then ``words`` starting ``after`` seconds into the reply's playback.

    Returns the onset of the interrupting speech (when its first loud frame was sent).
    """
    await trio.sleep(0.5)
    said = await h.say("w1", "w2", "w3")
    await h.wait_until(lambda: said.first_agent_audio is not None)
    assert said.first_agent_audio is not None
    await trio.sleep_until(said.first_agent_audio + after)
    t0 = trio.current_time()
    await h.say(*words)
    return h.caller_onset_after(t0)


def test_barge_in_cuts_reply_and_keeps_only_what_was_heard() -> None:
    s = settings()
    onset = 0.0

    async def caller(h: CallHarness) -> None:
        nonlocal onset
        onset = await talk_over_reply(h, 1.5, "w4", "w5")
        await h.wait_agent_turns(2)
        await settle(h)

    h = run_call(caller, call_settings=s, llm=reply3_llm())

    # `clear` went out as soon as the caller had spoken long enough to count (from the start
    # of the first loud frame's audio, which is a frame older than its sending).
    clear_t = h.clears()[0]
    assert onset - FRAME_SECONDS + s.barge_in_min_speech_seconds - EPS <= clear_t
    assert clear_t <= onset + s.barge_in_min_speech_seconds + 0.1

    # The caller heard sentence 1 and part of sentence 2; nothing of the old reply after the
    # clear; then the answer to the interruption.
    segs = h.segments()
    assert labels(segs) == [(S1, True), (S2, False), ("I heard w4 w5.", True)]
    assert segs[1].last_t <= clear_t < segs[2].first_t
    heard_before_clear = [name for t, name in h.marks_echoed() if t <= clear_t]
    assert heard_before_clear == ["t1-s1"]

    # The call log stores only what was heard, marked interrupted; the interruption is a turn.
    first, second = h.sink.agent_turns
    assert (first.text, first.interrupted, first.legs.interrupted) == (S1, True, True)
    assert (second.text, second.interrupted) == ("I heard w4 w5.", False)
    assert [t.text for t in h.sink.caller_turns] == ["w1 w2 w3", "w4 w5"]

    # The LLM answered the interrupting words with the truncated reply in its history.
    last = h.llm.requests[-1]
    assert last.caller_text == "w4 w5"
    assert last.messages[1:] == [
        {"role": "user", "content": "w1 w2 w3"},
        {"role": "assistant", "content": S1},
        {"role": "user", "content": "w4 w5"},
    ]


def test_marks_echoed_by_the_clear_do_not_count_as_heard() -> None:
    """Cut just after sentence 1's mark went out but before it played: Twilio echoes the mark
    on the clear, yet the caller never heard the end of sentence 1. So it is not stored as
    said, and when the cut was only "yeah" the reply resumes from sentence 1."""
    s = settings()

    async def caller(h: CallHarness) -> None:
        # Sentence 1 lasts 1.0 s; its mark is sent ~lead before playout reaches it.
        after = 1.0 - s.player_lead / 2 - s.barge_in_min_speech_seconds - 0.02
        await talk_over_reply(h, after, "yeah")
        await h.wait_until(lambda: len(h.clears()) >= 2)  # the cut, then the end of the reply

    h = run_call(caller, call_settings=s, llm=reply3_llm())

    clear_t = h.clears()[0]
    sent_t = dict((n, t) for t, n in h.marks_sent())["t1-s1"]
    echo_t = dict((n, t) for t, n in h.marks_echoed())["t1-s1"]
    assert sent_t < clear_t <= echo_t  # precondition: the mark was in flight at the clear
    first = h.sink.agent_turns[0]
    assert (first.text, first.interrupted) == ("", True)
    # Sentence 1 had been sent whole, but the clear threw its end away: it is resumed too.
    assert labels(h.segments()) == [(S1, True), (S2, False), (S1, True), (S2, True), (S3, True)]


def test_caller_talking_on_while_agent_thinks_joins_the_next_turn() -> None:
    """The caller resumes after the endpoint while the LLM is still thinking: the turn is
    cancelled unheard and their words are answered together."""

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3", DONE + 0.2, "w4")
        await settle(h)

    h = run_call(caller, llm=FakeLLM(first_token_delay=1.5))

    first, second = h.llm.requests
    assert (first.caller_text, first.outcome) == ("w1 w2 w3", "cancelled")
    assert second.caller_text == "w1 w2 w3 w4"
    assert labels(h.segments()) == [("I heard w1 w2 w3 w4.", True)]
    assert [t.text for t in h.sink.caller_turns] == ["w1 w2 w3 w4"]
    assert [t.text for t in h.sink.agent_turns] == ["I heard w1 w2 w3 w4."]


# -- 4. backchannels -----------------------------------------------------------------------


def test_backchannel_cut_then_resumed() -> None:
    """barge_in_ignore_backchannels: "yeah" cuts the reply (it is speech) but the agent then
    picks it up again at the cut sentence, without asking the LLM anything."""

    async def caller(h: CallHarness) -> None:
        await talk_over_reply(h, 1.5, "yeah")
        await h.wait_until(lambda: len(h.clears()) >= 2)  # the cut, then the end of the reply
        await trio.sleep(0.4)
        await h.say("w4", "w5")  # the conversation goes on
        await h.wait_until(lambda: any(t.text == "I heard w4 w5." for t in h.sink.agent_turns))
        await settle(h)

    h = run_call(caller, llm=reply3_llm())

    assert [r.caller_text for r in h.llm.requests] == ["w1 w2 w3", "w4 w5"]  # none for "yeah"
    assert labels(h.segments()) == [
        (S1, True),
        (S2, False),
        (S2, True),
        (S3, True),
        ("I heard w4 w5.", True),
    ]
    assert h.clears()[0] < h.segments()[2].first_t  # the cut was real: it was heard as such
    # The LLM's memory and the call log both hold everything the caller finally heard.
    history = h.llm.requests[-1].messages
    assert " ".join(m["content"] for m in history if m["role"] == "assistant") == REPLY3
    *reply, answer = h.sink.agent_turns
    assert " ".join(t.text for t in reply) == REPLY3
    assert reply[0].interrupted and not reply[-1].interrupted
    assert (answer.text, answer.interrupted) == ("I heard w4 w5.", False)


def test_resumed_reply_can_still_be_interrupted() -> None:
    """After a "yeah" the reply resumes; real words over the resumed part cut it again."""
    s = settings()
    onset = 0.0

    async def caller(h: CallHarness) -> None:
        nonlocal onset
        await talk_over_reply(h, 1.5, "yeah")
        await h.wait_until(lambda: any(seg.label == S3 for seg in h.segments()))
        s3 = next(seg for seg in h.segments() if seg.label == S3)
        await trio.sleep_until(s3.first_t + 0.3)
        t0 = trio.current_time()
        await h.say("w4", "w5")
        onset = h.caller_onset_after(t0)
        await h.wait_until(lambda: any(t.text == "I heard w4 w5." for t in h.sink.agent_turns))
        await settle(h)

    h = run_call(caller, call_settings=s, llm=reply3_llm())

    cut = [t for t in h.clears() if t >= onset]
    assert cut and cut[0] <= onset + s.barge_in_min_speech_seconds + 0.1
    segs = h.segments()
    assert labels(segs)[-2:] == [(S3, False), ("I heard w4 w5.", True)]
    assert segs[-2].last_t <= cut[0]
    # The next request's history holds what was heard: S1, then S2 (resumed), not S3.
    history = h.llm.requests[-1].messages
    assert " ".join(m["content"] for m in history if m["role"] == "assistant") == f"{S1} {S2}"


def test_backchannel_with_min_words_does_not_interrupt() -> None:
    """barge_in_min_words=2: "yeah" over the reply never cuts it."""

    async def caller(h: CallHarness) -> None:
        await talk_over_reply(h, 1.5, "yeah")
        await settle(h)

    h = run_call(caller, call_settings=settings(barge_in_min_words=2), llm=reply3_llm())

    assert labels(h.segments()) == [(S1, True), (S2, True), (S3, True)]
    last_mark_t = max(t for t, _ in h.marks_echoed())
    assert all(t >= last_mark_t for t in h.clears())  # only the end-of-reply clear
    assert len(h.llm.requests) == 1
    (agent,) = h.sink.agent_turns
    assert (agent.text, agent.interrupted) == (REPLY3, False)


def test_min_words_still_lets_real_words_interrupt() -> None:
    """barge_in_min_words=2: two real words over the reply do cut it, once both are heard."""
    s = settings(barge_in_min_words=2)
    onset = 0.0

    async def caller(h: CallHarness) -> None:
        nonlocal onset
        onset = await talk_over_reply(h, 1.5, "w4", "w5")
        await h.wait_agent_turns(2)
        await settle(h)

    h = run_call(caller, call_settings=s, llm=reply3_llm())

    clear_t = h.clears()[0]
    w4_seconds = speech("w4").size / 8000
    assert clear_t > onset + w4_seconds  # it waited for the second word
    assert clear_t < onset + 1.0
    heard = assert_cut_once(h, clear_t, [S1, S2, S3])
    assert [(t.text, t.interrupted) for t in h.sink.agent_turns] == [
        (" ".join(heard), True),
        ("I heard w4 w5.", False),
    ]
    assert h.llm.requests[-1].caller_text == "w4 w5"


# -- 5. a failing LLM ----------------------------------------------------------------------


def test_llm_failure_apologises_and_call_goes_on() -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)
        await trio.sleep(0.4)
        await h.say("w4", "w5")
        await h.wait_agent_turns(2)
        await settle(h)

    h = run_call(caller, llm=FakeLLM(fail_on=["w1 w2 w3"]))

    assert labels(h.segments()) == [("canned:sorry", True), ("I heard w4 w5.", True)]
    assert [r.outcome for r in h.llm.requests] == ["failed", "done"]
    assert [(t.text, t.interrupted) for t in h.sink.agent_turns] == [
        (FALLBACK_LINE, False),
        ("I heard w4 w5.", False),
    ]
    assert h.link.close_code is None  # the stand-in hung up, not the session
    assert h.session.end_reason == "hangup"


def test_a_reply_the_filter_refuses_whole_is_asked_for_once_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SmolLM2 sometimes answers with nothing but chatbot boilerplate: the caller was heard
    fine, so they get a second sample of the model, not "could you say that again?". What
    was refused is a debug line, so a slow turn can be explained."""
    caplog.set_level(logging.DEBUG, logger="aicallerd.call")
    boilerplate = "As an AI language model, I don't have personal opinions."
    llm = FakeLLM({"w1 w2 w3": [boilerplate, "We open at nine."]})

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller, llm=llm)
    assert labels(h.segments()) == [("We open at nine.", True)]
    first, second = llm.requests
    assert second.messages == first.messages
    assert second.temperature > first.temperature
    assert "turn 1: not said: 'As an AI language model,' | \"I don't have" in caplog.text


def test_a_reply_refused_twice_gets_the_apology() -> None:
    llm = FakeLLM({"w1 w2 w3": "As an AI language model, I don't have personal opinions."})

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller, llm=llm)
    assert labels(h.segments()) == [("canned:sorry", True)]
    assert len(llm.requests) == 2


def test_tts_dropping_mid_reply_apologises_and_the_next_turn_works() -> None:
    """A voice stream cut after the first sentence: the caller hears that sentence, then the
    apology, and the call goes on (it used to be dropped)."""

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await h.wait_agent_turns(1)
        await settle(h)
        await trio.sleep(0.4)
        await h.say("w4", "w5")
        await h.wait_agent_turns(2)
        await settle(h)

    h = run_call(caller, llm=reply3_llm(), tts=FakeTTS(fail_on=[S2]))

    assert labels(h.segments()) == [(S1, True), ("canned:sorry", True), ("I heard w4 w5.", True)]
    assert [t.text for t in h.sink.agent_turns] == [f"{S1} {FALLBACK_LINE}", "I heard w4 w5."]
    assert h.session.end_reason == "hangup"


@pytest.mark.parametrize("stall_at", [0, 1, 4], ids=["no-token", "one-token", "one-sentence"])
def test_stalled_llm_apologises_within_the_deadline(stall_at: int) -> None:
    """An LLM that stops sending (keep-alives only) never leaves the caller in silence:
    past the first-audio deadline they hear the apology, and the next turn is answered."""
    s = settings(first_audio_seconds=3.0, reply_seconds=8.0)

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await h.wait_agent_turns(1, timeout=30)
        await settle(h)
        await trio.sleep(0.4)
        await h.say("w4", "w5")
        await h.wait_agent_turns(2)
        await settle(h)

    llm = FakeLLM({"w1 w2 w3": REPLY3}, stall_on={"w1 w2 w3": stall_at})
    h = run_call(caller, call_settings=s, llm=llm)

    said = h.said[0]
    sorry = next(seg for seg in h.segments() if seg.label == "canned:sorry")
    if stall_at < 3:  # nothing speakable: the apology comes at the first-audio deadline
        assert sorry.first_t == pytest.approx(said.speech_end + DONE + 3.0, abs=0.1)
        assert labels(h.segments())[0] == ("canned:sorry", True)
    else:  # one sentence was spoken; the rest never came: cut at the reply deadline
        assert labels(h.segments())[0] == (S1, True)
        assert sorry.first_t <= said.speech_end + DONE + 8.0  # counted from the speculation
    assert h.llm.requests[0].outcome == "cancelled"  # the stalled stream was closed
    assert labels(h.segments())[-1] == ("I heard w4 w5.", True)


def test_stored_reply_audio_matches_the_stored_text(tmp_path: Path) -> None:
    """A reply cut by the caller hanging up is stored as heard: text and audio agree."""

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        said = await h.say("w1", "w2", "w3")
        await h.wait_until(lambda: len(h.marks_echoed()) >= 1)
        assert said.first_agent_audio is not None

    h = run_call(caller, call_settings=settings(store_audio_dir=tmp_path), llm=reply3_llm())

    (turn,) = h.sink.agent_turns
    assert turn.text == S1 and turn.interrupted
    (wav,) = tmp_path.glob("CA*/turn-001.wav")
    with wave.open(str(wav)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert seconds == pytest.approx(h.tts.seconds_for(S1), abs=0.001)


def test_a_stream_that_goes_quiet_is_ended() -> None:
    """Twilio sends a frame every 20 ms; a peer that stops sending is gone or hostile, and
    must not hold a line: the call ends once nothing arrived for media_timeout."""
    stopped: list[float] = []

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)

        async def silent(message: str | bytes) -> None:
            await trio.sleep_forever()

        h.ws.send_message = silent  # type: ignore[method-assign]
        stopped.append(trio.current_time())
        await h.wait_until(h.session_done.is_set, timeout=20)
        stopped.append(trio.current_time())

    h = run_call(caller)
    assert h.session.end_reason == "media_timeout"
    assert h.link.inbound[-1].t <= stopped[0]
    # A quiet call's frames are read on its tick, so the silence is counted from the last
    # read: up to one tick late.
    assert 5.0 - EPS <= stopped[1] - stopped[0] <= 5.0 + QUIET_BATCH_SECONDS + EPS
    assert h.session.ended.is_set()


def test_a_peer_that_stops_reading_is_ended() -> None:
    """A peer that never reads what we send would block the sender forever: after
    media_timeout of a blocked write the call ends."""
    blocked_at: list[float] = []

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)

        async def stuck(data: str) -> None:
            blocked_at.append(trio.current_time())
            await trio.sleep_forever()

        h.session.player.transport.send = stuck  # type: ignore[method-assign]
        await h.say("w1", "w2", "w3")  # the reply's first frame blocks
        await h.wait_until(h.session_done.is_set, timeout=30)
        blocked_at.append(trio.current_time())

    h = run_call(caller)
    assert h.session.end_reason == "media_timeout"
    assert blocked_at[-1] - blocked_at[0] == pytest.approx(5.0, abs=0.05)


def test_an_opening_the_last_reply_shared_is_voiced_once_the_words_after_it_differ() -> None:
    """SmolLM2 opens many replies alike. The shared opening is held (it could begin a copy of
    the earlier reply) only until the words after it differ, not until its sentence is
    written: the caller hears it while the rest is still being written."""
    opening = "I'm sorry for any misunderstanding,"
    first = f"{opening} but as an assistant I cannot check the weather for you."
    second = f"{opening} but as a phone service we only open at ten on weekdays and Sundays."

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await h.wait_agent_turns(1)
        await settle(h)
        await h.say("w4", "w5")
        await h.wait_agent_turns(2)
        await settle(h)

    llm = FakeLLM({"w1 w2 w3": first, "w4 w5": second}, token_delay=0.1)
    h = run_call(caller, llm=llm)
    segments = [seg for seg in h.segments() if seg.first_t > h.said[1].speech_end]
    assert segments[0].label == opening
    assert " ".join(seg.label for seg in segments) == second
    # Voiced after "but as a phone" (4 tokens), long before the last word was written.
    written = llm.requests[-1].at + llm.first_token_delay + len(second.split()) * 0.1
    assert segments[0].first_t < written - 0.5


def test_a_slow_voice_leaves_no_gap_after_a_short_first_clause() -> None:
    """A cloud voice's first audio takes 0.4 s per request; "Sure," plays in 0.25 s. The next
    sentence is synthesized while the clause plays, so the caller hears no gap."""
    reply = "Sure, there is free parking right behind the building."

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(
        caller,
        call_settings=settings(
            speculative=False,  # nothing rendered ahead of the commit
            reply=ReplySettings(
                max_tokens=120, temperature=0.4, interjection_chars=12, min_piece_chars=1
            ),
        ),
        llm=FakeLLM({"w1 w2 w3": reply}, token_delay=0.005),
        tts=FakeTTS(delay=0.4),
    )
    clause, rest = h.segments()
    assert (clause.label, rest.label) == (
        "Sure,",
        "there is free parking right behind the building.",
    )
    # The sentence's first audio reached Twilio while the clause still played: no gap.
    assert [p.first_after_idle for p in h.buffer.pushes].count(True) == 1
    assert reply_timing(h.buffer, 0.0, rest.last_t + 1.0).starved_ms == 0.0


def test_a_transcription_past_its_deadline_gets_the_apology() -> None:
    """A transcriber slower than its deadline (an overloaded machine): the caller hears the
    apology within the deadline, and the next turn is answered."""

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await h.wait_until(lambda: bool(h.sink.agent_lines))  # the apology was played
        h.stt.delay = 0.03
        await trio.sleep(0.4)
        await h.say("w4", "w5")
        await h.wait_agent_turns(1)
        await settle(h)

    h = run_call(caller, call_settings=settings(transcribe_seconds=1.0), stt=FakeSTT(delay=3.0))
    sorry, answer = h.segments()
    assert (sorry.label, answer.label) == ("canned:sorry", "I heard w4 w5.")
    said = h.said[0]
    assert sorry.first_t <= said.speech_end + 0.3 + 1.0 + 0.1  # the pause, then the deadline


# -- 6. limits -----------------------------------------------------------------------------


def test_silence_watchdog_says_goodbye_and_hangs_up() -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await h.wait_until(h.session_done.is_set, timeout=20)

    h = run_call(caller, call_settings=settings(max_silence_seconds=5.0))

    segs = h.segments()
    assert labels(segs) == [("I heard w1 w2 w3.", True), ("canned:goodbye", True)]
    reply_heard = dict((n, t) for t, n in h.marks_echoed())["t1-s1"]
    assert segs[1].first_t == pytest.approx(reply_heard + 5.0, abs=FRAME_SECONDS)
    goodbye_heard = dict((n, t) for t, n in h.marks_echoed())["goodbye"]
    assert (h.link.close_code, h.link.close_reason) == (1000, "silence")
    assert h.link.closed_at is not None and h.link.closed_at >= goodbye_heard
    assert h.call.result.closed_by_daemon
    assert h.session.end_reason == "silence"


def test_max_call_duration_cuts_in_and_hangs_up() -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await h.wait_until(h.session_done.is_set, timeout=20)

    h = run_call(caller, call_settings=settings(max_call_seconds=4.0), llm=reply3_llm())

    # At 4 s the reply (playing since ~2.2 s) is cut, the time-limit line plays, and the
    # session closes the stream.
    # Twilio holds up to 0.3 s of what we send: S2 was playing at the cut, and the start of
    # S3 may have been sent too; the clear dropped both.
    segs = h.segments()
    assert [seg.label for seg in segs[:2]] == [S1, S2]
    assert [seg.label for seg in segs[2:-1]] in ([], [S3])
    assert labels(segs[-1:]) == [("canned:time_limit", True)]
    clear_t = h.clears()[0]
    assert clear_t == pytest.approx(4.0, abs=FRAME_SECONDS)
    assert segs[-1].first_t >= clear_t
    assert (h.link.close_code, h.link.close_reason) == (1000, "max_duration")
    assert h.session.end_reason == "max_duration"
    # The call log keeps only what the caller heard of the cut reply, marked as cut.
    (agent,) = h.sink.agent_turns
    assert (agent.text, agent.interrupted) == (S1, True)


def test_caller_hanging_up_mid_reply_is_still_logged() -> None:
    """Twilio stops the stream while the agent talks: the call log keeps the caller's words
    and the part of the reply they heard."""

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        said = await h.say("w1", "w2", "w3")
        await h.wait_until(lambda: said.first_agent_audio is not None)
        await trio.sleep(1.5)  # then the caller hangs up (the harness sends `stop`)

    h = run_call(caller, llm=reply3_llm())

    assert labels(h.segments()) == [(S1, True), (S2, False)]
    assert h.session.end_reason == "hangup"
    assert [t.text for t in h.sink.caller_turns] == ["w1 w2 w3"]
    assert [(t.text, t.interrupted) for t in h.sink.agent_turns] == [(S1, True)]


# -- 7. junk on the wire -------------------------------------------------------------------


def _media(ts_ms: int, payload: bytes, track: str = "inbound") -> str:
    raw = media.media_event(9, "MZ" + "1" * 32, 1, ts_ms, payload)
    return raw.replace('"track":"inbound"', f'"track":"{track}"')


SID = "MZ" + "1" * 32


@pytest.mark.parametrize(
    "first",
    [
        "garbage",
        b"",
        _media(0, b"\xff" * 160),
        media.mark_event(2, SID, "early"),
        media.dtmf_event(3, SID, "1"),
    ],
    ids=["garbage", "empty-binary", "media", "mark", "dtmf"],
)
def test_anything_but_start_first_closes_the_stream(
    first: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Twilio always sends ``connected`` then ``start``: anything else is not Twilio, and
    the stream is closed before the call's state or any engine work exists."""
    caplog.set_level(logging.INFO, logger="aicallerd")
    llm = FakeLLM()

    async def main() -> None:
        link = Link()
        session = new_session(MemoryTransport(link), llm=llm)
        ws = FakeWebSocket(link)
        await ws.send_message(media.connected_event())
        await ws.send_message(first)
        assert await session.handshake() is None

        assert link.close_code == 1008
        assert link.outbound == []

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert llm.requests == []
    logged = [r.getMessage() for r in caplog.records]
    assert sum("stream closed" in m and "before start" in m for m in logged) == 1


def test_malformed_and_unexpected_frames_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aicallerd")
    sid = SID

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.2)
        now_ms = round(trio.current_time() * 1000)
        for raw in (
            "not json at all",
            b"\xff\xfe\x00",
            b'{"event": "dtmf"}',
            "[1, 2, 3]",
            '{"event": "bogus", "sequenceNumber": "5"}',
            '{"event": "media", "sequenceNumber": "6", "streamSid": "x", "media": {}}',
            _media(now_ms, b"\xff" * 161),  # odd payload length
            _media(now_ms, b"\xfe\xff\xfe"),
            _media(now_ms, b""),
            media.dtmf_event(7, sid, "5"),
            media.mark_event(8, sid, "never-sent"),
            media.connected_event(),
        ):
            await h.send_raw(raw)
        # The agent's own track (Twilio sends it with tracks="both"): never heard as caller.
        echo = ulaw_encode(speech("w7"))
        for i in range(0, len(echo), 160):
            await h.send_raw(_media(now_ms + i // 8, echo[i : i + 160], track="outbound"))
        await trio.sleep(0.3)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller, call_settings=settings(dtmf="ignore"))

    assert labels(h.segments()) == [("I heard w1 w2 w3.", True)]
    assert [t.text for t in h.sink.caller_turns] == ["w1 w2 w3"]
    assert [r.caller_text for r in h.llm.requests] == ["w1 w2 w3"]
    assert h.link.close_code is None
    assert h.session.end_reason == "hangup"
    # Each oddity left one line in the log for the operator.
    logged = [r.getMessage() for r in caplog.records]
    assert sum("ignoring malformed frame:" in m for m in logged) == 6
    assert "dtmf 5 (ignored)" in logged
    assert "ignoring connected after start" in logged


# -- 8. playback pacing --------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["piper", "elevenlabs"])
def test_no_voice_gets_a_first_piece_too_short_to_cover_the_next(engine: str) -> None:
    """A cloud voice answers every request after its first-byte delay, and Piper on a busy
    machine needs longer than "Yes," lasts for the next words: "Yes," alone would leave a
    gap after it, so it goes with its sentence."""
    pieces = ["Yes, there is free parking behind the building.", "Just follow the signs."]
    cfg = load_config(None, {})
    cfg = dataclasses.replace(cfg, tts=dataclasses.replace(cfg.tts, engine=engine))
    reply = call_settings(cfg).reply
    llm = FakeLLM({"w1 w2 w3": " ".join(pieces)})

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller, call_settings=settings(reply=reply), llm=llm)
    assert [seg.label for seg in h.segments()] == pieces


def test_each_sentence_asks_the_voice_for_it_by_when_it_will_be_heard() -> None:
    """The shared local voice serves the earliest due first: a reply's first words are due
    at once, each later sentence after the speech before it (by its text's length)."""

    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller, llm=reply3_llm())
    assert h.tts.requests[-3:] == [S1, S2, S3]
    first, second, third = h.tts.dues[-3:]
    assert first is not None and second is not None and third is not None
    assert second - first == pytest.approx(len(S1) * SECONDS_PER_CHAR)
    assert third - first == pytest.approx((len(S1) + len(S2)) * SECONDS_PER_CHAR)


@pytest.mark.parametrize("lead", [0.08, 0.2])
def test_player_paces_frames_just_ahead_of_playout(lead: float) -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller, call_settings=settings(player_lead=lead), llm=reply3_llm())

    assert labels(h.segments()) == [(S1, True), (S2, True), (S3, True)]
    pushes = h.buffer.pushes
    expected_bytes = sum(len(h.tts.audio_for(s)) for s in (S1, S2, S3))
    assert sum(p.size for p in pushes) == expected_bytes
    # Queued audio leaves 100 ms (the Player's batch) a message, not a message per frame,
    # and never fills Twilio's buffer past lead + batch.
    assert len(pushes) <= expected_bytes / 800 + 3 * 2
    assert all(p.queued + p.size <= (lead + 0.1) * 8000 + 160 for p in pushes)
    assert all(p.due is not None for p in pushes)
    first, rest = pushes[0], pushes[1:]
    assert first.first_after_idle
    assert first.due is not None and 0 <= first.due - first.arrived <= FRAME_SECONDS + EPS
    for p in rest:
        assert p.due is not None
        ahead = p.due - p.arrived
        assert not p.first_after_idle  # the buffer never ran dry inside the reply
        assert FRAME_SECONDS - EPS <= ahead <= lead + FRAME_SECONDS + EPS, p
    assert h.buffer.underruns == []
    said = h.said[0]
    _trim_turn_audio(said)
    assert said.gap_frames == 0
    assert said.underruns == 0


def test_caller_talking_over_the_greeting_stops_it_and_is_answered() -> None:
    """People often start talking before the greeting ends: stop it and listen."""
    s = settings(greeting="Hello, you have reached the test line, how can I help you today?")
    onset = 0.0

    async def caller(h: CallHarness) -> None:
        nonlocal onset
        await h.wait_until(lambda: bool(h.agent_frames()))
        start = trio.current_time()
        await h.call.say(Utterance(speech(0.5, "w1", "w2"), "w1 w2"))
        onset = h.caller_onset_after(start)
        await h.wait_agent_turns(1)
        await settle(h)

    h = run_call(caller, call_settings=s)
    greeting_seconds = h.tts.seconds_for(s.greeting)
    clear_t = h.clears()[0]
    # Cut soon after the caller started, long before the greeting would have ended.
    assert onset - FRAME_SECONDS + s.barge_in_min_speech_seconds - EPS <= clear_t
    assert clear_t <= onset + s.barge_in_min_speech_seconds + 0.1
    assert clear_t < h.agent_frames()[0].t + greeting_seconds - 1.0
    assert [t.text for t in h.sink.caller_turns] == ["w1 w2"]
    assert h.sink.agent_turns[0].text == "I heard w1 w2."
    # The transcript keeps the greeting, marked as cut short.
    assert h.sink.agent_lines == [(s.greeting, True)]


def test_leading_silence_of_the_voice_is_not_sent() -> None:
    """Piper starts each synthesis with ~0.1 s of near-silence: it only delays the answer."""
    from aicallerd.audio.mulaw import ulaw_decode
    from aicallerd.call.reply import trim_leading_silence

    audio = ulaw_encode(np.concatenate([np.zeros(1600, np.int16), np.full(800, 4000, np.int16)]))
    trimmed = ulaw_decode(trim_leading_silence(audio))
    assert len(trimmed) == 800 + 80 and trimmed[80] == ulaw_decode(audio)[1600]
    assert trim_leading_silence(ulaw_encode(np.zeros(800, np.int16))) == b""


# -- phone behaviours: goodbye and keys --------------------------------------------------------


def test_caller_goodbye_gets_the_farewell_and_the_stream_closes_right_after() -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("goodbye")
        await h.wait_until(h.session_done.is_set, timeout=10)

    h = run_call(caller)
    assert labels(h.segments()) == [("canned:farewell", True)]
    assert h.llm.requests == []  # a goodbye is not sent to the model
    farewell_heard = dict((n, t) for t, n in h.marks_echoed())["farewell"]
    assert (h.link.close_code, h.link.close_reason) == (1000, "caller_goodbye")
    assert h.link.closed_at is not None
    assert farewell_heard <= h.link.closed_at <= farewell_heard + 3.0
    assert h.call.result.closed_by_daemon
    assert h.session.end_reason == "caller_goodbye"
    # The call log has the caller's goodbye, then the agent's farewell line.
    assert [t.text for t in h.sink.caller_turns] == ["goodbye"]
    assert h.sink.agent_lines == [("Thank you for calling. Goodbye!", False)]


def test_reply_that_says_goodbye_ends_the_call_once_heard() -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2")
        await h.wait_until(h.session_done.is_set, timeout=10)

    llm = FakeLLM({"w1 w2": "You are welcome. Goodbye!"})
    h = run_call(caller, llm=llm)
    assert labels(h.segments()) == [("You are welcome.", True), ("Goodbye!", True)]
    last_heard = dict((n, t) for t, n in h.marks_echoed())["t1-s2"]
    assert h.link.close_reason == "agent_goodbye"
    assert h.link.closed_at is not None and last_heard <= h.link.closed_at <= last_heard + 3.0
    assert h.session.end_reason == "agent_goodbye"


async def press(h: CallHarness, digits: str, gap: float = 0.3) -> None:
    for digit in digits:
        await h.send_raw(media.dtmf_event(h.call.next_seq(), h.call.stream_sid, digit))
        await trio.sleep(gap)


def test_key_presses_are_a_turn_the_model_reads_and_the_log_keeps() -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await press(h, "123")
        await settle(h)

    h = run_call(caller, llm=FakeLLM({"The caller pressed 1 2 3.": "Got it, one two three."}))
    (request,) = h.llm.requests
    assert request.caller_text == "The caller pressed 1 2 3."
    assert [t.text for t in h.sink.caller_turns] == ["The caller pressed 1 2 3."]
    (agent,) = h.sink.agent_turns
    assert agent.text == "Got it, one two three."
    assert labels(h.segments()) == [("Got it, one two three.", True)]
    # The keys' turn ended 1.5 s after the last key, not at the first one.
    assert request.at == pytest.approx(0.5 + 0.6 + 1.5, abs=0.05)


def test_a_key_stops_the_agent_mid_reply() -> None:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2")
        await h.wait_until(lambda: bool(h.agent_frames()))
        await trio.sleep(0.5)
        await press(h, "#")
        await h.wait_agent_turns(1)

    h = run_call(caller, llm=FakeLLM({"w1 w2": REPLY3}))
    assert len(h.clears()) >= 1
    (first,) = h.sink.agent_turns
    assert first.interrupted and first.text != REPLY3


def test_a_quiet_call_is_read_a_few_frames_at_a_time_and_still_heard_whole() -> None:
    """With hundreds of silent callers held, waking for every 20 ms frame was most of their
    cost: a call that is only listening reads what arrived every 0.2 s instead. A caller who
    then speaks is heard whole and answered as fast as ever (the end of a turn is timed by
    the audio, and frames are read one by one again from the first sound on)."""
    reads: list[float] = []
    quiet: list[float] = []

    async def caller(h: CallHarness) -> None:
        receive = h.session.transport.receive

        async def counted() -> str | bytes:
            raw = await receive()
            reads.append(trio.current_time())
            return raw

        h.session.transport.receive = counted  # type: ignore[method-assign]
        await h.wait_until(lambda: not h.session.player.playing and h.session.core.listening)
        start = trio.current_time()
        await trio.sleep(2.0)
        quiet.extend(t for t in reads if t >= start)
        await h.say("w1", "w2", "w3")
        await settle(h)

    h = run_call(caller)
    assert len(quiet) >= 95  # every frame of the 2 s was read ...
    assert len(set(quiet)) <= 12  # ... at most one wakeup per 0.2 s (not 100)
    assert [t.text for t in h.sink.caller_turns] == ["w1 w2 w3"]
    assert h.said[0].latency == pytest.approx(DONE, abs=FRAME_SECONDS)


class CachingLLM(FakeLLM):
    """A FakeLLM that, like the embedded llama.cpp server, can be asked to read a prompt
    ahead of time; ``warm`` scripts what each warm-up does ("ok", "hang" or "fail")."""

    def __init__(self, warm: str = "ok") -> None:
        super().__init__()
        self.warm = warm
        self.warmed: list[tuple[list[dict[str, str]], str, float]] = []  # and when it ended

    async def warm_prompt(self, messages: list[dict[str, str]]) -> None:
        self.warmed.append((messages, "running", 0.0))
        i = len(self.warmed) - 1
        try:
            if self.warm == "fail":
                raise RuntimeError("server went away")
            await (trio.sleep_forever() if self.warm == "hang" else trio.sleep(0.1))
            self.warmed[i] = (messages, "done", trio.current_time())
        except trio.Cancelled:
            self.warmed[i] = (messages, "cancelled", trio.current_time())
            raise


def two_turns(llm: CachingLLM) -> CallHarness:
    async def caller(h: CallHarness) -> None:
        await trio.sleep(0.5)
        await h.say("w1", "w2")
        await settle(h)
        await trio.sleep(1.0)
        await h.say("w3", "w4")
        await h.wait_agent_turns(2)
        await settle(h)

    return run_call(caller, llm=llm)


def test_the_next_prompt_is_read_by_the_llm_while_the_caller_talks() -> None:
    """After each heard reply the server is handed the next prompt up to the caller's words,
    so the next turn's first token costs only the new words; the next request extends it."""
    llm = CachingLLM()
    h = two_turns(llm)
    assert [t.text for t in h.sink.caller_turns] == ["w1 w2", "w3 w4"]
    (first, second) = [r for r in llm.requests if r.outcome == "done"]
    (opening, _, _), (warmed, outcome, _) = llm.warmed[:2]
    assert first.messages[:-1] == opening[:-1]  # the system prompt, read as the call starts
    assert outcome == "done" and warmed[-1] == {"role": "user", "content": ""}
    assert second.messages[:-1] == warmed[:-1] == [*first.messages, warmed[-2]]
    assert warmed[-2] == {"role": "assistant", "content": "I heard w1 w2."}
    assert len(llm.warmed) == 3  # as the call starts and after each reply


class LeaseRecordingLLM(CachingLLM):
    """Notes the slot lease each request and warm-up goes out under."""

    def __init__(self) -> None:
        super().__init__()
        self.leases: list[SlotLease | None] = []

    def stream_chat(self, messages: list[dict[str, str]], **kw: Any) -> AsyncIterator[str]:
        self.leases.append(LEASE.get())
        return super().stream_chat(messages, **kw)

    async def warm_prompt(self, messages: list[dict[str, str]]) -> None:
        self.leases.append(LEASE.get())
        await super().warm_prompt(messages)


def test_every_llm_request_of_a_call_goes_out_under_the_calls_lease() -> None:
    """The embedded server keeps a call's history in the slot its lease names: the call's
    replies and warm-ups all name the same one, and the call gives it up when it ends."""
    llm = LeaseRecordingLLM()
    two_turns(llm)
    lease = llm.leases[0]
    assert lease is not None and len(llm.leases) >= 4  # two replies, two warm-ups
    assert all(other is lease for other in llm.leases)
    assert not lease.open


@pytest.mark.parametrize("warm", ["hang", "fail"])
def test_a_warm_up_that_hangs_or_fails_costs_the_next_turn_nothing(
    warm: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A warm-up still running when the caller's words are in is stopped (the reply needs
    the server's slot); one that fails is only a debug line. The turn is answered as usual."""
    caplog.set_level(logging.DEBUG, logger="aicallerd.call")
    llm = CachingLLM(warm)
    h = two_turns(llm)
    assert [t.text for t in h.sink.agent_turns] == ["I heard w1 w2.", "I heard w3 w4."]
    assert h.said[1].latency == pytest.approx(h.said[0].latency, abs=FRAME_SECONDS)
    if warm == "hang":
        for (_, outcome, ended), request in zip(llm.warmed, llm.requests, strict=False):
            assert outcome == "cancelled" and ended == request.at
    else:
        assert "prompt warm-up failed: server went away" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
