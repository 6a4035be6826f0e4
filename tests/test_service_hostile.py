"""Hostile input against the real daemon (issue 10): unsigned or oversized streams, a flood
of sockets that never send ``start``, forged CallSids, replayed webhooks and trigger
guessing from a rotating IPv6 prefix or from many addresses. Honest calls beside them
are still answered.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import trio
from service_util import AUTH_TOKEN, ctl, launch, target
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from aicallerctl.testcall import Utterance, new_sid, place_call
from aicallerd.twilio import media
from aicallerd.twilio.signature import compute_signature

pytestmark = pytest.mark.e2e

TRIGGER_TOKEN = "hostile-trigger-token-0123456789abcdef"
STREAM_PATH = "/ai_caller/stream"
MAX_CALLS = 4  # daemon_proc's config
HANDSHAKES = MAX_CALLS * 2 + 8  # web.handshake_limit


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    config = f"""
[twilio]
call_trigger_token = "{TRIGGER_TOKEN}"

[contacts]
mom = "+15551230000"
"""
    d = launch(tmp_path_factory.mktemp("hostile"), config)
    yield d
    code = d.stop()
    assert code == 0, d.log_text()[-3000:]
    assert "Traceback" not in d.log_text(), d.log_text()
    assert AUTH_TOKEN not in d.log_text() and TRIGGER_TOKEN not in d.log_text()
    # Nothing an attacker sent reaches the log whole.
    assert max(len(line) for line in d.lines) < 1000


def silence(seconds: float) -> Utterance:
    return Utterance(np.zeros(int(8000 * seconds), dtype=np.int16), "")


def ws_url(d) -> str:
    return f"ws://127.0.0.1:{d.port}{STREAM_PATH}"


def signed_upgrade(d) -> list[tuple[bytes, bytes]]:
    stream_url = "wss://" + d.public_url.removeprefix("https://") + STREAM_PATH
    signature = compute_signature(d.auth_token, stream_url, {})
    return [(b"x-twilio-signature", signature.encode())]


def signed_post(d, path: str, form: dict[str, str]) -> httpx.Response:
    signature = compute_signature(d.auth_token, d.public_url + path, form)
    return httpx.post(d.base_url + path, data=form, headers={"X-Twilio-Signature": signature})


def honest_call(d) -> None:
    """A short call placed by the stand-in is answered and ends normally."""
    result = trio.run(lambda: place_call(target(d), [silence(1.5)]))
    assert result.refused is None and result.greeting_audio, result


async def upgrade_status(d, headers: list[tuple[bytes, bytes]]) -> int:
    """The HTTP status of a stream upgrade: 101 if accepted."""
    try:
        async with open_websocket_url(ws_url(d), extra_headers=headers):
            return 101
    except ConnectionRejected as exc:
        return exc.status_code


def test_stream_upgrade_must_be_signed(daemon):
    async def scenario() -> list[int]:
        bad = [(b"x-twilio-signature", b"bm90IGEgc2lnbmF0dXJl")]
        return [await upgrade_status(daemon, h) for h in ([], bad, signed_upgrade(daemon))]

    assert trio.run(scenario) == [403, 403, 101]
    daemon.wait_for("stream upgrade from 127.0.0.1 refused: no x-twilio-signature")
    honest_call(daemon)


def test_oversized_stream_message_is_closed_with_1009(daemon):
    async def scenario() -> int | None:
        async with open_websocket_url(ws_url(daemon), extra_headers=signed_upgrade(daemon)) as ws:
            await ws.send_message(media.connected_event())
            await ws.send_message('{"event": "' + "x" * (1024 * 1024) + '"}')
            with pytest.raises(ConnectionClosed) as closed:
                with trio.fail_after(30):
                    await ws.get_message()
            return closed.value.reason.code

    assert trio.run(scenario) == 1009  # message too big: never parsed, never logged
    honest_call(daemon)


def test_stream_route_without_an_upgrade_is_400(daemon):
    """The stream route is served beside hypercorn: a plain GET of it gets a clear refusal,
    and a request line that arrives a byte at a time still reaches hypercorn's routes."""
    assert httpx.get(daemon.base_url + STREAM_PATH).status_code == 400
    daemon.wait_for("stream upgrade from 127.0.0.1 refused: not a WebSocket upgrade")

    async def dribbled_health() -> bytes:
        stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
        async with stream:
            for byte in b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n":
                await stream.send_all(bytes([byte]))
            answer = b""
            with trio.fail_after(30):  # (hypercorn leaves the connection open after it)
                while not answer.endswith(b"\r\n\r\nok\n"):
                    answer += await stream.receive_some()
            return answer

    assert trio.run(dribbled_health).startswith(b"HTTP/1.1 200")


def test_webhook_connections_are_not_reused_for_a_stream(daemon):
    """The stream is recognised on a connection's first request: a proxy that pooled a
    webhook's connection and sent the upgrade on it would reach the wrong server."""
    with httpx.Client() as client:
        answers = [client.get(daemon.base_url + "/health") for _ in range(2)]
    assert [(a.status_code, a.headers["connection"]) for a in answers] == [(200, "close")] * 2


def test_ping_is_answered_and_a_close_is_echoed(daemon):
    async def scenario() -> int:
        async with open_websocket_url(ws_url(daemon), extra_headers=signed_upgrade(daemon)) as ws:
            await ws.send_message(media.connected_event())
            with trio.fail_after(10):
                await ws.ping(b"still there?")  # returns when the pong comes back
                await ws.aclose(1000, "done")  # returns when the daemon answers the close
            return ws.closed.code

    assert trio.run(scenario) == 1000
    honest_call(daemon)


def test_sockets_that_never_start_are_capped(daemon):
    """A captured upgrade signature replayed many times cannot hold more than a few sockets
    open without a ``start``; a socket freed lets the next one in."""

    async def scenario() -> tuple[int, int]:
        async with trio.open_nursery() as nursery:
            release = trio.Event()
            opened = trio.Semaphore(0)

            async def idle_socket() -> None:
                async with open_websocket_url(ws_url(daemon), extra_headers=signed_upgrade(daemon)):
                    opened.release()
                    await release.wait()

            for _ in range(HANDSHAKES):
                nursery.start_soon(idle_socket)
            for _ in range(HANDSHAKES):
                await opened.acquire()
            over = await upgrade_status(daemon, signed_upgrade(daemon))
            release.set()
        # All idle sockets closed: the limit is free again.
        after = await upgrade_status(daemon, signed_upgrade(daemon))
        return over, after

    assert trio.run(scenario) == (503, 101)
    daemon.wait_for(f"refused: {HANDSHAKES} sockets still to send start")
    honest_call(daemon)


@pytest.mark.parametrize("path", ["/voice", "/status"])
def test_forged_call_sid_is_400_and_cannot_forge_a_log_line(daemon, path):
    forged = "x]\n<0>aicallerd: forged emergency line"
    form = {"CallSid": forged, "CallStatus": "ringing", "From": "+15550001111"}
    # Unsigned, and even correctly signed (as if the auth token had leaked): refused.
    assert httpx.post(daemon.base_url + path, data=form).status_code == 400
    assert signed_post(daemon, path, form).status_code == 400
    line = daemon.wait_for(f"POST {path} from 127.0.0.1 refused: bad CallSid")
    assert "'x]\\n<0>aicallerd: forged" in line
    assert not any(seen.startswith("<0>") for seen in daemon.lines)
    # Not a Twilio SID shape either: lower-case prefix, wrong length, non-hex.
    for bad in ("ca" + "0" * 32, "CA" + "0" * 31, "CA" + "g" * 32, ""):
        assert signed_post(daemon, path, {**form, "CallSid": bad}).status_code == 400


def test_replayed_voice_for_a_live_or_finished_call_is_refused(daemon):
    sid = new_sid("CA")
    form = {"CallSid": sid, "From": "+15550009999", "To": "+15550002222"}

    async def scenario() -> tuple[object, httpx.Response, dict]:
        out: dict[str, object] = {}

        async def call() -> None:
            out["result"] = await place_call(target(daemon), [silence(20)], call_sid=sid)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.to_thread.run_sync(daemon.wait_for, f"[{sid}] call started")
            replay = await trio.to_thread.run_sync(signed_post, daemon, "/voice", form)
            status = await trio.to_thread.run_sync(ctl, daemon, "status", "--json")
            hangup = await trio.to_thread.run_sync(ctl, daemon, "hangup", sid)
            assert hangup.returncode == 0, hangup.stderr
        return out["result"], replay, json.loads(status.stdout)

    result, replay, status = trio.run(scenario)
    assert replay.status_code == 409 and "<Stream" not in replay.text
    # The live call kept its one slot: no second (pending) entry for its SID.
    assert [(c["sid"], c["state"]) for c in status["calls"]] == [(sid, "active")]
    assert result.closed_by_daemon and result.refused is None  # ended by us, not broken
    daemon.wait_for(f"[{sid}] call ended: operator")
    daemon.wait_for(f"[{sid}] /voice refused: this call is live or over")
    # Over now: a replay still gets no token.
    assert signed_post(daemon, "/voice", form).status_code == 409


def test_trigger_lockout_by_ipv6_prefix_then_globally(daemon):
    url = daemon.base_url + "/call/mom"

    def attempt(client: httpx.Client, addr: str, token: str = "guess") -> int:
        headers = {"X-Forwarded-For": addr, "Authorization": f"Bearer {token}"}
        return client.post(url, headers=headers).status_code

    with httpx.Client() as client:
        # Three failures from one /64 lock the whole /64, whatever address in it asks next.
        assert [attempt(client, f"2001:db8:1:2::{i}") for i in (1, 2, 3)] == [401, 401, 401]
        assert attempt(client, "2001:db8:1:2:ffff:ffff:ffff:ffff") == 429
        assert attempt(client, "2001:db8:1:3::1") == 401  # the next /64 is not
        # 20 failures in 10 minutes from anyone: every address is throttled, even with the
        # right token, so rotating addresses does not buy more guesses.
        for i in range(16):
            assert attempt(client, f"198.51.100.{i + 1}") == 401
        assert attempt(client, "203.0.113.50", TRIGGER_TOKEN) == 429
    daemon.wait_for("refused: wrong bearer token (3 failures, locked out for 2s)")
    line = daemon.wait_for("POST /call/mom from 2001:db8:1:2::/64 refused")
    assert "2001:db8:1:2::1" not in line
