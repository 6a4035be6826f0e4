"""One phone call: the tasks that listen, think and speak, all owned by one nursery.

Tasks (all children of :meth:`CallSession.run`'s nursery, so a hang-up ends every one):

- the receiver (this task): parses Twilio frames, hands audio to the listener, marks to the player;
- ``_listen``: VAD + endpointer over the caller's audio; starts chunk transcriptions while the
  caller is still talking and a turn when the phrase ends; detects barge-in;
- ``_turn``: one at a time, inside its own cancel scope: final transcript -> reply;
- ``Player.run``: the single writer of the socket, pacing 20 ms frames;
- ``_watchdog``: the caller-silence and maximum-duration limits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import trio

from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.audio.wav import write_wav
from aicallerd.call.lines import FALLBACK_LINE
from aicallerd.call.metrics import TurnLegs
from aicallerd.call.player import Gate, Player
from aicallerd.call.reply import Reply, ReplySettings, Spoken, speak_reply
from aicallerd.call.turn import Phrase, Turn, is_backchannel, words
from aicallerd.endpointer import (
    ChunkReady,
    Endpointer,
    EndpointerSettings,
    Event,
    Pause,
    PhraseEnd,
    Resume,
    SpeechStart,
)
from aicallerd.engines.tts import TTSError
from aicallerd.logs import call_logger
from aicallerd.text.guardrail import TURN_GUARDRAIL
from aicallerd.twilio import media

log = logging.getLogger("aicallerd.call")


class Transport(Protocol):
    """The WebSocket as a call sees it (quart's websocket in the daemon, memory in tests)."""

    async def receive(self) -> str | bytes: ...
    async def send(self, data: str) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(frozen=True)
class CallSettings:
    """Everything a call reads from the configuration, frozen when the call starts so a
    reload never changes a call in progress."""

    endpointer: EndpointerSettings
    reply: ReplySettings
    system_prompt: str
    greeting: str
    goodbye: str
    time_limit_line: str
    history_turns: int
    max_silence_seconds: float
    max_call_seconds: float
    barge_in: bool
    barge_in_min_speech_seconds: float
    barge_in_min_words: int
    barge_in_ignore_backchannels: bool
    speculative: bool
    store_audio_dir: Path | None
    handshake_timeout: float = 10.0
    player_lead: float = 0.08


class TurnSink(Protocol):
    """Where finished turns go (the call log and the latency window)."""

    async def agent_line(self, call_sid: str, text: str, interrupted: bool) -> None:
        """A fixed line (greeting, goodbye) was spoken, or cut short."""

    async def caller_turn(self, call_sid: str, text: str, started_at: float) -> None: ...
    async def agent_turn(
        self,
        call_sid: str,
        text: str,
        interrupted: bool,
        started_at: float,
        legs: TurnLegs,
        audio_path: str | None,
    ) -> None: ...


class CallSession:
    def __init__(
        self,
        *,
        transport: Transport,
        settings: CallSettings,
        transcribe: Callable[[np.ndarray], Awaitable[str]],
        llm,
        tts,
        vad_factory: Callable[[], object],
        verify_start: Callable[[media.Start], Awaitable[bool]],
        sink: TurnSink,
        canned: dict[str, bytes] | None = None,
        prompt: str | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self._transcribe = transcribe
        self.llm = llm
        self.tts = tts
        self._vad = vad_factory()
        self._verify_start = verify_start
        self.sink = sink
        self.canned = canned or {}
        self.call_sid = ""
        self.stream_sid = ""
        self.log: logging.LoggerAdapter = logging.LoggerAdapter(log, {})
        self.player = Player(send=self._send, lead=settings.player_lead)
        self.endpointer = Endpointer(settings.endpointer)
        system = settings.system_prompt if prompt is None else f"{settings.system_prompt}\n{prompt}"
        self.history: list[dict[str, str]] = [{"role": "system", "content": system}]
        self.turns = 0
        self.started_mono = 0.0
        self.end_reason = "hangup"
        self._audio_send, self._audio_receive = trio.open_memory_channel[tuple[np.ndarray, float]](
            500
        )
        self._phrase: Phrase | None = None
        self._turn: Turn | None = None
        self._interrupted: tuple[Turn, float] | None = None  # last cut reply, when it was cut
        self._carry_text = ""
        self._last_activity = 0.0
        self.speculations = {"started": 0, "committed": 0, "discarded": 0}
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self.ended = trio.Event()  # set when run() has returned
        self._hang_up_request: tuple[str, str] | None = None
        self._audio_clock_offset = 0.0  # monotonic - audio time, from the latest frame
        self._dropped_frames = 0

    def configure(
        self,
        *,
        greeting: str | None = None,
        greeting_audio: bytes | None = None,
        prompt: str | None = None,
    ) -> None:
        """Per-call overrides (an outbound call's contact), set between handshake and run.

        ``greeting=""`` means the agent waits for the callee's "hello?" instead.
        """
        if greeting is not None:
            self.settings = dataclasses.replace(self.settings, greeting=greeting)
            self.canned = {tag: a for tag, a in self.canned.items() if tag != "greeting"}
            if greeting and greeting_audio:
                self.canned["greeting"] = greeting_audio
        if prompt:
            self.history[0]["content"] += "\n" + prompt

    # -- plumbing -------------------------------------------------------------------------
    async def _send(self, text: str) -> None:
        await self.transport.send(text)

    def _mono_of(self, audio_t: float) -> float:
        return audio_t + self._audio_clock_offset

    # -- lifecycle ------------------------------------------------------------------------
    async def handshake(self) -> media.Start | None:
        """Wait for ``connected``/``start``; refuse a start without this call's token."""
        with trio.move_on_after(self.settings.handshake_timeout):
            while True:
                raw = await self.transport.receive()
                try:
                    event = media.parse_inbound(raw)
                except media.MediaProtocolError as exc:
                    log.warning("stream: ignoring malformed frame before start: %s", exc)
                    continue
                if isinstance(event, media.Connected):
                    continue
                if isinstance(event, media.Start):
                    if not await self._verify_start(event):
                        log.warning(
                            "[%s] stream refused: bad or missing token in start", event.call_sid
                        )
                        await self.transport.close(1008, "invalid token")
                        return None
                    return event
                log.warning("stream: %s before start ignored", type(event).__name__.lower())
        log.warning("stream closed: no start event within %.0fs", self.settings.handshake_timeout)
        await self.transport.close(1008, "no start")
        return None

    async def run(self, start: media.Start) -> None:
        """Run the call until Twilio stops the stream or we hang up."""
        self.call_sid = start.call_sid
        self.stream_sid = start.stream_sid
        self.player.stream_sid = start.stream_sid
        self.log = call_logger(self.call_sid)
        self.started_mono = trio.current_time()
        self._last_activity = self.started_mono
        self.log.info("call started (stream %s)", self.stream_sid)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.player.run)
                nursery.start_soon(self._listen)
                nursery.start_soon(self._watchdog)
                if self._hang_up_request is not None:
                    nursery.start_soon(self.hang_up, *self._hang_up_request)
                elif self.settings.greeting:
                    nursery.start_soon(self._say, self.settings.greeting, "greeting")
                await self._receive_loop()
                self._closing = True  # the caller hung up: a turn in flight is cut here
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.ended.set()

    def request_hang_up(self, line: str, reason: str) -> None:
        """TEMPORARY SHIM (the new session replaces it): an operator or the drain asks the
        call to end; the call's own nursery says ``line`` and closes the stream."""
        if self.ended.is_set() or self._closing:
            return
        if self._nursery is None:
            self._hang_up_request = (line, reason)
        else:
            self._nursery.start_soon(self.hang_up, line, reason)

    async def _receive_loop(self) -> None:
        async with self._audio_send:
            while True:
                try:
                    raw = await self.transport.receive()
                except Exception as exc:  # the socket went away under us
                    self.log.info("stream closed: %s", exc.__class__.__name__)
                    return
                try:
                    event = media.parse_inbound(raw)
                except media.MediaProtocolError as exc:
                    self.log.warning("ignoring malformed frame: %s", exc)
                    continue
                if isinstance(event, media.Media):
                    if event.track not in ("inbound", "inbound_track", ""):
                        continue
                    self._on_media(event)
                elif isinstance(event, media.Mark):
                    self.player.on_mark(event.name)
                elif isinstance(event, media.Dtmf):
                    self.log.info("dtmf %s", event.digit)
                elif isinstance(event, media.Stop):
                    self.log.info("stream stopped by Twilio")
                    return
                else:
                    self.log.warning("ignoring %s after start", type(event).__name__.lower())

    def _on_media(self, event: media.Media) -> None:
        if not event.payload:
            return
        pcm = ulaw_decode(event.payload)
        t = event.timestamp_ms / 1000.0
        self._audio_clock_offset = trio.current_time() - (t + len(pcm) / 8000)
        try:
            self._audio_send.send_nowait((pcm, t))
        except trio.WouldBlock:
            self._dropped_frames += 1
            if self._dropped_frames in (1, 100, 1000):
                self.log.warning("listener behind: %d caller frames dropped", self._dropped_frames)

    # -- listening ------------------------------------------------------------------------
    async def _listen(self) -> None:
        async for pcm, t in self._audio_receive:
            prob = self._vad.probability(pcm)
            frame_end = t + len(pcm) / 8000
            for ev in self.endpointer.feed(pcm, prob, t):
                self._on_endpoint_event(ev, frame_end)
            phrase = self._phrase
            if phrase is not None and self.endpointer.in_phrase:
                phrase.audio.append(pcm)
                if self.endpointer.speaking:
                    phrase.speech_seconds += len(pcm) / 8000
                    self._last_activity = trio.current_time()
                    self._check_interruption(phrase)

    def _on_endpoint_event(self, ev: Event, frame_end_t: float) -> None:
        phrase = self._phrase
        if isinstance(ev, SpeechStart):
            self._phrase = Phrase(ev.phrase_id, started_mono=self._mono_of(ev.t))
            return
        if phrase is None or phrase.phrase_id != ev.phrase_id:
            return
        turn = self._turn
        if isinstance(ev, ChunkReady):
            phrase.chunks_seen += 1
            if phrase.provisional is not None and phrase.provisional[0] == ev.index:
                # Transcribed already for the speculative turn, from the same audio.
                phrase.texts[ev.index] = phrase.provisional[1]
                return
            self._start_transcription(phrase, ev.index, ev.pcm8)
        elif isinstance(ev, Pause):
            if self.settings.speculative and turn is None:
                if ev.pending_pcm8 is not None:
                    self._start_transcription(phrase, phrase.chunks_seen, ev.pending_pcm8, True)
                self._start_turn(phrase, speculative=True)
        elif isinstance(ev, Resume):
            phrase.drop_provisional()
            if turn is not None and turn.phrase is phrase and not turn.committed.is_set():
                turn.scope.cancel()  # the caller went on: the speculation is dropped unheard
                self._turn = None
                self.speculations["discarded"] += 1
        elif isinstance(ev, PhraseEnd):
            self._phrase = None
            speech_end = self._mono_of(ev.speech_end_t)
            decided = self._mono_of(frame_end_t)
            if turn is not None and turn.phrase is phrase:
                turn.commit(speech_end, decided)
                self.speculations["committed"] += 1
            elif turn is None:
                self._start_turn(phrase, speculative=False).commit(speech_end, decided)
            else:
                # The agent holds the floor and this phrase was too short to take it:
                # a backchannel. It might still have been a real request: check its words.
                self._nursery_start(self._late_interruption, turn, phrase, speech_end, decided)

    def _nursery_start(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def _start_transcription(
        self, phrase: Phrase, index: int, pcm: np.ndarray, provisional: bool = False
    ) -> None:
        phrase.add_pending()
        self._nursery_start(self._transcribe_chunk, phrase, index, pcm, provisional)

    async def _transcribe_chunk(
        self, phrase: Phrase, index: int, pcm: np.ndarray, provisional: bool
    ) -> None:
        generation = phrase.provisional_generation
        try:
            text = await self._transcribe(pcm)
        except Exception as exc:
            self.log.error("stt failed on chunk %d: %s", index, exc)
            text = ""
        if provisional:
            phrase.resolve_provisional(index, text, generation)
        else:
            phrase.resolve(index, text)

    def _start_turn(self, phrase: Phrase, *, speculative: bool) -> Turn:
        self.turns += 1
        turn = Turn(
            number=self.turns,
            phrase=phrase,
            gate=Gate(self.player, is_open=not speculative),
            speculative=speculative,
        )
        turn.legs.speculative = speculative
        if speculative:
            self.speculations["started"] += 1
        self._turn = turn
        self._nursery_start(self._run_turn, turn)
        return turn

    # -- interruptions --------------------------------------------------------------------
    def _check_interruption(self, phrase: Phrase) -> None:
        """Caller speech while an earlier turn is thinking or speaking may take the floor."""
        turn = self._turn
        s = self.settings
        # Speech time is summed frame by frame: allow for float error at the threshold.
        if phrase.speech_seconds < s.barge_in_min_speech_seconds - 1e-6:
            return
        if turn is None:
            if s.barge_in and self.player.speaking and not self._closing and not phrase.word_check:
                # Talking over the greeting: stop it and listen (the phrase becomes a turn).
                phrase.word_check = True
                self.log.info("caller spoke over a fixed line: stopping it")
                self._nursery_start(self.player.clear)
            return
        if turn.phrase is phrase or not turn.committed.is_set():
            return
        if not s.barge_in and self.player.speaking:
            return
        if s.barge_in_min_words > 0:
            if not phrase.word_check:
                phrase.word_check = True
                self._nursery_start(self._confirm_interruption, turn, phrase)
            return
        self._interrupt(turn, phrase)

    async def _confirm_interruption(self, turn: Turn, phrase: Phrase) -> None:
        """With ``barge_in_min_words``: interrupt only once the words are really there."""
        while self._turn is turn and self._phrase is phrase:
            heard = len(phrase.audio)
            text = await self._transcribe(phrase.audio_so_far())
            if self._turn is not turn or self._phrase is not phrase:
                return
            if len(words(text)) >= self.settings.barge_in_min_words and not (
                self.settings.barge_in_ignore_backchannels and is_backchannel(text)
            ):
                self._interrupt(turn, phrase)
                return
            while len(phrase.audio) < heard + 15 and self._phrase is phrase:
                await trio.sleep(0.1)  # re-check after ~0.3 s more of the caller's audio

    async def _late_interruption(
        self, turn: Turn, phrase: Phrase, speech_end: float, decided: float
    ) -> None:
        """A short phrase under the agent's speech: answer it only if it said something."""
        await phrase.settled()
        text = phrase.text()
        if not text or is_backchannel(text) or self._turn is not turn:
            self.log.info("heard %r while speaking: not an interruption", text)
            return
        if not self.settings.barge_in and self.player.speaking:
            return
        self._interrupt(turn, phrase)
        self._start_turn(phrase, speculative=False).commit(speech_end, decided)

    def _interrupt(self, turn: Turn, phrase: Phrase) -> None:
        """Barge-in: cancel the turn's scope (LLM, TTS, queued frames) and let it clear."""
        self.log.info(
            "barge-in: caller spoke %.2fs over turn %d", phrase.speech_seconds, turn.number
        )
        turn.interrupted = True
        turn.scope.cancel()
        self._turn = None

    # -- speaking -------------------------------------------------------------------------
    async def _run_turn(self, turn: Turn) -> None:
        legs = turn.legs
        try:
            with turn.scope:
                await turn.phrase.settled()
                text_ready = trio.current_time()
                caller_text = " ".join(
                    p for p in (self._carry_text, turn.phrase.text(with_provisional=True)) if p
                )
                turn.caller_text = caller_text
                if not caller_text or (
                    self._interrupted is not None
                    and self.settings.barge_in_ignore_backchannels
                    and is_backchannel(caller_text)
                ):
                    await turn.committed.wait()
                    if await self._resume_interrupted(turn):
                        return
                    self.log.info("turn %d: no words heard, not replying", turn.number)
                    self._end_turn(turn)
                    return
                reply = turn.reply = Reply(mark_prefix=f"t{turn.number}")
                try:
                    await speak_reply(
                        llm=self.llm,
                        tts=self.tts,
                        player=turn.gate,
                        messages=self._messages_for(caller_text),
                        settings=self.settings.reply,
                        previous_reply=self._previous_reply(),
                        reply=reply,
                        legs=legs,
                        on_first_frame=turn.on_first_frame,
                    )
                except TTSError as exc:
                    self.log.error("tts failed: %s", exc)
                    reply.error = str(exc)
                await turn.committed.wait()
                legs.stt_tail = max(0.0, text_ready - turn.decided_mono)
                self._interrupted = None
                self._carry_text = ""
                if not reply.sentences:  # the LLM failed or said nothing speakable
                    self._apologise(turn)
                await self._wait_played(reply.last_mark, len(reply.audio) / 8000)
        finally:
            with trio.CancelScope(shield=True):
                await self._finish_turn(turn)

    async def _finish_turn(self, turn: Turn) -> None:
        """Bookkeeping once a turn is over: history, call log, one log line."""
        self._end_turn(turn)
        reply, legs = turn.reply, turn.legs
        if reply is None or not turn.committed.is_set():
            return  # a discarded speculation: never heard, never stored
        if turn.first_frame_at is not None:
            legs.first_frame = turn.first_frame_at - turn.decided_mono
            legs.voice_to_voice = turn.first_frame_at - turn.speech_end_mono
        if turn.interrupted:
            if turn.first_frame_at is None:
                # Nothing was heard yet: the caller simply kept talking. Their words stay.
                self._carry_text = turn.caller_text
                self.log.info("turn %d: caller kept talking, reply dropped", turn.number)
                return
            if not self._closing:
                await self.player.clear()
            self._interrupted = (turn, trio.current_time())
        # Cut short by a barge-in or by the call ending: only what was heard counts.
        cut = turn.interrupted or self._closing
        spoken = reply.played_text(self.player) if cut else reply.text
        legs.interrupted = turn.interrupted or spoken != reply.text
        self.history.append({"role": "user", "content": turn.caller_text})
        self.history.append({"role": "assistant", "content": spoken or "..."})
        audio_path = self._store_audio(turn.number, reply.audio)
        with trio.CancelScope(shield=True):
            await self.sink.caller_turn(self.call_sid, turn.caller_text, turn.phrase.started_mono)
            await self.sink.agent_turn(
                self.call_sid, spoken, legs.interrupted, turn.speech_end_mono, legs, audio_path
            )
        self.log.info(
            "turn %d: caller=%r agent=%r%s | %s",
            turn.number,
            turn.caller_text,
            spoken,
            " [interrupted]" if legs.interrupted else "",
            legs.summary(),
        )
        self._last_activity = trio.current_time()

    def _end_turn(self, turn: Turn) -> None:
        if self._turn is turn:
            self._turn = None

    async def _resume_interrupted(self, turn: Turn) -> bool:
        """After a false barge-in (no words, or only "mm-hm"), pick the cut reply up again
        at the sentence that was cut, instead of leaving the caller in silence."""
        if self._interrupted is None or not self.settings.barge_in_ignore_backchannels:
            return False
        cut, at = self._interrupted
        self._interrupted = None
        if cut.reply is None or trio.current_time() - at > 10.0:
            return False
        rest = cut.reply.unplayed(self.player)
        if not rest:
            return False
        self.log.info(
            "turn %d: %r is not an interruption, resuming turn %d",
            turn.number,
            turn.caller_text,
            cut.number,
        )
        # The resumed sentences are this turn's reply: heard, interruptible and logged
        # like any other (_finish_turn stores them).
        resumed = turn.reply = Reply(mark_prefix=f"t{turn.number}r")
        for i, sentence in enumerate(rest, 1):
            mark = f"{resumed.mark_prefix}-s{i}"
            turn.gate.enqueue_audio(sentence.audio, turn.on_first_frame)
            turn.gate.enqueue_mark(mark)
            resumed.sentences.append(Spoken(mark, sentence.text, sentence.audio))
        await self._wait_played(resumed.last_mark, len(resumed.audio) / 8000)
        return True

    def _previous_reply(self) -> str:
        return next((m["content"] for m in reversed(self.history) if m["role"] == "assistant"), "")

    def _apologise(self, turn: Turn) -> None:
        """The pre-rendered apology: a dead LLM or TTS must not leave the caller in silence."""
        audio = self.canned.get("sorry")
        if audio is None or turn.reply is None:
            return
        mark = f"{turn.reply.mark_prefix}-sorry"
        turn.gate.enqueue_audio(audio, turn.on_first_frame)
        turn.gate.enqueue_mark(mark)
        turn.reply.sentences.append(Spoken(mark, FALLBACK_LINE, audio))

    def _messages_for(self, caller_text: str) -> list[dict[str, str]]:
        turns = self.settings.history_turns
        window = self.history[1:][-2 * turns :] if turns else []
        return [
            self.history[0],
            *window,
            {"role": "user", "content": f"{caller_text}\n{TURN_GUARDRAIL}"},
        ]

    async def _wait_played(self, last_mark: str | None, seconds: float) -> None:
        """Wait until Twilio echoes the reply's last mark, then ``clear`` as the seed does."""
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
            await self.player.clear()

    async def _say(self, text: str, tag: str) -> None:
        """Speak a fixed line (greeting, goodbye), from the cache when it was pre-rendered."""
        audio = self.canned.get(tag)
        try:
            if audio is None:
                chunks = bytearray()
                async for chunk in self.tts.stream_ulaw(text):
                    self.player.enqueue_audio(chunk)
                    chunks += chunk
                audio = bytes(chunks)
            else:
                self.player.enqueue_audio(audio)
        except TTSError as exc:
            self.log.error("tts failed for the %s: %s", tag, exc)
            return
        self.player.enqueue_mark(tag)
        self.log.info("agent says (%s): %r", tag, text)
        await self._wait_played(tag, len(audio) / 8000)
        self._last_activity = trio.current_time()
        heard = self.player.played(tag)
        with trio.CancelScope(shield=True):
            await self.sink.agent_line(self.call_sid, text, not heard)

    def _store_audio(self, turn_no: int, ulaw: bytes | bytearray) -> str | None:
        base = self.settings.store_audio_dir
        if base is None or not ulaw:
            return None
        path = base / self.call_sid / f"turn-{turn_no:03d}.wav"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_wav(path, ulaw_decode(bytes(ulaw)), 8000)
        except OSError as exc:
            self.log.error("could not store reply audio at %s: %s", path, exc)
            return None
        return str(path)

    # -- limits ---------------------------------------------------------------------------
    async def _watchdog(self) -> None:
        s = self.settings
        while True:
            now = trio.current_time()
            busy = self._turn is not None or self.player.speaking or self.endpointer.in_phrase
            if busy:
                self._last_activity = now
            if now - self.started_mono >= s.max_call_seconds:
                await self.hang_up(s.time_limit_line, "max_duration")
                return
            if now - self._last_activity >= s.max_silence_seconds:
                await self.hang_up(s.goodbye, "silence")
                return
            deadline = min(
                self._last_activity + s.max_silence_seconds,
                self.started_mono + s.max_call_seconds,
            )
            await trio.sleep_until(min(deadline, now + 0.5) if busy else deadline)

    async def hang_up(self, line: str, reason: str) -> None:
        """Say a last line, wait for it to play, and close the stream so the TwiML ends."""
        if self._closing:
            return
        self._closing = True
        self.end_reason = reason
        self.log.info("hanging up: %s", reason)
        if self._turn is not None:
            self._turn.scope.cancel()
        if self.player.speaking:
            await self.player.clear()
        if line:
            tag = {"silence": "goodbye", "max_duration": "time_limit"}.get(reason, "bye")
            await self._say(line, tag)
        await self.transport.close(1000, reason)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


def seconds_or_inf(value: float) -> float:
    """0 in the config means 'no limit'."""
    return math.inf if value <= 0 else value
