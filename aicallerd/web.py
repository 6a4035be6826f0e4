"""The Twilio-facing HTTP and WebSocket endpoints (quart-trio on hypercorn).

Only this module knows about Quart. It checks who is calling (signature, token), then hands
the socket to a :class:`~aicallerd.call.session.CallSession` and stays out of the way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from aicallerd.call.registry import CallInfo
from aicallerd.twilio import twiml
from aicallerd.twilio.signature import validate_signature

if TYPE_CHECKING:
    from aicallerd.daemon import Daemon

log = logging.getLogger("aicallerd.web")

XML = "text/xml; charset=utf-8"


class _QuartTransport:
    """quart's websocket behind the session's small Transport interface."""

    async def receive(self) -> str | bytes:
        return await websocket.receive()

    async def send(self, data: str) -> None:
        await websocket.send(data)

    async def close(self, code: int, reason: str = "") -> None:
        try:
            await websocket.close(code, reason)
        except Exception as exc:  # already gone
            log.debug("websocket close: %s", exc)


def _public_url(base: str) -> str:
    """The URL Twilio signed: our configured public base, never rebuilt from Host headers."""
    query = request.query_string.decode("latin-1")
    return f"{base}{request.path}" + (f"?{query}" if query else "")


def create_app(daemon: Daemon) -> QuartTrio:
    app = QuartTrio("aicallerd")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    @app.post("/voice")
    async def voice() -> Response:
        cfg = daemon.config
        form = await request.form
        params = {k: form.getlist(k) for k in form}
        url = _public_url(cfg.server.public_url)
        signature = request.headers.get("X-Twilio-Signature", "")
        if not validate_signature(cfg.twilio.auth_token, url, params, signature):
            log.warning(
                "POST /voice from %s refused: bad X-Twilio-Signature for %s",
                request.remote_addr,
                url,
            )
            return Response("invalid signature\n", status=403, content_type="text/plain")
        call_sid = form.get("CallSid", "")
        if not call_sid:
            return Response("missing CallSid\n", status=400, content_type="text/plain")
        direction = "outbound" if form.get("Direction", "").startswith("outbound") else "inbound"
        info = daemon.outbound_info(call_sid) or CallInfo(
            call_sid=call_sid,
            direction=direction,
            from_number=form.get("From", ""),
            to_number=form.get("To", ""),
        )
        token = daemon.registry.offer(info, trio.current_time())
        if token is None:
            log.warning(
                "[%s] busy: %d calls in progress, caller told to try later",
                call_sid,
                len(daemon.registry.active),
            )
            body = twiml.say_hangup(cfg.call.busy_message)
        else:
            log.info(
                "[%s] %s call from %s to %s: stream offered",
                call_sid,
                info.direction,
                info.from_number,
                info.to_number,
            )
            body = twiml.connect_stream(daemon.config.stream_url, {"token": token})
        return Response(body, content_type=XML)

    @app.get("/health")
    async def health() -> Response:
        return Response(
            "ok\n" if daemon.ready.is_set() else "starting\n",
            status=200 if daemon.ready.is_set() else 503,
            content_type="text/plain",
        )

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
