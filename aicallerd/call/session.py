"""One phone call's I/O shell: it carries out what the conversation core decides.

:class:`CallSession` owns one nursery; every task of the call is its child, so a hang-up
ends them all. The decisions live in :class:`~aicallerd.call.conversation.Conversation`;
this module only feeds it and acts:

- the receiver (the task that calls :meth:`CallSession.run`): parses Twilio frames, hands
  audio to the listener, marks to the player, keys to the core;
- ``_listen``: VAD off the event loop, then the core, frame by frame;
- the player's sender (:meth:`Player.run`): the only writer of the socket, including
  ``clear`` and the close;
- one ``_reply`` task per turn, inside that turn's cancel scope (the one a barge-in cancels);
- ``_transcribe`` tasks, ``_say`` for fixed lines, ``_timer`` for the core's limits;
- ``_recorder``: writes finished turns to the call log in order, and finishes after a
  hang-up so nothing already spoken is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np
import trio

from aicallerd.audio.mulaw import ulaw_decode, ulaw_decode_frames, ulaw_decode_rms
from aicallerd.audio.wav import write_wav
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
    StartReply,
    Transcribe,
    WarmPrompt,
)
from aicallerd.call.conversation import Conversation
from aicallerd.call.metrics import TurnLegs
from aicallerd.call.player import Player, Transport
from aicallerd.call.settings import CallSettings
from aicallerd.call.speaker import ReplyRun, Speaker
from aicallerd.call.ticker import Ticker
from aicallerd.engines.affinity import LEASE, SlotLease
from aicallerd.logs import call_logger
from aicallerd.twilio import media
from aicallerd.vad import probabilities

log = logging.getLogger("aicallerd.call")
QUIET_BATCH_SECONDS = 0.2  # how long a quiet call's frames may wait to be read together
WARM_SECONDS = 10.0  # for the LLM server to take the next turn's prompt into its cache
VAD_LIMITER = trio.CapacityLimiter(1)  # one VAD worker for every call: frames batch up behind it

__all__ = ["CallSession", "CallSettings", "Transport", "TurnSink"]


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
        llm: Any,
        tts: Any,
        vad_factory: Callable[[], Any],
        verify_start: Callable[[media.Start], Awaitable[bool]],
        sink: TurnSink,
        canned: dict[str, bytes] | None = None,
        quiet_ticker: Ticker | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self._transcribe_fn = transcribe
        self.llm = llm
        # Only a server we run ourselves is asked to evaluate a prompt ahead of time.
        self._warm_prompt: Callable[[list[dict[str, str]]], Awaitable[None]] | None = getattr(
            llm, "warm_prompt", None
        )
        self._warming: trio.CancelScope | None = None
        self.tts = tts
        self._verify_start = verify_start
        self.sink = sink
        self.canned = dict(canned or {})
        self.call_sid = ""
        self.log: logging.LoggerAdapter = logging.LoggerAdapter(log, {})
        self.core = Conversation(settings)
        self.player = Player(
            transport, lead=settings.player_lead, write_timeout=settings.media_timeout
        )
        self.speaker = Speaker(self.player, llm=llm, tts=tts, canned=self.canned, settings=settings)
        self.ended = trio.Event()
        self._runs: dict[int, ReplyRun] = {}
        self._transcriptions: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._records: trio.MemorySendChannel[Callable[[], Awaitable[None]]] | None = None
        self._frames_in, self._frames_out = trio.open_memory_channel[
            tuple[np.ndarray, float, float, float]
        ](500)
        self._vad = vad_factory()
        self._gate = settings.endpointer.min_speech_rms_threshold
        self._listener_idle = True  # nothing queued for the listener: quiet frames skip it
        # Shared by every call of a daemon: their quiet reads wake together, on one timer.
        self._quiet_ticker = quiet_ticker or Ticker(QUIET_BATCH_SECONDS)
        self._dropped_frames = 0
        self._hang_up_request: tuple[str, str] | None = None
        self._retime = trio.Event()  # the core's next_tick may have moved earlier

    # -- what the tests and the operator read ----------------------------------------------
    @property
    def history(self) -> list[dict[str, str]]:
        return self.core.history

    @property
    def speculations(self) -> dict[str, int]:
        return self.core.speculations

    @property
    def end_reason(self) -> str:
        return self.core.end_reason

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
            self.settings = self.speaker.settings = dataclasses.replace(
                self.settings, greeting=greeting
            )
            self.canned.pop("greeting", None)
            if greeting and greeting_audio:
                self.canned["greeting"] = greeting_audio
        if prompt:
            self.core.add_prompt(prompt)

    def request_hang_up(self, line: str, reason: str) -> None:
        """Ask the call to say ``line`` and end; the call's own tasks carry it out."""
        if self.ended.is_set():
            return
        if self._nursery is None:
            self._hang_up_request = (line, reason)
            return
        self._act(self.core.hang_up(line, reason))

    # -- lifecycle -------------------------------------------------------------------------
    async def handshake(self) -> media.Start | None:
        """Wait for ``connected``/``start``; refuse a start without this call's token and
        close on anything else, before any of the call's state is built."""
        with trio.move_on_after(self.settings.handshake_timeout):
            while True:
                try:
                    event = media.parse_inbound(await self.transport.receive())
                except media.MediaProtocolError as exc:
                    log.warning("stream closed: malformed frame before start: %s", exc)
                    await self.transport.close(1008, "malformed")
                    return None
                except Exception as exc:  # the socket went away before start
                    log.info("stream closed before start: %s", exc.__class__.__name__)
                    return None
                if isinstance(event, media.Connected):
                    continue
                if not isinstance(event, media.Start):
                    log.warning("stream closed: %s before start", type(event).__name__.lower())
                    await self.transport.close(1008, "expected start")
                    return None
                if not await self._verify_start(event):
                    log.warning(
                        "[%s] stream refused: bad or missing token in start", event.call_sid
                    )
                    await self.transport.close(1008, "invalid token")
                    return None
                return event
        log.warning("stream closed: no start event within %.0fs", self.settings.handshake_timeout)
        await self.transport.close(1008, "no start")
        return None

    async def run(self, start: media.Start) -> None:
        """Run the call until Twilio stops the stream or we hang up."""
        self.call_sid = start.call_sid
        self.player.stream_sid = start.stream_sid
        self.log = self.speaker.log = call_logger(self.call_sid)
        self.log.info("call started (stream %s)", start.stream_sid)
        records_in, records_out = trio.open_memory_channel[Callable[[], Awaitable[None]]](math.inf)
        self._records = records_in
        lease = SlotLease()  # the call's own LLM slot, for every task it starts
        lease_set = LEASE.set(lease)
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._recorder, records_out)
                async with records_in, trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._sender)
                    nursery.start_soon(self._listen)
                    nursery.start_soon(self._timer)
                    self._act(self.core.begin(trio.current_time(), self.settings.greeting))
                    if self._hang_up_request is not None:
                        self._act(self.core.hang_up(*self._hang_up_request))
                    await self._receive_loop()
                    self.core.stream_ended(trio.current_time())
                    nursery.cancel_scope.cancel()
                self._nursery = None
        finally:
            lease.close()
            LEASE.reset(lease_set)
            self._nursery = None
            self.ended.set()

    async def _receive_loop(self) -> None:
        timeout = self.settings.media_timeout
        last = trio.current_time()
        async with self._frames_in:
            while True:
                # One deadline per media_timeout rather than one per frame (arming a cancel
                # scope costs more than the rest of a quiet frame): frames only move `last`,
                # and a deadline that fires early is set again from it.
                with trio.move_on_at(last + timeout):
                    while True:
                        try:
                            # Everything already read comes together: quiet frames are
                            # then decoded and fed to the core as one span.
                            raws = [await self.transport.receive()]
                            while self.transport.buffered():
                                raws.append(await self.transport.receive())
                        except Exception as exc:  # the socket went away under us
                            self.log.info("stream closed: %s", exc.__class__.__name__)
                            return
                        last = trio.current_time()
                        if not self._on_frames(raws):
                            return
                        if self._only_listening() and not self.transport.buffered():
                            # A quiet, idle call is read a few frames per wakeup, not one:
                            # with hundreds held, per-frame wakeups were most of their cost.
                            # Its caller's first sound waits at most this long.
                            await self._quiet_ticker.wait()
                if trio.current_time() - last >= timeout:
                    self.log.warning("no frame from Twilio for %gs: ending the call", timeout)
                    self.core.hang_up("", "media_timeout")
                    return

    def _only_listening(self) -> bool:
        return (
            self._listener_idle
            and not self._runs
            and not self._transcriptions
            and not self.player.playing
            and self.core.listening
        )

    def _on_frames(self, raws: list[str | bytes]) -> bool:
        """Act on frames from Twilio, in order; False once the stream is over."""
        run: list[media.Media] = []  # caller audio not yet acted on
        for raw in raws:
            try:
                event = media.parse_inbound(raw)
            except media.MediaProtocolError as exc:
                self.log.warning("ignoring malformed frame: %s", exc)
                continue
            if type(event) is media.Media:
                if event.payload and event.track in ("inbound", "inbound_track", ""):
                    run.append(event)
                continue
            if run:
                self._on_media(run)
                run = []
            if isinstance(event, media.Mark):
                self.player.on_mark(event.name)
            elif isinstance(event, media.Dtmf):
                self._act(self.core.dtmf(event.digit, trio.current_time()))
                self._retime.set()  # the keys' pause is a new, earlier deadline
            elif isinstance(event, media.Stop):
                self.log.info("stream stopped by Twilio")
                return False
            else:
                self.log.warning("ignoring %s after start", type(event).__name__.lower())
        if run:
            self._on_media(run)
        return True

    def _on_media(self, events: list[media.Media]) -> None:
        """Caller audio, in order: quiet stretches go to the core in one piece."""
        size = len(events[0].payload)
        if len(events) == 1 or any(len(e.payload) != size for e in events):
            for event in events:
                pcm, level = ulaw_decode_rms(event.payload)
                self._on_audio(pcm, level, event.timestamp_ms, trio.current_time())
            return
        pcm, levels = ulaw_decode_frames(b"".join([e.payload for e in events]), size)
        gate, now, ms = self._gate, trio.current_time(), size // 8
        i, n = 0, len(events)
        while i < n:
            j = i + 1
            if self._listener_idle and self.core.listening:
                # Silence or line noise while nothing is going on: the endpointer only
                # keeps it as lead-in, so a contiguous stretch is one frame to it.
                while (
                    j < n
                    and levels[j - 1] < gate
                    and levels[j] < gate
                    and events[j].timestamp_ms == events[j - 1].timestamp_ms + ms
                ):
                    j += 1
            level = max(levels[i:j])
            self._on_audio(pcm[i * size : j * size], level, events[i].timestamp_ms, now)
            i = j

    def _on_audio(self, pcm: np.ndarray, level: float, timestamp_ms: int, now: float) -> None:
        t = timestamp_ms / 1000.0
        if level < self._gate and self._listener_idle:
            # Most frames of most calls (silence, line noise) need no inference: with nothing
            # queued ahead of them they go straight to the core, skipping the listener task.
            self._vad.skip(len(pcm))
            self._act(self.core.audio(pcm, 0.0, t, now, self.player.speaking, level))
            return
        self._listener_idle = False  # frames after this one queue behind it, in order
        try:
            self._frames_in.send_nowait((pcm, t, now, level))
        except trio.WouldBlock:
            self._dropped_frames += 1
            if self._dropped_frames in (1, 100, 1000):
                self.log.warning("listener behind: %d caller frames dropped", self._dropped_frames)

    # -- carrying out the core's actions -------------------------------------------------------
    def _act(self, actions: list[Action]) -> None:
        """Carry out the core's decisions, in order, without blocking."""
        nursery = self._nursery
        for action in actions:
            if isinstance(action, Transcribe):
                assert nursery is not None
                nursery.start_soon(self._transcribe, action.job, action.pcm)
            elif isinstance(action, CancelTranscription):
                if (scope := self._transcriptions.get(action.job)) is not None:
                    scope.cancel()
            elif isinstance(action, StartReply):
                assert nursery is not None
                if self._warming is not None:  # the reply needs the server's slot now
                    self._warming.cancel()
                run = self._runs[action.turn] = self.speaker.new_run(
                    action.turn, speculative=action.speculative
                )
                nursery.start_soon(self._reply, run, action.messages)
            elif isinstance(action, CommitReply):
                if (run := self._runs.get(action.turn)) is not None:
                    run.commit(action.speech_end, action.decided)
            elif isinstance(action, CancelReply):
                if (run := self._runs.get(action.turn)) is not None:
                    run.cancel()
            elif isinstance(action, Clear):
                self.player.clear()
            elif isinstance(action, Replay):
                assert nursery is not None
                nursery.start_soon(self._replay, action)
            elif isinstance(action, SayLine):
                assert nursery is not None
                nursery.start_soon(self._say, action.tag, action.text)
            elif isinstance(action, Record):
                raise AssertionError("a Record comes only from reply_done")
            elif isinstance(action, RecordCaller):
                self._record_caller(action)
            elif isinstance(action, Close):
                self.player.close(1000, action.reason)
            elif isinstance(action, WarmPrompt):
                if self._warm_prompt is not None:
                    assert nursery is not None
                    nursery.start_soon(self._warm, action.messages)
            elif isinstance(action, Note):
                self.log.info("%s", action.message)

    # -- listening -----------------------------------------------------------------------------
    async def _listen(self) -> None:
        """VAD in a worker thread, a batch of whatever frames arrived meanwhile at a time."""
        vad, gate = self._vad, self._gate
        async with self._frames_out:
            async for first in self._frames_out:
                self._listener_idle = False
                batch = [first]
                while True:
                    try:
                        batch.append(self._frames_out.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                frames = [pcm for pcm, _, _, _ in batch]
                levels = [level for _, _, _, level in batch]
                if vad.in_thread and max(levels) >= gate:
                    probs = await trio.to_thread.run_sync(
                        probabilities, vad, frames, levels, gate, limiter=VAD_LIMITER
                    )
                else:
                    probs = probabilities(vad, frames, levels, gate)
                for (pcm, t, arrived, level), prob in zip(batch, probs, strict=True):
                    actions = self.core.audio(pcm, prob, t, arrived, self.player.speaking, level)
                    self._act(actions)
                self._listener_idle = not self._frames_out.statistics().current_buffer_used

    async def _warm(self, messages: tuple[dict[str, str], ...]) -> None:
        """Best effort: a failed or slow warm-up costs the next turn nothing but the saving."""
        assert self._warm_prompt is not None
        if self._warming is not None:
            self._warming.cancel()
        with trio.CancelScope() as scope:
            self._warming = scope
            scope.deadline = trio.current_time() + WARM_SECONDS
            try:
                await self._warm_prompt([dict(m) for m in messages])
            except Exception as exc:
                self.log.debug("prompt warm-up failed: %s", exc)
        if self._warming is scope:
            self._warming = None

    async def _transcribe(self, job: int, pcm: np.ndarray) -> None:
        text, failed = "", True
        with trio.CancelScope() as self._transcriptions[job]:
            try:
                with trio.fail_after(self.settings.transcribe_seconds):
                    text, failed = await self._transcribe_fn(pcm), False
            except trio.TooSlowError:
                self.log.error("stt: no transcript within %gs", self.settings.transcribe_seconds)
            except Exception as exc:
                self.log.error("stt failed: %s", exc)
        cancelled = self._transcriptions.pop(job).cancelled_caught
        if not cancelled:
            now = trio.current_time()
            self._act(self.core.transcribed(job, text, now, failed=failed))

    # -- speaking ------------------------------------------------------------------------------
    async def _reply(self, run: ReplyRun, messages: tuple[dict[str, str], ...]) -> None:
        previous = [m["content"] for m in self.core.history if m["role"] == "assistant"]
        try:
            await self.speaker.reply(run, messages, previous)
        finally:
            self._finish(run)

    async def _replay(self, action: Replay) -> None:
        run = self._runs[action.turn] = self.speaker.new_run(action.turn, speculative=False)
        run.gate.open()
        try:
            await self.speaker.replay(run, action.sentences)
        finally:
            self._finish(run)

    async def _say(self, tag: str, text: str) -> None:
        heard = False
        try:
            heard = await self.speaker.say(tag, text)
        finally:
            sid = self.call_sid

            async def write() -> None:
                await self.sink.agent_line(sid, text, not heard)

            self._queue_record(write)
            self._act(self.core.line_done(tag, trio.current_time()))

    def _finish(self, run: ReplyRun) -> None:
        """Tell the core how the reply ended; it decides what is recorded."""
        self._runs.pop(run.number, None)
        reply, legs = run.reply, run.legs
        if run.first_frame_at is not None and run.committed.is_set():
            legs.first_frame = run.first_frame_at - run.decided
            legs.voice_to_voice = run.first_frame_at - run.speech_end
        outcome = ReplyOutcome(
            text=reply.text,
            heard=reply.played_text(self.player),
            unplayed=reply.unplayed(self.player),
            audio_started=run.first_frame_at is not None,
        )
        actions = self.core.reply_done(run.number, outcome, trio.current_time())
        for action in actions:
            if isinstance(action, Record):
                self._record(run, action)
        self._act([a for a in actions if not isinstance(a, Record)])

    def _record(self, run: ReplyRun, action: Record) -> None:
        run.legs.interrupted = action.interrupted
        reply = run.reply
        audio = reply.played_audio(self.player) if action.interrupted else reply.audio
        audio_path = self._store_audio(action.turn, audio)
        sid, log = self.call_sid, self.log

        async def write() -> None:
            await self.sink.caller_turn(sid, action.caller_text, action.caller_started)
            await self.sink.agent_turn(
                sid, action.agent_text, action.interrupted, run.speech_end, run.legs, audio_path
            )
            # Logged once it is in the call log: the journal never shows a turn the log lacks.
            log.info(
                "turn %d: caller=%r agent=%r%s | %s",
                action.turn,
                action.caller_text,
                action.agent_text,
                " [interrupted]" if action.interrupted else "",
                run.legs.summary(),
            )

        self._queue_record(write)

    def _record_caller(self, action: RecordCaller) -> None:
        """A caller turn the agent answered with a fixed line: the log has it before the line."""
        sid, log = self.call_sid, self.log

        async def write() -> None:
            await self.sink.caller_turn(sid, action.text, action.caller_started)
            log.info("caller=%r (answered with a fixed line)", action.text)

        self._queue_record(write)

    def _queue_record(self, write: Callable[[], Awaitable[None]]) -> None:
        assert self._records is not None
        self._records.send_nowait(write)

    async def _recorder(self, writes: trio.MemoryReceiveChannel[Any]) -> None:
        """The call log in order; runs on after a hang-up until every write is done."""
        async with writes:
            async for write in writes:
                with trio.CancelScope(shield=True):
                    await write()

    def _store_audio(self, turn_no: int, ulaw: bytes) -> str | None:
        base = self.settings.store_audio_dir
        if base is None or not ulaw:
            return None
        path = base / self.call_sid / f"turn-{turn_no:03d}.wav"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_wav(path, ulaw_decode(ulaw), 8000)
        except OSError as exc:
            self.log.error("could not store reply audio at %s: %s", path, exc)
            return None
        return str(path)

    # -- the sender and the limits -------------------------------------------------------------
    async def _sender(self) -> None:
        """The player's sender; once the stream is closed (or gone) the call is over."""
        try:
            await self.player.run()
        except trio.TooSlowError:
            self.log.warning(
                "Twilio read nothing for %gs: ending the call", self.settings.media_timeout
            )
            self.core.hang_up("", "media_timeout")
        except Exception as exc:
            self.log.info("stream closed while sending: %s", exc.__class__.__name__)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _timer(self) -> None:
        while not self.core.closing:
            with trio.move_on_at(self.core.next_tick()):
                await self._retime.wait()
            self._retime = trio.Event()
            self._act(self.core.tick(trio.current_time(), self.player.speaking))
