"""A scripted `ControlHandler` and a way to serve it from a thread, for control-socket tests.

The handler answers with the documented result shapes (docs/control-protocol.md) and raises
the documented `ControlError`s, so tests of the server and of aicallerctl exercise exactly
what the daemon's real handler must produce.
"""

import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import trio

from aicallerd.control.protocol import (
    E_NO_SUCH_CALL,
    E_RELOAD_FAILED,
    E_UNKNOWN_CONTACT,
    ControlError,
    twilio_error,
)
from aicallerd.control.server import ControlServer
from aicallerd.twilio.numbers import InvalidNumber, looks_like_number, normalize_e164
from aicallerd.twilio.rest import TwilioRestError

SID_IN = "CA" + "1" * 32
SID_OUT = "CA" + "2" * 32
NEW_SID = "CA" + "9" * 32

STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "pid": 4242,
    "uptime_s": 7384.2,
    "ready": True,
    "draining": False,
    "config": "/etc/aicaller/aicaller.conf",
    "engines": [
        {"name": "vad", "ready": True, "detail": "silero v6", "health": "ok"},
        {"name": "stt", "ready": True, "detail": "faster-whisper tiny.en int8", "health": "ok"},
        {
            "name": "llm",
            "ready": True,
            "detail": "ollama gemma3:1b",
            "health": "degraded: connection refused",
        },
        {"name": "tts", "ready": False, "detail": "piper en_US-joe-medium", "health": "ok"},
    ],
    "calls": [
        {
            "sid": SID_IN,
            "direction": "inbound",
            "peer": "+15550001111",
            "contact": "",
            "duration_s": 65.3,
            "turns": 3,
            "state": "active",
        }
    ],
    "max_calls": 4,
    "totals": {"offered": 5, "answered": 4, "refused_busy": 0, "refused_token": 1, "placed": 2},
    "latency": {
        "endpoint_wait": {"p50_ms": 600, "p95_ms": 640, "n": 12},
        "voice_to_voice": {"p50_ms": 720, "p95_ms": 1100, "n": 12},
        "tts_first_audio": {"p50_ms": None, "p95_ms": None, "n": 0},
    },
    "cpu": {
        "since_s": 7380.0,
        "turns": 12,
        "seconds": {
            "vad": 0.24,
            "stt": 3.0,
            "llm": 6.6,
            "tts": 4.2,
            "framing": 1.8,
            "other": 0.12,
        },
    },
}

CALLS: list[dict[str, Any]] = [
    {
        "sid": SID_OUT,
        "direction": "out",
        "from_number": "+15557654321",
        "to_number": "+15551234567",
        "contact": "mom",
        "started_at": 1_790_000_100.0,
        "answered_at": 1_790_000_105.0,
        "ended_at": 1_790_000_170.0,
        "status": "completed",
        "end_reason": "hangup",
        "turns": 2,
    },
    {
        "sid": SID_IN,
        "direction": "in",
        "from_number": "+15550001111",
        "to_number": "+15557654321",
        "contact": None,
        "started_at": 1_790_000_000.0,
        "answered_at": 1_790_000_000.5,
        "ended_at": None,
        "status": "in-progress",
        "end_reason": None,
        "turns": 3,
    },
]

TRANSCRIPT: dict[str, Any] = {
    "call": CALLS[0],
    "turns": [
        {
            "seq": 1,
            "who": "agent",
            "text": "Hi Mom, it's your assistant.",
            "interrupted": False,
            "started_at": 1_790_000_106.0,
            "legs": {},
        },
        {
            "seq": 2,
            "who": "caller",
            "text": "Oh hello!",
            "interrupted": False,
            "started_at": 1_790_000_109.0,
            "legs": {},
        },
        {
            "seq": 3,
            "who": "agent",
            "text": "I wanted to remind you about \x1b[31mSunday",
            "interrupted": True,
            "started_at": 1_790_000_111.0,
            "legs": {"voice_to_voice": 700},
        },
    ],
    "events": [{"at": 1_790_000_101.0, "status": "ringing"}],
}


class FakeControlHandler:
    """Configure by attribute: `contacts`, `twilio_refusal`, `reload_error`, `explode`."""

    def __init__(self) -> None:
        self.contacts = {"mom": "+15551234567"}
        self.twilio_refusal: TwilioRestError | None = None
        self.reload_error: str | None = None
        self.explode: BaseException | None = None
        self.placed: list[tuple[str, str | None]] = []
        self.hung_up: list[str] = []
        self.reloads = 0
        self.calls_limit: int | None = None

    def _maybe_explode(self) -> None:
        if self.explode is not None:
            raise self.explode

    async def status(self) -> Mapping[str, Any]:
        self._maybe_explode()
        return STATUS

    async def call(self, target: str, prompt: str | None) -> Mapping[str, Any]:
        self._maybe_explode()
        contact = None
        if looks_like_number(target):
            try:
                number = normalize_e164(target)
            except InvalidNumber as exc:
                raise ControlError("invalid_number", str(exc)) from None
        else:
            contact = target.lower()
            if contact not in self.contacts:
                known = ", ".join(sorted(self.contacts)) or "none"
                raise ControlError(
                    E_UNKNOWN_CONTACT, f"unknown contact {target!r} (known: {known})"
                )
            number = self.contacts[contact]
        if self.twilio_refusal is not None:
            raise twilio_error(self.twilio_refusal)
        self.placed.append((number, prompt))
        return {"sid": NEW_SID, "status": "queued", "to": number, "contact": contact}

    async def calls(self, limit: int) -> list[Mapping[str, Any]]:
        self._maybe_explode()
        self.calls_limit = limit
        return CALLS[:limit]

    async def transcript(self, sid: str) -> Mapping[str, Any]:
        self._maybe_explode()
        if sid != SID_OUT:
            raise ControlError(E_NO_SUCH_CALL, f"no call {sid} in the call log")
        return TRANSCRIPT

    async def hangup(self, sid: str) -> Mapping[str, Any]:
        self._maybe_explode()
        if sid not in (SID_IN, NEW_SID):
            raise ControlError(E_NO_SUCH_CALL, f"no active call {sid}")
        self.hung_up.append(sid)
        return {"sid": sid, "status": "completed"}

    async def reload(self) -> Mapping[str, Any]:
        self._maybe_explode()
        if self.reload_error:
            raise ControlError(E_RELOAD_FAILED, f"reload refused: {self.reload_error}")
        self.reloads += 1
        return {"config": "/etc/aicaller/aicaller.conf", "message": "configuration reloaded"}


class ServerThread:
    """Run a ControlServer under its own trio.run in a thread (for synchronous clients).

    Entering waits (on an Event, no sleeps) until the socket accepts connections; leaving
    cancels the server and waits for its thread.
    """

    def __init__(
        self,
        path: str,
        handler: Any,
        allowed_uids: Iterable[int] | None = None,
        allowed_gids: Iterable[int] | None = None,
        **kw: Any,
    ) -> None:
        self.server = ControlServer(path, handler, allowed_uids, allowed_gids, **kw)
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.server.serve)
                    self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None and self._scope is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(timeout=10)
        if self._error is not None and exc is None:
            raise self._error
