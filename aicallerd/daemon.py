"""The daemon: one ``trio.run``, one root nursery owning every long-lived task.

Root nursery children: the signal listener (SIGHUP reload, SIGTERM/SIGINT drain), the
watchdog pinger, the call service's own nursery (background jobs such as pre-rendering an
outbound call's greeting while it rings), the control socket server and the hypercorn
server (Twilio HTTP + WebSocket; each call's session runs under its WebSocket handler,
inside hypercorn's own nursery). The calls themselves are `aicallerd.service.CallService`'s.

Start-up order is what systemd sees: signal handlers, then both sockets (so a port in use
fails in a second, not after loading models), then the engines, and only then READY=1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HyperConfig

from aicallerd.calllog import AsyncCallLog, CallLogError
from aicallerd.config import Config, ConfigError, load_config
from aicallerd.control.handler import DaemonControl
from aicallerd.control.protocol import EngineStatus
from aicallerd.control.server import ControlServer, ControlServerError
from aicallerd.devtoken import dev_token_path, resolve_auth_token
from aicallerd.engines.loader import Engines, load_engines
from aicallerd.httpserve import serve
from aicallerd.logs import add_secrets, setup_logging
from aicallerd.notify import Notifier, watchdog_interval, watchdog_loop
from aicallerd.reload import merge_reloadable, secrets_of
from aicallerd.retention import purge_expired
from aicallerd.service import SHUTDOWN_LINE, CallService
from aicallerd.web import create_app
from aicallerd.webstream import MediaStreamServer

log = logging.getLogger("aicallerd")

DRAIN_GOODBYE_SECONDS = 15.0  # after the grace period: time for every call's goodbye
MAX_WS_MESSAGE = 64 * 1024  # Twilio's messages are ~1 KB
RETENTION_INTERVAL = 3600.0  # seconds between purges of expired calls


class StartupError(Exception):
    """The daemon cannot start (port in use, control socket taken): one line for the log."""


class Daemon:
    """Start-up, sockets, engines, reload, signals and drain; the calls are `CallService`'s.

    Implements `aicallerd.ports.Supervisor` for the control handler.
    """

    def __init__(
        self, config: Config, config_path: str | None, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = config_path
        self.environ = os.environ if environ is None else environ
        self.engines: Engines | None = None
        self.calllog = AsyncCallLog(Path(config.storage.state_dir) / "calls.db")
        self.service = CallService(config, self.calllog, self._calls_changed)
        self.notifier = Notifier(None)
        self.bound: list[str] = []
        self._ready = trio.Event()
        self._started_mono = time.monotonic()
        self._stop = trio.Event()
        self._reload_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._startup_scope: trio.CancelScope | None = None
        self._grace_scope: trio.CancelScope | None = None

    # -- state ----------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        return self.service.config

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def draining(self) -> bool:
        return self.service.registry.draining

    def uptime(self) -> float:
        return time.monotonic() - self._started_mono

    def engine_status(self) -> list[EngineStatus]:
        e = self.engines
        if e is None:
            return [
                {"name": name, "ready": False, "detail": "loading"}
                for name in ("vad", "stt", "llm", "tts")
            ]
        health = e.status()  # a cloud engine's breaker: ok, degraded: why, open until ...
        engines = {"stt": e.transcriber, "llm": e.llm, "tts": e.tts}
        return [
            {"name": "vad", "ready": True, "detail": e.vad_name, "health": "ok"},
            *(
                {
                    "name": name,
                    "ready": not health[name].startswith("open"),
                    "detail": engine.describe(),
                    "health": health[name],
                }
                for name, engine in engines.items()
            ),
        ]

    def _status_text(self) -> str:
        registry = self.service.registry
        n = len(registry.active)
        calls = f"{n} active call{'' if n == 1 else 's'}"
        if registry.draining:
            return f"shutting down, {calls}"
        if not self.ready:
            return "loading engines"
        return f"ready, {calls} of {registry.max_calls}"

    def _calls_changed(self) -> None:
        self.notifier.status(self._status_text())

    # -- reload ---------------------------------------------------------------------------
    async def reload(self) -> str:
        """Re-read the config file; new calls use it, calls in progress keep theirs.

        Raises `ConfigError` (logged) and keeps running the old configuration if the new
        one is invalid.
        """
        async with self._reload_lock:
            if self.ready:
                self.notifier.reloading()
            try:
                return await self._reload()
            finally:
                if self.ready:
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
        await self.service.apply_config(new)
        message = f"configuration reloaded from {where}"
        if needs_restart:
            later = ", ".join(needs_restart)
            log.warning("%s: changed, but needs a restart to take effect: %s", where, later)
            message += f"; needs a restart to take effect: {later}"
        log.info("%s", message)
        return message

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

    def _hyper_config(self) -> HyperConfig:
        hc = HyperConfig()
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.graceful_timeout = 1.0
        hc.websocket_ping_interval = None
        hc.websocket_max_message_size = MAX_WS_MESSAGE
        hc.keep_alive_timeout = 75
        return hc

    async def run(self, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, load engines, report ready; return after a signalled drain."""
        service = self.service
        if not self.config.twilio.auth_token:
            service.config = self._with_auth_token(self.config)
            log.warning(
                "no [twilio] auth_token configured: using the development token in %s; "
                "requests signed by real Twilio will be refused with 403",
                dev_token_path(self.config),
            )
        cfg = self.config
        add_secrets(secrets_of(cfg))
        service.dialer.configure(cfg.twilio)
        self.notifier = Notifier.from_env(self.environ)
        try:
            await self._open_calllog()
            async with trio.open_nursery() as root:
                self._nursery = root
                await root.start(self._signal_loop)  # before READY=1, as systemd asks
                interval = watchdog_interval(self.environ)
                if interval is not None:
                    await root.start(watchdog_loop, self.notifier, interval)
                await root.start(service.run)
                root.start_soon(self._retention_loop)
                self.notifier.status(self._status_text())
                sock = self._listen_socket()
                http_stop = trio.Event()
                async with trio.open_nursery() as http:
                    self.bound = await http.start(
                        partial(
                            serve,
                            create_app(service),
                            self._hyper_config(),
                            sock,
                            MediaStreamServer(service, MAX_WS_MESSAGE),
                            shutdown_trigger=http_stop.wait,
                        )
                    )
                    control = ControlServer(cfg.control.socket, DaemonControl(service, self))
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
                await service.dialer.aclose()
                if self.engines is not None:
                    await self.engines.aclose()
                await self.calllog.close()
                self.notifier.close()
        log.info("stopped")

    async def _retention_loop(self) -> None:
        """Delete calls, transcripts and audio older than [storage] retention_days, at start
        and hourly; the current config is read each time, so a reload takes effect."""
        while True:
            cfg = self.config
            try:
                await purge_expired(
                    self.calllog,
                    Path(cfg.storage.state_dir),
                    cfg.storage.retention_days,
                    time.time(),
                )
            except Exception as exc:
                log.error("retention: could not delete old calls: %s", exc)
            await trio.sleep(RETENTION_INTERVAL)

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
        self._startup_scope = None
        return self.engines is not None and not self._stop.is_set()

    def _announce_ready(self) -> None:
        assert self.engines is not None
        cfg = self.config
        self.service.open(self.engines)
        self._ready.set()
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
        self.service.registry.draining = True
        self.notifier.stopping()
        self._stop.set()
        if self._startup_scope is not None:
            self._startup_scope.cancel()

    async def _drain(self) -> None:
        """Refuse new calls, give active ones the grace period, then ask each to say
        goodbye (in its own task) and wait for them to end."""
        service = self.service
        service.registry.draining = True
        self.notifier.status(self._status_text())
        grace = self.config.server.shutdown_grace_seconds
        if service.registry.active:
            log.info(
                "waiting up to %gs for %d active calls to finish",
                grace,
                len(service.registry.active),
            )
            with trio.move_on_after(grace) as self._grace_scope:
                await service.wait_idle()
        ending = service.end_all(SHUTDOWN_LINE, "shutdown")
        if ending:
            log.info("ending %d calls with a goodbye", ending)
            with trio.move_on_after(DRAIN_GOODBYE_SECONDS):
                await service.wait_idle()
