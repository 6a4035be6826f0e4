"""Twilio Media Streams messages, both directions, as plain data (no sockets).

The daemon side parses what Twilio sends (``parse_inbound``) and builds what Twilio
accepts (``media_message``, ``mark_message``, ``clear_message``). The Twilio side
(``parse_outbound`` and the ``*_event`` builders) lets a local stand-in play Twilio in
tests with exactly the wire shapes Twilio uses. Anything malformed raises
``MediaProtocolError`` saying what was wrong, so a bad frame ends the call loudly
instead of being half-understood.

The frames arrive from the internet before anything about them is verified, so parsing is
bounded: a frame over `MAX_FRAME` is refused before it is decoded, counters have at most
`MAX_DIGITS` digits, SIDs must have Twilio's shape, and any attacker-supplied value quoted in
an error message is cut to a few dozen characters. No input raises anything else than
``MediaProtocolError``.
"""

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from aicallerd.twilio.sids import ACCOUNT_SID, CALL_SID, STREAM_SID

__all__ = [
    "MAX_DIGITS",
    "MAX_FRAME",
    "Connected",
    "Dtmf",
    "InboundEvent",
    "Mark",
    "Media",
    "MediaProtocolError",
    "OutClear",
    "OutMark",
    "OutMedia",
    "OutboundMessage",
    "Start",
    "Stop",
    "clear_message",
    "connected_event",
    "dtmf_event",
    "mark_event",
    "mark_message",
    "media_event",
    "media_message",
    "parse_inbound",
    "parse_outbound",
    "start_event",
    "stop_event",
]


MAX_FRAME = 64 * 1024
"""Longest frame parsed, in bytes (or characters of a text frame); Twilio's are ~1 KB."""
MAX_DIGITS = 12
"""Longest counter (sequenceNumber, chunk, timestamp...): a 20 ms chunk each, for 600 years."""
_SHOWN = 80  # characters of an attacker-supplied value quoted in an error message


class MediaProtocolError(ValueError):
    """A Media Streams frame that does not follow the protocol."""


# --- inbound events (Twilio -> daemon) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    sequence: int
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int
    custom_parameters: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Media:
    sequence: int
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes  # raw mu-law, 8 kHz


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence: int
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    sequence: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence: int
    stream_sid: str
    call_sid: str


InboundEvent = Connected | Start | Media | Dtmf | Mark | Stop


# --- outbound messages (daemon -> Twilio) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class OutMedia:
    payload: bytes
    stream_sid: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class OutMark:
    name: str
    stream_sid: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class OutClear:
    stream_sid: str = field(default="", compare=False)


OutboundMessage = OutMedia | OutMark | OutClear


# --- field access ----------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value for an error message: bounded and on one line, whatever the sender put there."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return "an integer too large to show"  # repr() of a 5000-digit int raises
    return repr(value)[:_SHOWN]


def _load(frame: object, what: str) -> dict[str, Any]:
    if isinstance(frame, bytes | bytearray | memoryview):
        raw = bytes(frame)
        if len(raw) > MAX_FRAME:
            raise MediaProtocolError(f"{what}: frame of {len(raw)} bytes, limit {MAX_FRAME}")
        try:
            frame = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MediaProtocolError(f"{what}: binary frame is not UTF-8 text") from None
    if not isinstance(frame, str):
        raise MediaProtocolError(f"{what}: no text or binary frame ({type(frame).__name__})")
    if len(frame) > MAX_FRAME:
        raise MediaProtocolError(f"{what}: frame of {len(frame)} characters, limit {MAX_FRAME}")
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        # Huge integers raise a plain ValueError, deep nesting RecursionError.
        reason = str(exc)[:_SHOWN] if isinstance(exc, ValueError) else "nested too deeply"
        raise MediaProtocolError(f"{what}: frame is not valid JSON ({reason})") from None
    if not isinstance(message, dict):
        raise MediaProtocolError(f"{what}: expected a JSON object, got {type(message).__name__}")
    return message


def _get(obj: Mapping[str, Any], path: str) -> Any:
    """Look up a dotted path such as ``media.payload``; every step must exist."""
    value: Any = obj
    keys = path.split(".")
    for depth, key in enumerate(keys):
        if not isinstance(value, Mapping):
            parent = ".".join(keys[:depth])
            raise MediaProtocolError(f"field {parent!r} must be an object, got {_show(value)}")
        if key not in value:
            raise MediaProtocolError(f"missing field {path!r}")
        value = value[key]
    return value


def _str(obj: Mapping[str, Any], path: str) -> str:
    value = _get(obj, path)
    if not isinstance(value, str):
        raise MediaProtocolError(f"field {path!r} must be a string, got {_show(value)}")
    return value


def _sid(obj: Mapping[str, Any], path: str, pattern: re.Pattern[str], prefix: str) -> str:
    value = _str(obj, path)
    if not pattern.match(value):
        raise MediaProtocolError(
            f"field {path!r} must be {prefix} and 32 hex digits, got {_show(value)}"
        )
    return value


def _int(obj: Mapping[str, Any], path: str) -> int:
    """Twilio sends counters as decimal strings; accept JSON integers too (both bounded)."""
    value = _get(obj, path)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_DIGITS:
        return value
    if isinstance(value, str) and len(value) <= MAX_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    raise MediaProtocolError(
        f"field {path!r} must be an integer from 0 to {MAX_DIGITS} digits, got {_show(value)}"
    )


def _b64(obj: Mapping[str, Any], path: str) -> bytes:
    text = _str(obj, path)
    try:
        if len(text) % 4:  # b64decode tolerates surplus "=" padding; we do not
            raise ValueError("length is not a multiple of 4")
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaProtocolError(f"field {path!r} is not valid base64 ({exc})") from None


def _b64encode(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# --- daemon side -----------------------------------------------------------------------


def _head(m: Mapping[str, Any]) -> tuple[int, str]:
    return _int(m, "sequenceNumber"), _str(m, "streamSid")


def _parse_start(m: Mapping[str, Any]) -> Start:
    tracks = _get(m, "start.tracks")
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise MediaProtocolError(
            f"field 'start.tracks' must be a list of strings, got {_show(tracks)}"
        )
    start = _get(m, "start")
    params = start.get("customParameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise MediaProtocolError(
            f"field 'start.customParameters' must map names to strings, got {_show(params)}"
        )
    return Start(
        sequence=_int(m, "sequenceNumber"),
        stream_sid=_sid(m, "streamSid", STREAM_SID, "MZ"),
        call_sid=_sid(m, "start.callSid", CALL_SID, "CA"),
        account_sid=_sid(m, "start.accountSid", ACCOUNT_SID, "AC"),
        tracks=tuple(tracks),
        encoding=_str(m, "start.mediaFormat.encoding"),
        sample_rate=_int(m, "start.mediaFormat.sampleRate"),
        channels=_int(m, "start.mediaFormat.channels"),
        custom_parameters=dict(params),
    )


def _parse_media(m: Mapping[str, Any]) -> Media:
    sequence, stream_sid = _head(m)
    return Media(
        sequence=sequence,
        stream_sid=stream_sid,
        track=_str(m, "media.track"),
        chunk=_int(m, "media.chunk"),
        timestamp_ms=_int(m, "media.timestamp"),
        payload=_b64(m, "media.payload"),
    )


_INBOUND: dict[str, Callable[[Mapping[str, Any]], InboundEvent]] = {
    "connected": lambda m: Connected(_str(m, "protocol"), _str(m, "version")),
    "start": _parse_start,
    "media": _parse_media,
    "dtmf": lambda m: Dtmf(*_head(m), _str(m, "dtmf.digit")),
    "mark": lambda m: Mark(*_head(m), _str(m, "mark.name")),
    "stop": lambda m: Stop(*_head(m), _str(m, "stop.callSid")),
}


def _counter(value: object) -> int | None:
    """A well-formed counter's value, else None (`_int` then says what is wrong)."""
    if type(value) is str and len(value) <= MAX_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    if type(value) is int and 0 <= value < 10**MAX_DIGITS:
        return value
    return None


class _QuickBody(msgspec.Struct):
    track: str
    chunk: str | int
    timestamp: str | int
    payload: bytes  # base64 on the wire: msgspec decodes it in the same C pass


class _QuickMedia(msgspec.Struct):
    event: Literal["media"]
    sequenceNumber: str | int  # Twilio's field names
    streamSid: str
    media: _QuickBody


_QUICK = msgspec.json.Decoder(_QuickMedia)


def _quick_media(text: str | bytes) -> Media | None:
    """A well-formed ``media`` message, decoded and typed in one C pass: every frame of every
    call comes this way. Anything unusual returns None, and the full parser says what is
    wrong (or parses the other events)."""
    try:
        m = _QUICK.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None
    body = m.media
    sequence, chunk = _counter(m.sequenceNumber), _counter(body.chunk)
    timestamp = _counter(body.timestamp)
    if sequence is None or chunk is None or timestamp is None:
        return None
    return Media(sequence, m.streamSid, body.track, chunk, timestamp, body.payload)


def parse_inbound(text: object) -> InboundEvent:
    """Parse one frame Twilio sent (text or UTF-8 bytes; anything else, None included, is
    refused); raises MediaProtocolError, and only that, on anything unexpected."""
    if type(text) in (str, bytes) and len(text) <= MAX_FRAME:  # type: ignore[arg-type]
        if (quick := _quick_media(text)) is not None:  # type: ignore[arg-type]
            return quick
    message = _load(text, "inbound")
    event = message.get("event")
    parser = _INBOUND.get(event) if isinstance(event, str) else None
    if parser is None:
        what = "missing 'event'" if event is None else f"unknown event {_show(event)}"
        raise MediaProtocolError(f"inbound: {what}")
    try:
        return parser(message)
    except MediaProtocolError as exc:
        raise MediaProtocolError(f"{event} event: {exc}") from None


def media_message(stream_sid: str, payload: bytes) -> str:
    """Queue raw 8 kHz mu-law audio for playback (any length; Twilio buffers in order)."""
    return _dump(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": _b64encode(payload)}}
    )


def mark_message(stream_sid: str, name: str) -> str:
    """Ask Twilio to echo ``name`` when playback reaches this point (or on clear)."""
    return _dump({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    """Drop all audio Twilio has buffered (barge-in); pending marks are echoed at once."""
    return _dump({"event": "clear", "streamSid": stream_sid})


# --- Twilio side (for the local stand-in) ----------------------------------------------


def parse_outbound(text: object) -> OutboundMessage:
    """Parse a frame the daemon sent, rejecting what real Twilio would reject."""
    if isinstance(text, bytes | bytearray | memoryview):
        raise MediaProtocolError("outbound: binary frame; Twilio accepts only text (warning 31950)")
    message = _load(text, "outbound")
    event = message.get("event")
    if event not in ("media", "mark", "clear"):
        what = "missing 'event'" if event is None else f"unknown event {_show(event)}"
        raise MediaProtocolError(f"outbound: {what} (error 31924)")
    try:
        stream_sid = _str(message, "streamSid")
        if event == "media":
            return OutMedia(_b64(message, "media.payload"), stream_sid)
        if event == "mark":
            return OutMark(_str(message, "mark.name"), stream_sid)
        return OutClear(stream_sid)
    except MediaProtocolError as exc:
        raise MediaProtocolError(f"outbound {event} message: {exc}") from None


def connected_event() -> str:
    """First frame of every stream, before ``start``."""
    return _dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_event(
    seq: int, stream_sid: str, call_sid: str, account_sid: str, params: Mapping[str, str]
) -> str:
    """Stream metadata: 8 kHz mono mu-law inbound track, with the TwiML ``<Parameter>`` values."""
    return _dump(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": dict(params),
            },
        }
    )


def media_event(seq: int, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    """Caller audio; counters travel as strings, as Twilio sends them."""
    return _dump(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": _b64encode(payload),
            },
        }
    )


def mark_event(seq: int, stream_sid: str, name: str) -> str:
    """Echo of a daemon mark: playback reached it (or the buffer was cleared)."""
    return _dump(
        {
            "event": "mark",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def dtmf_event(seq: int, stream_sid: str, digit: str) -> str:
    """A keypad press by the caller."""
    return _dump(
        {
            "event": "dtmf",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def stop_event(seq: int, stream_sid: str, call_sid: str, account_sid: str) -> str:
    """Last frame: the call or stream ended."""
    return _dump(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )
