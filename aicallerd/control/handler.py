"""The daemon's side of the control protocol: what each aicallerctl command does.

Thin on purpose: each command reads the registry, the call log or the engines, or asks the
daemon to act (place a call, hang up, reload); the shapes are docs/control-protocol.md's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import trio

from aicallerd.config import ConfigError
from aicallerd.control.protocol import (
    E_NO_SUCH_CALL,
    E_RELOAD_FAILED,
    ActiveCall,
    CallPlaced,
    ControlError,
    HungUp,
    Reloaded,
    StatusResult,
    TranscriptResult,
)

if TYPE_CHECKING:
    from aicallerd.daemon import Daemon


def _version() -> str:
    try:
        return version("aicaller")
    except PackageNotFoundError:
        return "0.1.0"


class DaemonControl:
    """`ControlHandler` backed by the running `Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.version = _version()

    async def status(self) -> StatusResult:
        d = self.daemon
        now = trio.current_time()
        calls: list[ActiveCall] = [
            {
                "sid": info.call_sid,
                "direction": info.direction,
                "peer": info.peer,
                "contact": info.contact,
                "duration_s": round(now - info.started_at, 1) if info.started_at else 0.0,
                "turns": info.turns,
                "state": "active" if state == "active" else "pending",
            }
            for info, state in d.registry.all_calls(now)
        ]
        return {
            "version": self.version,
            "pid": os.getpid(),
            "uptime_s": round(d.uptime(), 1),
            "ready": d.ready.is_set(),
            "draining": d.registry.draining,
            "config": d.config_path,
            "engines": d.engine_status(),
            "calls": calls,
            "max_calls": d.registry.max_calls,
            "totals": dict(d.registry.totals),
            "latency": d.latency.stats(),  # type: ignore[typeddict-item]
        }

    async def call(self, target: str, prompt: str | None) -> CallPlaced:
        info, created = await self.daemon.place_call(target, prompt)
        return {
            "sid": created.sid,
            "status": created.status,
            "to": info.to_number,
            "contact": info.contact or None,
        }

    async def calls(self, limit: int) -> list[Mapping[str, Any]]:
        return await self.daemon.calllog.recent_calls(limit)

    async def transcript(self, sid: str) -> TranscriptResult:
        log = self.daemon.calllog
        call = await log.get_call(sid)
        if call is None:
            raise ControlError(E_NO_SUCH_CALL, f"no call {sid} in the call log")
        turns = await log.transcript(sid)
        call["turns"] = len(turns)
        return {"call": call, "turns": turns, "events": await log.events(sid)}  # type: ignore[typeddict-item]

    async def hangup(self, sid: str) -> HungUp:
        status = await self.daemon.hang_up(sid)
        if status is None:
            raise ControlError(E_NO_SUCH_CALL, f"no call {sid} in progress")
        return {"sid": sid, "status": status}

    async def reload(self) -> Reloaded:
        try:
            message = await self.daemon.reload()
        except ConfigError as exc:
            raise ControlError(
                E_RELOAD_FAILED, f"{exc} (the running configuration is unchanged)"
            ) from None
        return {"config": self.daemon.config_path, "message": message}
