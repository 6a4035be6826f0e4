"""One CallSession entirely in memory, driven by the product's own Twilio stand-in.

Everything runs under ``trio.testing.MockClock(autojump_threshold=0)``: the stand-in's
20 ms clock, the session's player and watchdog, and the fake engines' latencies are all in
virtual time, so a test of many seconds of call runs in a fraction of a second, and every
time it measures is exact to the frame.

- Caller audio is synthetic: each word of :data:`WORDS` is a tone at its own frequency, and
  :class:`FakeSTT` maps each loud segment's dominant frequency back to its word. Speech is
  detected by the real :class:`~aicallerd.vad.RmsVad` and the real endpointer.
- :class:`FakeLLM` streams scripted replies token by token and records every request;
  :class:`FakeTTS` renders each sentence as a tone whose length follows the text, and
  remembers which audio belongs to which text so the test can tell what was sent.
- :class:`MemoryTransport` (the session's socket) and :class:`FakeWebSocket` (the stand-in's)
  are the two ends of one pair of memory channels; both ends log what they send.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import math
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import trio
import trio.testing
from trio_websocket import CloseReason, ConnectionClosed

from aicallerctl.testcall import CallResult, StandInCall, TurnResult, Utterance
from aicallerd.audio.mulaw import ulaw_decode, ulaw_encode
from aicallerd.call.metrics import TurnLegs
from aicallerd.call.session import CallSession
from aicallerd.call.settings import CallSettings, ReplySettings
from aicallerd.endpointer import EndpointerSettings
from aicallerd.engines.deadline import DUE
from aicallerd.engines.llm import LLMError
from aicallerd.engines.tts import TTSError
from aicallerd.twilio import media
from aicallerd.vad import RmsVad
from bench.frames import RecordingBuffer

SR = 8000
FRAME_SECONDS = 0.02
CALL_SID = "CA" + "0" * 32
STREAM_SID = "MZ" + "1" * 32
ACCOUNT_SID = "AC" + "2" * 32
REAL_TIME_GUARD_SECONDS = 60.0  # one call takes well under a second of real time

# -- synthetic caller speech ------------------------------------------------------------------

WORDS: dict[str, tuple[float, float]] = {
    # word: (tone Hz, seconds); all lengths are whole 20 ms frames
    "w1": (400.0, 0.30),
    "w2": (550.0, 0.26),
    "w3": (700.0, 0.36),
    "w4": (850.0, 0.32),
    "w5": (1000.0, 0.28),
    "w6": (1150.0, 0.34),
    "w7": (1300.0, 0.30),
    "yeah": (1750.0, 0.30),
    "goodbye": (1450.0, 0.36),  # a closing: the call ends after the farewell line
}
WORD_GAP = 0.1  # between words of one utterance: far below chunk_silence_seconds
CALLER_AMPLITUDE = 8000.0
LOUD_RMS = 300.0  # the fake STT's segment threshold, and the RmsVad threshold
MATCH_HZ = 40.0


def tone(hz: float, seconds: float, amplitude: float) -> np.ndarray:
    """A sine tone as int16, ``seconds`` rounded to whole samples."""
    t = np.arange(round(seconds * SR)) / SR
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def gap(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.int16)


def speech(*items: str | float) -> np.ndarray:
    """Caller audio: words from :data:`WORDS`, floats are silences.

    Consecutive words are joined by :data:`WORD_GAP`; ``speech("w1", 0.4, "w2")`` puts a
    0.4 s pause between them instead.
    """
    parts: list[np.ndarray] = []
    previous_was_word = False
    for item in items:
        if isinstance(item, str):
            if previous_was_word:
                parts.append(gap(WORD_GAP))
            hz, seconds = WORDS[item]
            parts.append(tone(hz, seconds, CALLER_AMPLITUDE))
            previous_was_word = True
        else:
            parts.append(gap(item))
            previous_was_word = False
    return np.concatenate(parts) if parts else gap(0)


def _dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=16384))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum)) * SR / 16384


def decode_words(pcm8: np.ndarray) -> str:
    """The words in synthetic caller audio: one per loud segment, by its tone."""
    x = np.asarray(pcm8, dtype=np.float64)
    block = 80
    n = len(x) // block
    if n == 0:
        return ""
    rms = np.sqrt(np.mean(x[: n * block].reshape(n, block) ** 2, axis=1))
    loud = rms >= LOUD_RMS
    out: list[str] = []
    i = 0
    while i < n:
        if not loud[i]:
            i += 1
            continue
        j = i
        while j < n and loud[j]:
            j += 1
        if j - i >= 2:
            hz = _dominant_hz(x[i * block : j * block])
            word, (word_hz, _) = min(WORDS.items(), key=lambda kv: abs(kv[1][0] - hz))
            if abs(word_hz - hz) <= MATCH_HZ:
                out.append(word)
        i = j
    return " ".join(out)


# -- fake engines ----------------------------------------------------------------------------


class FakeSTT:
    """Transcribes synthetic speech after ``delay`` seconds of virtual time."""

    def __init__(self, delay: float = 0.03) -> None:
        self.delay = delay
        self.results: list[str] = []

    async def transcribe(self, pcm8: np.ndarray) -> str:
        await trio.sleep(self.delay)
        text = decode_words(pcm8)
        self.results.append(text)
        return text


@dataclass
class LLMRequest:
    """One ``stream_chat`` call as the LLM saw it."""

    messages: list[dict[str, str]]
    at: float
    temperature: float = 0.0
    outcome: str = "running"  # done | cancelled | failed
    tokens_read: int = 0  # tokens the reply consumed before it finished or closed the stream

    @property
    def caller_text(self) -> str:
        """The caller's words in the last user message."""
        return self.messages[-1]["content"]


class FakeLLM:
    """Streams a scripted reply for the caller's text, one word-token at a time.

    ``replies`` maps caller text to the reply (default: "I heard <text>."), or to a list of
    replies for successive requests (the last one repeats); caller texts in ``fail_on``
    raise :class:`LLMError` before the first token.
    """

    def __init__(
        self,
        replies: Mapping[str, str | list[str]] | None = None,
        *,
        first_token_delay: float = 0.05,
        token_delay: float = 0.01,
        fail_on: Sequence[str] = (),
        stall_on: Mapping[str, int] | None = None,
    ) -> None:
        self.replies = dict(replies or {})
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.fail_on = set(fail_on)
        # caller text -> tokens sent before the stream stalls forever (a hung server)
        self.stall_on = dict(stall_on or {})
        self.requests: list[LLMRequest] = []

    def reply_for(self, caller_text: str) -> str:
        reply = self.replies.get(caller_text, f"I heard {caller_text}.")
        if isinstance(reply, str):
            return reply
        asked = sum(r.caller_text == caller_text for r in self.requests)
        return reply[min(asked, len(reply)) - 1]

    async def stream_chat(
        self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        request = LLMRequest([dict(m) for m in messages], trio.current_time(), temperature)
        self.requests.append(request)
        try:
            await trio.sleep(self.first_token_delay)
            if request.caller_text in self.fail_on:
                request.outcome = "failed"
                raise LLMError("scripted failure", status=500)
            stall_at = self.stall_on.get(request.caller_text)
            for i, token in enumerate(re.findall(r"\s*\S+", self.reply_for(request.caller_text))):
                if i:
                    await trio.sleep(self.token_delay)
                if i == stall_at:
                    await trio.sleep_forever()
                request.tokens_read += 1
                yield token
            request.outcome = "done"
        except trio.Cancelled:
            request.outcome = "cancelled"
            raise


class FakeTTS:
    """Renders text as a tone, ``seconds_per_char`` long per character, after ``delay``.

    Every rendering is unique to its text and kept in :attr:`rendered` (audio -> text).
    """

    def __init__(
        self,
        *,
        seconds_per_char: float = 0.05,
        delay: float = 0.03,
        fail_on: Sequence[str] = (),
    ) -> None:
        self.seconds_per_char = seconds_per_char
        self.delay = delay
        self.fail_on = set(fail_on)  # texts whose synthesis drops like a cut stream
        self.requests: list[str] = []
        self.dues: list[float | None] = []  # deadline.DUE of each request
        self.rendered: dict[bytes, str] = {}
        self._by_text: dict[str, bytes] = {}

    def audio_for(self, text: str) -> bytes:
        """The mu-law audio for ``text``: whole 20 ms frames, deterministic, never shared."""
        if text in self._by_text:
            return self._by_text[text]
        frames = max(1, round(len(text) * self.seconds_per_char / FRAME_SECONDS))
        hz = 500.0 + zlib.crc32(text.encode()) % 2500
        while True:
            audio = ulaw_encode(tone(hz, frames * FRAME_SECONDS, 6000.0))
            if audio not in self.rendered:
                break
            hz += 7.0
        self.rendered[audio] = text
        self._by_text[text] = audio
        return audio

    def seconds_for(self, text: str) -> float:
        return len(self.audio_for(text)) / SR

    async def stream_ulaw(self, text: str) -> AsyncIterator[bytes]:
        self.requests.append(text)
        self.dues.append(DUE.get())
        await trio.sleep(self.delay)
        if text in self.fail_on:
            raise TTSError("scripted failure: stream cut", status=None)
        yield self.audio_for(text)


def canned_lines() -> dict[str, bytes]:
    """Pre-rendered fixed lines, each a distinct tone of whole frames."""
    return {
        "sorry": ulaw_encode(tone(3100.0, 1.0, 5000.0)),
        "goodbye": ulaw_encode(tone(3300.0, 0.8, 5000.0)),
        "time_limit": ulaw_encode(tone(3500.0, 0.6, 5000.0)),
        "farewell": ulaw_encode(tone(3700.0, 0.7, 5000.0)),
        "hold": ulaw_encode(tone(3900.0, 0.5, 5000.0)),
    }


# -- call log --------------------------------------------------------------------------------


@dataclass
class AgentTurn:
    text: str
    interrupted: bool
    started_at: float
    legs: TurnLegs
    at: float


@dataclass
class CallerTurn:
    text: str
    started_at: float
    at: float


class FakeSink:
    """The call log: records every turn the session stores."""

    def __init__(self, notify: Callable[[], None]) -> None:
        self.caller_turns: list[CallerTurn] = []
        self.agent_turns: list[AgentTurn] = []
        self.agent_lines: list[tuple[str, bool]] = []
        self._notify = notify

    async def agent_line(self, call_sid: str, text: str, interrupted: bool) -> None:
        assert call_sid == CALL_SID
        self.agent_lines.append((text, interrupted))
        self._notify()

    async def caller_turn(self, call_sid: str, text: str, started_at: float) -> None:
        assert call_sid == CALL_SID
        self.caller_turns.append(CallerTurn(text, started_at, trio.current_time()))
        self._notify()

    async def agent_turn(
        self,
        call_sid: str,
        text: str,
        interrupted: bool,
        started_at: float,
        legs: TurnLegs,
        audio_path: str | None,
    ) -> None:
        assert call_sid == CALL_SID
        turn = AgentTurn(text, interrupted, started_at, legs, trio.current_time())
        self.agent_turns.append(turn)
        self._notify()


# -- the socket ------------------------------------------------------------------------------


class StreamClosed(Exception):
    """The session's receive() on a stream the stand-in has hung up."""


@dataclass
class Sent:
    """One frame on the wire, stamped with the virtual time it was sent."""

    t: float
    raw: str | bytes


@dataclass
class Outbound:
    t: float
    event: media.OutboundMessage


class Link:
    """The two directions of one in-memory stream, logged, with a change notifier."""

    def __init__(self) -> None:
        self.to_session_send, self.to_session_receive = trio.open_memory_channel[str | bytes](
            math.inf
        )
        self.to_twilio_send, self.to_twilio_receive = trio.open_memory_channel[str](math.inf)
        self.inbound: list[Sent] = []  # stand-in -> session, raw
        self.outbound: list[Outbound] = []  # session -> stand-in, parsed
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_at: float | None = None
        self._changed = trio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


class MemoryTransport:
    """The session's end: receive/send/close like the daemon's WebSocket."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def buffered(self) -> int:
        return self.link.to_session_receive.statistics().current_buffer_used

    async def receive(self) -> str | bytes:
        try:
            return await self.link.to_session_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StreamClosed("the stand-in hung up") from None

    async def send(self, data: str) -> None:
        link = self.link
        if link.close_code is not None:
            raise StreamClosed("send after close")
        link.outbound.append(Outbound(trio.current_time(), media.parse_outbound(data)))
        await link.to_twilio_send.send(data)
        link.notify()

    async def close(self, code: int, reason: str = "") -> None:
        link = self.link
        if link.close_code is None:
            link.close_code, link.close_reason = code, reason
            link.closed_at = trio.current_time()
            link.to_twilio_send.close()
            link.notify()


class FakeWebSocket:
    """The stand-in's end, shaped like trio_websocket's connection."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def _closed(self) -> ConnectionClosed:
        return ConnectionClosed(CloseReason(self.link.close_code or 1000, self.link.close_reason))

    async def send_message(self, message: str | bytes) -> None:
        link = self.link
        if link.close_code is not None:
            raise self._closed()
        link.inbound.append(Sent(trio.current_time(), message))
        try:
            await link.to_session_send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed() from None
        link.notify()

    async def get_message(self) -> str:
        try:
            return await self.link.to_twilio_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed() from None

    async def aclose(self) -> None:
        self.link.to_session_send.close()


# -- settings and the harness ----------------------------------------------------------------


def settings(**overrides: object) -> CallSettings:
    """The embedded defaults that matter here, with ``overrides`` applied."""
    base = CallSettings(
        endpointer=EndpointerSettings(
            min_speech_rms_threshold=200.0,
            chunk_silence_seconds=0.3,
            done_speaking_silence_seconds=0.6,
            min_chunk_seconds=0.5,
            max_chunk_seconds=10.0,
            lead_in_seconds=0.2,
        ),
        reply=ReplySettings(max_tokens=120, temperature=0.4),
        system_prompt="You are a test agent.",
        greeting="",
        goodbye="Goodbye for now.",
        time_limit_line="That is all the time we have.",
        history_turns=4,
        complete_silence_seconds=0.4,
        max_silence_seconds=60.0,
        max_call_seconds=600.0,
        barge_in=True,
        barge_in_min_speech_seconds=0.2,
        barge_in_min_words=0,
        barge_in_ignore_backchannels=True,
        speculative=True,
        store_audio_dir=None,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@dataclass
class Segment:
    """A run of agent audio on the wire, up to the mark or clear that ended it."""

    label: str  # the TTS text, "canned:<tag>", or "?"
    complete: bool  # the whole rendering was sent (False: cut by a clear)
    first_t: float
    last_t: float
    mark: str | None  # the mark sent right after it


@dataclass
class CallHarness:
    """A live call: the session, the stand-in, the fakes, and what crossed the wire."""

    session: CallSession
    call: StandInCall
    link: Link
    ws: FakeWebSocket
    stt: FakeSTT
    llm: FakeLLM
    tts: FakeTTS
    sink: FakeSink
    canned: dict[str, bytes]
    buffer: RecordingBuffer
    session_done: trio.Event = field(default_factory=trio.Event)
    said: list[TurnResult] = field(default_factory=list)  # one per say(), in order

    # -- acting as the caller ---------------------------------------------------------------
    async def say(self, *items: str | float) -> TurnResult:
        """Speak (see :func:`speech`) and return when the last frame went out."""
        words = " ".join(i for i in items if isinstance(i, str))
        turn = await self.call.say(Utterance(speech(*items), words))
        self.said.append(turn)
        return turn

    async def send_raw(self, raw: str | bytes) -> None:
        """Send any frame (text or binary) in between the stand-in's own frames."""
        async with self.call.send_lock:
            await self.ws.send_message(raw)

    # -- waiting ----------------------------------------------------------------------------
    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait (in virtual time) until ``predicate()`` holds; re-checked on every frame."""
        with trio.fail_after(timeout):
            while not predicate():
                await self.link.changed()

    async def wait_agent_turns(self, n: int, timeout: float = 30.0) -> None:
        await self.wait_until(lambda: len(self.sink.agent_turns) >= n, timeout)

    # -- what happened ----------------------------------------------------------------------
    def agent_frames(self) -> list[Outbound]:
        return [o for o in self.link.outbound if isinstance(o.event, media.OutMedia)]

    def clears(self) -> list[float]:
        return [o.t for o in self.link.outbound if isinstance(o.event, media.OutClear)]

    def marks_sent(self) -> list[tuple[float, str]]:
        return [
            (o.t, o.event.name) for o in self.link.outbound if isinstance(o.event, media.OutMark)
        ]

    def marks_echoed(self) -> list[tuple[float, str]]:
        """Marks the stand-in echoed back to the session, in order."""
        out: list[tuple[float, str]] = []
        for s in self.link.inbound:
            if isinstance(s.raw, str) and '"event":"mark"' in s.raw:
                event = media.parse_inbound(s.raw)
                assert isinstance(event, media.Mark)
                out.append((s.t, event.name))
        return out

    def caller_onset_after(self, t: float) -> float:
        """When the first loud caller frame at or after ``t`` was sent."""
        for s in self.link.inbound:
            if s.t < t or not isinstance(s.raw, str) or '"event":"media"' not in s.raw:
                continue
            event = media.parse_inbound(s.raw)
            if isinstance(event, media.Media) and decode_rms(event.payload) >= LOUD_RMS:
                return s.t
        raise AssertionError(f"no caller speech after t={t}")

    def segments(self) -> list[Segment]:
        """Agent audio as sent, cut at marks and clears, each labelled with what it says."""
        labels = dict(self.tts.rendered)
        labels.update({audio: f"canned:{tag}" for tag, audio in self.canned.items()})
        out: list[Segment] = []
        audio = bytearray()
        first_t = last_t = 0.0

        def flush(mark: str | None) -> None:
            if not audio:
                return
            data = bytes(audio)
            label = labels.get(data)
            complete = label is not None
            if label is None:
                label = next((v for k, v in labels.items() if k.startswith(data)), "?")
            out.append(Segment(label, complete, first_t, last_t, mark))
            audio.clear()

        for o in self.link.outbound:
            if isinstance(o.event, media.OutMedia):
                if not audio:
                    first_t = o.t
                last_t = o.t
                audio += o.event.payload
            elif isinstance(o.event, media.OutMark):
                flush(o.event.name)
            else:
                flush(None)
        flush(None)
        return out


def decode_rms(ulaw: bytes) -> float:
    x = ulaw_decode(ulaw).astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


async def _run_session(h: CallHarness) -> None:
    try:
        start = await h.session.handshake()
        if start is not None:
            await h.session.run(start)
    finally:
        h.session_done.set()
        h.link.notify()


async def _stand_in_hangs_up(h: CallHarness) -> None:
    """Twilio's side of a normal end: ``stop``, then the socket closes."""
    if not h.session_done.is_set() and not h.call.closed.is_set():
        try:
            await h.call.send(
                media.stop_event(h.call.next_seq(), STREAM_SID, CALL_SID, ACCOUNT_SID)
            )
        except ConnectionClosed:
            pass
        await h.ws.aclose()
    with trio.fail_after(10):
        await h.session_done.wait()


def new_session(
    transport: MemoryTransport,
    call_settings: CallSettings | None = None,
    *,
    stt: FakeSTT | None = None,
    llm: FakeLLM | None = None,
    tts: FakeTTS | None = None,
    sink: FakeSink | None = None,
    canned: dict[str, bytes] | None = None,
) -> CallSession:
    """A session on ``transport`` with the fakes; its start must carry token "tok"."""

    async def accept(start: media.Start) -> bool:
        return start.call_sid == CALL_SID and start.custom_parameters.get("token") == "tok"

    return CallSession(
        transport=transport,
        settings=call_settings or settings(),
        transcribe=(stt or FakeSTT()).transcribe,
        llm=llm or FakeLLM(),
        tts=tts or FakeTTS(),
        vad_factory=lambda: RmsVad(LOUD_RMS),
        verify_start=accept,
        sink=sink or FakeSink(transport.link.notify),
        canned=canned_lines() if canned is None else canned,
    )


async def with_call(
    body: Callable[[CallHarness], Awaitable[None]],
    *,
    call_settings: CallSettings | None = None,
    stt: FakeSTT | None = None,
    llm: FakeLLM | None = None,
    tts: FakeTTS | None = None,
    pre_start: Sequence[str | bytes] = (),
    timeout: float = 120.0,
) -> CallHarness:
    """Place one call, run ``body`` as the caller, then hang up as Twilio would."""
    link = Link()
    sink = FakeSink(link.notify)
    canned = canned_lines()
    stt = stt or FakeSTT()
    llm = llm or FakeLLM()
    tts = tts or FakeTTS()

    session = new_session(
        MemoryTransport(link), call_settings, stt=stt, llm=llm, tts=tts, sink=sink, canned=canned
    )
    ws = FakeWebSocket(link)
    call = StandInCall(ws, CallResult(call_sid=CALL_SID), STREAM_SID, ACCOUNT_SID, RecordingBuffer)
    h = CallHarness(session, call, link, ws, stt, llm, tts, sink, canned, call.buffer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_session, h)
        await call.send(media.connected_event())
        for raw in pre_start:
            await h.send_raw(raw)
        await call.send(media.start_event(1, STREAM_SID, CALL_SID, ACCOUNT_SID, {"token": "tok"}))
        call.seq = 1 + len(pre_start)
        nursery.start_soon(call.receive_loop)
        nursery.start_soon(call.clock_loop)
        with trio.fail_after(timeout):
            await body(h)
        await _stand_in_hangs_up(h)
        nursery.cancel_scope.cancel()
    return h


def run_call(
    body: Callable[[CallHarness], Awaitable[None]],
    *,
    call_settings: CallSettings | None = None,
    stt: FakeSTT | None = None,
    llm: FakeLLM | None = None,
    tts: FakeTTS | None = None,
    pre_start: Sequence[str | bytes] = (),
) -> CallHarness:
    """:func:`with_call` under a fresh ``MockClock(autojump_threshold=0)``.

    Virtual-time timeouts catch anything that waits forever; a task spinning without ever
    sleeping would stop virtual time itself, so a real-time guard dumps every thread's stack
    and exits instead of hanging the test run.
    """

    async def main() -> CallHarness:
        return await with_call(
            body, call_settings=call_settings, stt=stt, llm=llm, tts=tts, pre_start=pre_start
        )

    faulthandler.dump_traceback_later(REAL_TIME_GUARD_SECONDS, exit=True)
    try:
        return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        faulthandler.cancel_dump_traceback_later()
