"""Outbound calls, from ``aicallerctl call mom`` to the greeting the callee hears.

A local server speaks Twilio's REST protocol (tests/fakes/twilio_rest.py). When it accepts
a call, the test plays Twilio's side of that call with the product's stand-in: the signed
``/voice`` fetch of the URL the daemon gave, with the new CallSid and
``Direction=outbound-api``, then the Media Stream; and it sends the signed status callbacks.
"""

from __future__ import annotations

import json
import queue
import sqlite3

import httpx
import pytest
import trio
from fakes.twilio_rest import GEO_PERMISSION, FakeCall, FakeTwilioRest
from service_util import AUTH_TOKEN, PUBLIC_URL, ctl, launch, target, wer
from speech import speak

from aicallerctl.testcall import Utterance, place_call
from aicallerd.audio.mulaw import ulaw_decode

pytestmark = pytest.mark.e2e

FROM = "+15557654321"
MOM = "+15551230000"
GREETING = "Hi Mom, it's your assistant calling about Sunday lunch."
TRIGGER_TOKEN = "trigger-token-0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def twilio():
    fake = FakeTwilioRest(auth_token=AUTH_TOKEN)
    created: queue.Queue[FakeCall] = queue.Queue()
    fake.on_create = created.put
    fake.created_queue = created  # type: ignore[attr-defined]
    with fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, twilio):
    config = f"""
[twilio]
account_sid = "{twilio.account_sid}"
from_number = "{FROM}"
api_base = "{twilio.base_url}"
call_trigger_token = "{TRIGGER_TOKEN}"

[contacts]
mom = {{number = "{MOM}", greeting = "{GREETING}", prompt = "You are calling Mom about lunch."}}
dad = "+15551230001"
"""
    d = launch(tmp_path_factory.mktemp("outbound"), config)
    yield d
    code = d.stop()
    assert code == 0, d.log_text()[-3000:]
    assert "Traceback" not in d.log_text(), d.log_text()
    assert TRIGGER_TOKEN not in d.log_text()


@pytest.fixture(scope="module")
def stt():
    from aicallerd.engines.stt import Transcriber

    t = Transcriber()
    t.load()
    return t


def next_created(twilio: FakeTwilioRest) -> FakeCall:
    return twilio.created_queue.get(timeout=30)  # type: ignore[attr-defined]


def status(d) -> dict:
    return json.loads(ctl(d, "status", "--json").stdout)


def mom_answers(daemon, twilio, sid: str, call: dict, utterances: list[Utterance]):
    """Mom picks up the call the daemon placed: Twilio fetches its Url and opens the stream."""
    return trio.run(
        lambda: place_call(
            target(daemon),
            utterances,
            call_sid=sid,
            account_sid=twilio.account_sid,
            direction="outbound-api",
            voice_url=call.get("Url"),
            from_number=FROM,
            to_number=MOM,
        )
    )


def test_call_mom_from_the_command_to_the_greeting(daemon, twilio, stt):
    proc = ctl(daemon, "call", "mom")
    assert proc.returncode == 0, proc.stderr
    sid = proc.stdout.strip()
    call = next_created(twilio)
    assert call.sid == sid
    assert (call.to, call.from_) == (MOM, FROM)
    assert call.twiml is None
    assert call.get("Url").startswith(PUBLIC_URL + "/voice?call=")
    assert call.status_callback == PUBLIC_URL + "/status"
    assert call.status_callback_events == ["initiated", "ringing", "answered", "completed"]

    # While it rings, the call holds a line.
    ringing = [c for c in status(daemon)["calls"] if c["sid"] == sid]
    assert ringing and ringing[0]["direction"] == "outbound" and ringing[0]["contact"] == "mom"

    for event in ("initiated", "ringing"):
        assert twilio.post_status(sid, event, daemon.base_url).status_code == 204
    assert twilio.post_status(sid, "in-progress", daemon.base_url).status_code == 204

    # Mom picks up: Twilio fetches our Url and opens the stream. She listens, then hangs up.
    result = mom_answers(daemon, twilio, sid, call, [])
    assert result.refused is None
    heard = stt.transcribe_sync(ulaw_decode(bytes(result.greeting_audio)))
    assert wer(GREETING, heard) < 0.35, heard
    assert twilio.post_status(sid, "completed", daemon.base_url, duration=9).status_code == 204
    daemon.wait_for(f"[{sid}] call ended")

    transcript = json.loads(ctl(daemon, "transcript", sid, "--json").stdout)
    row = transcript["call"]
    assert row["direction"] == "out" and row["contact"] == "mom"
    assert (row["from_number"], row["to_number"]) == (FROM, MOM)
    assert row["answered_at"] is not None and row["ended_at"] is not None
    events = [e["status"] for e in transcript["events"]]
    assert events == ["initiated", "ringing", "in-progress", "completed"]
    assert f"[{sid}] outbound call to {MOM} (mom) placed" in daemon.log_text()


def test_a_call_we_placed_and_ended_is_completed_through_twilio(daemon, twilio):
    """Mom says goodbye: the daemon says its farewell, closes the stream, and because it
    placed the call it also tells Twilio the call is completed (REST Status=completed)."""
    sid = ctl(daemon, "call", "mom").stdout.strip()
    call = next_created(twilio)
    bye = "Okay, thank you very much. Goodbye."
    result = mom_answers(daemon, twilio, sid, call, [Utterance(speak(bye), bye)])
    assert result.closed_by_daemon
    daemon.wait_for(f"[{sid}] call ended: caller_goodbye")
    assert twilio.wait_updates(call, 1, timeout=15) == [[("Status", "completed")]]


def test_twilio_refusal_is_exit_5_with_its_code(daemon, twilio):
    twilio.refuse = GEO_PERMISSION
    try:
        proc = ctl(daemon, "call", "dad")
    finally:
        twilio.refuse = None
    assert proc.returncode == 5
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert "21215" in lines[0] and "Account not authorized to call +15551230001" in lines[0]
    assert status(daemon)["calls"] == []  # the line it held is free again


def test_unknown_contact_and_bad_number_are_exit_6(daemon):
    proc = ctl(daemon, "call", "aunt")
    assert proc.returncode == 6
    assert proc.stderr.strip() == "aicallerctl: unknown contact 'aunt' (known: dad, mom)"
    proc = ctl(daemon, "call", "555-1234")
    assert proc.returncode == 6 and "E.164" in proc.stderr


def test_number_with_prompt_then_no_answer_frees_the_line(daemon, twilio):
    proc = ctl(daemon, "call", "+1 (555) 000-1234", "--prompt", "Ask about the parcel.")
    assert proc.returncode == 0, proc.stderr
    sid = proc.stdout.strip()
    call = next_created(twilio)
    assert call.sid == sid and call.to == "+15550001234"
    assert [c["sid"] for c in status(daemon)["calls"]] == [sid]
    assert twilio.post_status(sid, "no-answer", daemon.base_url).status_code == 204
    assert status(daemon)["calls"] == []
    with sqlite3.connect(daemon.db_path) as db:
        row = db.execute("SELECT status, end_reason FROM calls WHERE sid = ?", (sid,)).fetchone()
    assert row == ("no-answer", "no-answer")


def test_hangup_of_a_ringing_call_goes_through_twilio(daemon, twilio):
    sid = ctl(daemon, "call", "dad").stdout.strip()
    call = next_created(twilio)
    proc = ctl(daemon, "hangup", sid)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{sid}: completed"
    assert call.updates == [[("Status", "completed")]]
    assert status(daemon)["calls"] == []


def test_status_callbacks_must_be_signed(daemon):
    form = {"CallSid": "CA" + "5" * 32, "CallStatus": "ringing"}
    r = httpx.post(daemon.base_url + "/status", data=form, headers={"X-Twilio-Signature": "x"})
    assert r.status_code == 403
    daemon.wait_for("POST /status from 127.0.0.1 refused: bad X-Twilio-Signature")


def test_http_trigger_needs_the_bearer_token(daemon, twilio):
    url = daemon.base_url + "/call/mom"
    with httpx.Client() as client:
        assert client.post(url).status_code == 401
        wrong = client.post(url, headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        auth = {"Authorization": f"Bearer {TRIGGER_TOKEN}"}
        assert client.post(daemon.base_url + "/call/aunt", headers=auth).status_code == 404
        ok = client.post(url, headers=auth, json={"prompt": "Say hello."})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    call = next_created(twilio)
    assert body == {"sid": call.sid, "status": "queued", "to": MOM, "contact": "mom"}
    assert ctl(daemon, "hangup", call.sid).returncode == 0
    daemon.wait_for("POST /call/mom from 127.0.0.1 refused: wrong bearer token")


def test_http_trigger_slows_down_guessing(daemon):
    """Behind Caddy every request comes from 127.0.0.1; the address Caddy saw counts."""
    url = daemon.base_url + "/call/mom"
    guesser = {"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer guess"}
    with httpx.Client() as client:
        codes = [client.post(url, headers=guesser).status_code for _ in range(3)]
        assert codes == [401, 401, 401]  # the 3rd earns a lock-out
        locked = client.post(url, headers=guesser)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
        # Even the right token waits out the lock-out: guessing cannot be raced.
        right = {**guesser, "Authorization": f"Bearer {TRIGGER_TOKEN}"}
        assert client.post(url, headers=right).status_code == 429
        # Another address is not affected.
        other = {"X-Forwarded-For": "198.51.100.9", "Authorization": "Bearer guess"}
        assert client.post(url, headers=other).status_code == 401
    daemon.wait_for("203.0.113.7 refused: wrong bearer token (3 failures, locked out for 2s)")
