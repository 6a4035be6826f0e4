"""The daemon: one ``trio.run``, one root nursery owning every long-lived task.

Root nursery children: the hypercorn server (Twilio HTTP + WebSocket), the signal listener
(SIGHUP reload, SIGTERM/SIGINT drain), and each call's session (under its WebSocket handler,
which hypercorn runs inside the server's own nursery).
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from pathlib import Path

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from aicallerd.call.metrics import LatencyWindow, TurnLegs
from aicallerd.call.registry import CallInfo, CallRegistry
from aicallerd.call.session import CallSession, Transport
from aicallerd.call.settings import call_settings
from aicallerd.config import Config
from aicallerd.devtoken import dev_token_path, resolve_auth_token
from aicallerd.engines.loader import Engines, load_engines
from aicallerd.twilio import media
from aicallerd.twilio.tokens import StreamTokens

log = logging.getLogger("aicallerd")


class Daemon:
    def __init__(self, config: Config, config_path: str | None) -> None:
        self.config = config
        self.config_path = config_path
        self.ready = trio.Event()
        self.registry = CallRegistry(
            config.server.max_concurrent_calls, StreamTokens(secrets.token_bytes(32))
        )
        self.latency = LatencyWindow()
        self.engines: Engines | None = None
        self.started_at = time.time()
        self.bound: list[str] = []
        self.calllog = None  # set in run() once the state directory is known
        self._outbound: dict[str, CallInfo] = {}

    # -- calls ----------------------------------------------------------------------------
    def outbound_info(self, call_sid: str) -> CallInfo | None:
        """A call we placed ourselves (its contact prompt travels with it)."""
        return self._outbound.pop(call_sid, None)

    async def _verify_start(self, start: media.Start) -> bool:
        token = start.custom_parameters.get("token", "")
        info = self.registry.claim(start.call_sid, token, trio.current_time())
        return info is not None

    async def run_stream(self, transport: Transport) -> None:
        """Own one call's stream from handshake to hang-up."""
        assert self.engines is not None
        engines = self.engines
        settings = call_settings(self.config)
        session = CallSession(
            transport=transport,
            settings=settings,
            transcribe=engines.transcriber.transcribe,
            llm=engines.llm,
            tts=engines.tts,
            vad_factory=engines.vad_factory,
            verify_start=self._verify_start,
            sink=self,
            canned=engines.canned,
        )
        start = await session.handshake()
        if start is None:
            return
        info = self.registry.active[start.call_sid]
        info.session = session
        if info.prompt:
            session.history[0]["content"] += "\n" + info.prompt
        try:
            await self._record_start(info)
            await session.run(start)
        finally:
            self.registry.finish(start.call_sid)
            duration = trio.current_time() - (info.started_at or trio.current_time())
            session.log.info(
                "call ended: %s after %.1fs, %d turns", session.end_reason, duration, session.turns
            )
            with trio.CancelScope(shield=True):
                await self._record_end(info, session.end_reason)

    # -- TurnSink: where finished turns go ---------------------------------------------
    async def _db(self, op: str, *args: object, **kwargs: object) -> None:
        """Write to the call log; a failing disk is logged, never allowed to drop a call."""
        if self.calllog is None:
            return
        try:
            await getattr(self.calllog, op)(*args, **kwargs)
        except Exception as exc:
            log.error("call log %s failed: %s", op, exc)

    async def caller_turn(self, call_sid: str, text: str, started_at: float) -> None:
        await self._db("add_turn", call_sid, "caller", text, False, time.time(), {})

    async def agent_turn(
        self,
        call_sid: str,
        text: str,
        interrupted: bool,
        started_at: float,
        legs: TurnLegs,
        audio_path: str | None,
    ) -> None:
        self.latency.add(legs)
        info = self.registry.active.get(call_sid)
        if info is not None:
            info.turns += 1
        await self._db(
            "add_turn", call_sid, "agent", text, interrupted, time.time(), legs.as_ms(), audio_path
        )

    async def _record_start(self, info: CallInfo) -> None:
        await self._db(
            "start_call",
            sid=info.call_sid,
            direction="in" if info.direction == "inbound" else "out",
            from_number=info.from_number,
            to_number=info.to_number,
            contact=info.contact,
            started_at=time.time(),
        )

    async def _record_end(self, info: CallInfo, reason: str) -> None:
        await self._db("end_call", info.call_sid, time.time(), "completed", reason)

    # -- lifecycle ------------------------------------------------------------------------
    def _hyper_config(self) -> HyperConfig:
        hc = HyperConfig()
        hc.bind = [self.config.server.listen]
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.graceful_timeout = 1.0
        hc.websocket_ping_interval = None
        hc.keep_alive_timeout = 75
        return hc

    async def run(self, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        """Load engines, listen, report ready; return after a signalled drain."""
        from aicallerd.calllog import AsyncCallLog
        from aicallerd.web import create_app

        cfg = self.config
        if not cfg.twilio.auth_token:
            resolve_auth_token(cfg, create=True)
            log.warning(
                "no [twilio] auth_token configured: using the development token in %s; "
                "requests signed by real Twilio will be refused with 403",
                dev_token_path(cfg),
            )
            self.config = cfg = _with_token(cfg, resolve_auth_token(cfg, create=False))
        Path(cfg.storage.state_dir).mkdir(parents=True, exist_ok=True)
        self.calllog = AsyncCallLog(Path(cfg.storage.state_dir) / "calls.db")
        await self.calllog.open()
        self.engines = await load_engines(cfg)
        app = create_app(self)
        try:
            async with trio.open_nursery() as nursery:
                shutdown = trio.Event()
                self.bound = await nursery.start(
                    lambda task_status: serve(
                        app,
                        self._hyper_config(),
                        shutdown_trigger=shutdown.wait,
                        task_status=task_status,
                    )
                )
                self.ready.set()
                log.info(
                    "ready: listening on %s, public URL %s (stream %s); engines: %s; "
                    "loaded in %.1fs",
                    ", ".join(self.bound),
                    cfg.server.public_url,
                    cfg.stream_url,
                    self.engines.describe(),
                    self.engines.load_seconds,
                )
                task_status.started(self)
                await self._wait_for_stop()
                await self._drain()
                shutdown.set()
        finally:
            with trio.CancelScope(shield=True):
                await self.engines.aclose()
                await self.calllog.close()

    async def _wait_for_stop(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                return

    async def _drain(self) -> None:
        """Refuse new calls, give active ones the grace period, then say goodbye."""
        self.registry.draining = True
        grace = self.config.server.shutdown_grace_seconds
        if self.registry.active:
            log.info("waiting up to %.0fs for %d active calls", grace, len(self.registry.active))
        with trio.move_on_after(grace):
            while self.registry.active:
                await trio.sleep(0.2)
        for info in list(self.registry.active.values()):
            session = info.session
            if isinstance(session, CallSession):
                with trio.move_on_after(10):
                    await session.hang_up("We have to end the call now. Goodbye!", "shutdown")


def _with_token(cfg: Config, token: str) -> Config:
    import dataclasses

    return dataclasses.replace(cfg, twilio=dataclasses.replace(cfg.twilio, auth_token=token))
