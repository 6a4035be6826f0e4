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

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import trio

from aicallerd.audio.mulaw import ulaw_decode
from aicallerd.audio.wav import write_wav
from aicallerd.call.lines import FALLBACK_LINE
from aicallerd.call.metrics import TurnLegs
from aicallerd.call.player import Player
from aicallerd.call.reply import Reply, ReplySettings, speak_reply
from aicallerd.endpointer import (
    ChunkReady,
    Endpointer,
    EndpointerSettings,
    PhraseEnd,
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
    store_audio_dir: Path | None
    handshake_timeout: float = 10.0
    player_lead: float = 0.08


class TurnSink(Protocol):
    """Where finished turns go (the call log and the latency window)."""

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


@dataclass
class _Phrase:
    """The caller's current utterance: chunk transcripts arriving out of band."""

    phrase_id: int
    texts: dict[int, str] = field(default_factory=dict)
    pending: int = 0
    started_mono: float = 0.0
    done: trio.Event = field(default_factory=trio.Event)

    def text(self) -> str:
        return " ".join(t for _, t in sorted(self.texts.items()) if t).strip()


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
        self._phrase: _Phrase | None = None
        self._turn_scope: trio.CancelScope | None = None
        self._turn_reply: Reply | None = None
        self._carry_text = ""
        self._last_activity = 0.0
        self._phrase_speech = 0.0  # seconds of speech in the caller's current phrase
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._audio_clock_offset = 0.0  # monotonic - audio time, from the latest frame
        self._dropped_frames = 0

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
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.player.run)
            nursery.start_soon(self._listen)
            nursery.start_soon(self._watchdog)
            if self.settings.greeting:
                nursery.start_soon(self._say, self.settings.greeting, "greeting")
            await self._receive_loop()
            nursery.cancel_scope.cancel()

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
            for ev in self.endpointer.feed(pcm, prob, t):
                self._on_endpoint_event(ev, t + len(pcm) / 8000)
            if self.endpointer.speaking:
                self._last_activity = trio.current_time()
                self._phrase_speech += len(pcm) / 8000
                self._check_interruption()

    def _on_endpoint_event(self, ev: object, frame_end_t: float) -> None:
        assert self._nursery is not None
        if isinstance(ev, SpeechStart):
            self._phrase = _Phrase(ev.phrase_id, started_mono=self._mono_of(ev.t))
            self._phrase_speech = 0.0
        elif isinstance(ev, ChunkReady):
            phrase = self._phrase
            if phrase is None or phrase.phrase_id != ev.phrase_id:
                return
            phrase.pending += 1
            self._nursery.start_soon(self._transcribe_chunk, phrase, ev.index, ev.pcm8)
        elif isinstance(ev, PhraseEnd):
            phrase = self._phrase
            self._phrase = None
            if phrase is None or phrase.phrase_id != ev.phrase_id:
                return
            speech_end_mono = self._mono_of(ev.speech_end_t)
            decided_mono = self._mono_of(frame_end_t)
            if self._turn_scope is not None:
                return  # the turn in flight keeps the floor; this was a backchannel
            self._nursery.start_soon(self._turn, phrase, speech_end_mono, decided_mono)

    async def _transcribe_chunk(self, phrase: _Phrase, index: int, pcm: np.ndarray) -> None:
        try:
            text = await self._transcribe(pcm)
        except Exception as exc:
            self.log.error("stt failed on chunk %d: %s", index, exc)
            text = ""
        phrase.texts[index] = text
        phrase.pending -= 1
        if phrase.pending == 0:
            phrase.done.set()

    def _check_interruption(self) -> None:
        """Enough caller speech while a turn is thinking or speaking takes the floor."""
        if self._turn_scope is None:
            return
        if not self.settings.barge_in and self.player.speaking:
            return
        if self._phrase_speech < self.settings.barge_in_min_speech_seconds:
            return
        self._turn_scope.cancel()
        self._turn_scope = None

    # -- speaking -------------------------------------------------------------------------
    async def _turn(self, phrase: _Phrase, speech_end_mono: float, decided_mono: float) -> None:
        legs = TurnLegs(endpoint_wait=decided_mono - speech_end_mono)
        self.turns += 1
        turn_no = self.turns
        with trio.CancelScope() as scope:
            self._turn_scope = scope
            first_frame = trio.Event()
            first_frame_at: list[float] = []
            reply: Reply | None = None
            caller_text = ""
            try:
                if phrase.pending:
                    await phrase.done.wait()
                legs.stt_tail = trio.current_time() - decided_mono
                caller_text = " ".join(p for p in (self._carry_text, phrase.text()) if p)
                if not caller_text:
                    self.log.info("turn %d: no words heard, not replying", turn_no)
                    return
                self._carry_text = ""
                previous = next(
                    (m["content"] for m in reversed(self.history) if m["role"] == "assistant"),
                    "",
                )
                messages = self._messages_for(caller_text)
                reply = Reply(mark_prefix=f"t{turn_no}")
                await speak_reply(
                    llm=self.llm,
                    tts=self.tts,
                    player=self.player,
                    messages=messages,
                    settings=self.settings.reply,
                    previous_reply=previous,
                    reply=reply,
                    legs=legs,
                    on_first_frame=first_frame,
                    first_frame_at=first_frame_at,
                )
                self._turn_reply = reply
                if not reply.sentences:  # the LLM failed or said nothing speakable
                    await self._apologise(reply)
                await self._wait_played(reply.last_mark, len(reply.audio) / 8000)
            except TTSError as exc:
                self.log.error("tts failed: %s", exc)
                if reply is not None:
                    reply.error = str(exc)
                    await self._apologise(reply)
                    await self._wait_played(reply.last_mark, len(reply.audio) / 8000)
        interrupted = scope.cancelled_caught or scope.cancel_called
        if self._turn_scope is scope:
            self._turn_scope = None
        if first_frame_at:
            legs.first_frame = first_frame_at[0] - decided_mono
            legs.voice_to_voice = first_frame_at[0] - speech_end_mono
        if reply is None or not caller_text:
            return
        if interrupted:
            if not first_frame_at:
                # Nothing was heard yet: the caller simply kept talking. Their words stay.
                self._carry_text = caller_text
                self.log.info("turn %d: caller kept talking, reply dropped", turn_no)
                return
            await self.player.clear()
        spoken = reply.played_text(self.player) if interrupted else reply.text
        legs.interrupted = interrupted
        self.history.append({"role": "user", "content": caller_text})
        self.history.append({"role": "assistant", "content": spoken or "..."})
        audio_path = self._store_audio(turn_no, reply.audio)
        with trio.CancelScope(shield=True):
            await self.sink.caller_turn(self.call_sid, caller_text, phrase.started_mono)
            await self.sink.agent_turn(
                self.call_sid, spoken, interrupted, speech_end_mono, legs, audio_path
            )
        self.log.info(
            "turn %d: caller=%r agent=%r%s | %s",
            turn_no,
            caller_text,
            spoken,
            " [interrupted]" if interrupted else "",
            legs.summary(),
        )
        self._last_activity = trio.current_time()

    async def _apologise(self, reply: Reply) -> None:
        """The pre-rendered apology: a dead LLM or TTS must not leave the caller in silence."""
        audio = self.canned.get("sorry")
        if audio is None:
            return
        mark = f"{reply.mark_prefix}-sorry"
        self.player.enqueue_audio(audio, on_sent=None)
        self.player.enqueue_mark(mark)
        reply.sentences.append((mark, FALLBACK_LINE))
        reply.audio += audio

    def _messages_for(self, caller_text: str) -> list[dict[str, str]]:
        window = (
            self.history[1:][-2 * self.settings.history_turns :]
            if self.settings.history_turns
            else []
        )
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
            busy = self._turn_scope is not None or self.player.speaking or self.endpointer.in_phrase
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
        if self._turn_scope is not None:
            self._turn_scope.cancel()
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
