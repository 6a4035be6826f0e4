"""Speaking for one call: replies, replays of cut replies and fixed lines, each with
deadlines, all queued on the call's one :class:`~aicallerd.call.player.Player`.

A reply runs inside its :class:`ReplyRun`'s cancel scope (the one a barge-in cancels) and
behind its gate (closed while the turn is only speculative). Whatever goes wrong in the
engines, the caller is never left in silence: the pre-rendered apology is queued instead.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from aicallerd.call.actions import Spoken
from aicallerd.call.lines import FALLBACK_LINE
from aicallerd.call.metrics import TurnLegs
from aicallerd.call.player import Gate, Player
from aicallerd.call.reply import Reply, speak_reply
from aicallerd.call.settings import CallSettings

log = logging.getLogger("aicallerd.call")

# A reply the filter refused whole (SmolLM2's "As an AI, I don't have ...", or a copy of an
# earlier reply) is asked for once more, a little less predictably, before the apology:
# "could you say that again?" is the wrong answer when the caller was heard fine.
RETRY_TEMPERATURE_STEP = 0.3


@dataclass(eq=False)
class ReplyRun:
    """One reply being carried out: its cancel scope, its gate, its measurements."""

    number: int
    gate: Gate
    legs: TurnLegs
    reply: Reply
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    committed: trio.Event = field(default_factory=trio.Event)
    text_ready: float = 0.0
    speech_end: float = 0.0
    decided: float = 0.0
    first_frame_at: float | None = None
    first_frame: trio.Event = field(default_factory=trio.Event)
    timed_out: bool = False  # no audio by the first-audio deadline

    def on_first_frame(self, t: float) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = t
            self.first_frame.set()

    def commit(self, speech_end: float, decided: float) -> None:
        """The pause became the end of the turn: let the caller hear the reply."""
        self.speech_end, self.decided = speech_end, decided
        self.legs.endpoint_wait = decided - speech_end
        self.gate.open()
        self.committed.set()

    def cancel(self) -> None:
        """Stop generating and speaking now; nothing more of it reaches the caller."""
        self.gate.shut()
        self.scope.cancel()


class Speaker:
    def __init__(
        self,
        player: Player,
        *,
        llm: Any,
        tts: Any,
        canned: dict[str, bytes],
        settings: CallSettings,
    ) -> None:
        self.player = player
        self.llm = llm
        self.tts = tts
        self.canned = canned
        self.settings = settings
        self.log: logging.Logger | logging.LoggerAdapter = log

    def new_run(self, turn: int, *, speculative: bool) -> ReplyRun:
        return ReplyRun(
            number=turn,
            gate=Gate(self.player, is_open=False),
            legs=TurnLegs(speculative=speculative),
            reply=Reply(mark_prefix=f"t{turn}"),
            text_ready=trio.current_time(),
        )

    async def reply(
        self,
        run: ReplyRun,
        messages: tuple[dict[str, str], ...],
        previous_replies: Sequence[str],
    ) -> None:
        """Generate and speak one turn within its deadlines; the apology if it failed."""
        s = self.settings
        failed = False
        with run.scope:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._first_audio_deadline, run, nursery.cancel_scope)
                    with trio.move_on_after(s.reply_seconds) as whole:
                        retry = dataclasses.replace(
                            s.reply,
                            temperature=min(1.0, s.reply.temperature + RETRY_TEMPERATURE_STEP),
                        )
                        for settings in (s.reply, retry):
                            await speak_reply(
                                llm=self.llm,
                                tts=self.tts,
                                player=run.gate,
                                messages=messages,
                                settings=settings,
                                previous_replies=previous_replies,
                                reply=run.reply,
                                legs=run.legs,
                                on_first_frame=run.on_first_frame,
                            )
                            self._log_refused(run)
                            if run.reply.sentences:
                                break
                            self.log.info(
                                "turn %d: every sentence of the reply was refused%s",
                                run.number,
                                ": asking once more" if settings is s.reply else "",
                            )
                    nursery.cancel_scope.cancel()  # done: stop the first-audio deadline
                if whole.cancelled_caught:
                    self.log.error("turn %d: reply cut at %gs", run.number, s.reply_seconds)
                failed = run.timed_out or whole.cancelled_caught
            except* Exception as group:
                failed = True
                self.log.error("turn %d: %s", run.number, _first_error(group))
            await run.committed.wait()
            run.legs.stt_tail = max(0.0, run.text_ready - run.decided)
            if failed or not run.reply.sentences:  # never leave the caller in silence
                self._apologise(run)
            await self.wait_played(run.reply.last_mark, len(run.reply.audio) / 8000)

    def _log_refused(self, run: ReplyRun) -> None:
        """What the guardrail kept from the caller, to see why a turn was slow or retried."""
        if run.reply.refused and self.log.isEnabledFor(logging.DEBUG):
            said = " | ".join(repr(text[:200]) for text in run.reply.refused)
            self.log.debug("turn %d: not said: %s", run.number, said)
        run.reply.refused.clear()

    async def _first_audio_deadline(self, run: ReplyRun, generation: trio.CancelScope) -> None:
        """No audio within the deadline after the end of turn: stop and apologise."""
        await run.committed.wait()
        with trio.move_on_at(run.decided + self.settings.first_audio_seconds):
            await run.first_frame.wait()
            return
        self.log.error(
            "turn %d: no reply audio within %gs: apologising",
            run.number,
            self.settings.first_audio_seconds,
        )
        run.timed_out = True
        generation.cancel()

    async def replay(self, run: ReplyRun, sentences: tuple[Spoken, ...]) -> None:
        """Speak the unheard rest of a cut reply as this turn's reply."""
        with run.scope:
            for i, sentence in enumerate(sentences, 1):
                mark = f"t{run.number}r-s{i}"
                run.gate.enqueue_audio(sentence.audio, run.on_first_frame)
                run.gate.enqueue_mark(mark)
                run.reply.sentences.append(Spoken(mark, sentence.text, sentence.audio))
            await self.wait_played(run.reply.last_mark, len(run.reply.audio) / 8000)

    def _apologise(self, run: ReplyRun) -> None:
        """The pre-rendered apology: a dead LLM or TTS must not leave the caller in silence."""
        audio = self.canned.get("sorry")
        if audio is None:
            return
        mark = f"{run.reply.mark_prefix}-sorry"
        run.gate.enqueue_audio(audio, run.on_first_frame)
        run.gate.enqueue_mark(mark)
        run.reply.sentences.append(Spoken(mark, FALLBACK_LINE, audio))

    async def say(self, tag: str, text: str) -> bool:
        """Speak a fixed line (greeting, goodbye), from the cache when it was pre-rendered;
        True if the caller heard it to the end."""
        audio = self.canned.get(tag)
        try:
            if audio is None:
                chunks = bytearray()
                with trio.fail_after(self.settings.first_audio_seconds + len(text) / 10):
                    async for chunk in self.tts.stream_ulaw(text):
                        self.player.enqueue_audio(chunk)
                        chunks += chunk
                audio = bytes(chunks)
            else:
                self.player.enqueue_audio(audio)
            self.player.enqueue_mark(tag)
            self.log.info("agent says (%s): %r", tag, text)
            await self.wait_played(tag, len(audio) / 8000)
        except Exception as exc:
            self.log.error("tts failed for the %s: %s", tag, exc)
        return self.player.played(tag)

    async def wait_played(self, last_mark: str | None, seconds: float) -> None:
        """Wait until Twilio echoes the last mark, then ``clear`` as the seed does."""
        if last_mark is None:
            return
        done = trio.Event()

        def listener(name: str) -> None:
            if name == last_mark:
                done.set()

        self.player.add_mark_listener(listener)
        try:
            if not self.player.played(last_mark):
                with trio.move_on_after(seconds + 5.0):
                    await done.wait()
        finally:
            self.player.remove_mark_listener(listener)
        if not self.player.speaking:
            self.player.clear()


def _first_error(group: BaseExceptionGroup) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
