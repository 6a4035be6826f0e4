import base64
import json
import random

import pytest

from aicallerd.twilio.media import (
    MAX_DIGITS,
    MAX_FRAME,
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaProtocolError,
    OutClear,
    OutMark,
    OutMedia,
    Start,
    Stop,
    clear_message,
    connected_event,
    dtmf_event,
    mark_event,
    mark_message,
    media_event,
    media_message,
    parse_inbound,
    parse_outbound,
    start_event,
    stop_event,
)
from aicallerd.twilio.sids import CALL_SID, STREAM_SID, valid_call_sid

SID = "MZ" + "0123456789abcdef" * 2
CALL = "CA" + "fedcba9876543210" * 2
ACCOUNT = "AC" + "00112233445566778899aabbccddeeff"
AUDIO = bytes(range(160))
B64 = base64.b64encode(AUDIO).decode()

# Frames exactly as Twilio documents them (counters are strings).
TWILIO_FRAMES = {
    "connected": '{"event":"connected","protocol":"Call","version":"1.0.0"}',
    "start": json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": SID,
            "start": {
                "accountSid": ACCOUNT,
                "streamSid": SID,
                "callSid": CALL,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"token": "tok"},
            },
        }
    ),
    "media": json.dumps(
        {
            "event": "media",
            "sequenceNumber": "4",
            "streamSid": SID,
            "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": B64},
        }
    ),
    "dtmf": json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": "5",
            "streamSid": SID,
            "dtmf": {"track": "inbound_track", "digit": "1"},
        }
    ),
    "mark": json.dumps(
        {"event": "mark", "sequenceNumber": "6", "streamSid": SID, "mark": {"name": "utt-42"}}
    ),
    "stop": json.dumps(
        {
            "event": "stop",
            "sequenceNumber": "7",
            "streamSid": SID,
            "stop": {"accountSid": ACCOUNT, "callSid": CALL},
        }
    ),
}


def test_parse_twilio_frames() -> None:
    assert parse_inbound(TWILIO_FRAMES["connected"]) == Connected("Call", "1.0.0")
    assert parse_inbound(TWILIO_FRAMES["start"]) == Start(
        sequence=1,
        stream_sid=SID,
        call_sid=CALL,
        account_sid=ACCOUNT,
        tracks=("inbound",),
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
        custom_parameters={"token": "tok"},
    )
    assert parse_inbound(TWILIO_FRAMES["media"]) == Media(4, SID, "inbound", 2, 5, AUDIO)
    assert parse_inbound(TWILIO_FRAMES["dtmf"]) == Dtmf(5, SID, "1")
    assert parse_inbound(TWILIO_FRAMES["mark"]) == Mark(6, SID, "utt-42")
    assert parse_inbound(TWILIO_FRAMES["stop"]) == Stop(7, SID, CALL)


def test_counters_may_be_ints_and_binary_utf8_frames_are_accepted() -> None:
    frame = json.loads(TWILIO_FRAMES["media"])
    frame["sequenceNumber"] = 4
    frame["media"].update(chunk=2, timestamp=5)
    assert parse_inbound(json.dumps(frame).encode()) == Media(4, SID, "inbound", 2, 5, AUDIO)


@pytest.mark.parametrize("payload", [b"", b"\xff", b"\x00\x01", bytes(1000)])
def test_media_payload_of_any_length(payload: bytes) -> None:
    event = parse_inbound(media_event(3, SID, 1, 0, payload))
    assert isinstance(event, Media) and event.payload == payload


def test_start_without_custom_parameters() -> None:
    frame = json.loads(TWILIO_FRAMES["start"])
    del frame["start"]["customParameters"]
    event = parse_inbound(json.dumps(frame))
    assert isinstance(event, Start) and event.custom_parameters == {}


def _mutated(name: str, mutate) -> str:
    frame = json.loads(TWILIO_FRAMES[name])
    mutate(frame)
    return json.dumps(frame)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        ('"media"', "object"),
        ('{"streamSid": "MZ"}', "missing 'event'"),
        ('{"event": "clear", "streamSid": "MZ"}', "unknown event 'clear'"),
        ('{"event": 5}', "unknown event 5"),
        (_mutated("media", lambda f: f["media"].update(payload="not base64!")), "media.payload"),
        (_mutated("media", lambda f: f["media"].update(payload="QUJD=")), "base64"),
        (_mutated("media", lambda f: f["media"].update(payload="QUI")), "base64"),
        (_mutated("media", lambda f: f["media"].pop("payload")), "missing field 'media.payload'"),
        (_mutated("media", lambda f: f["media"].update(payload=12)), "media.payload"),
        (_mutated("media", lambda f: f.update(media="x")), "field 'media' must be an object"),
        (_mutated("media", lambda f: f["media"].update(timestamp="-5")), "media.timestamp"),
        (_mutated("media", lambda f: f["media"].update(chunk="two")), "media.chunk"),
        (_mutated("media", lambda f: f.update(sequenceNumber=True)), "sequenceNumber"),
        (_mutated("media", lambda f: f.pop("streamSid")), "streamSid"),
        (_mutated("start", lambda f: f["start"].pop("callSid")), "start.callSid"),
        (_mutated("start", lambda f: f["start"].update(tracks="inbound")), "start.tracks"),
        (
            _mutated("start", lambda f: f["start"]["mediaFormat"].update(sampleRate=None)),
            "start.mediaFormat.sampleRate",
        ),
        (
            _mutated("start", lambda f: f["start"].update(customParameters={"a": 1})),
            "customParameters",
        ),
        (_mutated("dtmf", lambda f: f["dtmf"].pop("digit")), "dtmf.digit"),
        (_mutated("mark", lambda f: f.pop("mark")), "mark.name"),
        (_mutated("stop", lambda f: f["stop"].pop("callSid")), "stop.callSid"),
        (_mutated("connected", lambda f: f.pop("version")), "version"),
    ],
)
def test_malformed_inbound_frames_are_rejected_with_a_reason(frame, reason: str) -> None:
    with pytest.raises(MediaProtocolError) as info:
        parse_inbound(frame)
    assert reason in str(info.value)


def test_outbound_builders_are_compact_twilio_json() -> None:
    assert media_message(SID, b"\x00\xff") == (
        f'{{"event":"media","streamSid":"{SID}","media":{{"payload":"AP8="}}}}'
    )
    assert mark_message(SID, "utt-42") == (
        f'{{"event":"mark","streamSid":"{SID}","mark":{{"name":"utt-42"}}}}'
    )
    assert clear_message(SID) == f'{{"event":"clear","streamSid":"{SID}"}}'


def test_outbound_roundtrip_through_the_twilio_side() -> None:
    assert parse_outbound(media_message(SID, AUDIO)) == OutMedia(AUDIO)
    assert parse_outbound(media_message(SID, b"")) == OutMedia(b"")
    assert parse_outbound(mark_message(SID, "utt-1")) == OutMark("utt-1")
    assert parse_outbound(clear_message(SID)) == OutClear()
    assert parse_outbound(clear_message(SID)).stream_sid == SID


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b'{"event":"clear","streamSid":"MZ"}', "31950"),
        ('{"event":"start","streamSid":"MZ"}', "31924"),
        ('{"streamSid":"MZ"}', "missing 'event'"),
        ('{"event":"clear"}', "streamSid"),
        ('{"event":"media","streamSid":"MZ","media":{"payload":"@@"}}', "base64"),
        ('{"event":"mark","streamSid":"MZ","mark":{}}', "mark.name"),
        ("[]", "object"),
    ],
)
def test_parse_outbound_rejects_what_twilio_rejects(frame, reason: str) -> None:
    with pytest.raises(MediaProtocolError) as info:
        parse_outbound(frame)
    assert reason in str(info.value)


def test_twilio_side_builders_produce_documented_shapes() -> None:
    for name, built in [
        ("connected", connected_event()),
        ("start", start_event(1, SID, CALL, ACCOUNT, {"token": "tok"})),
        ("media", media_event(4, SID, 2, 5, AUDIO)),
        ("dtmf", dtmf_event(5, SID, "1")),
        ("mark", mark_event(6, SID, "utt-42")),
        ("stop", stop_event(7, SID, CALL, ACCOUNT)),
    ]:
        assert json.loads(built) == json.loads(TWILIO_FRAMES[name]), name
        assert list(json.loads(built)) == list(json.loads(TWILIO_FRAMES[name])), name  # key order
        assert ", " not in built and ": " not in built  # compact
        assert parse_inbound(built) == parse_inbound(TWILIO_FRAMES[name])


# --- hostile input: only MediaProtocolError, bounded messages ---------------------------


def test_twilio_sids_are_checked_whole() -> None:
    assert valid_call_sid(CALL) and valid_call_sid("CA" + "ABCDEF0123456789" * 2)
    for bad in ["CA1", CALL + "\n", CALL + "0", "ca" + CALL[2:], "CA" + "g" * 32, None, 7, SID]:
        assert not valid_call_sid(bad), bad
    assert CALL_SID.match(CALL) and not CALL_SID.search("x" + CALL)
    assert STREAM_SID.match(SID) and not STREAM_SID.match(SID + "\n")


@pytest.mark.parametrize(
    ("mutate", "field_name"),
    [
        (lambda f: f["start"].update(callSid="CA1"), "start.callSid"),
        (lambda f: f["start"].update(callSid=CALL + "]\n<0>forged"), "start.callSid"),
        (lambda f: f.update(streamSid="MZ1"), "streamSid"),
        (lambda f: f.update(streamSid=CALL), "streamSid"),
        (lambda f: f["start"].update(accountSid="AC1"), "start.accountSid"),
    ],
)
def test_start_with_a_malformed_sid_is_refused(mutate, field_name: str) -> None:
    with pytest.raises(MediaProtocolError) as info:
        parse_inbound(_mutated("start", mutate))
    assert f"field {field_name!r} must be" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("frame", [None, b"", "", bytearray(), memoryview(b""), 5, ["x"]])
def test_empty_or_absent_frames_are_protocol_errors(frame: object) -> None:
    with pytest.raises(MediaProtocolError):
        parse_inbound(frame)


@pytest.mark.parametrize("field_name", ["sequenceNumber", "chunk", "timestamp"])
def test_counters_are_bounded(field_name: str) -> None:
    def put(value: object):
        def mutate(f: dict) -> None:
            (f if field_name == "sequenceNumber" else f["media"])[field_name] = value

        return _mutated("media", mutate)

    assert isinstance(parse_inbound(put("9" * MAX_DIGITS)), Media)
    for value in ["9" * (MAX_DIGITS + 1), "9" * 5000, 10**MAX_DIGITS, 10**4000, -1, "١٢"]:
        with pytest.raises(MediaProtocolError, match=field_name) as info:
            parse_inbound(put(value))
        assert len(str(info.value)) < 200


def test_oversized_frames_are_refused_before_decoding() -> None:
    big = json.dumps({"event": "media", "pad": "x" * MAX_FRAME})
    for frame in (big, big.encode()):
        with pytest.raises(MediaProtocolError, match="limit") as info:
            parse_inbound(frame)
        assert "xxx" not in str(info.value)


# Raw JSON values to put in place of a field: wrong types, huge numbers, deep nesting,
# control characters, over-long strings.
GARBAGE = [
    "null",
    "true",
    "-1",
    "1.5",
    "1e999",
    "1" + "0" * 50,
    "9" * 5000,
    '"' + "9" * 5000 + '"',
    '"' + "9" * (MAX_DIGITS + 1) + '"',
    '""',
    '"-5"',
    '" 5"',
    '"\\u0661\\u0662"',
    "[]",
    "{}",
    '["inbound", 5]',
    '{"a": 1}',
    "[" * 50_000 + "]" * 50_000,
    '{"a":' * 3000 + "1" + "}" * 3000,
    '"x]\\n<0>forged line"',
    '"' + "A" * 40_000 + '"',
    '"' + "A" * 70_000 + '"',
]


def _leaf_paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a frame, inner objects included (so whole sub-objects get replaced)."""
    paths = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            paths += _leaf_paths(value, (*prefix, key))
    return paths


def _replace(frame_text: str, path: tuple, raw: str) -> str:
    frame = json.loads(frame_text)
    parent = frame
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = "\x00HOLE\x00"
    return json.dumps(frame).replace('"\\u0000HOLE\\u0000"', raw)


def _hostile_frames() -> list[object]:
    rng = random.Random(20261126)  # fixed seed: the same inputs on every run
    frames: list[object] = []
    for text in TWILIO_FRAMES.values():
        for path in _leaf_paths(json.loads(text)):
            frames += [_replace(text, path, raw) for raw in GARBAGE]
        frames += [text[:cut] for cut in range(0, len(text), 7)]  # truncated anywhere
        frames += [text.encode()[:cut] for cut in range(0, len(text), 11)]
    for _ in range(2000):
        frames.append(rng.randbytes(rng.randrange(0, 300)))
        frames.append("".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(60))))
        # a valid frame with a few random bytes flipped
        raw = bytearray(rng.choice(list(TWILIO_FRAMES.values())).encode())
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        frames.append(bytes(raw))
    frames += ["[" * 60_000, "{" * 60_000, '{"event":' * 20_000, "9" * 5000, b"\x00" * 10]
    return frames


def test_hostile_frames_raise_only_media_protocol_errors() -> None:
    refused = 0
    for frame in _hostile_frames():
        for parse in (parse_inbound, parse_outbound):
            try:
                parse(frame)
            except MediaProtocolError as exc:
                refused += 1
                message = str(exc)
                assert "\n" not in message and len(message) < 300, (frame, message)
    assert refused > 10_000


def test_media_frames_read_in_one_pass_agree_with_the_full_parser() -> None:
    """Every caller frame takes the quick way through `parse_inbound`; on anything that looks
    like a media frame it must give what the field-by-field parser gives, errors included."""
    from aicallerd.twilio import media

    agreed = 0
    for frame in _hostile_frames():
        if not isinstance(frame, str) or len(frame) > MAX_FRAME:
            continue
        try:
            message = json.loads(frame)
        except (ValueError, RecursionError):
            continue
        if not isinstance(message, dict) or message.get("event") != "media":
            continue
        try:
            expected: object = media._parse_media(message)
        except MediaProtocolError as exc:
            expected = f"media event: {exc}"
        try:
            got: object = parse_inbound(frame)
        except MediaProtocolError as exc:
            got = str(exc)
        assert got == expected, frame[:200]
        agreed += 1
    assert agreed > 100
