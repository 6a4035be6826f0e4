"""The Twilio-facing HTTP and WebSocket endpoints (quart-trio on hypercorn).

Only this module knows about Quart. It checks who is calling (Twilio signature, stream
token, bearer token), then hands the work to the daemon and stays out of the way:

- ``POST /voice``: a call is ringing (inbound, or one we placed: ``?call=<nonce>``); answer
  with ``<Connect><Stream>`` and a per-call token, or the busy message.
- ``POST /status``: Twilio's call progress callbacks, into the call log.
- ``POST /call/<contact>``: the HTTP call trigger (``Authorization: Bearer``).
- ``WS <stream_path>``: the Media Stream; becomes a CallSession.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.datastructures import MultiDict

from aicallerd.call.registry import CallInfo
from aicallerd.control.protocol import (
    E_BUSY,
    E_INVALID_NUMBER,
    E_NOT_CONFIGURED,
    E_TWILIO_REFUSED,
    E_TWILIO_UNAVAILABLE,
    E_UNKNOWN_CONTACT,
    MAX_PROMPT,
    ControlError,
)
from aicallerd.logs import call_logger
from aicallerd.outbound import NONCE_PARAM
from aicallerd.twilio import twiml
from aicallerd.twilio.signature import validate_signature

if TYPE_CHECKING:
    from aicallerd.daemon import Daemon

log = logging.getLogger("aicallerd.web")

XML = "text/xml; charset=utf-8"
_HTTP_FOR = {
    E_UNKNOWN_CONTACT: 404,
    E_INVALID_NUMBER: 400,
    E_NOT_CONFIGURED: 503,
    E_BUSY: 503,
    E_TWILIO_REFUSED: 502,
    E_TWILIO_UNAVAILABLE: 504,
}


class _QuartTransport:
    """quart's websocket behind the session's small Transport interface.

    Bound to the connection's own object (not quart's context-local proxy), so another task
    (a hang-up from aicallerctl, the shutdown drain) can close it too.
    """

    def __init__(self) -> None:
        self._ws = websocket._get_current_object()  # type: ignore[attr-defined]

    async def receive(self) -> str | bytes:
        return await self._ws.receive()

    async def send(self, data: str) -> None:
        await self._ws.send(data)

    async def close(self, code: int, reason: str = "") -> None:
        try:
            await self._ws.close(code, reason)
        except Exception as exc:  # already gone
            log.debug("websocket close: %s", exc)


def _public_url(base: str) -> str:
    """The URL Twilio signed: our configured public base, never rebuilt from Host headers."""
    query = request.query_string.decode("latin-1")
    return f"{base}{request.path}" + (f"?{query}" if query else "")


def client_address(remote: str, forwarded_for: str) -> str:
    """Who is asking: behind a local reverse proxy (Caddy), the address it saw.

    Only a loopback peer is trusted to tell us, and only its last entry (the one the proxy
    itself added) is used, so a client cannot pick its own address by sending the header.
    """
    try:
        loopback = ipaddress.ip_address(remote).is_loopback
    except ValueError:
        loopback = False
    if loopback and forwarded_for.strip():
        return forwarded_for.split(",")[-1].strip() or remote
    return remote


def _text(body: str, status: int, **headers: str) -> Response:
    return Response(body + "\n", status=status, content_type="text/plain", headers=headers)


def _json(obj: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(obj), status=status, content_type="application/json")


def create_app(daemon: Daemon) -> QuartTrio:
    app = QuartTrio("aicallerd")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    async def signed_form() -> MultiDict | None:
        """The webhook's form if Twilio signed it for our public URL; None (logged) if not."""
        cfg = daemon.config
        form = await request.form
        params = {k: form.getlist(k) for k in form}
        url = _public_url(cfg.server.public_url)
        signature = request.headers.get("X-Twilio-Signature", "")
        if validate_signature(cfg.twilio.auth_token, url, params, signature):
            return form
        logger = call_logger(form.get("CallSid", ""), "aicallerd.web")
        logger.warning(
            "POST %s from %s refused: %s X-Twilio-Signature for %s",
            request.path,
            request.remote_addr,
            "bad" if signature else "no",
            url,
        )
        return None

    @app.post("/voice")
    async def voice() -> Response:
        form = await signed_form()
        if form is None:
            return _text("invalid signature", 403)
        call_sid = form.get("CallSid", "")
        if not call_sid:
            return _text("missing CallSid", 400)
        clog = call_logger(call_sid, "aicallerd.web")
        cfg = daemon.config
        if not daemon.accepting:
            clog.warning(
                "call refused: aicallerd is %s; the caller hears the busy message",
                "shutting down" if daemon.registry.draining else "still starting",
            )
            return Response(twiml.say_hangup(cfg.call.busy_message), content_type=XML)
        nonce = request.args.get(NONCE_PARAM, "")
        info = daemon.registry.take_outbound(nonce, call_sid) if nonce else None
        reserved = info is not None
        if info is None:
            outbound = form.get("Direction", "").startswith("outbound")
            if nonce:
                clog.warning("answered outbound call we did not place (or before a restart)")
            info = CallInfo(
                call_sid=call_sid,
                direction="outbound" if outbound else "inbound",
                from_number=form.get("From", ""),
                to_number=form.get("To", ""),
            )
        token = daemon.registry.offer(info, trio.current_time(), reserved=reserved)
        if token is None:
            clog.warning(
                "busy: %d lines in use, the caller is told to try later",
                daemon.registry.in_use(trio.current_time()),
            )
            return Response(twiml.say_hangup(cfg.call.busy_message), content_type=XML)
        clog.info(
            "%s call %s %s%s: stream offered",
            info.direction,
            "from" if info.direction == "inbound" else "to",
            info.peer,
            f" ({info.contact})" if info.contact else "",
        )
        return Response(twiml.connect_stream(cfg.stream_url, {"token": token}), content_type=XML)

    @app.post("/status")
    async def status() -> Response:
        form = await signed_form()
        if form is None:
            return _text("invalid signature", 403)
        call_sid, call_status = form.get("CallSid", ""), form.get("CallStatus", "")
        if not call_sid or not call_status:
            return _text("missing CallSid or CallStatus", 400)
        await daemon.record_status(call_sid, call_status, form.get("CallDuration"))
        return Response("", status=204)

    @app.post("/call/<name>")
    async def trigger(name: str) -> Response:
        cfg = daemon.config
        token = cfg.twilio.call_trigger_token
        if not token:
            return _text("not found", 404)  # the trigger is off: nothing to see here
        addr = client_address(request.remote_addr or "", request.headers.get("X-Forwarded-For", ""))
        now = trio.current_time()
        wait = daemon.throttle.retry_after(addr, now)
        if wait > 0:
            return _text("too many failed attempts", 429, **{"Retry-After": str(math.ceil(wait))})
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            locked = daemon.throttle.failure(addr, now)
            log.warning(
                "POST /call/%s from %s refused: %s bearer token%s",
                name[:40],
                addr,
                "wrong" if given.strip() else "no",
                f" ({daemon.throttle.failures(addr, now)} failures, locked out for {locked:.0f}s)"
                if locked
                else "",
            )
            return _text("unauthorized", 401, **{"WWW-Authenticate": 'Bearer realm="aicaller"'})
        daemon.throttle.success(addr)
        if cfg.contact(name) is None:
            return _json({"error": "unknown_contact", "message": f"unknown contact {name!r}"}, 404)
        prompt = await _prompt_from_body()
        try:
            info, created = await daemon.place_call(name, prompt)
        except ControlError as exc:
            return _json({"error": exc.code, "message": exc.message}, _HTTP_FOR.get(exc.code, 500))
        body = {"sid": created.sid, "status": created.status, "to": info.to_number}
        return _json({**body, "contact": info.contact}, 200)

    @app.get("/health")
    async def health() -> Response:
        ok = daemon.ready.is_set()
        return _text("ok" if ok else "starting", 200 if ok else 503)

    @app.websocket(daemon.config.server.stream_path)
    async def stream() -> Response | None:
        cfg = daemon.config
        signature = websocket.headers.get("X-Twilio-Signature")
        if signature is not None and not validate_signature(
            cfg.twilio.auth_token, cfg.stream_url, {}, signature
        ):
            log.warning(
                "stream upgrade from %s refused: bad x-twilio-signature", websocket.remote_addr
            )
            return Response("invalid signature\n", status=403)
        await websocket.accept()
        await daemon.run_stream(_QuartTransport())
        return None

    return app


async def _prompt_from_body() -> str | None:
    """An optional ``prompt`` for the trigger: a form field or a JSON body's key."""
    prompt: Any = None
    if request.is_json:
        body = await request.get_json(silent=True)
        if isinstance(body, dict):
            prompt = body.get("prompt")
    else:
        prompt = (await request.form).get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None
    return prompt.strip()[:MAX_PROMPT]
