"""Who is on the line: calls offered a stream by ``/voice`` and calls whose stream is live.

The registry enforces ``max_concurrent_calls`` across both (a call counts from the moment we
hand Twilio its TwiML) and holds the per-call stream tokens, so a WebSocket can only become
a call that Twilio announced to us with a correctly signed webhook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aicallerd.twilio.tokens import StreamTokens


@dataclass
class CallInfo:
    call_sid: str
    direction: str  # "inbound" | "outbound"
    from_number: str = ""
    to_number: str = ""
    contact: str = ""
    prompt: str | None = None
    greeting: str | None = None
    offered_at: float = 0.0
    started_at: float | None = None
    turns: int = 0
    session: object | None = field(default=None, repr=False)

    @property
    def peer(self) -> str:
        return self.from_number if self.direction == "inbound" else self.to_number


class CallRegistry:
    """Pending and active calls of this daemon. Time is passed in, so it is testable."""

    def __init__(self, max_calls: int, tokens: StreamTokens, offer_ttl: float = 60.0) -> None:
        self.max_calls = max_calls
        self.tokens = tokens
        self.offer_ttl = offer_ttl
        self.pending: dict[str, CallInfo] = {}
        self.active: dict[str, CallInfo] = {}
        self.draining = False
        self.totals = {"offered": 0, "answered": 0, "refused_busy": 0, "refused_token": 0}

    def _expire(self, now: float) -> None:
        for sid, info in list(self.pending.items()):
            if now - info.offered_at > self.offer_ttl:
                del self.pending[sid]

    def has_room(self, now: float) -> bool:
        self._expire(now)
        return not self.draining and len(self.pending) + len(self.active) < self.max_calls

    def offer(self, info: CallInfo, now: float) -> str | None:
        """Reserve a line for a call and return its stream token, or None when full."""
        if info.call_sid in self.pending or info.call_sid in self.active:
            # Twilio retried the webhook: hand out a fresh token for the same reservation.
            info.offered_at = now
            self.pending[info.call_sid] = info
            return self.tokens.issue(info.call_sid, now)
        if not self.has_room(now):
            self.totals["refused_busy"] += 1
            return None
        info.offered_at = now
        self.pending[info.call_sid] = info
        self.totals["offered"] += 1
        return self.tokens.issue(info.call_sid, now)

    def claim(self, call_sid: str, token: str, now: float) -> CallInfo | None:
        """Turn a pending call into an active one if the stream's token is right."""
        self._expire(now)
        info = self.pending.get(call_sid)
        if info is None or not self.tokens.verify(call_sid, token, now):
            self.totals["refused_token"] += 1
            return None
        del self.pending[call_sid]
        info.started_at = now
        self.active[call_sid] = info
        self.totals["answered"] += 1
        return info

    def finish(self, call_sid: str) -> CallInfo | None:
        return self.active.pop(call_sid, None)
