"""A fake Twilio REST API (the Calls resource) on a real loopback socket.

Speaks the documented protocol of ``/2010-04-01/Accounts/{AccountSid}/Calls.json``: HTTP
Basic auth (401 + code 20003 otherwise), form-encoded fields, To/From validated as E.164
(21201/21213 missing, 21211/21212 invalid), exactly one of Url/Twiml/ApplicationSid (Twiml at
most 4000 characters), ``StatusCallbackEvent`` repeated per event, 201 with a ``CA...`` SID
and ``status: queued``. ``POST .../Calls/{CallSid}.json`` with ``Status=completed`` (or
``canceled``) hangs up (200), ``Twiml``/``Url`` replace the live TwiML, and an unknown SID is
404 / 20404. ``GET`` of a call returns it. Error bodies carry code, message, more_info, status.

Tell it to refuse with `refuse` (e.g. 21215, geo permissions). `on_create` runs for each
created call, so a test can go on to play the Twilio side of that call; `post_status` sends
the signed status callback Twilio would send.
"""

import base64
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from aicallerd.twilio.signature import compute_signature

from . import FakeHandler, LoopbackFake, Recorded

API = "/2010-04-01"
E164 = re.compile(r"\+[1-9][0-9]{7,14}")
EVENTS = ("initiated", "ringing", "answered", "completed")
MAX_TWIML = 4000
_CALLS = re.compile(rf"^{API}/Accounts/([^/]+)/Calls\.json$")
_CALL = re.compile(rf"^{API}/Accounts/([^/]+)/Calls/([^/]+)\.json$")

GEO_PERMISSION = (
    400,
    21215,
    "Account not authorized to call {to}. Perhaps you need to enable some international "
    "permissions: https://www.twilio.com/console/voice/calls/geo-permissions/low-risk",
)


@dataclass
class FakeCall:
    """A call as the fake created it, with every form field it was given (in order)."""

    sid: str
    to: str
    from_: str
    form: list[tuple[str, str]]
    status: str = "queued"
    updates: list[list[tuple[str, str]]] = field(default_factory=list)
    callbacks_sent: int = 0

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.form if k == name), None)

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.form if k == name]

    @property
    def twiml(self) -> str | None:
        return self.get("Twiml")

    @property
    def status_callback(self) -> str | None:
        return self.get("StatusCallback")

    @property
    def status_callback_events(self) -> list[str]:
        return self.get_all("StatusCallbackEvent")


class FakeTwilioRest(LoopbackFake):
    """Configure by attribute: `refuse` = (http_status, code, message) or None; `on_create`."""

    def __init__(
        self,
        account_sid: str = "AC" + "a1" * 16,
        auth_token: str = "fake-twilio-auth-token-0123456789",
    ) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: dict[str, FakeCall] = {}
        self.created: list[FakeCall] = []
        self.refuse: tuple[int, int, str] | None = None
        self.on_create: Callable[[FakeCall], None] | None = None
        self.created_event = threading.Event()
        self.updated = threading.Condition()  # notified on every call update

    # -- helpers for tests ---------------------------------------------------------------
    def call(self, sid: str) -> FakeCall:
        return self.calls[sid]

    def callback_params(self, call: FakeCall, status: str, duration: int = 0) -> dict[str, str]:
        """The form Twilio posts to StatusCallback (call-progress-events)."""
        call.callbacks_sent += 1
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API.strip("/"),
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.callbacks_sent - 1),
            "Timestamp": formatdate(usegmt=True),
        }
        if status == "completed":
            params["CallDuration"] = str(duration)
        return params

    def post_status(
        self, sid: str, status: str, connect_base: str | None = None, duration: int = 0
    ) -> httpx.Response:
        """POST a signed status callback for `sid`, like Twilio would.

        The signature covers the StatusCallback URL as given; `connect_base` (e.g.
        ``http://127.0.0.1:5000``) replaces its scheme and host for the actual connection.
        """
        call = self.calls[sid]
        url = call.status_callback
        assert url, f"{sid} has no StatusCallback"
        call.status = status
        params = self.callback_params(call, status, duration)
        signature = compute_signature(self.auth_token, url, params)
        target = url
        if connect_base:
            parts = urlsplit(url)
            target = (
                connect_base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
            )
        return httpx.post(target, data=params, headers={"X-Twilio-Signature": signature})

    # -- protocol ------------------------------------------------------------------------
    def _error(self, h: FakeHandler, status: int, code: int, message: str) -> None:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        if status == 401:
            h.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    def _authorized(self, rec: Recorded) -> bool:
        header = rec.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(f"{user}:{password}", f"{self.account_sid}:{self.auth_token}")

    def _resource(self, call: FakeCall) -> dict[str, Any]:
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "status": call.status,
            "direction": "outbound-api",
            "api_version": API.strip("/"),
            "date_created": formatdate(usegmt=True),
            "parent_call_sid": None,
            "price": None,
            "uri": f"{API}/Accounts/{self.account_sid}/Calls/{call.sid}.json",
        }

    def _not_found(self, h: FakeHandler, rec: Recorded) -> None:
        self._error(h, 404, 20404, f"The requested resource {rec.path} was not found")

    def handle(self, h: FakeHandler, rec: Recorded) -> None:
        if not self._authorized(rec):
            self._error(h, 401, 20003, "Authenticate")
            return
        form: list[tuple[str, str]] = []
        if rec.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = parse_qsl(rec.raw_body.decode(), keep_blank_values=True)
        rec.body = form  # the tests read the decoded form from here
        if m := _CALLS.match(rec.path):
            if m.group(1) != self.account_sid or rec.method != "POST":
                self._not_found(h, rec)
            else:
                self._create(h, form)
        elif m := _CALL.match(rec.path):
            call = self.calls.get(m.group(2))
            if m.group(1) != self.account_sid or call is None:
                self._not_found(h, rec)
            elif rec.method == "GET":
                h.send_json(200, self._resource(call))
            elif rec.method == "POST":
                self._update(h, call, form)
            else:
                self._not_found(h, rec)
        else:
            self._not_found(h, rec)

    def _create(self, h: FakeHandler, form: list[tuple[str, str]]) -> None:
        fields = dict(form)
        to, from_ = fields.get("To"), fields.get("From")
        if not to:
            return self._error(h, 400, 21201, "No 'To' number is specified")
        if not from_:
            return self._error(h, 400, 21213, "No 'From' number is specified")
        if not E164.fullmatch(to):
            return self._error(h, 400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not E164.fullmatch(from_):
            return self._error(h, 400, 21212, f"Invalid 'From' Phone Number: {from_}")
        given = [k for k in ("Url", "Twiml", "ApplicationSid") if k in fields]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            return self._error(
                h, 400, 21205, f"Exactly one of Url, Twiml or ApplicationSid is required ({what})"
            )
        if len(fields.get("Twiml", "")) > MAX_TWIML:
            return self._error(h, 400, 21205, f"Twiml exceeds the {MAX_TWIML} character limit")
        for event in (v for k, v in form if k == "StatusCallbackEvent"):
            if event not in EVENTS:
                return self._error(h, 400, 21200, f"Invalid StatusCallbackEvent: {event}")
        for key in ("Timeout", "TimeLimit"):
            if key in fields and not fields[key].isdigit():
                return self._error(h, 400, 21200, f"Invalid {key}: {fields[key]}")
        if self.refuse is not None:
            status, code, message = self.refuse
            return self._error(h, status, code, message.format(to=to, from_=from_))
        call = FakeCall("CA" + secrets.token_hex(16), to, from_, form)
        with self.lock:
            self.calls[call.sid] = call
            self.created.append(call)
        h.send_json(201, self._resource(call))
        self.created_event.set()
        if self.on_create is not None:
            self.on_create(call)
        return None

    def wait_updates(self, call: FakeCall, n: int, timeout: float) -> list[list[tuple[str, str]]]:
        """Block until ``call`` has had ``n`` updates (or ``timeout``); its updates."""
        with self.updated:
            self.updated.wait_for(lambda: len(call.updates) >= n, timeout)
        return call.updates

    def _update(self, h: FakeHandler, call: FakeCall, form: list[tuple[str, str]]) -> None:
        fields = dict(form)
        with self.updated:
            call.updates.append(form)
            self.updated.notify_all()
        status = fields.get("Status")
        if status is not None:
            if status not in ("completed", "canceled"):
                return self._error(h, 400, 21220, f"Invalid call state: {status}")
            live = call.status in ("queued", "ringing", "in-progress")
            if status == "canceled" and call.status == "in-progress":
                pass  # canceled only affects calls that have not been answered
            elif live:
                call.status = "canceled" if status == "canceled" else "completed"
        h.send_json(200, self._resource(call))
        return None
