"""The control protocol: one JSON object per line over a Unix stream socket (sans-I/O).

Both ends use this module: the daemon's server (`aicallerd.control.server`) and
`aicallerctl`; any other tool can speak it with a few lines of code (``socat``, ``nc -U``).
docs/control-protocol.md is the full reference, with every result shape.

Framing: UTF-8 JSON objects, each on one line ending in ``\\n`` (a ``\\r`` before it is
ignored, blank lines are skipped). A request line may be at most `MAX_LINE` bytes; a longer
one is answered with ``line_too_long`` and skipped up to its newline, and the connection
stays usable. Responses have no length limit. A connection carries any number of requests;
they are answered one at a time, in order.

Request::

    {"id": 1, "cmd": "call", "args": {"target": "mom", "prompt": "Remind her about Sunday."}}

``id`` (optional; string, integer or null) is echoed back; ``cmd`` is one of `COMMANDS`;
``args`` (optional object) holds that command's arguments, see `ARGS`. Unknown fields and
unknown arguments are errors, so a typo never goes unnoticed.

Responses::

    {"id": 1, "ok": true, "result": {...}}
    {"id": 1, "ok": false, "error": {"code": "unknown_contact", "message": "...", "details": {}}}

``result`` is always an object. ``error.code`` is a stable machine-readable string (see the
``E_*`` constants); ``error.message`` is one line for a person; ``details`` is optional
structured data (e.g. Twilio's error code). A peer that may not use the socket gets a single
``forbidden`` error (id null) and the connection is closed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

MAX_LINE = 64 * 1024
"""Longest request line the daemon reads, in bytes (newline excluded)."""
MAX_RESPONSE_LINE = 32 * 1024 * 1024
"""Longest response line a client should accept (a long transcript is big, not infinite)."""

COMMANDS = ("status", "call", "calls", "transcript", "hangup", "reload")
DEFAULT_CALLS_LIMIT = 20
MAX_CALLS_LIMIT = 1000
MAX_TARGET = 200
MAX_PROMPT = 4000
MAX_SID = 64

# -- error codes: protocol level (the server produces these) -------------------------------
E_BAD_JSON = "bad_json"  # the line is not UTF-8 JSON
E_BAD_REQUEST = "bad_request"  # JSON, but not a request object (fields, types)
E_UNKNOWN_COMMAND = "unknown_command"
E_BAD_ARGS = "bad_args"  # missing, unknown or mistyped argument
E_LINE_TOO_LONG = "line_too_long"
E_FORBIDDEN = "forbidden"  # SO_PEERCRED check failed; the connection is closed
E_INTERNAL = "internal"  # a bug in aicallerd; details are in its log
# -- error codes: command level (the daemon's handler raises ControlError with these) ------
E_UNKNOWN_CONTACT = "unknown_contact"
E_INVALID_NUMBER = "invalid_number"
E_TWILIO_REFUSED = "twilio_refused"  # details: twilio_code, twilio_status, more_info
E_TWILIO_UNAVAILABLE = "twilio_unavailable"  # network error, timeout
E_NOT_CONFIGURED = "not_configured"  # e.g. no Twilio credentials or from_number
E_BUSY = "busy"  # no free line (max_concurrent_calls) or shutting down
E_NO_SUCH_CALL = "no_such_call"
E_RELOAD_FAILED = "reload_failed"  # message: the config error; the old config keeps running

RequestId = str | int | None


class ControlError(Exception):
    """A request the daemon cannot do, said for the person who asked.

    Raised by a `ControlHandler` for user errors (unknown contact, Twilio refused...); the
    server turns it into an error response and the connection stays open.
    """

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = dict(details or {})

    def __repr__(self) -> str:
        return f"ControlError({self.code!r}, {self.message!r})"


class ProtocolError(ControlError):
    """A request line that is not a valid request; `request_id` is echoed if it was readable."""

    def __init__(self, code: str, message: str, request_id: RequestId = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


def twilio_error(exc: Any, action: str = "the call") -> ControlError:
    """The ControlError for a `TwilioRestError` (duck-typed: status, code, message, more_info).

    Refusals keep Twilio's code and message ("Twilio refused the call: 21215 Account not
    authorized to call ..."); transport failures (status 0) become ``twilio_unavailable``.
    """
    if not exc.status:
        return ControlError(E_TWILIO_UNAVAILABLE, str(exc.message))
    code = f"{exc.code} " if exc.code is not None else ""
    details = {"twilio_code": exc.code, "twilio_status": exc.status, "more_info": exc.more_info}
    return ControlError(E_TWILIO_REFUSED, f"Twilio refused {action}: {code}{exc.message}", details)


# -- result shapes (see docs/control-protocol.md) ------------------------------------------


class EngineStatus(TypedDict):
    name: str  # "vad" | "stt" | "llm" | "tts"
    ready: bool
    detail: str  # e.g. "faster-whisper tiny.en int8"
    health: str  # "ok", "degraded: <why>", "open until HH:MM:SS: <why>" (a cloud engine's breaker)


class ActiveCall(TypedDict):
    sid: str
    direction: str  # "inbound" | "outbound"
    peer: str  # the other party's number
    contact: str  # contact name or ""
    duration_s: float  # since the stream started (0 while still pending)
    turns: int  # agent replies so far
    state: str  # "pending" (TwiML handed out, no stream yet) | "active"


class LegStats(TypedDict):
    p50_ms: int | None
    p95_ms: int | None
    n: int


class CpuReport(TypedDict):
    """CPU since the engines were loaded (`aicallerd.cputime`): seconds per leg and the agent
    turns answered meanwhile; seconds / turns is the CPU cost of a turn."""

    since_s: float  # wall seconds covered
    turns: int  # agent turns answered
    seconds: dict[str, float]  # leg (vad, stt, llm, tts, framing, other) -> CPU seconds


class StatusResult(TypedDict):
    version: str
    pid: int
    uptime_s: float
    ready: bool
    draining: bool
    config: str | None  # the config file in use
    engines: list[EngineStatus]
    calls: list[ActiveCall]
    max_calls: int
    totals: dict[str, int]  # e.g. offered, answered, refused_busy, refused_token, placed
    latency: dict[str, LegStats]  # leg name (call.metrics.LEG_NAMES) -> stats
    cpu: CpuReport


class CallRecord(TypedDict):
    """A row of the call log (`CallLog.recent_calls`); times are Unix epoch seconds."""

    sid: str
    direction: str  # "in" | "out"
    from_number: str | None
    to_number: str | None
    contact: str | None
    started_at: float
    answered_at: float | None
    ended_at: float | None
    status: str | None
    end_reason: str | None
    turns: int


class Turn(TypedDict):
    seq: int
    who: str  # "caller" | "agent"
    text: str
    interrupted: bool
    started_at: float
    legs: dict[str, Any]  # latency legs in ms (agent turns)


class TranscriptResult(TypedDict):
    call: CallRecord
    turns: list[Turn]
    events: list[dict[str, Any]]  # Twilio status callbacks: {"at": float, "status": str}


class CallPlaced(TypedDict):
    sid: str
    status: str  # Twilio's, usually "queued"
    to: str
    contact: str | None


class HungUp(TypedDict):
    sid: str
    status: str


class Reloaded(TypedDict):
    config: str | None
    message: str


class ControlHandler(Protocol):
    """What the daemon does for each command; raise `ControlError` for user errors.

    Results must be JSON-serialisable; the shapes above are the contract with aicallerctl.
    `calls` returns the list; the server wraps it as ``{"calls": [...]}``.
    """

    async def status(self) -> Mapping[str, Any]: ...

    async def call(self, target: str, prompt: str | None) -> Mapping[str, Any]: ...

    async def calls(self, limit: int) -> list[Mapping[str, Any]]: ...

    async def transcript(self, sid: str) -> Mapping[str, Any]: ...

    async def hangup(self, sid: str) -> Mapping[str, Any]: ...

    async def reload(self) -> Mapping[str, Any]: ...


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)
    id: RequestId = None


@dataclass(frozen=True)
class _Arg:
    kind: type
    required: bool = False
    default: Any = None
    nullable: bool = False
    max_len: int | None = None
    lo: int | None = None
    hi: int | None = None


ARGS: dict[str, dict[str, _Arg]] = {
    "status": {},
    "call": {
        "target": _Arg(str, required=True, max_len=MAX_TARGET),
        "prompt": _Arg(str, nullable=True, max_len=MAX_PROMPT),
    },
    "calls": {"limit": _Arg(int, default=DEFAULT_CALLS_LIMIT, lo=1, hi=MAX_CALLS_LIMIT)},
    "transcript": {"sid": _Arg(str, required=True, max_len=MAX_SID)},
    "hangup": {"sid": _Arg(str, required=True, max_len=MAX_SID)},
    "reload": {},
}
_REQUEST_FIELDS = ("id", "cmd", "args")


def _check_arg(cmd: str, name: str, spec: _Arg, value: Any, rid: RequestId) -> Any:
    def bad(what: str) -> ProtocolError:
        return ProtocolError(E_BAD_ARGS, f"{cmd}: argument {name!r} {what}", rid)

    if value is None:
        if spec.nullable or not spec.required:
            return spec.default
        raise bad("must not be null")
    # bool is an int subclass; `"limit": true` is a mistake, not 1
    if isinstance(value, bool) or not isinstance(value, spec.kind):
        noun = "an integer" if spec.kind is int else "a string"
        raise bad(f"must be {noun}, got {_shown(value)}")
    if spec.kind is str:
        if spec.required and not value.strip():
            raise bad("must not be empty")
        if spec.max_len is not None and len(value) > spec.max_len:
            raise bad(f"is longer than {spec.max_len} characters")
        return value.strip() if spec.required else value
    if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
        raise bad(f"must be from {spec.lo} to {spec.hi}, got {value}")
    return value


def parse_request(line: bytes | str) -> Request:
    """One request line -> `Request` with checked, defaulted args; else `ProtocolError`."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as exc:
        raise ProtocolError(E_BAD_JSON, f"request is not UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            E_BAD_JSON, f"request is not valid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise ProtocolError(E_BAD_REQUEST, "request holds a number too long to read") from None
    except RecursionError:  # e.g. a line of 60,000 "[": the decoder recurses per level
        raise ProtocolError(E_BAD_REQUEST, "request is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(E_BAD_REQUEST, f"request must be a JSON object, got {_kind(obj)}")
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int | None):
        raise ProtocolError(
            E_BAD_REQUEST, f"'id' must be a string, integer or null, got {_kind(rid)}"
        )
    for key in obj:
        if key not in _REQUEST_FIELDS:
            raise ProtocolError(
                E_BAD_REQUEST, f"unknown request field {key!r} (expected: id, cmd, args)", rid
            )
    cmd = obj.get("cmd")
    if cmd is None:
        raise ProtocolError(E_BAD_REQUEST, "request has no 'cmd'", rid)
    if not isinstance(cmd, str):
        raise ProtocolError(E_BAD_REQUEST, f"'cmd' must be a string, got {_kind(cmd)}", rid)
    if cmd not in ARGS:
        raise ProtocolError(
            E_UNKNOWN_COMMAND, f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})", rid
        )
    raw_args = obj.get("args")
    if raw_args is None:
        raw_args = {}
    if not isinstance(raw_args, dict):
        raise ProtocolError(
            E_BAD_ARGS, f"{cmd}: 'args' must be an object, got {_kind(raw_args)}", rid
        )
    specs = ARGS[cmd]
    for name in raw_args:
        if name not in specs:
            known = ", ".join(specs) or "none"
            raise ProtocolError(
                E_BAD_ARGS, f"{cmd}: unknown argument {name!r} (expected: {known})", rid
            )
    args = {}
    for name, spec in specs.items():
        if spec.required and name not in raw_args:
            raise ProtocolError(E_BAD_ARGS, f"{cmd}: missing argument {name!r}", rid)
        args[name] = _check_arg(cmd, name, spec, raw_args.get(name), rid)
    return Request(cmd, args, rid)


def _shown(value: Any) -> str:
    """A wrong value for an error message: a scalar as JSON (cut short), else its kind."""
    if isinstance(value, dict | list):
        return _kind(value)  # encoding a deeply nested value could itself recurse too deep
    return json.dumps(value)[:60]


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return names.get(type(value), type(value).__name__)


# -- encoding ------------------------------------------------------------------------------


def _line(obj: Mapping[str, Any]) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON, other tools would choke on them
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def encode_request(cmd: str, args: Mapping[str, Any] | None = None, id: RequestId = None) -> bytes:
    return _line({"id": id, "cmd": cmd, "args": dict(args or {})})


def encode_result(id: RequestId, result: Mapping[str, Any]) -> bytes:
    """Raises TypeError/ValueError if `result` is not JSON-serialisable."""
    return _line({"id": id, "ok": True, "result": result})


def encode_error(
    id: RequestId, code: str, message: str, details: Mapping[str, Any] | None = None
) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = dict(details)
    return _line({"id": id, "ok": False, "error": error})


@dataclass(frozen=True)
class Response:
    id: RequestId
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: ControlError | None = None


def parse_response(line: bytes | str) -> Response:
    """One response line -> `Response`; ValueError if it is not a valid response."""
    obj = json.loads(line)  # bytes are accepted; JSONDecodeError is a ValueError
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ValueError("response is not an object with a boolean 'ok'")
    rid = obj.get("id")
    if obj["ok"]:
        result = obj.get("result")
        if not isinstance(result, dict):
            raise ValueError("ok response without a 'result' object")
        return Response(rid, True, result)
    err = obj.get("error")
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        raise ValueError("error response without an 'error' object with a 'code'")
    details = err.get("details")
    return Response(
        rid,
        False,
        error=ControlError(
            err["code"],
            str(err.get("message") or err["code"]),
            details if isinstance(details, dict) else None,
        ),
    )


# -- framing -------------------------------------------------------------------------------


class LineTooLong:
    """Stands in the line stream for a line that exceeded the limit (and was dropped)."""

    def __repr__(self) -> str:
        return "LINE_TOO_LONG"


LINE_TOO_LONG = LineTooLong()


class LineSplitter:
    """Bytes in, complete lines out; bounded memory even against a line that never ends.

    A line over `max_line` yields `LINE_TOO_LONG` once, as soon as it is known, and the rest
    of it (up to its newline) is dropped, so the next line is read normally.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    def _emit(self, line: bytes, out: list[bytes | LineTooLong]) -> None:
        line = line.removesuffix(b"\r")
        if len(line) > self.max_line:
            out.append(LINE_TOO_LONG)
        elif line.strip():
            out.append(line)

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        out: list[bytes | LineTooLong] = []
        self._buf += data
        while (nl := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._discarding:
                self._discarding = False  # that newline ended the overlong line
                continue
            self._emit(line, out)
        if self._discarding:
            self._buf.clear()
        elif len(self._buf) > self.max_line + 1:  # +1: room for a "\r" before the newline
            out.append(LINE_TOO_LONG)
            self._buf.clear()
            self._discarding = True
        return out

    def close(self) -> list[bytes | LineTooLong]:
        """End of stream: a last line without a newline still counts (``printf | nc -U``)."""
        out: list[bytes | LineTooLong] = []
        if not self._discarding and self._buf:
            self._emit(bytes(self._buf), out)
        self._buf.clear()
        self._discarding = False
        return out
