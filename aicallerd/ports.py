"""What the web endpoints and the control handler may ask of the running daemon.

Two narrow Protocols, so that ``web.py`` and ``control/handler.py`` depend on these shapes
and not on ``daemon.py`` or ``service.py`` (which import them): no import cycle, and each
front end can be tested against a small fake.

- `Calls`: the call service (admission, streams, dialling, hang-up, the call log).
- `Supervisor`: the daemon's own state (readiness, engines, reload) for ``aicallerctl``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aicallerd.call.registry import CallInfo
from aicallerd.call.session import Transport
from aicallerd.config import Config
from aicallerd.control.protocol import ActiveCall, EngineStatus
from aicallerd.twilio.rest import CallCreated


@dataclass(frozen=True)
class Offer:
    """The answer to a ringing call's ``/voice``: a stream token, or why there is none."""

    token: str | None
    refusal: str = ""  # "not_ready" | "busy" | "known" when token is None


class CallHistory(Protocol):
    """The call log, read-only, as ``aicallerctl calls`` and ``transcript`` see it."""

    async def recent_calls(self, limit: int = 20) -> list[dict[str, Any]]: ...
    async def get_call(self, sid: str) -> dict[str, Any] | None: ...
    async def transcript(self, sid: str) -> list[dict[str, Any]]: ...
    async def events(self, sid: str) -> list[dict[str, Any]]: ...


class Calls(Protocol):
    """The call service, as the network and the operator reach it."""

    @property
    def config(self) -> Config:
        """The configuration new calls get (replaced on reload)."""

    @property
    def ready(self) -> bool:
        """Engines warm: ``/health`` says ok."""

    @property
    def history(self) -> CallHistory: ...
    @property
    def max_calls(self) -> int: ...

    def offer(self, call_sid: str, nonce: str, form: Mapping[str, str]) -> Offer:
        """A signed ``/voice`` for a valid CallSid: reserve a line and issue a stream token."""

    async def run_stream(self, transport: Transport, started: Callable[[], None]) -> None:
        """Own one accepted Media Stream until it ends; ``started()`` once its ``start`` is
        verified."""

    async def record_status(self, sid: str, status: str, duration: str | None) -> None: ...
    async def place_call(self, target: str, prompt: str | None) -> tuple[CallInfo, CallCreated]:
        """Dial out; raises `ControlError` with the documented codes."""

    async def hang_up(self, sid: str) -> str | None:
        """End a call of ours; its status, or None if it is not ours or already over."""

    def calls(self, now: float) -> list[ActiveCall]:
        """Every call holding a line, live ones first."""

    def totals(self) -> dict[str, int]:
        """Counts since start: offered, answered, refused..."""

    def latency(self) -> dict[str, dict[str, Any]]: ...


class Supervisor(Protocol):
    """The daemon itself, for ``aicallerctl status`` and ``reload``."""

    @property
    def config_path(self) -> str | None: ...
    @property
    def ready(self) -> bool:
        """Engines warm and READY=1 sent."""

    @property
    def draining(self) -> bool: ...
    def uptime(self) -> float: ...
    def engine_status(self) -> list[EngineStatus]: ...
    async def reload(self) -> str:
        """Re-read the config file; raises `ConfigError` and keeps the old one if invalid."""
