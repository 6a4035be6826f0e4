"""The call service: every call of this daemon, from ``/voice`` to the last stored turn.

Admission (a line and a stream token per signed ``/voice``), the Media Stream of each call,
dialling out, hang-up, the call log and the pre-rendered lines. ``web.py`` and the control
handler reach it through `aicallerd.ports.Calls`; the daemon starts it, feeds it engines
and configuration, and asks it to end every call when draining.

Hang-up is a request: the call's own task says the last line and closes its stream, never
the task of whoever asked (an aicallerctl connection, the drain).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import trio

from aicallerd.call.registry import CallInfo, CallRegistry
from aicallerd.call.session import QUIET_BATCH_SECONDS, CallSession, Transport
from aicallerd.call.settings import call_settings
from aicallerd.call.ticker import Ticker
from aicallerd.calllog import TERMINAL_STATUSES, AsyncCallLog
from aicallerd.config import Config
from aicallerd.control.protocol import E_BUSY, ActiveCall, ControlError
from aicallerd.engines.loader import Engines, render_lines
from aicallerd.logs import call_logger
from aicallerd.outbound import Dialer
from aicallerd.ports import CallHistory, Offer
from aicallerd.recorder import CallRecorder
from aicallerd.shown import plain
from aicallerd.twilio import media
from aicallerd.twilio.rest import CallCreated
from aicallerd.twilio.sids import valid_call_sid
from aicallerd.twilio.tokens import StreamTokens

CALLER_ENDED = frozenset({"hangup"})  # Twilio stopped the stream: nothing left to end
log = logging.getLogger("aicallerd")

SHUTDOWN_LINE = "We have to end the call now. Goodbye!"
OPERATOR_HANGUP_LINE = "I'm sorry, I have to end the call now. Goodbye!"
HANG_UP_WAIT = 15.0  # an operator's hangup returns after this even if the call lingers
_RERENDERED = ("greeting", "goodbye")  # pre-rendered lines that come from the config
_PEER_CHARS = 64  # phone numbers are short; a form field is stored bounded


@runtime_checkable
class LiveCall(Protocol):
    """What the service asks of a running call: end it from its own task, and say when."""

    ended: trio.Event

    def request_hang_up(self, line: str, reason: str) -> None: ...


class CallService:
    """Implements `aicallerd.ports.Calls`."""

    def __init__(
        self, config: Config, calllog: AsyncCallLog, on_change: Callable[[], None]
    ) -> None:
        self.config = config
        self.registry = CallRegistry(
            config.server.max_concurrent_calls, StreamTokens(secrets.token_bytes(32))
        )
        self.recorder = CallRecorder(calllog, self.registry)
        self.dialer = Dialer(self.registry)
        self.engines: Engines | None = None
        self.canned: dict[str, bytes] = {}
        self.ready = False
        self._calllog = calllog
        self._on_change = on_change
        self._changed = trio.Event()
        self._refuse_streams = False
        self._nursery: trio.Nursery | None = None
        self._quiet_ticker = Ticker(QUIET_BATCH_SECONDS)

    # -- lifecycle (the daemon's side) ----------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery for the service's background jobs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def open(self, engines: Engines) -> None:
        """Engines are warm: calls may come."""
        self.engines = engines
        self.canned = dict(engines.canned)
        self.ready = True

    async def apply_config(self, new: Config) -> None:
        """A reload: new calls get ``new``; calls in progress keep what they started with."""
        old = self.config
        self.registry.max_calls = new.server.max_concurrent_calls
        self.dialer.configure(new.twilio)
        changed = {
            tag: getattr(new.call, tag)
            for tag in _RERENDERED
            if getattr(new.call, tag) != getattr(old.call, tag)
        }
        if changed and self.engines is not None:
            canned = {tag: audio for tag, audio in self.canned.items() if tag not in changed}
            canned.update(await render_lines(self.engines.tts, changed))
            self.canned = canned
        self.config = new

    @property
    def accepting(self) -> bool:
        """New calls are welcome: engines warm and not shutting down."""
        return self.ready and not self.registry.draining

    def end_all(self, line: str, reason: str) -> int:
        """Refuse any stream still to come and ask every live call to say ``line`` and end."""
        self.registry.draining = True
        self._refuse_streams = True
        sessions = [i.session for i in self.registry.active.values()]
        for session in sessions:
            if isinstance(session, LiveCall):
                session.request_hang_up(line, reason)
        return len(sessions)

    async def wait_idle(self) -> None:
        """Return once no call is live."""
        while self.registry.active:
            self._changed = trio.Event()
            await self._changed.wait()

    def _calls_changed(self) -> None:
        self._on_change()
        self._changed.set()

    # -- admission ------------------------------------------------------------------------
    def offer(self, call_sid: str, nonce: str, form: Mapping[str, str]) -> Offer:
        clog = call_logger(call_sid, "aicallerd.web")
        if not self.accepting:
            clog.warning(
                "call refused: aicallerd is %s; the caller hears the busy message",
                "shutting down" if self.registry.draining else "still starting",
            )
            return Offer(None, "not_ready")
        if self.registry.is_known(call_sid):
            clog.warning("/voice refused: this call is live or over (a replayed webhook?)")
            return Offer(None, "known")
        now = trio.current_time()
        info = self.registry.take_outbound(nonce, call_sid) if nonce else None
        reserved = info is not None
        if info is None:
            if nonce:
                clog.warning("answered outbound call we did not place (or before a restart)")
            outbound = form.get("Direction", "").startswith("outbound")
            direction = "outbound" if outbound else "inbound"
            info = CallInfo(
                call_sid=call_sid,
                direction=direction,
                from_number=form.get("From", "")[:_PEER_CHARS],
                to_number=form.get("To", "")[:_PEER_CHARS],
            )
        token = self.registry.offer(info, now, reserved=reserved)
        if token is None:
            clog.warning(
                "busy: %d lines in use, the caller is told to try later",
                self.registry.in_use(now),
            )
            return Offer(None, "busy")
        clog.info(
            "%s call %s %s%s: stream offered",
            info.direction,
            "from" if info.direction == "inbound" else "to",
            plain(info.peer),
            f" ({info.contact})" if info.contact else "",
        )
        return Offer(token)

    async def _verify_start(self, started: Callable[[], None], start: media.Start) -> bool:
        if self._refuse_streams or not valid_call_sid(start.call_sid):
            return False
        token = start.custom_parameters.get("token", "")
        if self.registry.claim(start.call_sid, token, trio.current_time()) is None:
            return False
        started()
        return True

    # -- a call ---------------------------------------------------------------------------
    async def run_stream(self, transport: Transport, started: Callable[[], None]) -> None:
        """Own one call's stream from handshake to hang-up."""
        engines = self.engines
        if engines is None:
            await transport.close(1013, "not ready")
            return
        session = CallSession(
            transport=transport,
            settings=call_settings(self.config),
            transcribe=engines.transcriber.transcribe,
            llm=engines.llm,
            tts=engines.tts,
            vad_factory=engines.vad_factory,
            verify_start=lambda start: self._verify_start(started, start),
            sink=self.recorder,
            canned=self.canned,
            quiet_ticker=self._quiet_ticker,
        )
        start = await session.handshake()
        if start is None:
            return
        info = self.registry.active[start.call_sid]
        info.session = session
        # We called them: they say "hello?" first unless the contact has an opening line.
        outbound = info.direction == "outbound"
        session.configure(
            greeting=(info.greeting or "") if outbound else None,
            greeting_audio=info.greeting_audio if outbound else None,
            prompt=info.prompt,
        )
        clog = call_logger(start.call_sid, "aicallerd")
        self._calls_changed()
        try:
            await self.recorder.started(info)
            await session.run(start)
        finally:
            self.registry.finish(start.call_sid)
            self._calls_changed()
            duration = trio.current_time() - (info.started_at or trio.current_time())
            clog.info(
                "call ended: %s after %.1fs, %d turns", session.end_reason, duration, info.turns
            )
            with trio.CancelScope(shield=True):
                await self.recorder.ended(info, session.end_reason)
            if outbound and session.end_reason not in CALLER_ENDED and self._nursery is not None:
                # We called them and we ended it: make sure Twilio ends the call too.
                self._nursery.start_soon(self._complete_call, start.call_sid)

    async def _complete_call(self, sid: str) -> None:
        """Twilio REST ``Status=completed`` for a call we placed and ended ourselves."""
        cfg = self.config
        if not (cfg.twilio.account_sid and cfg.twilio.auth_token):
            return
        try:
            await self.dialer.hangup(cfg, sid)
        except ControlError as exc:
            call_logger(sid, "aicallerd").warning("could not complete the call: %s", exc.message)

    async def place_call(self, target: str, prompt: str | None) -> tuple[CallInfo, CallCreated]:
        """Dial out (aicallerctl call, POST /call/<contact>); raises `ControlError`."""
        if not self.accepting:
            why = "shutting down" if self.registry.draining else "still starting"
            raise ControlError(E_BUSY, f"aicallerd is {why}: no calls can be placed now")
        info, created = await self.dialer.place(self.config, target, prompt)
        await self.recorder.placed(info, created)
        if info.greeting and self._nursery is not None:
            self._nursery.start_soon(self._prerender_greeting, info)
        return info, created

    async def _prerender_greeting(self, info: CallInfo) -> None:
        """Synthesize the contact's opening line while the phone rings."""
        if self.engines is None or not info.greeting:
            return
        rendered = await render_lines(self.engines.tts, {"greeting": info.greeting})
        info.greeting_audio = rendered.get("greeting")

    async def record_status(self, sid: str, status: str, duration: str | None) -> None:
        """A Twilio status callback: into the call log; a call that never connected frees
        its line."""
        clog = call_logger(sid, "aicallerd")
        took = f" ({plain(duration, 20)}s)" if duration else ""
        clog.info("Twilio status: %s%s", plain(status, 40), took)
        await self.recorder.status(sid, status[:40])
        if status in TERMINAL_STATUSES and self.registry.forget(sid) is not None:
            clog.info("call ended before it connected: %s", status)

    async def hang_up(self, sid: str) -> str | None:
        """End one of our calls; its status, or None if it is not ours or already over."""
        found = self.registry.find(sid)
        if found is None:
            return None
        info, state = found
        clog = call_logger(sid, "aicallerd")
        if state == "active":
            clog.info("hanging up on the operator's request")
            session = info.session
            if isinstance(session, LiveCall):
                session.request_hang_up(OPERATOR_HANGUP_LINE, "operator")
                with trio.move_on_after(HANG_UP_WAIT):
                    await session.ended.wait()
            return "completed"
        cfg = self.config
        if cfg.twilio.account_sid:
            created = await self.dialer.hangup(cfg, sid)
            status = created.status
        else:
            status = "canceled"  # no Twilio account: the stream will simply be refused
        self.registry.forget(sid)
        clog.info("cancelled before it connected (%s): %s", state, status)
        return status

    # -- what aicallerctl reads -----------------------------------------------------------
    @property
    def history(self) -> CallHistory:
        return self._calllog

    @property
    def max_calls(self) -> int:
        return self.registry.max_calls

    def calls(self, now: float) -> list[ActiveCall]:
        return [
            {
                "sid": info.call_sid,
                "direction": info.direction,
                "peer": info.peer,
                "contact": info.contact,
                "duration_s": round(now - info.started_at, 1) if info.started_at else 0.0,
                "turns": info.turns,
                "state": "active" if state == "active" else "pending",
            }
            for info, state in self.registry.all_calls(now)
        ]

    def totals(self) -> dict[str, int]:
        return dict(self.registry.totals)

    def latency(self) -> dict[str, dict[str, Any]]:
        return self.recorder.latency.stats()  # type: ignore[return-value]
