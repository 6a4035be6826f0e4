"""TwilioRest against the fake Twilio REST API on a real loopback socket, under trio."""

import base64
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import trio
from fakes.twilio_rest import GEO_PERMISSION, FakeTwilioRest

from aicallerd.control.protocol import (
    E_TWILIO_REFUSED,
    E_TWILIO_UNAVAILABLE,
    twilio_error,
)
from aicallerd.twilio.numbers import InvalidNumber, looks_like_number, normalize_e164
from aicallerd.twilio.rest import CallCreated, TwilioRest, TwilioRestError

TO = "+15551234567"
FROM = "+15557654321"
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hi</Say></Response>'
CALLBACK = "https://aicaller.example.net/status"


@pytest.fixture
def fake() -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as server:
        yield server


def run(fake: FakeTwilioRest, fn: Callable[[TwilioRest], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        account = kw.pop("account_sid", fake.account_sid)
        token = kw.pop("auth_token", fake.auth_token)
        async with TwilioRest(account, token, api_base=fake.base_url, **kw) as rest:
            return await fn(rest)

    return trio.run(main)


def test_place_call_sends_documented_request(fake: FakeTwilioRest) -> None:
    created = run(
        fake,
        lambda r: r.place_call(
            TO,
            FROM,
            TWIML,
            status_callback=CALLBACK,
            status_callback_events=("initiated", "ringing", "answered", "completed"),
            timeout=25,
            time_limit=1800,
        ),
    )
    assert isinstance(created, CallCreated)
    assert created.sid.startswith("CA") and len(created.sid) == 34
    assert created.status == "queued"

    (rec,) = fake.requests
    assert rec.method == "POST"
    assert rec.path == f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    assert rec.headers["content-type"] == "application/x-www-form-urlencoded"
    expected_auth = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    assert rec.headers["authorization"] == f"Basic {expected_auth}"
    form = parse_qsl(rec.raw_body.decode(), keep_blank_values=True)
    assert form == [
        ("To", TO),
        ("From", FROM),
        ("Twiml", TWIML),
        ("StatusCallback", CALLBACK),
        ("StatusCallbackMethod", "POST"),
        ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "answered"),
        ("StatusCallbackEvent", "completed"),
        ("Timeout", "25"),
        ("TimeLimit", "1800"),
    ]
    call = fake.call(created.sid)
    assert call.twiml == TWIML
    assert call.status_callback_events == ["initiated", "ringing", "answered", "completed"]


def test_place_call_with_url_and_no_callback(fake: FakeTwilioRest) -> None:
    created = run(fake, lambda r: r.place_call(TO, FROM, url="https://example.net/voice"))
    form = fake.call(created.sid).form
    assert form == [("To", TO), ("From", FROM), ("Url", "https://example.net/voice")]


def test_hangup_posts_status_completed(fake: FakeTwilioRest) -> None:
    async def both(rest: TwilioRest) -> tuple[CallCreated, CallCreated]:
        created = await rest.place_call(TO, FROM, TWIML)
        return created, await rest.hangup(created.sid)

    created, hung = run(fake, both)
    assert hung == CallCreated(created.sid, "completed")
    rec = fake.requests[-1]
    assert rec.path == f"/2010-04-01/Accounts/{fake.account_sid}/Calls/{created.sid}.json"
    assert parse_qsl(rec.raw_body.decode()) == [("Status", "completed")]
    assert fake.call(created.sid).status == "completed"


def test_one_connection_for_several_requests(fake: FakeTwilioRest) -> None:
    async def three(rest: TwilioRest) -> None:
        for _ in range(3):
            await rest.place_call(TO, FROM, TWIML)

    run(fake, three)
    assert len({r.client_port for r in fake.requests}) == 1


def test_bad_credentials_map_to_20003(fake: FakeTwilioRest) -> None:
    with pytest.raises(TwilioRestError) as info:
        run(fake, lambda r: r.place_call(TO, FROM, TWIML), auth_token="wrong-token-123456")
    err = info.value
    assert (err.status, err.code, err.message) == (401, 20003, "Authenticate")
    assert err.more_info == "https://www.twilio.com/docs/errors/20003"
    assert str(err) == "Twilio error 20003: Authenticate (HTTP 401)"
    assert "wrong-token" not in str(err) and "wrong-token" not in repr(err)


def test_refusal_keeps_twilios_code_and_message(fake: FakeTwilioRest) -> None:
    fake.refuse = GEO_PERMISSION
    with pytest.raises(TwilioRestError) as info:
        run(fake, lambda r: r.place_call("+442071234567", FROM, TWIML))
    err = info.value
    assert (err.status, err.code) == (400, 21215)
    assert err.message.startswith("Account not authorized to call +442071234567")
    control = twilio_error(err)
    assert control.code == E_TWILIO_REFUSED
    assert control.message.startswith(
        "Twilio refused the call: 21215 Account not authorized to call +442071234567"
    )
    assert control.details["twilio_code"] == 21215
    assert not fake.created


def test_fake_rejects_invalid_numbers_and_missing_instructions(fake: FakeTwilioRest) -> None:
    """The fake itself enforces Twilio's rules (the client checks first, so go around it)."""
    auth = (fake.account_sid, fake.auth_token)
    url = f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    bad_to = httpx.post(url, auth=auth, data={"To": "5551234", "From": FROM, "Twiml": TWIML})
    assert bad_to.status_code == 400 and bad_to.json()["code"] == 21211
    assert bad_to.json()["status"] == 400 and bad_to.json()["more_info"]
    none = httpx.post(url, auth=auth, data={"To": TO, "From": FROM})
    assert none.status_code == 400 and none.json()["code"] == 21205
    two = httpx.post(url, auth=auth, data={"To": TO, "From": FROM, "Twiml": TWIML, "Url": "x"})
    assert two.status_code == 400
    no_auth = httpx.post(url, data={"To": TO, "From": FROM, "Twiml": TWIML})
    assert no_auth.status_code == 401 and no_auth.json()["code"] == 20003
    assert no_auth.headers["www-authenticate"].startswith("Basic")
    assert not fake.created


def test_hangup_of_unknown_call_is_20404(fake: FakeTwilioRest) -> None:
    with pytest.raises(TwilioRestError) as info:
        run(fake, lambda r: r.hangup("CA" + "0" * 32))
    assert (info.value.status, info.value.code) == (404, 20404)


def test_client_validates_before_sending(fake: FakeTwilioRest) -> None:
    cases: list[tuple[type[Exception], Callable[[TwilioRest], Awaitable[Any]]]] = [
        (InvalidNumber, lambda r: r.place_call("5551234567", FROM, TWIML)),
        (InvalidNumber, lambda r: r.place_call(TO, "+1 555", TWIML)),
        (ValueError, lambda r: r.place_call(TO, FROM)),
        (ValueError, lambda r: r.place_call(TO, FROM, TWIML, url="https://x")),
        (ValueError, lambda r: r.place_call(TO, FROM, "x" * 4001)),
        (ValueError, lambda r: r.place_call(TO, FROM, TWIML, CALLBACK, ("answered", "bogus"))),
    ]
    for exc_type, fn in cases:
        with pytest.raises(exc_type):
            run(fake, fn)
    assert fake.requests == []


def test_non_json_error_body(fake: FakeTwilioRest) -> None:
    """A proxy in the way answering HTML still gives a readable one-line error."""

    def handle(h: Any, rec: Any) -> None:
        data = b"<html><body>502 Bad Gateway</body></html>"
        h.send_response(502)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    fake.handle = handle  # type: ignore[method-assign]
    with pytest.raises(TwilioRestError) as info:
        run(fake, lambda r: r.place_call(TO, FROM, TWIML))
    assert info.value.status == 502 and info.value.code is None
    assert "502 Bad Gateway" in str(info.value)


def test_unreachable_twilio_is_status_0() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        async with TwilioRest(
            "AC" + "0" * 32, "token-123456", api_base=f"http://127.0.0.1:{port}"
        ) as r:
            await r.place_call(TO, FROM, TWIML)

    with pytest.raises(TwilioRestError) as info:
        trio.run(main)
    assert info.value.status == 0
    assert "cannot reach Twilio" in str(info.value)
    assert twilio_error(info.value).code == E_TWILIO_UNAVAILABLE


def test_not_configured() -> None:
    async def main() -> None:
        async with TwilioRest("", "", api_base="http://127.0.0.1:9") as r:
            await r.place_call(TO, FROM, TWIML)

    with pytest.raises(TwilioRestError, match="not configured"):
        trio.run(main)


def test_token_never_logged_or_shown(
    fake: FakeTwilioRest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rest_repr = []

    async def go(rest: TwilioRest) -> None:
        rest_repr.append(repr(rest))
        await rest.place_call(TO, FROM, TWIML)

    run(fake, go)
    assert fake.auth_token not in caplog.text
    assert base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode() not in (
        caplog.text
    )
    assert fake.auth_token not in rest_repr[0]


def test_fake_posts_signed_status_callback(fake: FakeTwilioRest) -> None:
    """post_status signs the public URL and connects to a local one."""
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    from aicallerd.twilio.signature import validate_signature

    seen: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen["params"] = dict(parse_qsl(body))
            seen["signature"] = self.headers["X-Twilio-Signature"]
            seen["path"] = self.path
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.handle_request, daemon=True).start()
    created = run(fake, lambda r: r.place_call(TO, FROM, TWIML, status_callback=CALLBACK))
    response = fake.post_status(
        created.sid, "ringing", connect_base=f"http://127.0.0.1:{server.server_port}"
    )
    server.server_close()
    assert response.status_code == 204
    assert seen["path"] == "/status"
    assert seen["params"]["CallSid"] == created.sid
    assert seen["params"]["CallStatus"] == "ringing"
    assert validate_signature(fake.auth_token, CALLBACK, seen["params"], seen["signature"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+15551234567", "+15551234567"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("0044 20 7123 4567", "+442071234567"),
        ("+49.30.1234567", "+49301234567"),
    ],
)
def test_normalize_e164(text: str, expected: str) -> None:
    assert normalize_e164(text) == expected


@pytest.mark.parametrize("text", ["5551234567", "+0551234567", "+1555", "+1555abc4567", "", "+"])
def test_normalize_e164_refuses(text: str) -> None:
    with pytest.raises(InvalidNumber, match=r"E\.164"):
        normalize_e164(text)


def test_looks_like_number() -> None:
    assert looks_like_number("+15551234567")
    assert looks_like_number("555 123 4567")
    assert not looks_like_number("mom")
    assert not looks_like_number("bob2")
    assert not looks_like_number("office_1")
