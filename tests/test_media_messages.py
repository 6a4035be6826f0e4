import base64
import json

import pytest

from aicallerd.twilio.media import (
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

SID = "MZ0123456789abcdef"
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
                "accountSid": "AC1",
                "streamSid": SID,
                "callSid": "CA1",
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
            "stop": {"accountSid": "AC1", "callSid": "CA1"},
        }
    ),
}


def test_parse_twilio_frames() -> None:
    assert parse_inbound(TWILIO_FRAMES["connected"]) == Connected("Call", "1.0.0")
    assert parse_inbound(TWILIO_FRAMES["start"]) == Start(
        sequence=1,
        stream_sid=SID,
        call_sid="CA1",
        account_sid="AC1",
        tracks=("inbound",),
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
        custom_parameters={"token": "tok"},
    )
    assert parse_inbound(TWILIO_FRAMES["media"]) == Media(4, SID, "inbound", 2, 5, AUDIO)
    assert parse_inbound(TWILIO_FRAMES["dtmf"]) == Dtmf(5, SID, "1")
    assert parse_inbound(TWILIO_FRAMES["mark"]) == Mark(6, SID, "utt-42")
    assert parse_inbound(TWILIO_FRAMES["stop"]) == Stop(7, SID, "CA1")


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
        '{"event":"media","streamSid":"MZ0123456789abcdef","media":{"payload":"AP8="}}'
    )
    assert mark_message(SID, "utt-42") == (
        '{"event":"mark","streamSid":"MZ0123456789abcdef","mark":{"name":"utt-42"}}'
    )
    assert clear_message(SID) == '{"event":"clear","streamSid":"MZ0123456789abcdef"}'


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
        ("start", start_event(1, SID, "CA1", "AC1", {"token": "tok"})),
        ("media", media_event(4, SID, 2, 5, AUDIO)),
        ("dtmf", dtmf_event(5, SID, "1")),
        ("mark", mark_event(6, SID, "utt-42")),
        ("stop", stop_event(7, SID, "CA1", "AC1")),
    ]:
        assert json.loads(built) == json.loads(TWILIO_FRAMES[name]), name
        assert list(json.loads(built)) == list(json.loads(TWILIO_FRAMES[name])), name  # key order
        assert ", " not in built and ": " not in built  # compact
        assert parse_inbound(built) == parse_inbound(TWILIO_FRAMES[name])
