"""The Twilio-facing HTTP and WebSocket endpoints (quart-trio on hypercorn).

Only this module knows about Quart. It checks who is calling (Twilio signature, CallSid
shape, bearer token), then hands the work to the call service (`aicallerd.ports.Calls`) and
stays out of the way:

- ``POST /voice``: a call is ringing (inbound, or one we placed: ``?call=<nonce>``); answer
  with ``<Connect><Stream>`` and a per-call token, or the busy message.
- ``POST /status``: Twilio's call progress callbacks, into the call log.
- ``POST /call/<contact>``: the HTTP call trigger (``Authorization: Bearer``).
- ``WS <stream_path>[/<node>]``: the Media Stream (signed upgrade only); becomes a call.
  Served beside quart, on the socket itself (`aicallerd.webstream`, `aicallerd.httpserve`).

Anything from the network that reaches a log line goes through `shown` (repr, truncated).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.datastructures import MultiDict

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
from aicallerd.ports import Calls
from aicallerd.shown import plain, shown
from aicallerd.throttle import FailureThrottle, address_key
from aicallerd.twilio import twiml
from aicallerd.twilio.sids import valid_call_sid
from aicallerd.twilio.signature import validate_signature

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


def create_app(calls: Calls) -> QuartTrio:
    """The ASGI app hypercorn serves: the webhooks (the Media Stream is served beside it)."""
    app = QuartTrio("aicallerd")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    throttle = FailureThrottle()

    async def signed_form() -> MultiDict | Response:
        """The webhook's form if Twilio signed it for our public URL and its CallSid is
        well-formed; else the refusal (logged)."""
        cfg = calls.config
        form = await request.form
        call_sid = form.get("CallSid", "")
        if not valid_call_sid(call_sid):
            log.warning(
                "POST %s from %s refused: bad CallSid %s",
                request.path,
                request.remote_addr,
                shown(call_sid, 60),
            )
            return _text("missing or malformed CallSid", 400)
        params = {k: form.getlist(k) for k in form}
        url = _public_url(cfg.server.public_url)
        signature = request.headers.get("X-Twilio-Signature", "")
        if validate_signature(cfg.twilio.auth_token, url, params, signature):
            return form
        call_logger(call_sid, "aicallerd.web").warning(
            "POST %s from %s refused: %s X-Twilio-Signature for %s",
            request.path,
            request.remote_addr,
            "bad" if signature else "no",
            plain(url, 160),
        )
        return _text("invalid signature", 403)

    @app.post("/voice")
    async def voice() -> Response:
        form = await signed_form()
        if isinstance(form, Response):
            return form
        call_sid = form["CallSid"]
        offer = calls.offer(call_sid, request.args.get(NONCE_PARAM, ""), form)
        if offer.refusal == "known":
            return _text("this call is already known", 409)
        if offer.token is None:
            busy = calls.config.call.busy_message
            return Response(twiml.say_hangup(busy), content_type=XML)
        stream = twiml.connect_stream(calls.config.stream_url, {"token": offer.token})
        return Response(stream, content_type=XML)

    @app.post("/status")
    async def status() -> Response:
        form = await signed_form()
        if isinstance(form, Response):
            return form
        call_sid, call_status = form["CallSid"], form.get("CallStatus", "")
        if not call_status:
            return _text("missing CallStatus", 400)
        await calls.record_status(call_sid, call_status, form.get("CallDuration"))
        return Response("", status=204)

    @app.post("/call/<name>")
    async def trigger(name: str) -> Response:
        cfg = calls.config
        token = cfg.twilio.call_trigger_token
        if not token:
            return _text("not found", 404)  # the trigger is off: nothing to see here
        addr = client_address(request.remote_addr or "", request.headers.get("X-Forwarded-For", ""))
        key = address_key(addr)
        now = trio.current_time()
        wait = throttle.retry_after(key, now)
        if wait > 0:
            return _text("too many failed attempts", 429, **{"Retry-After": str(math.ceil(wait))})
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            locked = throttle.failure(key, now)
            log.warning(
                "POST /call/%s from %s refused: %s bearer token%s",
                plain(name, 40),
                key,
                "wrong" if given.strip() else "no",
                f" ({throttle.failures(key, now)} failures, locked out for {locked:.0f}s)"
                if locked
                else "",
            )
            return _text("unauthorized", 401, **{"WWW-Authenticate": 'Bearer realm="aicaller"'})
        throttle.success(key)
        if cfg.contact(name) is None:
            message = f"unknown contact {shown(name, 60)}"
            return _json({"error": "unknown_contact", "message": message}, 404)
        prompt = await _prompt_from_body()
        try:
            info, created = await calls.place_call(name, prompt)
        except ControlError as exc:
            return _json({"error": exc.code, "message": exc.message}, _HTTP_FOR.get(exc.code, 500))
        body = {"sid": created.sid, "status": created.status, "to": info.to_number}
        return _json({**body, "contact": info.contact}, 200)

    @app.after_request
    async def one_request_per_connection(response: Response) -> Response:
        """A Media Stream upgrade is recognised on a connection's first request only
        (`aicallerd.httpserve`), so no proxy may reuse a webhook's connection for one."""
        response.headers["Connection"] = "close"
        return response

    @app.get("/health")
    async def health() -> Response:
        ok = calls.ready
        return _text("ok" if ok else "starting", 200 if ok else 503)

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
