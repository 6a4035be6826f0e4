"""One agent reply: LLM token stream -> sentences -> guardrail -> TTS -> player.

The three stages run concurrently and hand work over memory channels, so sentence one is
already playing while sentence two is being generated. The caller of :func:`speak_reply`
owns the cancel scope: cancelling it stops generation, synthesis and the queueing of new
frames at once (what the caller heard is then read from the marks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

import numpy as np
import trio

from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.call.actions import Spoken
from aicallerd.call.metrics import TurnLegs
from aicallerd.call.player import Gate, Player
from aicallerd.call.settings import ReplySettings
from aicallerd.engines.deadline import DUE
from aicallerd.engines.llm import ChatClient
from aicallerd.engines.tts import Synthesizer
from aicallerd.text.guardrail import ReplyFilter
from aicallerd.text.sentences import Piece, SentenceSplitter

SECONDS_PER_CHAR = 0.05  # of speech, about: Piper's joe-medium says 52 characters in 2.66 s


def trim_leading_silence(ulaw: bytes, threshold: int = 200, keep: int = 80) -> bytes:
    """Drop near-silent samples before the first sound, keeping ``keep`` samples (10 ms)."""
    loud = np.flatnonzero(np.abs(ulaw_decode(ulaw).astype(np.int32)) >= threshold)
    if not len(loud):
        return b""
    return ulaw[max(0, int(loud[0]) - keep) :]


@dataclass
class Reply:
    """What was queued for the caller, sentence by sentence, with the mark after each."""

    mark_prefix: str
    sentences: list[Spoken] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # written by the model, not said

    def played_text(self, player: Player) -> str:
        """The sentences whose closing mark came back: what the caller actually heard."""
        return " ".join(s.text for s in self.sentences if player.played(s.mark))

    def played_audio(self, player: Player) -> bytes:
        return b"".join(s.audio for s in self.sentences if player.played(s.mark))

    def unplayed(self, player: Player) -> tuple[Spoken, ...]:
        return tuple(s for s in self.sentences if not player.played(s.mark))

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    @property
    def audio(self) -> bytes:
        return b"".join(s.audio for s in self.sentences)

    @property
    def last_mark(self) -> str | None:
        return self.sentences[-1].mark if self.sentences else None


async def _generate(
    llm: ChatClient,
    messages: Sequence[dict[str, str]],
    settings: ReplySettings,
    reply_filter: ReplyFilter,
    legs: TurnLegs,
    t0: float,
    out: trio.MemorySendChannel[str],
) -> None:
    splitter = SentenceSplitter(
        min_chars=settings.min_piece_chars,
        first_clause_chars=settings.interjection_chars,
        long_clause_chars=settings.clause_chars,
        first_phrase_words=settings.phrase_words,
        later_phrase_words=settings.later_phrase_words,
    )
    stream = llm.stream_chat(
        list(messages), max_tokens=settings.max_tokens, temperature=settings.temperature
    )
    # aclosing: a cancelled or finished reply closes the HTTP stream at once, so the server
    # stops generating instead of spending the CPU the next turn needs.
    async with out, aclosing(stream):
        async for delta in stream:
            if legs.llm_first_token is None:
                legs.llm_first_token = trio.current_time() - t0
            for sentence in splitter.feed(delta):
                whole = not (isinstance(sentence, Piece) and sentence.partial)
                if not await _offer(sentence, reply_filter, legs, t0, out, whole=whole):
                    return
            opening = reply_filter.release(splitter.pending)
            if opening:
                await _say(opening, legs, t0, out)
            if reply_filter.refuses_length(splitter.pending_words):
                return  # the sentence being written can never be spoken: stop the LLM now
        for sentence in splitter.flush():
            if not await _offer(sentence, reply_filter, legs, t0, out):
                return


async def _offer(
    sentence: str,
    reply_filter: ReplyFilter,
    legs: TurnLegs,
    t0: float,
    out: trio.MemorySendChannel[str],
    *,
    whole: bool = True,
) -> bool:
    """Pass one sentence through the guardrail; False once the reply must stop."""
    cleaned = reply_filter.accept(sentence, whole=whole)
    if cleaned:
        await _say(cleaned, legs, t0, out)
    return not reply_filter.done


async def _say(text: str, legs: TurnLegs, t0: float, out: trio.MemorySendChannel[str]) -> None:
    if legs.first_sentence is None:
        legs.first_sentence = trio.current_time() - t0
    await out.send(text)


async def _render(
    tts: Synthesizer, text: str, due: float, out: trio.MemorySendChannel[bytes]
) -> None:
    DUE.set(due)  # this task's: a voice every call shares serves the most urgent first
    async with out, aclosing(tts.stream_ulaw(text)) as chunks:
        async for chunk in chunks:
            await out.send(chunk)


async def _prefetch(
    tts: Synthesizer,
    sentences: trio.MemoryReceiveChannel[str],
    rendered: trio.MemorySendChannel[tuple[str, float, trio.MemoryReceiveChannel[bytes]]],
    nursery: trio.Nursery,
) -> None:
    """Start each sentence's synthesis as soon as it is written, so the next sentence's
    first audio (a cloud voice's first byte, 150-300 ms) is not waited for after the
    current one has played out: that wait was an audible gap after a short first clause.

    Each is due when the reply's speech before it would have played out had the reply's
    first words been heard at once: the first sentence now, later ones after their
    predecessors' estimated length."""
    start: float | None = None
    ahead = 0.0  # seconds of speech before this sentence, by its text
    async with sentences, rendered:
        async for text in sentences:
            now = trio.current_time()
            start = now if start is None else start
            send, receive = trio.open_memory_channel[bytes](math.inf)
            nursery.start_soon(_render, tts, text, start + ahead, send)
            ahead += len(text) * SECONDS_PER_CHAR
            await rendered.send((text, now, receive))


async def _synthesize(
    tts: Synthesizer,
    player: Player | Gate,
    reply: Reply,
    legs: TurnLegs,
    on_first_frame: Callable[[float], None],
    sentences: trio.MemoryReceiveChannel[str],
) -> None:
    """Queue each sentence's audio, in order, with its mark after it."""
    async with trio.open_nursery() as nursery:
        # Capacity 0: at most the sentence being queued and the next one are synthesizing.
        send, rendered = trio.open_memory_channel[
            tuple[str, float, trio.MemoryReceiveChannel[bytes]]
        ](0)
        nursery.start_soon(_prefetch, tts, sentences, send, nursery)
        async with rendered:
            async for text, t_sentence, chunks in rendered:
                audio = bytearray()
                async with chunks:
                    async for chunk in chunks:
                        if not reply.sentences and not audio:
                            # The voice's own lead-in silence would only delay the first word.
                            chunk = trim_leading_silence(chunk)
                            if not chunk:
                                continue
                        if not audio and legs.tts_first_audio is None:
                            legs.tts_first_audio = trio.current_time() - t_sentence
                        player.enqueue_audio(chunk, on_sent=None if audio else on_first_frame)
                        audio += chunk
                mark = f"{reply.mark_prefix}-s{len(reply.sentences) + 1}"
                reply.sentences.append(Spoken(mark, text, bytes(audio)))
                player.enqueue_mark(mark)


async def speak_reply(
    *,
    llm: ChatClient,
    tts: Synthesizer,
    player: Player | Gate,
    messages: Sequence[dict[str, str]],
    settings: ReplySettings,
    previous_replies: Sequence[str],
    reply: Reply,
    legs: TurnLegs,
    on_first_frame: Callable[[float], None],
) -> None:
    """Generate and queue one reply into ``reply``; returns once everything is queued.

    ``reply`` is filled in as sentences are queued, so a caller that cancels us midway still
    knows which marks belong to which text. An engine failure propagates (as an exception
    group) after whatever sentences were already queued.
    """
    reply_filter = ReplyFilter(
        max_sentences=settings.max_sentences,
        previous_replies=previous_replies,
        max_words=settings.max_words,
    )
    send, receive = trio.open_memory_channel[str](8)
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_generate, llm, messages, settings, reply_filter, legs, t0, send)
        nursery.start_soon(_synthesize, tts, player, reply, legs, on_first_frame, receive)
    reply.refused.extend(reply_filter.refused)
