"""Placing outbound calls: whom to dial, asking Twilio, and knowing the call when it answers.

The call is placed with ``Url=<public_url>/voice?call=<nonce>`` rather than inline TwiML:
the per-call stream token must be issued for the call's SID, which Twilio only tells us once
the call exists. When the callee answers, Twilio fetches that URL with a signed request, so
an outbound call takes exactly the same ``/voice`` -> token -> stream path as an inbound one,
and the nonce (covered by the signature) tells ``/voice`` that this is our call and which
contact's prompt and greeting go with it. ``StatusCallback`` (``/status``, signed the same
way) reports initiated, ringing, answered and completed into the call log.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import trio

from aicallerd.call.registry import CallInfo, CallRegistry
from aicallerd.config import Config, Contact, TwilioConfig
from aicallerd.control.protocol import (
    E_BUSY,
    E_INVALID_NUMBER,
    E_NOT_CONFIGURED,
    E_UNKNOWN_CONTACT,
    ControlError,
    twilio_error,
)
from aicallerd.logs import call_logger
from aicallerd.twilio.numbers import InvalidNumber, looks_like_number, normalize_e164
from aicallerd.twilio.rest import CallCreated, TwilioRest, TwilioRestError

log = logging.getLogger("aicallerd.outbound")

NONCE_PARAM = "call"  # /voice?call=<nonce>
STATUS_PATH = "/status"
RING_SECONDS = 40  # Twilio's Timeout: how long to let it ring before "no-answer"


@dataclass(frozen=True)
class Target:
    number: str
    contact: Contact | None


def resolve_target(cfg: Config, target: str) -> Target:
    """A contact name (case-insensitive) or a phone number -> what to dial."""
    contact = cfg.contact(target.strip())
    if contact is not None:
        return Target(contact.number, contact)
    if looks_like_number(target):
        try:
            return Target(normalize_e164(target), None)
        except InvalidNumber as exc:
            raise ControlError(E_INVALID_NUMBER, str(exc)) from None
    known = ", ".join(sorted(cfg.contacts)) or "none configured in [contacts]"
    raise ControlError(E_UNKNOWN_CONTACT, f"unknown contact {target.strip()!r} (known: {known})")


def missing_settings(twilio: TwilioConfig) -> list[str]:
    return [
        f"[twilio] {name}"
        for name in ("account_sid", "auth_token", "from_number")
        if not getattr(twilio, name)
    ]


class Dialer:
    """Places and cancels calls through one shared TwilioRest client (rebuilt on reload)."""

    def __init__(self, registry: CallRegistry) -> None:
        self.registry = registry
        self._rest: TwilioRest | None = None
        self._rest_key: tuple[str, str, str] | None = None
        self._retired: list[TwilioRest] = []

    def configure(self, twilio: TwilioConfig) -> None:
        """Use these credentials from now on (a request in flight keeps its client)."""
        key = (twilio.account_sid, twilio.auth_token, twilio.api_base)
        if key == self._rest_key:
            return
        if self._rest is not None:
            self._retired.append(self._rest)
        self._rest_key = key
        self._rest = TwilioRest(twilio.account_sid, twilio.auth_token, api_base=twilio.api_base)

    async def aclose(self) -> None:
        for rest in [*self._retired, *([self._rest] if self._rest else [])]:
            await rest.aclose()
        self._retired.clear()
        self._rest = None
        self._rest_key = None

    def _client(self, cfg: Config, *, dialling: bool = True) -> TwilioRest:
        missing = missing_settings(cfg.twilio)
        if not dialling:
            missing = [m for m in missing if not m.endswith("from_number")]
        if missing:
            what = "outbound calls need" if dialling else "hanging up through Twilio needs"
            raise ControlError(E_NOT_CONFIGURED, f"{what} {', '.join(missing)} in the config")
        self.configure(cfg.twilio)
        assert self._rest is not None
        return self._rest

    async def place(
        self, cfg: Config, target: str, prompt: str | None
    ) -> tuple[CallInfo, CallCreated]:
        """Ask Twilio to call ``target``; raises `ControlError` with the documented codes."""
        where = resolve_target(cfg, target)
        rest = self._client(cfg)
        contact = where.contact
        info = CallInfo(
            call_sid="",
            direction="outbound",
            from_number=cfg.twilio.from_number,
            to_number=where.number,
            contact=contact.name if contact else "",
            prompt=prompt or (contact.prompt if contact else "") or None,
            greeting=contact.greeting if contact else "",
        )
        nonce = self.registry.reserve_outbound(info, trio.current_time())
        if nonce is None:
            why = "shutting down" if self.registry.draining else "no free line"
            raise ControlError(
                E_BUSY, f"cannot place a call now: {why} ({self.registry.max_calls} lines)"
            )
        limit = cfg.call.max_call_seconds
        # Behind a shared Caddy, the webhooks of a call we placed must come back to this node:
        # it holds the nonce (docs/Caddyfile.cluster routes ?node=<name>).
        node = f"&node={cfg.server.node}" if cfg.server.node else ""
        try:
            created = await rest.place_call(
                where.number,
                cfg.twilio.from_number,
                url=f"{cfg.voice_url}?{NONCE_PARAM}={nonce}{node}",
                status_callback=cfg.server.public_url + STATUS_PATH + node.replace("&", "?"),
                timeout=RING_SECONDS,
                # A backstop only: the call itself hangs up at max_call_seconds.
                time_limit=int(limit) + 60 if math.isfinite(limit) and limit > 0 else None,
            )
        except TwilioRestError as exc:
            self.registry.cancel_outbound(nonce)
            log.warning("call to %s refused: %s", where.number, exc)
            raise twilio_error(exc) from None
        except BaseException:
            self.registry.cancel_outbound(nonce)
            raise
        self.registry.placed(nonce, created.sid)
        call_logger(created.sid, "aicallerd.outbound").info(
            "outbound call to %s%s placed: Twilio status %s",
            where.number,
            f" ({contact.name})" if contact else "",
            created.status,
        )
        return info, created

    async def hangup(self, cfg: Config, sid: str) -> CallCreated:
        """End a call that has no live stream of ours (still ringing, or not yet connected)."""
        rest = self._client(cfg, dialling=False)
        try:
            return await rest.hangup(sid)
        except TwilioRestError as exc:
            raise twilio_error(exc, "the hangup") from None
