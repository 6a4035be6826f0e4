"""The daemon: one ``trio.run``, one root nursery owning every long-lived task.

Root nursery children: the signal listener (SIGHUP reload, SIGTERM/SIGINT drain), the
watchdog pinger, the control socket server, the hypercorn server (Twilio HTTP + WebSocket;
each call's session runs under its WebSocket handler, inside hypercorn's own nursery) and
small background jobs (pre-rendering an outbound call's greeting while it rings).

Start-up order is what systemd sees: signal handlers, then both sockets (so a port in use
fails in a second, not after loading models), then the engines, and only then READY=1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import socket
import sqlite3
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from aicallerd.call.metrics import LatencyWindow, TurnLegs
from aicallerd.call.registry import CallInfo, CallRegistry
from aicallerd.call.session import CallSession, Transport
from aicallerd.call.settings import call_settings
from aicallerd.calllog import TERMINAL_STATUSES, AsyncCallLog, CallLogError
from aicallerd.config import Config, ConfigError, load_config
from aicallerd.control.handler import DaemonControl
from aicallerd.control.protocol import E_BUSY, ControlError, EngineStatus
from aicallerd.control.server import ControlServer, ControlServerError
from aicallerd.devtoken import dev_token_path, resolve_auth_token
from aicallerd.engines.loader import Engines, load_engines, render_lines
from aicallerd.logs import add_secrets, call_logger, setup_logging
from aicallerd.notify import Notifier, watchdog_interval, watchdog_loop
from aicallerd.outbound import Dialer
from aicallerd.reload import merge_reloadable, secrets_of
from aicallerd.throttle import FailureThrottle
from aicallerd.twilio import media
from aicallerd.twilio.rest import CallCreated
from aicallerd.twilio.tokens import StreamTokens

log = logging.getLogger("aicallerd")

SHUTDOWN_LINE = "We have to end the call now. Goodbye!"
OPERATOR_HANGUP_LINE = "I'm sorry, I have to end the call now. Goodbye!"
_RERENDERED = ("greeting", "goodbye")  # pre-rendered lines that come from the config


class StartupError(Exception):
    """The daemon cannot start (port in use, control socket taken): one line for the log."""


class Daemon:
    def __init__(
        self, config: Config, config_path: str | None, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.environ = os.environ if environ is None else environ
        self.ready = trio.Event()
        self.registry = CallRegistry(
            config.server.max_concurrent_calls, StreamTokens(secrets.token_bytes(32))
        )
        self.latency = LatencyWindow()
        self.engines: Engines | None = None
        self.canned: dict[str, bytes] = {}
        self.calllog = AsyncCallLog(Path(config.storage.state_dir) / "calls.db")
        self.notifier = Notifier(None)
        self.dialer = Dialer(self.registry)
        self.throttle = FailureThrottle()
        self.bound: list[str] = []
        self._started_mono = time.monotonic()
        self._stop = trio.Event()
        self._reload_lock = trio.Lock()
        self._call_ended = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._startup_scope: trio.CancelScope | None = None
        self._grace_scope: trio.CancelScope | None = None
        self._refuse_streams = False

    # -- state ----------------------------------------------------------------------------
    @property
    def accepting(self) -> bool:
        """New calls are welcome: engines warm and not shutting down."""
        return self.ready.is_set() and not self.registry.draining

    def uptime(self) -> float:
        return time.monotonic() - self._started_mono

    def engine_status(self) -> list[EngineStatus]:
        e = self.engines
        if e is None:
            return [
                {"name": name, "ready": False, "detail": "loading"}
                for name in ("vad", "stt", "llm", "tts")
            ]
        return [
            {"name": "vad", "ready": True, "detail": e.vad_name},
            {"name": "stt", "ready": True, "detail": e.transcriber.describe()},
            {"name": "llm", "ready": True, "detail": e.llm.describe()},
            {"name": "tts", "ready": True, "detail": e.tts.describe()},
        ]

    def _status_text(self) -> str:
        n = len(self.registry.active)
        calls = f"{n} active call{'' if n == 1 else 's'}"
        if self.registry.draining:
            return f"shutting down, {calls}"
        if not self.ready.is_set():
            return "loading engines"
        return f"ready, {calls} of {self.registry.max_calls}"

    def _calls_changed(self) -> None:
        self.notifier.status(self._status_text())
        self._call_ended.set()

    # -- calls ----------------------------------------------------------------------------
    async def _verify_start(self, start: media.Start) -> bool:
        if self._refuse_streams:
            return False
        token = start.custom_parameters.get("token", "")
        return self.registry.claim(start.call_sid, token, trio.current_time()) is not None

    def _prepare(self, session: CallSession, info: CallInfo) -> None:
        """Give an outbound call its contact's greeting, and any call its prompt."""
        # We called them: they say "hello?" first unless the contact has an opening line.
        outbound = info.direction == "outbound"
        session.configure(
            greeting=(info.greeting or "") if outbound else None,
            greeting_audio=info.greeting_audio if outbound else None,
            prompt=info.prompt,
        )

    async def run_stream(self, transport: Transport) -> None:
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
            verify_start=self._verify_start,
            sink=self,
            canned=self.canned,
        )
        start = await session.handshake()
        if start is None:
            return
        info = self.registry.active[start.call_sid]
        info.session = session
        self._prepare(session, info)
        clog = call_logger(start.call_sid, "aicallerd")
        self._calls_changed()
        try:
            await self._record_start(info)
            await session.run(start)
        finally:
            self.registry.finish(start.call_sid)
            self._calls_changed()
            duration = trio.current_time() - (info.started_at or trio.current_time())
            clog.info(
                "call ended: %s after %.1fs, %d turns", session.end_reason, duration, info.turns
            )
            with trio.CancelScope(shield=True):
                await self._record_end(info, session.end_reason)

    async def place_call(self, target: str, prompt: str | None) -> tuple[CallInfo, CallCreated]:
        """Dial out (aicallerctl call, POST /call/<contact>); raises `ControlError`."""
        if not self.accepting:
            why = "shutting down" if self.registry.draining else "still starting"
            raise ControlError(E_BUSY, f"aicallerd is {why}: no calls can be placed now")
        info, created = await self.dialer.place(self.config, target, prompt)
        await self._db(
            "start_call",
            sid=created.sid,
            direction="out",
            from_number=info.from_number,
            to_number=info.to_number,
            started_at=time.time(),
            contact=info.contact or None,
            status=created.status,
        )
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
        clog.info("Twilio status: %s%s", status, f" ({duration}s)" if duration else "")
        await self._db("update_status", sid, status, time.time())
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
            if isinstance(info.session, CallSession):
                with trio.move_on_after(15):
                    await info.session.hang_up(OPERATOR_HANGUP_LINE, "operator")
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

    # -- TurnSink: where finished turns go ---------------------------------------------
    async def _db(self, op: str, *args: object, **kwargs: object) -> None:
        """Write to the call log; a failing disk is logged, never allowed to drop a call."""
        try:
            await getattr(self.calllog, op)(*args, **kwargs)
        except Exception as exc:
            log.error("call log %s failed: %s", op, exc)

    async def agent_line(self, call_sid: str, text: str, interrupted: bool) -> None:
        await self._db("add_turn", call_sid, "agent", text, interrupted, time.time(), {})

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
        now = time.time()
        await self._db(
            "start_call",
            sid=info.call_sid,
            direction="in" if info.direction == "inbound" else "out",
            from_number=info.from_number or None,
            to_number=info.to_number or None,
            contact=info.contact or None,
            started_at=now,
        )
        await self._db("mark_answered", info.call_sid, now)

    async def _record_end(self, info: CallInfo, reason: str) -> None:
        await self._db("end_call", info.call_sid, time.time(), "completed", reason)

    # -- reload ---------------------------------------------------------------------------
    async def reload(self) -> str:
        """Re-read the config file; new calls use it, calls in progress keep theirs.

        Raises `ConfigError` (logged) and keeps running the old configuration if the new
        one is invalid.
        """
        async with self._reload_lock:
            if self.ready.is_set():
                self.notifier.reloading()
            try:
                return await self._reload()
            finally:
                if self.ready.is_set():
                    self.notifier.ready(self._status_text())

    async def _reload(self) -> str:
        where = self.config_path or "the built-in defaults"
        old = self.config
        try:
            new = await trio.to_thread.run_sync(load_config, self.config_path, self.environ)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            raise
        new, needs_restart = merge_reloadable(old, self._with_auth_token(new))
        add_secrets(secrets_of(new))
        if new.log.level != old.log.level:
            setup_logging(new.log.level, self.environ)
        self.registry.max_calls = new.server.max_concurrent_calls
        self.dialer.configure(new.twilio)
        await self._rerender_lines(old, new)
        self.config = new
        message = f"configuration reloaded from {where}"
        if needs_restart:
            later = ", ".join(needs_restart)
            log.warning("%s: changed, but needs a restart to take effect: %s", where, later)
            message += f"; needs a restart to take effect: {later}"
        log.info("%s", message)
        return message

    async def _rerender_lines(self, old: Config, new: Config) -> None:
        changed = {
            tag: getattr(new.call, tag)
            for tag in _RERENDERED
            if getattr(new.call, tag) != getattr(old.call, tag)
        }
        if not changed or self.engines is None:
            return
        canned = {tag: audio for tag, audio in self.canned.items() if tag not in changed}
        canned.update(await render_lines(self.engines.tts, changed))
        self.canned = canned

    def _with_auth_token(self, cfg: Config) -> Config:
        """No Twilio token configured: sign with the development token (see devtoken)."""
        if cfg.twilio.auth_token:
            return cfg
        token = resolve_auth_token(cfg, create=True)
        return dataclasses.replace(cfg, twilio=dataclasses.replace(cfg.twilio, auth_token=token))

    # -- lifecycle ------------------------------------------------------------------------
    def _listen_socket(self) -> socket.socket:
        """Bind the HTTP port ourselves, so "address in use" is one clear line at start."""
        cfg = self.config
        host, port = cfg.listen_host, cfg.listen_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            return socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(f"cannot listen on {cfg.server.listen}: {reason}") from None

    def _hyper_config(self, sock: socket.socket) -> HyperConfig:
        hc = HyperConfig()
        hc.bind = [f"fd://{sock.detach()}"]
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.graceful_timeout = 1.0
        hc.websocket_ping_interval = None
        hc.keep_alive_timeout = 75
        return hc

    async def run(self, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, load engines, report ready; return after a signalled drain."""
        from aicallerd.web import create_app

        if not self.config.twilio.auth_token:
            self.config = self._with_auth_token(self.config)
            log.warning(
                "no [twilio] auth_token configured: using the development token in %s; "
                "requests signed by real Twilio will be refused with 403",
                dev_token_path(self.config),
            )
        cfg = self.config
        add_secrets(secrets_of(cfg))
        self.dialer.configure(cfg.twilio)
        self.notifier = Notifier.from_env(self.environ)
        try:
            await self._open_calllog()
            async with trio.open_nursery() as root:
                self._nursery = root
                await root.start(self._signal_loop)  # before READY=1, as systemd asks
                interval = watchdog_interval(self.environ)
                if interval is not None:
                    await root.start(watchdog_loop, self.notifier, interval)
                self.notifier.status(self._status_text())
                sock = self._listen_socket()
                http_stop = trio.Event()
                async with trio.open_nursery() as http:
                    self.bound = await http.start(
                        partial(
                            serve,
                            create_app(self),
                            self._hyper_config(sock),
                            shutdown_trigger=http_stop.wait,
                        )
                    )
                    control = ControlServer(cfg.control.socket, DaemonControl(self))
                    try:
                        await root.start(control.serve)
                    except ControlServerError as exc:
                        raise StartupError(f"control socket: {exc}") from None
                    if await self._load_engines():
                        self._announce_ready()
                        task_status.started(self)
                        await self._stop.wait()
                    await self._drain()
                    http_stop.set()
                root.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.dialer.aclose()
                if self.engines is not None:
                    await self.engines.aclose()
                await self.calllog.close()
                self.notifier.close()
        log.info("stopped")

    async def _open_calllog(self) -> None:
        path = self.calllog.sync.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            await self.calllog.open()
        except (OSError, sqlite3.Error, CallLogError) as exc:
            raise StartupError(f"cannot open the call log {path}: {exc}") from None

    async def _load_engines(self) -> bool:
        """Load and warm every engine; False if a stop request cut the start short."""
        with trio.CancelScope() as self._startup_scope:
            if self._stop.is_set():
                return False
            self.engines = await load_engines(self.config)
            self.canned = dict(self.engines.canned)
        self._startup_scope = None
        return self.engines is not None and not self._stop.is_set()

    def _announce_ready(self) -> None:
        assert self.engines is not None
        cfg = self.config
        self.ready.set()
        log.info(
            "ready: listening on %s, control socket %s, public URL %s (stream %s); "
            "engines: %s; loaded in %.1fs",
            ", ".join(self.bound),
            cfg.control.socket,
            cfg.server.public_url,
            cfg.stream_url,
            self.engines.describe(),
            self.engines.load_seconds,
        )
        self.notifier.ready(self._status_text())

    async def _signal_loop(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._reload_on_signal)
                else:
                    self.request_stop(name)

    async def _reload_on_signal(self) -> None:
        log.info("SIGHUP: reloading the configuration")
        try:
            await self.reload()
        except ConfigError:
            pass  # logged; the old configuration keeps running

    def request_stop(self, why: str) -> None:
        """First request: drain. A second one while draining: end the calls now."""
        if self._stop.is_set():
            log.info("%s again: ending the remaining calls now", why)
            if self._grace_scope is not None:
                self._grace_scope.cancel()
            return
        log.info("%s: stopping; new calls get the busy message", why)
        self.registry.draining = True
        self.notifier.stopping()
        self._stop.set()
        if self._startup_scope is not None:
            self._startup_scope.cancel()

    async def _wait_no_calls(self) -> None:
        while self.registry.active:
            self._call_ended = trio.Event()
            await self._call_ended.wait()

    async def _drain(self) -> None:
        """Refuse new calls, give active ones the grace period, then say goodbye."""
        self.registry.draining = True
        self.notifier.status(self._status_text())
        grace = self.config.server.shutdown_grace_seconds
        if self.registry.active:
            log.info(
                "waiting up to %gs for %d active calls to finish", grace, len(self.registry.active)
            )
            with trio.move_on_after(grace) as self._grace_scope:
                await self._wait_no_calls()
        self._refuse_streams = True
        if self.registry.active:
            log.info("ending %d calls with a goodbye", len(self.registry.active))
            async with trio.open_nursery() as nursery:
                for info in list(self.registry.active.values()):
                    if isinstance(info.session, CallSession):
                        nursery.start_soon(self._goodbye, info.session)
            with trio.move_on_after(5):
                await self._wait_no_calls()

    async def _goodbye(self, session: CallSession) -> None:
        with trio.move_on_after(10):
            await session.hang_up(SHUTDOWN_LINE, "shutdown")
