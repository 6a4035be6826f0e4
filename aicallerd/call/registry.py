"""Who is on the line: calls we are dialling, calls offered a stream, and live calls.

The registry enforces ``max_concurrent_calls`` across all three (an outbound call holds its
line from the moment Twilio accepts it; an inbound one from the moment we hand Twilio its
TwiML) and holds the per-call stream tokens, so a WebSocket can only become a call that
Twilio announced to us with a correctly signed webhook.

Outbound calls are recognised by a random ``nonce`` we put in the ``/voice`` URL we give
Twilio when placing the call. Twilio signs that URL (query included) when it fetches it, so
the nonce cannot be forged, and it is known before Twilio tells us the call's SID: the
``/voice`` request may even arrive before our REST request has returned.

Time is passed in (trio's clock in the daemon), so all of this is testable without I/O.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from aicallerd.twilio.tokens import StreamTokens

REMEMBER_ENDED = 10_000  # ended calls whose SID is still refused: bounded memory


@dataclass
class CallInfo:
    call_sid: str  # "" while an outbound call's SID is not known yet
    direction: str  # "inbound" | "outbound"
    from_number: str = ""
    to_number: str = ""
    contact: str = ""
    prompt: str | None = None
    greeting: str | None = None  # outbound: the contact's opening line ("" = let them speak)
    greeting_audio: bytes | None = field(default=None, repr=False)  # pre-rendered while ringing
    nonce: str = ""  # outbound: the key in the /voice URL we gave Twilio
    offered_at: float = 0.0
    started_at: float | None = None
    turns: int = 0
    session: object | None = field(default=None, repr=False)

    @property
    def peer(self) -> str:
        return self.from_number if self.direction == "inbound" else self.to_number


class CallRegistry:
    """Dialling, pending and active calls of this daemon."""

    def __init__(
        self,
        max_calls: int,
        tokens: StreamTokens,
        offer_ttl: float = 60.0,
        dial_ttl: float = 180.0,
    ) -> None:
        self.max_calls = max_calls
        self.tokens = tokens
        self.offer_ttl = offer_ttl
        self.dial_ttl = dial_ttl
        self.dialing: dict[str, CallInfo] = {}  # nonce -> outbound call not yet answered
        self.pending: dict[str, CallInfo] = {}  # call SID -> TwiML handed out, no stream yet
        self.active: dict[str, CallInfo] = {}  # call SID -> live stream
        self._ended: OrderedDict[str, None] = OrderedDict()  # SIDs whose call is over
        self.draining = False
        self.totals = {
            "offered": 0,
            "answered": 0,
            "refused_busy": 0,
            "refused_token": 0,
            "placed": 0,
        }

    # -- capacity -------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        for sid, info in list(self.pending.items()):
            if now - info.offered_at > self.offer_ttl:
                del self.pending[sid]
        for nonce, info in list(self.dialing.items()):
            if now - info.offered_at > self.dial_ttl:
                del self.dialing[nonce]

    def in_use(self, now: float) -> int:
        self._expire(now)
        return len(self.dialing) + len(self.pending) + len(self.active)

    def has_room(self, now: float) -> bool:
        return not self.draining and self.in_use(now) < self.max_calls

    # -- outbound -------------------------------------------------------------------------

    def reserve_outbound(self, info: CallInfo, now: float) -> str | None:
        """Hold a line for a call we are about to place; its nonce, or None when full."""
        if not self.has_room(now):
            return None
        info.nonce = secrets.token_urlsafe(18)
        info.offered_at = now
        self.dialing[info.nonce] = info
        return info.nonce

    def placed(self, nonce: str, call_sid: str) -> None:
        """Twilio accepted the call and told us its SID."""
        info = self.dialing.get(nonce)
        if info is not None:
            if not info.call_sid:
                info.call_sid = call_sid
            self.totals["placed"] += 1

    def cancel_outbound(self, nonce: str) -> None:
        """Twilio refused the call (or we could not ask): free the line."""
        self.dialing.pop(nonce, None)

    def take_outbound(self, nonce: str, call_sid: str) -> CallInfo | None:
        """The ``/voice`` request of a call we placed; None if the nonce is not ours (any
        more) or belongs to another call."""
        info = self.dialing.get(nonce)
        if info is None or (info.call_sid and info.call_sid != call_sid):
            return None
        del self.dialing[nonce]
        info.call_sid = call_sid
        return info

    def dialing_by_sid(self, call_sid: str) -> CallInfo | None:
        return next((i for i in self.dialing.values() if i.call_sid == call_sid), None)

    def forget(self, call_sid: str) -> CallInfo | None:
        """A call that ended before its stream went live (no-answer, busy, hung up)."""
        for nonce, info in list(self.dialing.items()):
            if info.call_sid == call_sid:
                del self.dialing[nonce]
                self._remember_ended(call_sid)
                return info
        info = self.pending.pop(call_sid, None)
        if info is not None:
            self._remember_ended(call_sid)
        return info

    def _remember_ended(self, call_sid: str) -> None:
        self._ended[call_sid] = None
        self._ended.move_to_end(call_sid)
        while len(self._ended) > REMEMBER_ENDED:
            self._ended.popitem(last=False)

    def is_known(self, call_sid: str) -> bool:
        """Live or over: a new ``/voice`` for it is a replay, never a new call."""
        return call_sid in self.active or call_sid in self._ended

    # -- streams --------------------------------------------------------------------------

    def offer(self, info: CallInfo, now: float, *, reserved: bool = False) -> str | None:
        """Reserve a line for a call and return its stream token, or None when full.

        ``reserved``: the call already holds a line (an outbound call we dialled). A call
        that is live or over gets None too: a replayed webhook must not take its slot.
        """
        if self.is_known(info.call_sid):
            return None
        existing = self.pending.get(info.call_sid)
        if existing is not None:
            # Twilio retried the webhook: a fresh token for the same reservation.
            existing.offered_at = now
            return self.tokens.issue(existing.call_sid, now)
        if not reserved and not self.has_room(now):
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
        info = self.active.pop(call_sid, None)
        if info is not None:
            self._remember_ended(call_sid)
        return info

    # -- looking things up ----------------------------------------------------------------

    def find(self, call_sid: str) -> tuple[CallInfo, str] | None:
        """A call of ours by SID and its state: ``active`` | ``pending`` | ``dialing``."""
        if call_sid in self.active:
            return self.active[call_sid], "active"
        if call_sid in self.pending:
            return self.pending[call_sid], "pending"
        info = self.dialing_by_sid(call_sid)
        return (info, "dialing") if info is not None else None

    def all_calls(self, now: float) -> list[tuple[CallInfo, str]]:
        """Every call holding a line, live ones first."""
        self._expire(now)
        out = [(i, "active") for i in self.active.values()]
        out += [(i, "pending") for i in self.pending.values()]
        out += [(i, "dialing") for i in self.dialing.values()]
        return out
