"""The conversation core: who holds the floor and what happens next (sans-I/O).

One object per call, in the h11 habit: no trio, no sockets, no threads, no clock of its own.
It is fed what happened (a frame's speech probability at audio time ``t``, a transcript that
came back, a reply that finished, a fixed line that was played, a key press, a timer tick)
and returns the actions the call must carry out (transcribe this audio, start a speculative
reply, commit it, cancel it, clear the caller's buffer, replay a cut reply, say a fixed
line, record a turn, close the stream). Every turn-taking decision lives here:

- end of turn: the endpointer's ``PhraseEnd`` (:meth:`Conversation.audio`);
- speculation: a reply starts at a short ``Pause`` and is committed at ``PhraseEnd`` or
  discarded unheard on ``Resume``;
- how long a pause ends the turn, from the words heard so far:
  :meth:`Conversation._adapt_end_of_turn`;
- barge-in: :meth:`Conversation._decide_interruption`, the one place that decides the caller
  took the floor;
- backchannels and resume: :meth:`Conversation._no_words`;
- turns answered by a fixed line instead of the model (goodbye, "hold on"):
  :meth:`Conversation._fixed_answer`; the model's own goodbye: :meth:`Conversation.reply_done`;
- key presses: :meth:`Conversation.dtmf` collects them, :meth:`Conversation._keys_done` makes
  them a turn;
- silence and duration limits: :meth:`Conversation.tick`.

Times named ``now`` are the caller's monotonic clock; ``t`` is audio time (Twilio's media
timestamps), mapped to ``now`` by the arrival time of the latest frame.
"""

from __future__ import annotations

import numpy as np

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
from aicallerd.call.lines import FALLBACK_LINE
from aicallerd.call.settings import CallSettings
from aicallerd.call.turns import KEY_PHRASE_ID, Job, Phrase, Turn
from aicallerd.endpointer import (
    SAMPLE_RATE,
    ChunkReady,
    Endpointer,
    Event,
    Pause,
    PhraseEnd,
    Resume,
    SpeechStart,
)
from aicallerd.text.backchannel import is_backchannel, words
from aicallerd.text.phone import TurnEnd, end_of_turn, is_closing, is_hold_request

RESUME_WINDOW_SECONDS = 10.0  # a cut reply is picked up again only this soon after the cut
WORD_CHECK_FRAMES = 15  # re-check an interruption's words after ~0.3 s more audio
_EPS = 1e-6  # speech time is summed frame by frame: allow for float error at thresholds
HOLD_SILENCE_FACTOR = 3.0  # "hold on": the silence limit stretches this much until they speak


class Conversation:
    """Turn-taking for one call. Feed it events in order; carry out what it returns."""

    def __init__(self, settings: CallSettings, *, prompt: str | None = None) -> None:
        self.settings = settings
        self.endpointer = Endpointer(settings.endpointer)
        system = settings.system_prompt if not prompt else f"{settings.system_prompt}\n{prompt}"
        self.history: list[dict[str, str]] = [{"role": "system", "content": system}]
        self.speculations = {"started": 0, "committed": 0, "discarded": 0}
        self.closing = False
        self.end_reason = "hangup"
        self._now = 0.0
        self._started = 0.0
        self._last_activity = 0.0
        self._speaking = False
        self._offset = 0.0  # monotonic - audio time, from the latest frame
        self._turn_count = 0
        self._jobs: dict[int, Job] = {}
        self._next_job = 0
        self._phrase: Phrase | None = None
        self._turn: Turn | None = None  # holds, or is about to take, the floor
        self._turns: dict[int, Turn] = {}  # started and not yet finished
        self._line: str | None = None  # the fixed line being spoken
        self._cut: tuple[Turn, float, tuple[Spoken, ...]] | None = None  # last barge-in
        self._carry = ""  # words of a caller who talked on before hearing the reply
        self._keys: list[str] = []  # DTMF digits collected for the next key turn
        self._keys_started = 0.0
        self._keys_deadline: float | None = None
        self._holding = False  # the caller asked us to wait ("hold on")

    def add_prompt(self, prompt: str) -> None:
        """Per-call instructions (an outbound call's contact), appended to the system prompt."""
        self.history[0]["content"] += "\n" + prompt

    # -- inputs ---------------------------------------------------------------------------------

    def begin(self, now: float, greeting: str) -> list[Action]:
        """The call is connected: greet, or wait for the caller to speak first. The first
        prompt (the system prompt, 100+ tokens: 0.7 s on 2 cores) is read meanwhile."""
        self._now = self._started = self._last_activity = now
        out = self._say("greeting", greeting) if greeting else []
        out.append(WarmPrompt(self._messages("")))
        return out

    def audio(
        self,
        pcm: np.ndarray,
        prob: float,
        t: float,
        arrived: float,
        speaking: bool,
        level: float | None = None,
    ) -> list[Action]:
        """One caller frame at audio time ``t`` with its speech probability (and RMS level).

        ``arrived`` is when it reached us; ``speaking`` whether our audio is playing.
        """
        out: list[Action] = []
        frame_end = t + len(pcm) / SAMPLE_RATE
        self._now, self._speaking, self._frame_t = arrived, speaking, t
        self._offset = arrived - frame_end
        for event in self.endpointer.feed(pcm, prob, t, level):
            self._on_endpoint(event, frame_end, out)
        phrase = self._phrase
        if phrase is not None and self.endpointer.in_phrase:
            if self.settings.barge_in_min_words > 0:
                phrase.audio.append(pcm)
            if self.endpointer.speaking:
                phrase.speech_seconds += len(pcm) / SAMPLE_RATE
                self._last_activity = arrived
                self._decide_interruption(phrase, out)
        return out

    def transcribed(self, job: int, text: str, now: float, *, failed: bool = False) -> list[Action]:
        """A transcription came back: ``text`` ("" for nothing heard), or ``failed`` (an
        engine error or its deadline: the caller spoke, and must not be met with silence)."""
        out: list[Action] = []
        self._now = now
        found = self._jobs.pop(job, None)
        if found is None:
            return out
        phrase = found.phrase
        phrase.pending.discard(job)
        if found.kind == "check":
            phrase.check_job = None
            if self._phrase is phrase:
                self._decide_interruption(phrase, out, heard=text)
            return out
        if found.kind == "phrase" and found.index == phrase.version:
            phrase.heard = text
            phrase.unheard = failed
            self._adapt_end_of_turn(phrase, out)
            if not phrase.pending:
                self._text_ready(phrase, out)
        return out

    def reply_done(self, turn_number: int, outcome: ReplyOutcome, now: float) -> list[Action]:
        """A reply (or replay) is over: played out, cut, cancelled or failed."""
        out: list[Action] = []
        self._now = now
        turn = self._turns.pop(turn_number, None)
        if turn is None:
            return out
        if self._turn is turn:
            self._turn = None
        if not turn.committed:
            return out  # a discarded speculation: never heard, never stored
        if turn.interrupted and not outcome.audio_started:
            self._carry = turn.caller_text  # nothing heard yet: the caller simply talked on
            out.append(Note(f"turn {turn.number}: caller kept talking, reply dropped"))
            return out
        if turn.interrupted:
            self._cut = (turn, now, outcome.unplayed)
        spoken = outcome.heard if turn.interrupted or self.closing else outcome.text
        interrupted = turn.interrupted or spoken != outcome.text
        out.append(Record(turn.number, turn.caller_text, spoken, interrupted, turn.phrase.started))
        self._last_activity = now
        if not spoken:
            # Cut before a sentence ended: the caller heard no answer, so the words are asked
            # again with the next ones. (A "..." answer in the history made SmolLM2 reply
            # "..." to every later turn.) Only this turn's: a caller who cuts every reply
            # short has moved on from the older questions.
            self._carry = turn.caller_text if turn.replay else turn.phrase.text()
            return out
        if turn.replay:
            self._carry = ""  # the carried words are in the history now, with their answer
        self.history.append({"role": "user", "content": turn.caller_text})
        self.history.append({"role": "assistant", "content": spoken})
        if (
            not turn.interrupted
            and not self.closing
            and is_closing(outcome.heard, strong_only=True)
        ):
            # The model said goodbye and the caller heard it to the end: the call is over.
            self.closing = True
            self.end_reason = "agent_goodbye"
            out.append(Note(f"turn {turn.number}: the reply ends with a goodbye"))
            out.append(Close(self.end_reason))
        elif not self.closing:
            out.append(WarmPrompt(self._messages("")))
        return out

    def line_done(self, tag: str, now: float) -> list[Action]:
        """A fixed line was played out, or cut short."""
        self._now = self._last_activity = now
        if self._line != tag:
            return []
        self._line = None
        return [Close(self.end_reason)] if self.closing else []

    def dtmf(self, digit: str, now: float) -> list[Action]:
        """A key press: collected until a pause or ``#``, then a caller turn of its own.

        A key is the caller taking the floor, like speech: it stops what the agent is saying.
        """
        self._now = self._last_activity = now
        if self.settings.dtmf != "pass" or self.closing:
            return [Note(f"dtmf {digit} (ignored)")]
        out: list[Action] = [Note(f"dtmf {digit}")]
        self._holding = False
        turn = self._turn
        if turn is not None and turn.started and turn.committed:
            self._interrupt(turn, out, f"key {digit!r}")
        elif self._line is not None and self._speaking:
            out.append(Clear())
        if digit == "#":
            self._keys_done(out)
            return out
        if not self._keys:
            self._keys_started = now
        self._keys.append(digit)
        self._keys_deadline = now + self.settings.dtmf_pause_seconds
        return out

    def tick(self, now: float, speaking: bool) -> list[Action]:
        """Keys that paused, the silence and duration limits; call at :meth:`next_tick` or
        sooner."""
        self._now, self._speaking = now, speaking
        if self._busy():
            self._last_activity = now
        if self.closing:
            return []
        out: list[Action] = []
        if self._keys_deadline is not None and now >= self._keys_deadline - _EPS:
            self._keys_done(out)
        s = self.settings
        if now - self._started >= s.max_call_seconds:
            return out + self.hang_up(s.time_limit_line, "max_duration", tag="time_limit")
        if now - self._last_activity >= self._silence_limit():
            return out + self.hang_up(s.goodbye, "silence", tag="goodbye")
        return out

    def next_tick(self) -> float:
        """When :meth:`tick` next has something to decide."""
        s = self.settings
        deadline = min(
            self._last_activity + self._silence_limit(), self._started + s.max_call_seconds
        )
        if self._keys_deadline is not None:
            deadline = min(deadline, self._keys_deadline)
        return min(deadline, self._now + 0.5) if self._busy() else deadline

    def _silence_limit(self) -> float:
        limit = self.settings.max_silence_seconds
        return limit * HOLD_SILENCE_FACTOR if self._holding else limit

    def hang_up(self, line: str, reason: str, *, tag: str = "bye") -> list[Action]:
        """End the call: stop the reply, say ``line`` (if any), close the stream."""
        if self.closing:
            return []
        self.closing = True
        self.end_reason = reason
        out: list[Action] = [Note(f"hanging up: {reason}")]
        turn = self._turn
        if turn is not None and turn.started:
            out.append(CancelReply(turn.number, "hang-up"))
        self._turn = None
        if self._speaking or self._line is not None:
            out.append(Clear())
        if line:
            out += self._say(tag, line)
        else:
            out.append(Close(reason))
        return out

    def stream_ended(self, now: float) -> None:
        """The caller hung up: a reply still in flight is recorded as far as it was heard."""
        self._now = now
        self.closing = True

    # -- listening ------------------------------------------------------------------------------

    def _mono(self, t: float) -> float:
        return t + self._offset

    def _on_endpoint(self, ev: Event, frame_end: float, out: list[Action]) -> None:
        if isinstance(ev, SpeechStart):
            self._phrase = Phrase(ev.phrase_id, started=self._mono(ev.t))
            # The speech before the frame that confirmed it (audio() adds that frame's).
            self._phrase.speech_seconds = max(0.0, self._frame_t - ev.onset)
            self._holding = False  # they are back
            return
        phrase = self._phrase
        if phrase is None or phrase.id != ev.phrase_id:
            return
        if isinstance(ev, ChunkReady):
            phrase.chunks.append(ev.pcm8)
        elif isinstance(ev, Pause):
            self._heard(phrase, ev.pending_pcm8, out)
            if self.settings.end_of_turn == "adaptive" and phrase.pending:
                # Until the words are in, the turn is not over: no reply can start before
                # them anyway, and a number read out slowly must not be cut at the default.
                self.endpointer.set_turn_silence(self.settings.unfinished_silence_seconds)
            if self.settings.speculative and self._turn is None and not self.closing:
                self.speculations["started"] += 1
                self._turn = self._new_turn(phrase, speculative=True)
                if not phrase.pending:
                    self._text_ready(phrase, out)
        elif isinstance(ev, Resume):
            self._went_on(phrase, out)
            turn = self._turn
            if turn is not None and turn.phrase is phrase and not turn.committed:
                if turn.started:
                    out.append(CancelReply(turn.number, "discarded"))
                self._turns.pop(turn.number, None)
                self._turn = None
                phrase.answered = False
                self.speculations["discarded"] += 1
        elif isinstance(ev, PhraseEnd):
            self._phrase = None
            if phrase.heard is None and not phrase.pending:
                self._heard(phrase, None, out)  # not transcribed at a pause (cannot happen today)
            phrase.ended = True
            phrase.speech_end = self._mono(ev.speech_end_t)
            phrase.decided = self._mono(frame_end)
            turn = self._turn
            if turn is not None and turn.phrase is phrase:
                self.speculations["committed"] += 1
                self._commit(turn, out)
            elif turn is None and not self.closing:
                self._turn = self._new_turn(phrase, speculative=False)
                self._commit(self._turn, out)
            elif not phrase.pending:
                self._decide_interruption(phrase, out, heard=phrase.text())
            # else: a short phrase under the agent's turn; its words decide (_text_ready)

    def _transcribe(
        self, phrase: Phrase, kind: str, pcm: np.ndarray, out: list[Action], index: int = 0
    ) -> int:
        job = self._next_job
        self._next_job += 1
        self._jobs[job] = Job(phrase, kind, index)
        if kind != "check":
            phrase.pending.add(job)
        out.append(Transcribe(job, pcm))
        return job

    def _heard(self, phrase: Phrase, held: np.ndarray | None, out: list[Action]) -> None:
        """Transcribe the whole phrase so far, once per pause.

        One call costs Whisper the same whatever the length (it pads to a 30 s window), so
        the phrase is transcribed whole rather than chunk by chunk: as accurate as
        whole-utterance transcription, and the result is ready by the end of the turn
        because it starts at the first short pause. ``held`` is the short stretch the
        endpointer has not cut into a chunk yet.
        """
        parts = [*phrase.chunks, held] if held is not None else phrase.chunks
        if not parts:
            phrase.heard = ""
            return
        self._transcribe(phrase, "phrase", np.concatenate(parts), out, index=phrase.version)

    def _adapt_end_of_turn(self, phrase: Phrase, out: list[Action]) -> None:
        """With ``end_of_turn = "adaptive"``: the words at the pause choose how long a silence
        ends the turn: a complete question is answered sooner, a number being read out or a
        trailing "and" is waited for longer. Back to the default when the caller goes on."""
        s = self.settings
        if s.end_of_turn != "adaptive" or self._phrase is not phrase or phrase.ended:
            return
        kind = end_of_turn(phrase.text())
        if kind is TurnEnd.UNKNOWN:
            self.endpointer.set_turn_silence(None)  # the default pause, counted from the pause
            return
        seconds = (
            s.complete_silence_seconds if kind is TurnEnd.COMPLETE else s.unfinished_silence_seconds
        )
        self.endpointer.set_turn_silence(seconds)
        out.append(Note(f"end of turn: {phrase.text()!r} is {kind.value}: {seconds:g}s pause"))

    def _went_on(self, phrase: Phrase, out: list[Action]) -> None:
        """The caller went on after a pause: what was transcribed there is now partial, and
        not worth the CPU another call's turn may need."""
        phrase.version += 1
        phrase.heard = None
        phrase.unheard = False
        for job_id in list(phrase.pending):
            job = self._jobs.get(job_id)
            if job is not None:
                job.kind = "stale"
                out.append(CancelTranscription(job_id))
            phrase.pending.discard(job_id)

    def _text_ready(self, phrase: Phrase, out: list[Action]) -> None:
        """Every transcription of ``phrase`` so far is in."""
        turn = self._turn
        if turn is not None and turn.phrase is phrase:
            self._start(turn, out)
        elif phrase.ended and not phrase.answered:
            self._decide_interruption(phrase, out, heard=phrase.text())

    # -- speaking -------------------------------------------------------------------------------

    def _new_turn(self, phrase: Phrase, *, speculative: bool) -> Turn:
        self._turn_count += 1
        phrase.answered = True
        return Turn(self._turn_count, phrase, speculative)

    def _start(self, turn: Turn, out: list[Action]) -> None:
        """Start the reply once the words are in; nothing to answer is a backchannel."""
        if turn.started or turn.phrase.pending:
            return
        turn.caller_text = " ".join(p for p in (self._carry, turn.phrase.text()) if p)
        if not turn.caller_text or (
            self._cut is not None
            and self.settings.barge_in_ignore_backchannels
            and is_backchannel(turn.phrase.text())
        ):
            if turn.committed:
                self._no_words(turn, out)
            return
        if self._fixed_answer(turn, out):
            return
        turn.started = True
        self._turns[turn.number] = turn
        out.append(StartReply(turn.number, self._messages(turn.caller_text), turn.speculative))
        if turn.committed:
            self._emit_commit(turn, out)

    def _commit(self, turn: Turn, out: list[Action]) -> None:
        turn.committed = True
        if turn.started:
            self._emit_commit(turn, out)
        elif not turn.phrase.pending:
            self._start(turn, out)

    def _emit_commit(self, turn: Turn, out: list[Action]) -> None:
        out.append(CommitReply(turn.number, turn.phrase.speech_end, turn.phrase.decided))
        if not turn.replay:
            self._carry = ""
            self._cut = None

    def _no_words(self, turn: Turn, out: list[Action]) -> None:
        """No words, or only "mm-hm": after a false barge-in, pick the cut reply up again at
        the sentence that was cut instead of leaving the caller in silence."""
        if self._turn is turn:
            self._turn = None
        cut, self._cut = self._cut, None
        if (
            cut is not None
            and self.settings.barge_in_ignore_backchannels
            and self._now - cut[1] <= RESUME_WINDOW_SECONDS
            and cut[2]
        ):
            out.append(
                Note(
                    f"turn {turn.number}: {turn.caller_text!r} is not an interruption, "
                    f"resuming turn {cut[0].number}"
                )
            )
            turn.started = turn.replay = True
            self._turns[turn.number] = turn
            self._turn = turn
            out.append(Replay(turn.number, cut[2], cut[0].number))
            self._emit_commit(turn, out)
            return
        if turn.phrase.unheard:
            # The caller said something we could not transcribe in time: ask again.
            out.append(Note(f"turn {turn.number}: the transcription failed, apologising"))
            out += self._say("sorry", FALLBACK_LINE)
            return
        out.append(Note(f"turn {turn.number}: no words heard, not replying"))

    def _fixed_answer(self, turn: Turn, out: list[Action]) -> bool:
        """A goodbye or a "hold on" is answered with a fixed line, not the model.

        True when ``turn`` is one (it is then answered once committed: a caller who goes on
        after "bye" was not done).
        """
        text = turn.phrase.text()
        if is_closing(text):
            tag, line = "farewell", self.settings.farewell
        elif is_hold_request(text):
            tag, line = "hold", self.settings.hold_line
        else:
            return False
        if not turn.committed:
            return True
        if self._turn is turn:
            self._turn = None
        self._carry, self._cut = "", None
        out.append(RecordCaller(turn.caller_text, turn.phrase.started))
        self.history.append({"role": "user", "content": turn.caller_text})
        self.history.append({"role": "assistant", "content": line})
        if tag == "farewell":
            out += self.hang_up(line, "caller_goodbye", tag=tag)
        else:
            self._holding = True
            out.append(Note(f"turn {turn.number}: the caller asked to wait"))
            if self._speaking or self._line is not None:
                out.append(Clear())
            out += self._say(tag, line)
        return True

    def _keys_done(self, out: list[Action]) -> None:
        """The keys collected so far become one caller turn the model reads as text."""
        keys, self._keys, self._keys_deadline = self._keys, [], None
        if not keys:
            return
        turn = self._turn
        if turn is not None and not turn.committed:  # a speculation on speech: keys go first
            if turn.started:
                out.append(CancelReply(turn.number, "discarded"))
            self._turns.pop(turn.number, None)
            turn.phrase.answered = False
            self.speculations["discarded"] += 1
        elif turn is not None and turn.started:
            self._interrupt(turn, out, "keys")
        self._turn = None
        text = f"The caller pressed {' '.join(keys)}."
        phrase = Phrase(KEY_PHRASE_ID, started=self._keys_started, heard=text, ended=True)
        phrase.speech_end = phrase.decided = self._now
        self._turn = self._new_turn(phrase, speculative=False)
        self._commit(self._turn, out)

    def _say(self, tag: str, text: str) -> list[Action]:
        self._line = tag
        return [SayLine(tag, text)]

    def _messages(self, caller_text: str) -> tuple[dict[str, str], ...]:
        """The prompt for this turn, built so it extends the last turn's prompt.

        An LLM server reuses its cache only up to the first token that differs, so old
        exchanges are dropped ``history_turns`` at a time (the model sees between
        ``history_turns`` and twice that) and nothing is added to earlier messages: the
        first token costs the new words only, not the whole history again. (A per-turn
        reminder after the caller's words cost SmolLM2 ~18 tokens, ~130 ms, every turn; the
        reply filter enforces the shape anyway.)
        """
        past = self.history[1:]
        turns = self.settings.history_turns
        exchanges = len(past) // 2
        keep = exchanges - max(0, exchanges - turns) // turns * turns if turns else 0
        window = past[len(past) - 2 * keep :]
        user = {"role": "user", "content": caller_text}
        return (dict(self.history[0]), *(dict(m) for m in window), user)

    # -- interruptions --------------------------------------------------------------------------

    def _decide_interruption(
        self, phrase: Phrase, out: list[Action], heard: str | None = None
    ) -> None:
        """The one place that decides whether the caller took the floor.

        Called on each speech frame of ``phrase``, when a word check comes back (``heard``),
        and once the words of a short phrase that ended under the agent's turn are in.
        """
        s = self.settings
        turn = self._turn
        if self.closing:
            return
        if turn is None or turn.phrase is phrase:
            # Only a fixed line (the greeting) can be talked over without a turn.
            if (
                self._line is not None
                and s.barge_in
                and self._speaking
                and not phrase.cut_line
                and phrase.speech_seconds >= s.barge_in_min_speech_seconds - _EPS
            ):
                phrase.cut_line = True
                out.append(Note("caller spoke over a fixed line: stopping it"))
                out.append(Clear())
            return
        if not turn.started or not turn.committed or (not s.barge_in and self._speaking):
            return
        if phrase.ended:
            # Too short to take the floor while speaking: a backchannel, unless it had words.
            if not heard or is_backchannel(heard) or len(words(heard)) < s.barge_in_min_words:
                out.append(Note(f"heard {heard!r} while speaking: not an interruption"))
                return
            self._interrupt(turn, out, f"caller spoke {phrase.speech_seconds:.2f}s")
            self._turn = self._new_turn(phrase, speculative=False)
            self._commit(self._turn, out)
            return
        if phrase.speech_seconds < s.barge_in_min_speech_seconds - _EPS:
            return
        if s.barge_in_min_words > 0:
            if heard is None:
                self._check_words(phrase, out)
                return
            if len(words(heard)) < s.barge_in_min_words or (
                s.barge_in_ignore_backchannels and is_backchannel(heard)
            ):
                return  # not yet: checked again once more audio is in
        self._interrupt(turn, out, f"caller spoke {phrase.speech_seconds:.2f}s")

    def _check_words(self, phrase: Phrase, out: list[Action]) -> None:
        """With ``barge_in_min_words``: transcribe what the interrupter said so far."""
        if phrase.check_job is not None:
            return
        if phrase.checked_frames and len(phrase.audio) < phrase.checked_frames + WORD_CHECK_FRAMES:
            return
        phrase.checked_frames = len(phrase.audio)
        phrase.check_job = self._transcribe(phrase, "check", np.concatenate(phrase.audio), out)

    def _interrupt(self, turn: Turn, out: list[Action], why: str) -> None:
        """Barge-in: cancel the turn's one scope and drop what is queued for the caller."""
        out.append(Note(f"barge-in: {why} over turn {turn.number}"))
        turn.interrupted = True
        out.append(CancelReply(turn.number, "barge-in"))
        if self._speaking:
            out.append(Clear())
        self._turn = None

    def _busy(self) -> bool:
        return self._turn is not None or self._speaking or self.endpointer.in_phrase

    @property
    def listening(self) -> bool:
        """Only listening: no phrase open, nothing to transcribe, answer or say, no keys
        being collected (whether our audio still plays is the player's to say)."""
        return not (
            self._turn is not None
            or self.endpointer.in_phrase
            or self._jobs
            or self._turns
            or self._line is not None
            or self._keys
        )
