"""The conversation core on synthetic timelines: no trio, no clock, no engines.

Every test feeds :class:`Conversation` 20 ms frames (a loud tone for speech, zeros for
silence), transcripts and reply outcomes in a fixed order and asserts the actions it returns,
so each turn-taking decision is checked to the frame. Monotonic time equals audio time here
(a frame "arrives" the instant it ends).
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from session_harness import settings as harness_settings

from aicallerd.audio.resample import rms
from aicallerd.call.actions import (
    Action,
    CancelReply,
    CancelTranscription,
    Clear,
    Close,
    CommitReply,
    Note,
    Record,
    RecordCaller,
    Replay,
    ReplyOutcome,
    SayLine,
    Spoken,
    StartReply,
    Transcribe,
    WarmPrompt,
)
from aicallerd.call.conversation import RESUME_WINDOW_SECONDS, Conversation
from aicallerd.call.lines import FALLBACK_LINE
from aicallerd.call.settings import CallSettings

SR = 8000
FRAME = 0.02
FRAME_SAMPLES = 160
_t = np.arange(FRAME_SAMPLES) / SR
LOUD = np.round(8000 * np.sin(2 * np.pi * 1000.0 * _t)).astype(np.int16)  # 1 kHz: whole cycles
QUIET = np.zeros(FRAME_SAMPLES, dtype=np.int16)
GOODBYE = "Goodbye for now."
TIME_LIMIT = "That is all the time we have."


def settings(**overrides: object) -> CallSettings:
    """The session tests' settings; the sections below feed late transcripts, so the end of
    turn is the fixed rule unless a test asks for "adaptive"."""
    return harness_settings(**{"end_of_turn": "fixed", **overrides})


Stamped = list[tuple[float, Action]]  # (arrival time of the frame, action it caused)


class Call:
    """Drives one :class:`Conversation` frame by frame; ``speaking`` is our audio playing."""

    def __init__(self, greeting: str = "", **overrides: object) -> None:
        self.conv = Conversation(settings(**overrides))
        self.t = 0.0  # audio time of the next frame
        self.speaking = False
        self.opening = self.conv.begin(0.0, greeting)

    @property
    def now(self) -> float:
        return self.t

    def _frames(self, seconds: float, pcm: np.ndarray, prob: float) -> Stamped:
        out: Stamped = []
        level = rms(pcm)  # the session measures every frame's level
        for _ in range(round(seconds / FRAME)):
            arrived = self.t + FRAME
            for action in self.conv.audio(pcm, prob, self.t, arrived, self.speaking, level):
                out.append((arrived, action))
            self.t = arrived
        return out

    def speak(self, seconds: float) -> Stamped:
        return self._frames(seconds, LOUD, 1.0)

    def silence(self, seconds: float) -> Stamped:
        return self._frames(seconds, QUIET, 0.0)

    def sound(self, seconds: float) -> Stamped:
        """Loud frames the VAD does not (yet) call speech: a soft onset, or noise."""
        return self._frames(seconds, LOUD, 0.0)

    def transcribed(self, job: int, text: str, now: float | None = None) -> list[Action]:
        return self.conv.transcribed(job, text, self.now if now is None else now)

    def reply_done(
        self, turn: int, outcome: ReplyOutcome, now: float | None = None
    ) -> list[Action]:
        return self.conv.reply_done(turn, outcome, self.now if now is None else now)


def acts(stamped: Stamped) -> list[Action]:
    return [a for _, a in stamped]


def kinds(actions: list[Action]) -> list[type]:
    return [type(a) for a in actions]


def only(actions: list[Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def job_of(stamped: Stamped) -> int:
    """The one transcription job asked for in ``stamped``."""
    (job,) = only(acts(stamped), Transcribe)
    return job.job


def user(text: str) -> dict[str, str]:
    """The user message the model gets for a caller turn."""
    return {"role": "user", "content": text}


def outcome(text: str, heard: str, *unplayed: Spoken, started: bool = True) -> ReplyOutcome:
    return ReplyOutcome(text=text, heard=heard, unplayed=unplayed, audio_started=started)


REPLY = "Hi. How can I help?"
UNPLAYED = (Spoken("m2", "How can I help?", b"\xff" * 160),)


def committed_turn(call: Call, text: str = "hello there") -> None:
    """The caller spoke 1 s, the reply started speculatively and was committed (turn 1)."""
    job = job_of(call.speak(1.0) + call.silence(0.3))
    (start,) = call.transcribed(job, text)
    assert isinstance(start, StartReply) and start.turn == 1
    (commit,) = acts(call.silence(0.3))
    assert commit == CommitReply(1, speech_end=pytest.approx(1.0), decided=pytest.approx(1.6))


def barged_in(call: Call) -> int:
    """Over a committed turn 1 the caller says 0.3 s: cancelled; returns its transcription job."""
    committed_turn(call)
    call.speaking = True
    assert CancelReply(1, "barge-in") in acts(call.speak(0.3))
    call.speaking = False
    return job_of(call.silence(0.6))


# -- 1. end of turn ---------------------------------------------------------------------------


def test_reply_starts_at_the_pause_and_is_committed_after_done_speaking_silence() -> None:
    """The reply is prepared during the short pause and may be heard only at 0.6 s of silence."""
    call = Call()
    assert acts(call.speak(1.0)) == []
    pause = call.silence(0.3)
    assert kinds(acts(pause)) == [Transcribe]  # the 1 s chunk is cut at the pause
    assert pause[0][0] == pytest.approx(1.3)
    (start,) = call.transcribed(job_of(pause), "hello there")
    assert start == StartReply(
        1, ({"role": "system", "content": "You are a test agent."}, user("hello there")), True
    )
    assert acts(call.silence(0.28)) == []  # not yet the end of the turn
    (commit,) = call.silence(0.02)
    assert commit[0] == pytest.approx(1.6)
    assert commit[1] == CommitReply(1, speech_end=pytest.approx(1.0), decided=pytest.approx(1.6))
    assert call.conv.speculations == {"started": 1, "committed": 1, "discarded": 0}


def test_short_phrase_is_transcribed_once_and_reply_follows() -> None:
    """A 0.4 s "yes please" is transcribed early at the pause; the final chunk reuses that job."""
    call = Call()
    call.speak(0.4)
    (job,) = only(acts(call.silence(0.3)), Transcribe)
    assert acts(call.silence(0.3)) == []  # the same audio: no second transcription
    start, commit = call.transcribed(job.job, "yes please")
    assert start == StartReply(1, start.messages, True) and start.messages[-1] == user("yes please")
    assert commit == CommitReply(1, speech_end=pytest.approx(0.4), decided=pytest.approx(1.0))


def test_without_speculation_the_reply_starts_only_at_end_of_turn() -> None:
    """speculative=False: nothing is prepared at the pause; start and commit come together."""
    call = Call(speculative=False)
    call.speak(1.0)
    job = job_of(call.silence(0.3))
    assert call.transcribed(job, "hello there") == []
    start, commit = acts(call.silence(0.3))
    assert start == StartReply(1, start.messages, False)
    assert start.messages[-1] == user("hello there")
    assert commit == CommitReply(1, speech_end=pytest.approx(1.0), decided=pytest.approx(1.6))
    assert call.conv.speculations == {"started": 0, "committed": 0, "discarded": 0}


def test_transcript_late_after_end_of_turn_starts_and_commits_at_once() -> None:
    """When the words come back after 0.6 s of silence, the reply is heard as soon as it starts."""
    call = Call()
    call.speak(1.0)
    job = job_of(call.silence(0.3))
    assert acts(call.silence(0.3)) == []
    start, commit = call.transcribed(job, "hello there", now=2.0)
    assert start.speculative is True and start.turn == 1
    assert commit == CommitReply(1, speech_end=pytest.approx(1.0), decided=pytest.approx(1.6))


def test_no_words_at_end_of_turn_means_no_reply() -> None:
    """A cough the transcriber hears as nothing gets no answer."""
    call = Call()
    call.speak(0.4)
    job = job_of(call.silence(0.6))
    assert call.transcribed(job, "") == [Note("turn 1: no words heard, not replying")]
    assert len(call.conv.history) == 1


def test_words_that_could_not_be_transcribed_get_the_apology() -> None:
    """The transcriber failed or missed its deadline: the caller spoke, so they hear the
    apology asking them to say it again, never silence."""
    call = Call()
    call.speak(1.0)
    job = job_of(call.silence(0.6))
    out = call.conv.transcribed(job, "", call.now, failed=True)
    assert out == [
        Note("turn 1: the transcription failed, apologising"),
        SayLine("sorry", FALLBACK_LINE),
    ]


def test_a_stale_transcription_is_cancelled_when_the_caller_goes_on() -> None:
    """The pause's transcription is not back yet and the caller goes on: its CPU is freed."""
    call = Call()
    call.speak(1.0)
    first = job_of(call.silence(0.36))
    resumed = acts(call.speak(0.2))
    assert CancelTranscription(first) in resumed
    assert call.transcribed(first, "hello there") == []  # and a late answer changes nothing


# -- 2. speculation discarded ------------------------------------------------------------------


def test_speculation_is_discarded_when_the_caller_goes_on() -> None:
    """The caller pauses mid-sentence: the early reply is cancelled unheard, the turn has it all."""
    call = Call()
    call.speak(1.0)
    first = job_of(call.silence(0.36))
    (early,) = call.transcribed(first, "hello there")
    assert early.turn == 1 and early.speculative
    resumed = call.speak(0.6)
    assert acts(resumed) == [CancelReply(1, "discarded")]
    assert resumed[0][0] == pytest.approx(1.36 + 0.04)  # confirmed after 40 ms of speech
    pause = call.silence(0.3)
    (whole,) = only(acts(pause), Transcribe)
    # The whole phrase is transcribed again, both stretches of speech, as one utterance.
    assert len(whole.pcm) / SR == pytest.approx(1.0 + 0.1 + 0.2 + 0.6 + 0.1, abs=0.03)
    assert call.transcribed(first, "hello there") == []  # a stale transcript changes nothing
    (start,) = call.transcribed(whole.job, "hello there how are you")
    assert start.turn == 2 and start.messages[-1] == user("hello there how are you")
    (commit,) = acts(call.silence(0.3))
    assert commit == CommitReply(2, speech_end=pytest.approx(1.96), decided=pytest.approx(2.56))
    assert call.conv.speculations == {"started": 2, "committed": 1, "discarded": 1}
    # The discarded reply ends without a trace in the log or the history.
    assert call.reply_done(1, outcome("Hello!", "", started=False)) == []
    assert len(call.conv.history) == 1


def test_a_plain_yes_is_answered_when_nothing_was_cut() -> None:
    """ "yeah" answering the agent's question is a turn like any other."""
    call = Call()
    call.speak(0.4)
    job = job_of(call.silence(0.6))
    start, commit = call.transcribed(job, "yeah")
    assert start.messages[-1] == user("yeah") and commit.turn == 1


def test_model_sees_the_call_prompt_and_only_the_last_history_turns() -> None:
    """Per-call instructions reach the model; old exchanges beyond history_turns are left out
    (a whole block of them at once: see the next test)."""
    call = Call(history_turns=1)
    call.conv.add_prompt("The caller is Ann.")
    for n, said in enumerate(["one", "two", "three"], start=1):
        call.speak(0.4)
        job = job_of(call.silence(0.6))
        start, _commit = call.transcribed(job, said)
        call.reply_done(n, outcome(f"reply {n}", f"reply {n}"))
        call.silence(1.0)
    assert start.messages == (
        {"role": "system", "content": "You are a test agent.\nThe caller is Ann."},
        user("two"),
        {"role": "assistant", "content": "reply 2"},
        user("three"),
    )


def test_each_prompt_extends_the_last_so_the_llm_cache_holds() -> None:
    """The LLM server reuses its cache up to the first changed token: each turn's prompt is
    the previous prompt plus the reply and the new words, except once every history_turns
    turns, when the oldest block is dropped; the model always sees at least history_turns."""
    call = Call(history_turns=2)
    prompts = []
    for n in range(1, 8):
        call.speak(0.4)
        job = job_of(call.silence(0.6))
        start, _commit = call.transcribed(job, f"words {n}")
        prompts.append(start.messages)
        call.reply_done(n, outcome(f"reply {n}", f"reply {n}"))
        call.silence(1.0)
    extends = [
        new[: len(old) + 1] == (*old, {"role": "assistant", "content": f"reply {n}"})
        for n, (old, new) in enumerate(itertools.pairwise(prompts), start=1)
    ]
    assert extends == [True, True, True, False, True, False]
    assert [(len(p) - 2) // 2 for p in prompts] == [0, 1, 2, 3, 2, 3, 2]


def test_the_next_prompt_is_warmed_while_the_caller_talks() -> None:
    """Once a reply has been heard, the next turn's prompt is known up to the caller's words:
    it is handed out to be evaluated then (the history and the last reply cost 0.1-0.9 s of
    prompt reading on 2 cores), and the next turn's prompt extends it exactly, including the
    turn where the oldest exchanges are dropped."""
    call = Call(history_turns=2)
    warmed: list[tuple[dict[str, str], ...]] = []
    for n in range(1, 5):
        call.speak(0.4)
        job = job_of(call.silence(0.6))
        start, _commit = call.transcribed(job, f"words {n}")
        if warmed:
            assert start.messages[:-1] == warmed[-1][:-1]
            assert warmed[-1][-1] == user("") and start.messages[-1] == user(f"words {n}")
        record, warm = call.reply_done(n, outcome(f"reply {n}", f"reply {n}"))
        assert isinstance(record, Record) and isinstance(warm, WarmPrompt)
        warmed.append(warm.messages)
        call.silence(1.0)
    assert [len(w) for w in warmed] == [4, 6, 8, 6]  # the oldest block dropped at turn 4 too


@pytest.mark.parametrize("greeting", ["Hello, how can I help?", ""])
def test_the_first_prompt_is_warmed_as_the_call_starts(greeting: str) -> None:
    """The system prompt is most of the first turn's prompt: it is read while the greeting
    plays (or the caller starts talking), and the first turn's prompt extends it."""
    call = Call(greeting=greeting)
    warm = call.opening[-1]
    assert isinstance(warm, WarmPrompt)
    assert warm.messages == (call.conv.history[0], user(""))
    call.speak(0.4)
    start, _commit = call.transcribed(job_of(call.silence(0.6)), "words")
    assert start.messages == (call.conv.history[0], user("words"))


def test_nothing_is_warmed_after_a_goodbye_or_a_reply_never_heard() -> None:
    call = Call()
    committed_turn(call)
    done = call.reply_done(
        1, outcome("Thanks for calling, goodbye!", "Thanks for calling, goodbye!")
    )
    assert kinds(done) == [Record, Note, Close]
    call = Call()
    committed_turn(call)
    call.speaking = True
    call.speak(0.3)
    assert WarmPrompt not in kinds(call.reply_done(1, outcome(REPLY, "", *UNPLAYED)))


# -- 3. barge-in -------------------------------------------------------------------------------


def test_barge_in_cancels_the_reply_once_at_min_speech() -> None:
    """Talking over the agent for 0.2 s stops it, exactly once, at the frame that crosses 0.2 s."""
    call = Call()
    committed_turn(call)
    call.speaking = True
    assert acts(call.speak(0.18)) == []
    crossing = call.speak(0.02)
    assert [a for _, a in crossing if not isinstance(a, Note)] == [
        CancelReply(1, "barge-in"),
        Clear(),
    ]
    assert crossing[0][0] == pytest.approx(1.6 + 0.2)
    (note,) = only(acts(crossing), Note)
    assert "over turn 1" in note.message
    assert acts(call.speak(1.0)) == []  # speaking on changes nothing


@pytest.mark.parametrize(("unsure", "cut_at"), [(0.06, 0.2), (0.3, 0.4)])
def test_barge_in_counts_speech_from_its_sound_not_from_the_vads_certainty(
    unsure: float, cut_at: float
) -> None:
    """Silero is sure of a soft onset ("yes", "how") 20-80 ms after it is loud: the caller's
    0.2 s count from the loud frames that led into the speech, but never from more than
    0.1 s before it (a noise that was loud all along is not speech)."""
    call = Call()
    committed_turn(call)
    call.speaking = True
    assert acts(call.sound(unsure)) == []
    stamped = call.speak(0.3)
    clear_at = [t for t, a in stamped if isinstance(a, Clear)]
    assert clear_at == [pytest.approx(1.6 + cut_at)]


def test_brief_sound_over_the_agent_does_not_interrupt() -> None:
    """0.1 s of caller sound while the agent speaks: no cancel, no clear."""
    call = Call()
    committed_turn(call)
    call.speaking = True
    assert acts(call.speak(0.1)) == []
    assert kinds(acts(call.silence(0.6))) == [Transcribe]  # its words decide (late interruption)


def test_barge_in_disabled_lets_the_agent_finish() -> None:
    """barge_in=False: the caller can talk over the agent without stopping it."""
    call = Call(barge_in=False)
    committed_turn(call)
    call.speaking = True
    heard = acts(call.speak(1.0))
    assert only(heard, CancelReply) == [] and only(heard, Clear) == []


# -- 4. after a barge-in -----------------------------------------------------------------------


def test_words_of_a_reply_never_heard_are_carried_into_the_next_turn() -> None:
    """The caller talked on before hearing anything: their first words join their next turn."""
    call = Call()
    committed_turn(call)
    cut = acts(call.speak(0.3))  # the reply is committed but none of it is playing yet
    assert only(cut, CancelReply) == [CancelReply(1, "barge-in")] and only(cut, Clear) == []
    assert call.reply_done(1, outcome("Hi!", "", started=False)) == [
        Note("turn 1: caller kept talking, reply dropped")
    ]
    call.speak(0.7)
    job = job_of(call.silence(0.3))
    (start,) = call.transcribed(job, "and another thing")
    assert start.turn == 2 and start.messages[-1] == user("hello there and another thing")
    assert kinds(acts(call.silence(0.3))) == [CommitReply]
    record, _warm = call.reply_done(2, outcome("Sure.", "Sure."))
    assert record == Record(2, "hello there and another thing", "Sure.", False, pytest.approx(1.6))
    assert call.conv.history[1:] == [
        {"role": "user", "content": "hello there and another thing"},
        {"role": "assistant", "content": "Sure."},
    ]


def test_cut_reply_is_recorded_as_far_as_it_was_heard() -> None:
    """Interrupted mid-reply: the log and the history hold only the sentences the caller heard."""
    call = Call()
    committed_turn(call)
    call.speaking = True
    call.speak(0.3)
    record, _warm = call.reply_done(1, outcome(REPLY, "Hi.", *UNPLAYED))
    assert record == Record(1, "hello there", "Hi.", True, 0.0)
    assert call.conv.history[1:] == [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "Hi."},
    ]


def test_next_turn_sees_what_was_heard_in_its_messages() -> None:
    """The model's context for the next turn has the cut reply as heard, not as written."""
    call = Call()
    committed_turn(call)
    call.speaking = True
    call.speak(0.3)
    call.reply_done(1, outcome(REPLY, "Hi.", *UNPLAYED))
    call.speaking = False
    call.speak(0.4)
    job = job_of(call.silence(0.6))
    start, _commit = call.transcribed(job, "what time is it")
    assert start.messages[1:] == (
        user("hello there"),
        {"role": "assistant", "content": "Hi."},
        user("what time is it"),
    )


def test_a_reply_cut_in_its_first_sentence_leaves_no_empty_answer_in_the_history() -> None:
    """Cut before one sentence was heard: the transcript has the turn, the model never sees an
    empty answer (SmolLM2 copied "..." into every later reply), and the unanswered words are
    asked again with the caller's next ones."""
    call = Call()
    job = barged_in(call)
    (record,) = call.reply_done(1, outcome(REPLY, "", Spoken("m1", "Hi.", b"\xff"), *UNPLAYED))
    assert record == Record(1, "hello there", "", True, 0.0)
    assert call.conv.history[1:] == []
    start, _commit = call.transcribed(job, "what are your hours")
    assert start.messages[1:] == (user("hello there what are your hours"),)
    call.reply_done(2, outcome("Nine to five.", "Nine to five."))
    assert call.conv.history[1:] == [
        user("hello there what are your hours"),
        {"role": "assistant", "content": "Nine to five."},
    ]


def test_only_the_last_unanswered_words_are_asked_again() -> None:
    """Two replies cut in their first sentence: the model is asked about the latest words with
    the ones just before them, not every question the caller has moved on from."""
    call = Call()
    job = barged_in(call)
    call.reply_done(1, outcome(REPLY, "", *UNPLAYED))
    call.transcribed(job, "what are your hours")
    call.speaking = True
    assert CancelReply(2, "barge-in") in acts(call.speak(0.3))
    call.speaking = False
    call.reply_done(2, outcome("We open at nine.", "", started=True))
    start, _commit = call.transcribed(job_of(call.silence(0.6)), "and on sunday")
    assert start.messages[1:] == (user("what are your hours and on sunday"),)


def test_a_backchannel_after_a_cut_first_sentence_replays_it_for_the_carried_words() -> None:
    """A "yeah" that cut the first sentence: the whole reply is replayed, and the history pairs
    it with the words it answers, once."""
    call = Call()
    job = barged_in(call)
    first = Spoken("m1", "Hi.", b"\xff")
    call.reply_done(1, outcome(REPLY, "", first, *UNPLAYED))
    _note, replay, _commit = call.transcribed(job, "yeah")
    assert replay == Replay(2, (first, *UNPLAYED), of_turn=1)
    call.reply_done(2, outcome(REPLY, REPLY))
    assert call.conv.history[1:] == [
        user("hello there yeah"),
        {"role": "assistant", "content": REPLY},
    ]
    call.speak(0.4)
    start, _commit = call.transcribed(job_of(call.silence(0.6)), "thanks")
    assert start.messages[-1] == user("thanks")


# -- 5. backchannel and resume -----------------------------------------------------------------


@pytest.mark.parametrize("words", ["yeah", ""])
def test_backchannel_after_a_cut_resumes_the_reply(words: str) -> None:
    """A "yeah" (or nothing) that cut the agent off: it picks up at the sentence it was cut."""
    call = Call()
    job = barged_in(call)
    call.reply_done(1, outcome(REPLY, "Hi.", *UNPLAYED))
    note, replay, commit = call.transcribed(job, words)
    assert note == Note(f"turn 2: {words!r} is not an interruption, resuming turn 1")
    assert replay == Replay(2, UNPLAYED, of_turn=1)
    assert commit == CommitReply(2, speech_end=pytest.approx(1.9), decided=pytest.approx(2.5))
    # The resumed sentences are logged as turn 2's reply once played.
    record, _warm = call.reply_done(2, outcome("How can I help?", "How can I help?"))
    assert record.turn == 2 and record.agent_text == "How can I help?"


def test_cut_reply_is_not_resumed_after_the_window() -> None:
    """Words that come back more than RESUME_WINDOW_SECONDS after the cut: the moment has gone."""
    call = Call()
    job = barged_in(call)
    call.reply_done(1, outcome(REPLY, "Hi.", *UNPLAYED))
    late = call.now + RESUME_WINDOW_SECONDS + 0.5
    assert call.transcribed(job, "yeah", now=late) == [Note("turn 2: no words heard, not replying")]


def test_real_words_after_a_cut_get_a_new_reply() -> None:
    """The caller who cut the agent off with a question gets an answer, not the old reply."""
    call = Call()
    job = barged_in(call)
    call.reply_done(1, outcome(REPLY, "Hi.", *UNPLAYED))
    start, commit = call.transcribed(job, "what are your hours")
    assert start.turn == 2 and start.messages[-1] == user("what are your hours")
    assert commit.turn == 2


# -- 6. late interruption ----------------------------------------------------------------------


def _short_phrase_over_the_agent(call: Call) -> int:
    committed_turn(call)
    call.speaking = True
    assert acts(call.speak(0.12)) == []
    return job_of(call.silence(0.6))


def test_short_phrase_with_words_interrupts_once_transcribed() -> None:
    """A quick "stop please" under the barge-in threshold still takes the floor by its words."""
    call = Call()
    job = _short_phrase_over_the_agent(call)
    actions = call.transcribed(job, "stop please")
    assert kinds(actions) == [Note, CancelReply, Clear, StartReply, CommitReply]
    assert actions[1] == CancelReply(1, "barge-in")
    assert actions[3] == StartReply(2, actions[3].messages, False)
    assert actions[3].messages[-1] == user("stop please")
    assert actions[4] == CommitReply(2, speech_end=pytest.approx(1.72), decided=pytest.approx(2.32))


def test_short_backchannel_over_the_agent_is_not_an_interruption() -> None:
    """A "mm-hm" while the agent speaks is listening, not taking the floor."""
    call = Call()
    job = _short_phrase_over_the_agent(call)
    assert call.transcribed(job, "mm-hm") == [
        Note("heard 'mm-hm' while speaking: not an interruption")
    ]
    record, _warm = call.reply_done(1, outcome(REPLY, REPLY))
    assert record == Record(1, "hello there", REPLY, False, 0.0)


# -- 7. barge-in by words ----------------------------------------------------------------------


def test_min_words_checks_the_interrupters_words_before_cancelling() -> None:
    """barge_in_min_words=2: one word does not stop the agent; two words do."""
    call = Call(barge_in_min_words=2)
    committed_turn(call)
    call.speaking = True
    first = call.speak(0.2)
    (check,) = only(acts(first), Transcribe)
    assert kinds(acts(first)) == [Transcribe]
    assert first[0][0] == pytest.approx(1.6 + 0.2)  # at 0.2 s of speech
    assert len(check.pcm) == 9 * FRAME_SAMPLES  # from the frame that confirmed the speech
    assert call.transcribed(check.job, "wait") == []
    assert acts(call.speak(0.28)) == []  # no new check until 0.3 s more audio
    again = acts(call.speak(0.02))
    (second,) = only(again, Transcribe)
    assert kinds(again) == [Transcribe] and len(second.pcm) == 24 * FRAME_SAMPLES
    stop = call.transcribed(second.job, "wait stop")
    assert kinds(stop) == [Note, CancelReply, Clear]
    assert stop[1] == CancelReply(1, "barge-in")


def test_min_words_ignores_a_backchannel_of_enough_words() -> None:
    """Two words of "yeah okay" are still a listening noise: the agent keeps going."""
    call = Call(barge_in_min_words=2)
    committed_turn(call)
    call.speaking = True
    check = job_of(call.speak(0.22))
    assert call.transcribed(check, "yeah okay") == []


def test_one_word_that_ends_over_the_agent_does_not_interrupt_with_min_words() -> None:
    """barge_in_min_words=2: a lone "wait" is not an interruption, also once the phrase ends."""
    call = Call(barge_in_min_words=2)
    committed_turn(call)
    call.speaking = True
    check = job_of(call.speak(0.5))
    assert call.transcribed(check, "wait") == []
    chunk = job_of(call.silence(0.6))
    assert only(call.transcribed(chunk, "wait"), CancelReply) == []


# -- 8. greeting -------------------------------------------------------------------------------


def test_caller_talking_over_the_greeting_stops_it_once() -> None:
    """The caller who speaks first cuts the greeting short, and it is cleared only once."""
    call = Call(greeting="Hello, how can I help?")
    assert call.opening[0] == SayLine("greeting", "Hello, how can I help?")
    call.speaking = True
    assert acts(call.speak(0.18)) == []
    crossing = call.speak(0.02)
    assert acts(crossing) == [Note("caller spoke over a fixed line: stopping it"), Clear()]
    assert only(acts(call.speak(0.5)), Clear) == []
    call.speaking = False
    assert call.conv.line_done("greeting", call.now) == []


# -- 9. silence and duration limits ------------------------------------------------------------


def test_long_silence_says_goodbye_then_closes() -> None:
    """A silent caller hears the goodbye line after max_silence, then the call ends."""
    conv = Conversation(settings())
    conv.begin(0.0, "")
    assert conv.next_tick() == 60.0
    assert conv.tick(59.9, False) == []
    assert conv.tick(60.0, False) == [Note("hanging up: silence"), SayLine("goodbye", GOODBYE)]
    assert conv.tick(61.0, False) == []  # already closing
    assert conv.line_done("goodbye", 62.0) == [Close("silence")]
    assert conv.end_reason == "silence" and conv.closing


def test_next_tick_is_soon_while_busy_and_silence_clock_waits() -> None:
    """While the caller speaks, the limits are re-checked every 0.5 s and silence does not count."""
    call = Call()
    call.speak(0.1)
    assert call.conv.next_tick() == pytest.approx(call.now + 0.5)
    assert call.conv.tick(call.now, False) == []
    call.silence(0.6)  # the phrase ended at 0.7; the reply is being prepared (busy)
    assert call.conv.next_tick() == pytest.approx(0.7 + 0.5)
    assert call.conv.tick(100.0, False) == []  # busy: nothing to hang up on


def test_max_call_duration_says_the_time_limit_line() -> None:
    """However lively the call, it ends at max_call with the time-limit line."""
    conv = Conversation(settings(max_silence_seconds=math.inf))
    conv.begin(0.0, "")
    assert conv.next_tick() == 600.0
    assert conv.tick(599.0, False) == []
    assert conv.tick(600.0, False) == [
        Note("hanging up: max_duration"),
        SayLine("time_limit", TIME_LIMIT),
    ]
    assert conv.end_reason == "max_duration"
    assert conv.line_done("time_limit", 605.0) == [Close("max_duration")]


def test_hang_up_cancels_the_running_reply_and_records_what_was_heard() -> None:
    """Hanging up mid-reply stops it and clears the line; the log keeps what was heard."""
    call = Call()
    committed_turn(call)
    assert call.conv.tick(call.now, True) == []  # the reply is playing
    actions = call.conv.hang_up("Bye.", "operator")
    assert actions == [
        Note("hanging up: operator"),
        CancelReply(1, "hang-up"),
        Clear(),
        SayLine("bye", "Bye."),
    ]
    (record,) = call.reply_done(1, outcome(REPLY, "Hi.", *UNPLAYED))
    assert record == Record(1, "hello there", "Hi.", True, 0.0)
    assert call.conv.line_done("bye", call.now) == [Close("operator")]


def test_hang_up_without_a_line_closes_at_once() -> None:
    """No goodbye line configured: the stream is closed straight away."""
    conv = Conversation(settings())
    conv.begin(0.0, "")
    assert conv.hang_up("", "operator") == [Note("hanging up: operator"), Close("operator")]
    assert conv.hang_up("Bye.", "again") == []


# -- 10. DTMF ----------------------------------------------------------------------------------


def test_key_press_resets_the_silence_clock() -> None:
    """A caller pressing keys is not silent: the silence limit counts from the key press."""
    conv = Conversation(settings(dtmf="ignore"))
    conv.begin(0.0, "")
    assert conv.dtmf("5", 50.0) == [Note("dtmf 5 (ignored)")]
    assert conv.next_tick() == 110.0
    assert conv.tick(60.0, False) == []
    assert conv.tick(110.0, False) == [Note("hanging up: silence"), SayLine("goodbye", GOODBYE)]


# -- 12. phone behaviours: goodbye, keys, adaptive end of turn, hold on ------------------------

FAREWELL = "Thank you for calling. Goodbye!"
HOLD = "Sure, take your time."


def spoken_then_paused(call: Call, text: str, seconds: float = 1.0) -> list[Action]:
    """The caller speaks ``seconds``, pauses 0.3 s; the words ``text`` come back at once."""
    job = job_of(call.speak(seconds) + call.silence(0.3))
    return call.transcribed(job, text)


def test_caller_goodbye_gets_the_farewell_line_then_the_call_closes() -> None:
    call = Call(end_of_turn="adaptive")
    at_pause = spoken_then_paused(call, "Okay, thank you very much. Goodbye.")
    assert only(at_pause, StartReply) == []  # no reply is prepared for a goodbye
    end = acts(call.silence(0.1))  # a complete sentence: 0.4 s of silence ends the turn
    assert kinds(end) == [RecordCaller, Note, SayLine]
    assert end[0] == RecordCaller("Okay, thank you very much. Goodbye.", pytest.approx(0.0))
    assert end[2] == SayLine("farewell", FAREWELL)
    assert call.conv.line_done("farewell", 4.0) == [Close("caller_goodbye")]
    assert call.conv.end_reason == "caller_goodbye"
    assert call.conv.history[-1] == {"role": "assistant", "content": FAREWELL}


def test_a_bye_that_goes_on_gets_a_reply_and_no_hang_up() -> None:
    call = Call(end_of_turn="adaptive")
    (start,) = only(spoken_then_paused(call, "Bye the way, what are your hours?"), StartReply)
    assert start.messages[-1] == user("Bye the way, what are your hours?")
    assert kinds(acts(call.silence(0.1))) == [CommitReply]
    assert not call.conv.closing


def test_caller_who_goes_on_after_bye_is_answered_not_hung_up_on() -> None:
    """ "Okay bye" at a pause, then "and one more thing...": the farewell never happens."""
    call = Call(end_of_turn="adaptive")
    assert only(spoken_then_paused(call, "Okay, bye."), StartReply) == []
    call.speak(0.6)
    job = job_of(call.silence(0.3))
    (start,) = only(
        call.transcribed(job, "Okay, bye. Oh, one more thing, do you deliver?"), StartReply
    )
    assert start.turn == 2
    commit = acts(call.silence(0.1))
    assert kinds(commit) == [CommitReply] and not call.conv.closing


def test_caller_goodbye_over_the_agent_stops_it_and_says_farewell() -> None:
    call = Call(end_of_turn="adaptive")
    committed_turn(call)
    call.speaking = True
    assert CancelReply(1, "barge-in") in acts(call.speak(0.6))
    job = job_of(call.silence(0.3))
    call.speaking = False
    call.transcribed(job, "Goodbye.")
    end = acts(call.silence(0.1))
    assert SayLine("farewell", FAREWELL) in end and call.conv.closing


def test_reply_ending_with_goodbye_closes_once_played() -> None:
    call = Call(end_of_turn="adaptive")
    committed_turn(call, "thanks, that's all")
    reply = "You're welcome. Goodbye!"
    done = call.reply_done(1, outcome(reply, reply))
    assert kinds(done) == [Record, Note, Close]
    assert done[-1] == Close("agent_goodbye") and call.conv.end_reason == "agent_goodbye"


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        ("We open at nine. Have a great day!", "We open at nine. Have a great day!"),
        ("Sure. Goodbye!", "Sure."),  # the goodbye was cut: the caller never heard it
    ],
)
def test_reply_without_a_heard_goodbye_keeps_the_call_open(text: str, heard: str) -> None:
    call = Call(end_of_turn="adaptive")
    committed_turn(call)
    assert kinds(call.reply_done(1, outcome(text, heard))) == [Record, WarmPrompt]
    assert not call.conv.closing


def keys(call: Call, digits: str, at: float, step: float = 0.3) -> list[Action]:
    out: list[Action] = []
    for i, digit in enumerate(digits):
        out += call.conv.dtmf(digit, at + i * step)
    return out


def test_keys_become_a_turn_after_a_short_pause() -> None:
    call = Call(end_of_turn="adaptive")
    assert kinds(keys(call, "123", at=2.0)) == [Note, Note, Note]
    assert call.conv.next_tick() == pytest.approx(2.6 + 1.5)
    assert call.conv.tick(4.0, False) == []
    start, commit = call.conv.tick(4.1, False)
    assert start == StartReply(1, start.messages, False)
    assert start.messages[-1] == user("The caller pressed 1 2 3.")
    assert commit == CommitReply(1, speech_end=4.1, decided=4.1)
    record, _warm = call.reply_done(1, outcome("Got it.", "Got it."), now=5.0)
    assert record == Record(1, "The caller pressed 1 2 3.", "Got it.", False, 2.0)


def test_hash_ends_the_keys_at_once() -> None:
    call = Call(end_of_turn="adaptive")
    out = keys(call, "42#", at=2.0)
    (start,) = only(out, StartReply)
    assert start.messages[-1] == user("The caller pressed 4 2.")
    assert only(call.conv.tick(10.0, False), StartReply) == []  # no second key turn


def test_a_key_interrupts_the_agent() -> None:
    call = Call(end_of_turn="adaptive")
    committed_turn(call)
    call.speaking = True
    call.silence(0.2)
    out = call.conv.dtmf("9", call.now)
    assert CancelReply(1, "barge-in") in out and Clear() in out


def test_keys_reset_the_silence_limit_and_can_be_ignored() -> None:
    call = Call(dtmf="ignore", end_of_turn="adaptive")
    assert call.conv.dtmf("1", 50.0) == [Note("dtmf 1 (ignored)")]
    assert call.conv.tick(52.0, False) == []  # no key turn
    assert call.conv.next_tick() == 110.0


def test_complete_question_is_answered_after_the_short_pause() -> None:
    call = Call(end_of_turn="adaptive")
    spoken_then_paused(call, "What time do you open?")
    (commit,) = acts(call.silence(0.1))
    assert commit == CommitReply(1, speech_end=pytest.approx(1.0), decided=pytest.approx(1.4))


def test_fixed_end_of_turn_waits_the_fixed_pause_for_everything() -> None:
    call = Call(end_of_turn="fixed")
    spoken_then_paused(call, "What time do you open?")
    assert acts(call.silence(0.28)) == []
    (commit,) = acts(call.silence(0.02))
    assert commit.decided == pytest.approx(1.6)


def test_number_being_read_out_is_waited_for() -> None:
    """ "My number is 5 5 5" and a 1.2 s pause: still the caller's turn; they go on."""
    call = Call(end_of_turn="adaptive")
    (start,) = only(spoken_then_paused(call, "My number is 5 5 5."), StartReply)
    assert only(acts(call.silence(1.2)), CommitReply) == []  # 1.5 s of silence: not done
    assert acts(call.speak(0.8)) == [CancelReply(start.turn, "discarded")]
    job = job_of(call.silence(0.3))
    (start2,) = only(call.transcribed(job, "My number is 5 5 5, 1 2 3 4."), StartReply)
    assert only(acts(call.silence(1.4)), CommitReply) == []
    (commit,) = only(acts(call.silence(0.1)), CommitReply)  # 1.8 s: the unfinished limit
    assert commit.turn == start2.turn
    assert commit.decided - commit.speech_end == pytest.approx(1.8)


def test_adaptive_turn_waits_for_the_words_before_it_ends() -> None:
    """The transcript is late: the turn does not end at the default pause but when the words
    say it is over (no reply could start before them anyway)."""
    call = Call(end_of_turn="adaptive")
    call.speak(1.0)
    job = job_of(call.silence(0.3))
    assert only(acts(call.silence(0.6)), CommitReply) == []  # 0.9 s of silence, no words yet
    assert kinds(call.transcribed(job, "What time do you open?")) == [Note, StartReply]
    (commit,) = acts(call.silence(0.02))  # the words are in: the next frame ends the turn
    assert commit.decided == pytest.approx(1.92)


def test_unknown_words_keep_the_default_pause() -> None:
    call = Call(end_of_turn="adaptive")
    spoken_then_paused(call, "w1 w2")
    assert acts(call.silence(0.28)) == []
    assert kinds(acts(call.silence(0.02))) == [CommitReply]


def test_hold_on_gets_a_short_line_and_a_longer_silence_limit() -> None:
    call = Call(max_silence_seconds=10.0, end_of_turn="adaptive")
    spoken_then_paused(call, "Hold on, one moment.")
    out = acts(call.silence(0.1))
    assert kinds(out) == [RecordCaller, Note, SayLine] and out[-1] == SayLine("hold", HOLD)
    assert call.conv.line_done("hold", 3.0) == []
    assert call.conv.next_tick() == pytest.approx(3.0 + 30.0)
    assert call.conv.tick(20.0, False) == []  # past the usual 10 s: still waiting
    call.t = 20.0
    call.speak(0.5)  # they are back: the usual limit again
    call.silence(0.6)
    assert call.conv.next_tick() <= call.now + 10.0


# -- 11. sans-I/O ------------------------------------------------------------------------------


def test_core_imports_no_io_library() -> None:
    """The core can be reasoned about and tested alone: no event loop, no network stack."""
    code = (
        "import sys, aicallerd.call.conversation\n"
        "bad = {'trio', 'httpx', 'trio_websocket', 'quart', 'hypercorn', 'asyncio'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]"
