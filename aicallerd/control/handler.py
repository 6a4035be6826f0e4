"""The daemon's side of the control protocol: what each aicallerctl command does.

Thin on purpose: each command reads the call service or the daemon's state, or asks one of
them to act (place a call, hang up, reload); the shapes are docs/control-protocol.md's. Both
are reached through `aicallerd.ports`, never through the daemon module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import trio

from aicallerd.config import ConfigError
from aicallerd.control.protocol import (
    E_NO_SUCH_CALL,
    E_RELOAD_FAILED,
    CallPlaced,
    ControlError,
    HungUp,
    Reloaded,
    StatusResult,
    TranscriptResult,
)
from aicallerd.cputime import LEDGER
from aicallerd.ports import Calls, Supervisor


def _version() -> str:
    try:
        return version("aicaller")
    except PackageNotFoundError:
        return "0.1.0"


class DaemonControl:
    """`ControlHandler` backed by the call service and the daemon."""

    def __init__(self, calls: Calls, supervisor: Supervisor) -> None:
        self.service = calls
        self.supervisor = supervisor
        self.version = _version()

    async def status(self) -> StatusResult:
        s, c = self.supervisor, self.service
        return {
            "version": self.version,
            "pid": os.getpid(),
            "uptime_s": round(s.uptime(), 1),
            "ready": s.ready,
            "draining": s.draining,
            "config": s.config_path,
            "engines": s.engine_status(),
            "calls": c.calls(trio.current_time()),
            "max_calls": c.max_calls,
            "totals": c.totals(),  # type: ignore[typeddict-item]
            "latency": c.latency(),  # type: ignore[typeddict-item]
            "cpu": LEDGER.report(),
        }

    async def call(self, target: str, prompt: str | None) -> CallPlaced:
        info, created = await self.service.place_call(target, prompt)
        return {
            "sid": created.sid,
            "status": created.status,
            "to": info.to_number,
            "contact": info.contact or None,
        }

    async def calls(self, limit: int) -> list[Mapping[str, Any]]:
        return await self.service.history.recent_calls(limit)

    async def transcript(self, sid: str) -> TranscriptResult:
        log = self.service.history
        call = await log.get_call(sid)
        if call is None:
            raise ControlError(E_NO_SUCH_CALL, f"no call {sid} in the call log")
        turns = await log.transcript(sid)
        call["turns"] = len(turns)
        return {"call": call, "turns": turns, "events": await log.events(sid)}  # type: ignore[typeddict-item]

    async def hangup(self, sid: str) -> HungUp:
        status = await self.service.hang_up(sid)
        if status is None:
            raise ControlError(E_NO_SUCH_CALL, f"no call {sid} in progress")
        return {"sid": sid, "status": status}

    async def reload(self) -> Reloaded:
        try:
            message = await self.supervisor.reload()
        except ConfigError as exc:
            raise ControlError(
                E_RELOAD_FAILED, f"{exc} (the running configuration is unchanged)"
            ) from None
        return {"config": self.supervisor.config_path, "message": message}
