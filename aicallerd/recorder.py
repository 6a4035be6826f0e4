"""Where a call's life goes: the call log (calls, turns, status) and the latency window.

The session's `TurnSink`, plus the call-level rows the service writes. A failing disk is
logged and never allowed to drop a call.
"""

from __future__ import annotations

import logging
import time

from aicallerd.call.metrics import LatencyWindow, TurnLegs
from aicallerd.call.registry import CallInfo, CallRegistry
from aicallerd.calllog import AsyncCallLog
from aicallerd.twilio.rest import CallCreated

log = logging.getLogger("aicallerd")


class CallRecorder:
    def __init__(self, calllog: AsyncCallLog, registry: CallRegistry) -> None:
        self.calllog = calllog
        self.registry = registry
        self.latency = LatencyWindow()

    async def _db(self, op: str, *args: object, **kwargs: object) -> None:
        try:
            await getattr(self.calllog, op)(*args, **kwargs)
        except Exception as exc:
            log.error("call log %s failed: %s", op, exc)

    # -- TurnSink -------------------------------------------------------------------------
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

    # -- calls ----------------------------------------------------------------------------
    async def placed(self, info: CallInfo, created: CallCreated) -> None:
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

    async def started(self, info: CallInfo) -> None:
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

    async def ended(self, info: CallInfo, reason: str) -> None:
        await self._db("end_call", info.call_sid, time.time(), "completed", reason)

    async def status(self, sid: str, status: str) -> None:
        await self._db("update_status", sid, status, time.time())
