"""The two Twilio REST calls aicallerd makes: place an outbound call, and hang one up.

A thin httpx client (async, so it runs on the daemon's trio loop) for
``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` and ``.../Calls/{CallSid}.json``:
form-encoded bodies, HTTP Basic ``AccountSid:AuthToken``, ``StatusCallbackEvent`` repeated
once per event (Twilio's list encoding), and any 2xx counted as success. Every failure is a
`TwilioRestError` carrying Twilio's own ``code``/``message``/``more_info`` so the operator sees
e.g. "21215 Account not authorized to call ..." instead of a bare HTTP 400; transport
failures are the same error with ``status == 0``.

The auth token never appears in a repr, an error message or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from aicallerd.twilio.numbers import InvalidNumber, is_e164

log = logging.getLogger("aicallerd.twilio")

API_VERSION = "2010-04-01"
STATUS_CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
MAX_TWIML = 4000  # characters, Twilio's limit for the Twiml parameter


@dataclass(frozen=True)
class CallCreated:
    """What Twilio said about the call: its SID and status (queued, ringing, completed...)."""

    sid: str
    status: str


class TwilioRestError(Exception):
    """Twilio refused a request (``status`` = HTTP status) or could not be reached (0).

    ``code`` is Twilio's error code (21215, 20003, ...) when it sent one; str() is one line
    fit for an operator: ``Twilio error 21215: Account not authorized ... (HTTP 400)``.
    """

    def __init__(
        self, status: int, code: int | None, message: str, more_info: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.more_info = more_info
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.status == 0:
            return self.message
        code = f" {self.code}" if self.code is not None else ""
        return f"Twilio error{code}: {self.message} (HTTP {self.status})"


class TwilioRest:
    """Calls.json for one account; share one per daemon so the connection is reused.

    Pass an ``httpx.AsyncClient`` to share a connection pool (it is then yours to close);
    without one, this object owns its client and `aclose` closes it.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_base: str = "https://api.twilio.com",
        client: httpx.AsyncClient | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.api_base = api_base.rstrip("/")
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"TwilioRest(account_sid={self.account_sid!r}, api_base={self.api_base!r})"

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self._auth_token)

    @property
    def calls_url(self) -> str:
        return f"{self.api_base}/{API_VERSION}/Accounts/{self.account_sid}/Calls.json"

    def call_url(self, sid: str) -> str:
        return f"{self.api_base}/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> TwilioRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the API ---------------------------------------------------------------------------

    async def place_call(
        self,
        to: str,
        from_: str,
        twiml: str | None = None,
        status_callback: str | None = None,
        status_callback_events: Iterable[str] = STATUS_CALLBACK_EVENTS,
        timeout: int | None = None,
        time_limit: int | None = None,
        *,
        url: str | None = None,
    ) -> CallCreated:
        """Ask Twilio to dial `to` from `from_` and run `twiml` (or fetch `url`) on answer.

        `timeout` is how long to let it ring (s), `time_limit` the call's maximum length (s).
        Bad arguments raise ValueError (`InvalidNumber` for numbers) before anything is sent.
        """
        for name, number in (("To", to), ("From", from_)):
            if not is_e164(number):
                raise InvalidNumber(number, f"the {name} number")
        if (twiml is None) == (url is None):
            raise ValueError("place_call needs exactly one of twiml and url")
        if twiml is not None and len(twiml) > MAX_TWIML:
            raise ValueError(f"TwiML is {len(twiml)} characters, Twilio allows {MAX_TWIML}")
        events = list(status_callback_events)
        unknown = [e for e in events if e not in STATUS_CALLBACK_EVENTS]
        if unknown:
            raise ValueError(
                f"unknown status callback event(s) {unknown}: use {STATUS_CALLBACK_EVENTS}"
            )
        form: list[tuple[str, str]] = [("To", to), ("From", from_)]
        form.append(("Twiml", twiml) if twiml is not None else ("Url", url or ""))
        if status_callback:
            form.append(("StatusCallback", status_callback))
            form.append(("StatusCallbackMethod", "POST"))
            form.extend(("StatusCallbackEvent", event) for event in events)
        if timeout is not None:
            form.append(("Timeout", str(int(timeout))))
        if time_limit is not None:
            form.append(("TimeLimit", str(int(time_limit))))
        body = await self._post(self.calls_url, form)
        created = _created(body)
        log.info("Twilio accepted the call to %s: %s %s", to, created.sid, created.status)
        return created

    async def hangup(self, sid: str) -> CallCreated:
        """End a call in any state (``Status=completed`` also cancels a ringing call)."""
        if not sid or "/" in sid or "." in sid:
            raise ValueError(f"not a call SID: {sid!r}")
        body = await self._post(self.call_url(sid), [("Status", "completed")])
        return _created(body)

    # -- transport -------------------------------------------------------------------------

    async def _post(self, url: str, form: list[tuple[str, str]]) -> dict[str, Any]:
        if not self.configured:
            raise TwilioRestError(
                0, None, "Twilio is not configured: set [twilio] account_sid and auth_token"
            )
        try:
            response = await self._client.post(
                url,
                content=urlencode(form).encode("ascii"),  # list of pairs: repeats keep order
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
                auth=httpx.BasicAuth(self.account_sid, self._auth_token),
                timeout=self._timeout,
            )
        except httpx.TimeoutException:
            raise TwilioRestError(
                0, None, f"Twilio did not answer within {self._timeout:g}s ({self.api_base})"
            ) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise TwilioRestError(
                0, None, f"cannot reach Twilio at {self.api_base}: {reason}"
            ) from None
        return _parse(response)


def _parse(response: httpx.Response) -> dict[str, Any]:
    """A 2xx JSON object, or the TwilioRestError its error body describes."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        if not isinstance(body, dict):
            raise TwilioRestError(response.status_code, None, "answer was not a JSON object")
        return body
    if isinstance(body, dict) and body.get("message"):
        code, more = body.get("code"), body.get("more_info")
        raise TwilioRestError(
            response.status_code,
            code if isinstance(code, int) else None,
            str(body["message"]),
            str(more) if more else None,
        )
    snippet = " ".join(response.text[:200].split()) or response.reason_phrase
    raise TwilioRestError(response.status_code, None, snippet)


def _created(body: dict[str, Any]) -> CallCreated:
    sid, status = body.get("sid"), body.get("status")
    if not isinstance(sid, str) or not sid:
        raise TwilioRestError(200, None, "answer carried no call sid")
    return CallCreated(sid, status if isinstance(status, str) else "unknown")
