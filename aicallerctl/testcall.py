"""A local stand-in for Twilio: places one call against a running aicallerd.

It does what Twilio does, in the same order and wire format: POSTs a signed ``/voice``
webhook, reads the TwiML, opens the Media Stream with the ``<Parameter>`` token, streams the
caller's audio in real time as 20 ms mu-law frames (silence between utterances, without
pause, as Twilio does), and plays the agent's audio through a simulated playout buffer
(marks echoed when played, ``clear`` honoured). It records both tracks and measures, for
each turn, the time from the end of the caller's speech to the first agent audio.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from aicallerctl.playout import FRAME, SILENCE, PlayoutBuffer
from aicallerd.audio.mulaw import ulaw_decode, ulaw_encode
from aicallerd.twilio import media
from aicallerd.twilio.signature import compute_signature


@dataclass
class Utterance:
    """One thing the caller says. ``barge_in_after``: start speaking this many seconds
    after the agent's reply starts playing (to interrupt it) instead of waiting for it."""

    pcm8: np.ndarray
    text: str = ""
    barge_in_after: float | None = None


@dataclass
class TurnResult:
    caller_text: str
    speech_end: float  # stand-in clock (trio.current_time()) when the caller's last frame went out
    first_agent_audio: float | None = None  # first agent media frame received afterwards
    agent_audio: bytearray = field(default_factory=bytearray)  # what played, this turn
    gap_frames: int = 0  # silent frames between the first and last audible frame of the reply
    underruns: int = 0
    clear_at: float | None = None  # when a clear arrived during this turn
    speech_start: float = 0.0
    agent_text: str = ""

    @property
    def latency(self) -> float | None:
        if self.first_agent_audio is None:
            return None
        return self.first_agent_audio - self.speech_end

    def to_json(self) -> dict:
        return {
            "caller_text": self.caller_text,
            "agent_text": self.agent_text,
            "latency_ms": None if self.latency is None else round(self.latency * 1000),
            "agent_audio_seconds": round(len(self.agent_audio) / 8000, 2),
            "gap_ms": self.gap_frames * 20,
            "underruns": self.underruns,
            "clear_after_onset_ms": None
            if self.clear_at is None
            else round((self.clear_at - self.speech_start) * 1000),
        }


@dataclass
class CallResult:
    call_sid: str
    refused: str | None = None  # busy TwiML text, or an HTTP/WebSocket refusal
    greeting_audio: bytearray = field(default_factory=bytearray)
    greeting_text: str = ""
    turns: list[TurnResult] = field(default_factory=list)
    caller_track: bytearray = field(default_factory=bytearray)
    agent_track: bytearray = field(default_factory=bytearray)
    closed_by_daemon: bool = False
    marks_echoed: int = 0
    clears: int = 0

    def to_json(self) -> dict:
        return {
            "call_sid": self.call_sid,
            "refused": self.refused,
            "greeting_text": self.greeting_text,
            "turns": [t.to_json() for t in self.turns],
            "closed_by_daemon": self.closed_by_daemon,
            "marks_echoed": self.marks_echoed,
            "clears": self.clears,
        }


@dataclass
class Target:
    """Where the daemon is and how Twilio would see it."""

    connect: str  # e.g. http://127.0.0.1:5000 (or https://... through Caddy)
    public_url: str  # the configured public base URL Twilio signs against
    auth_token: str
    verify: bool | str = True  # TLS verification for https/wss connects (CA bundle path)


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _stream_target(twiml_text: str) -> tuple[str, dict[str, str]] | str:
    """Parse TwiML: (stream url, parameters) for <Connect><Stream>, or the <Say> text."""
    root = ET.fromstring(twiml_text)
    stream = root.find("./Connect/Stream")
    if stream is None:
        say = root.find("./Say")
        return say.text or "" if say is not None else "no <Connect><Stream> in TwiML"
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


class StandInCall:
    """The Twilio side of one live stream over ``ws`` (a trio-websocket connection or
    anything with its ``send_message``/``get_message``/``aclose``).

    ``buffer_factory`` makes the simulated playout buffer; a subclass that records more
    (``bench.frames.RecordingBuffer``) gives the benchmark and the tests per-frame timing.
    """

    def __init__(
        self,
        ws: Any,
        result: CallResult,
        stream_sid: str,
        account_sid: str,
        buffer_factory: Callable[[], PlayoutBuffer] = PlayoutBuffer,
    ) -> None:
        self.ws = ws
        self.result = result
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.buffer = buffer_factory()
        self.seq = 0
        self.send_lock = trio.Lock()
        self.caller_queue: list[np.ndarray] = []  # pending caller audio frames (pcm8)
        self.caller_done = trio.Event()
        self.hanging_up = False
        self.turn: TurnResult | None = None
        self.last_audible = -1.0
        self.agent_started = trio.Event()
        self.closed = trio.Event()
        self.first_media_after: float | None = None

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.ws.send_message(text)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def receive_loop(self) -> None:
        try:
            while True:
                raw = await self.ws.get_message()
                event = media.parse_outbound(raw)
                if isinstance(event, media.OutMedia):
                    if self.turn is not None and self.turn.first_agent_audio is None:
                        if trio.current_time() >= self.turn.speech_end:
                            self.turn.first_agent_audio = trio.current_time()
                    self.buffer.push_audio(event.payload)
                    self.agent_started.set()
                elif isinstance(event, media.OutMark):
                    self.buffer.push_mark(event.name)
                elif isinstance(event, media.OutClear):
                    self.result.clears += 1
                    if self.turn is not None and self.turn.clear_at is None:
                        self.turn.clear_at = trio.current_time()
                    for name in self.buffer.clear():
                        await self._echo_mark(name)
        except ConnectionClosed:
            self.result.closed_by_daemon = not self.hanging_up
        finally:
            self.closed.set()
            self.caller_done.set()

    async def _echo_mark(self, name: str) -> None:
        self.result.marks_echoed += 1
        await self.send(media.mark_event(self.next_seq(), self.stream_sid, name))

    async def clock_loop(self) -> None:
        """Every 20 ms, on absolute deadlines: send one caller frame, play one agent frame."""
        start = trio.current_time()
        n = 0
        chunk = 0
        try:
            while not self.closed.is_set():
                n += 1
                frame = self.caller_queue.pop(0) if self.caller_queue else None
                payload = ulaw_encode(frame) if frame is not None else SILENCE
                self.result.caller_track += payload
                chunk += 1
                await self.send(
                    media.media_event(
                        self.next_seq(), self.stream_sid, chunk, (n - 1) * 20, payload
                    )
                )
                if frame is not None and not self.caller_queue:
                    if self.turn is not None:
                        self.turn.speech_end = trio.current_time()
                    self.caller_done.set()
                tick = self.buffer.tick()
                self.result.agent_track += tick.audio
                now = trio.current_time()
                if tick.audible:
                    self.last_audible = now
                target = self.turn.agent_audio if self.turn is not None else None
                if target is None:
                    if tick.audible or self.result.greeting_audio:
                        self.result.greeting_audio += tick.audio
                else:
                    target += tick.audio
                    if tick.underrun:
                        self.turn.underruns += 1
                for name in tick.marks:
                    await self._echo_mark(name)
                await trio.sleep_until(start + n * 0.02)
        except ConnectionClosed:
            self.result.closed_by_daemon = not self.hanging_up
            self.closed.set()
            self.caller_done.set()

    def agent_quiet_for(self, seconds: float) -> bool:
        """The agent has played something and then nothing for ``seconds``."""
        return (
            self.last_audible > 0
            and self.buffer.empty
            and trio.current_time() - self.last_audible >= seconds
        )

    async def say(self, utt: Utterance) -> TurnResult:
        frames = [utt.pcm8[i : i + FRAME] for i in range(0, len(utt.pcm8), FRAME)]
        if frames and len(frames[-1]) < FRAME:
            frames[-1] = np.pad(frames[-1], (0, FRAME - len(frames[-1])))
        turn = TurnResult(caller_text=utt.text, speech_end=float("inf"))
        turn.speech_start = trio.current_time()
        self.caller_done = trio.Event()
        self.turn = turn
        self.caller_queue.extend(frames)
        await self.caller_done.wait()
        return turn


def _trim_turn_audio(turn: TurnResult) -> None:
    """Count silent frames between the first and last audible frames of the reply."""
    pcm = ulaw_decode(bytes(turn.agent_audio))
    frames = len(pcm) // FRAME
    if not frames:
        return
    energy = np.abs(pcm[: frames * FRAME].reshape(frames, FRAME).astype(np.int32)).max(axis=1)
    audible = np.flatnonzero(energy > 0)
    if len(audible) > 1:
        turn.gap_frames = int((energy[audible[0] : audible[-1] + 1] == 0).sum())


async def place_call(
    target: Target,
    script: list[Utterance],
    *,
    from_number: str = "+15550001111",
    to_number: str = "+15550002222",
    reply_timeout: float = 20.0,
    quiet_seconds: float = 1.2,
    pause_before_speaking: float = 0.4,
    token_override: str | None = None,
    call_sid: str | None = None,
    account_sid: str | None = None,
    direction: str = "inbound",
    voice_url: str | None = None,
    params: Mapping[str, str] | None = None,
    buffer_factory: Callable[[], PlayoutBuffer] = PlayoutBuffer,
) -> CallResult:
    """Play one whole call; returns what happened on the Twilio side.

    For a call the daemon placed itself, pass what its REST request told Twilio: the
    ``call_sid`` Twilio gave it, ``direction="outbound-api"`` and the ``voice_url`` it asked
    Twilio to fetch (query included: it is signed as given). ``params`` adds to or
    overrides the webhook's form fields; ``buffer_factory`` makes the simulated playout
    buffer (see :class:`StandInCall`).
    """
    call_sid = call_sid or new_sid("CA")
    account_sid = account_sid or new_sid("AC")
    stream_sid = new_sid("MZ")
    result = CallResult(call_sid=call_sid)
    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing" if direction == "inbound" else "in-progress",
        "Direction": direction,
        "From": from_number,
        "To": to_number,
        "Caller": from_number,
        "Called": to_number,
        **(params or {}),
    }
    path = "/voice"
    if voice_url is None:
        voice_url = target.public_url.rstrip("/") + "/voice"
    else:
        parts = urlsplit(voice_url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
    signature = compute_signature(target.auth_token, voice_url, form)
    async with httpx.AsyncClient(verify=target.verify, timeout=30) as client:
        resp = await client.post(
            target.connect.rstrip("/") + path,
            data=form,
            headers={"X-Twilio-Signature": signature},
        )
    if resp.status_code != 200:
        result.refused = f"/voice answered HTTP {resp.status_code}"
        return result
    parsed = _stream_target(resp.text)
    if isinstance(parsed, str):
        result.refused = parsed
        return result
    stream_url, stream_params = parsed
    if token_override is not None:
        stream_params["token"] = token_override
    path = urlsplit(stream_url).path
    connect = urlsplit(target.connect)
    ws_scheme = "wss" if connect.scheme == "https" else "ws"
    ws_url = f"{ws_scheme}://{connect.netloc}{path}"
    ws_signature = compute_signature(target.auth_token, stream_url, {})
    ssl_context = None
    if ws_scheme == "wss":
        import ssl

        ssl_context = ssl.create_default_context(
            cafile=target.verify if isinstance(target.verify, str) else None
        )
    call: StandInCall | None = None
    try:
        async with open_websocket_url(
            ws_url,
            ssl_context=ssl_context,
            extra_headers=[(b"x-twilio-signature", ws_signature.encode())],
        ) as ws:
            call = StandInCall(ws, result, stream_sid, account_sid, buffer_factory)
            await call.send(media.connected_event())
            await call.send(media.start_event(1, stream_sid, call_sid, account_sid, stream_params))
            call.seq = 1
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call.receive_loop)
                nursery.start_soon(call.clock_loop)
                await _converse(call, script, reply_timeout, quiet_seconds, pause_before_speaking)
                if not call.closed.is_set():
                    call.hanging_up = True  # the close that follows is ours, not the daemon's
                    await call.send(
                        media.stop_event(call.next_seq(), stream_sid, call_sid, account_sid)
                    )
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except ConnectionClosed:
        result.closed_by_daemon = not (call is not None and call.hanging_up)
    except Exception as exc:  # handshake refused, etc.
        if not result.turns and result.refused is None and "Handshake" in type(exc).__name__:
            result.refused = f"stream refused: {exc}"
        elif result.refused is None and not result.closed_by_daemon:
            raise
    for turn in result.turns:
        _trim_turn_audio(turn)
    return result


async def _wait_reply(call: StandInCall, timeout: float, quiet: float) -> None:
    """Until the agent has spoken and then fallen quiet, the call closed, or timeout."""
    with trio.move_on_after(timeout):
        while not call.closed.is_set():
            if call.agent_quiet_for(quiet):
                return
            await trio.sleep(0.02)


async def _converse(
    call: StandInCall,
    script: list[Utterance],
    reply_timeout: float,
    quiet: float,
    pause: float,
) -> None:
    # Greeting first: the caller waits for the agent to finish before speaking.
    await _wait_reply(call, reply_timeout, quiet)
    for i, utt in enumerate(script):
        if call.closed.is_set():
            return
        if utt.barge_in_after is None:
            await trio.sleep(pause)
        turn = await call.say(utt)
        call.result.turns.append(turn)
        nxt = script[i + 1] if i + 1 < len(script) else None
        if nxt is not None and nxt.barge_in_after is not None:
            # Wait for this turn's reply to start, then talk over it.
            call.last_audible = -1.0
            with trio.move_on_after(reply_timeout):
                while turn.first_agent_audio is None and not call.closed.is_set():
                    await trio.sleep(0.01)
            if turn.first_agent_audio is not None:
                await trio.sleep_until(turn.first_agent_audio + nxt.barge_in_after)
            continue
        call.last_audible = -1.0
        await _wait_reply(call, reply_timeout, quiet)
    call.turn = None
