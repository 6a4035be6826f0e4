"""The control protocol, sans-I/O: request parsing, response encoding, line framing."""

import json

import pytest

from aicallerd.control.protocol import (
    DEFAULT_CALLS_LIMIT,
    E_BAD_ARGS,
    E_BAD_JSON,
    E_BAD_REQUEST,
    E_UNKNOWN_COMMAND,
    LINE_TOO_LONG,
    ControlError,
    LineSplitter,
    ProtocolError,
    Request,
    encode_error,
    encode_request,
    encode_result,
    parse_request,
    parse_response,
)


def test_parse_each_command_with_defaults() -> None:
    assert parse_request(b'{"id":1,"cmd":"status"}') == Request("status", {}, 1)
    assert parse_request('{"cmd":"calls"}') == Request("calls", {"limit": DEFAULT_CALLS_LIMIT})
    assert parse_request('{"cmd":"calls","args":{"limit":5}}').args == {"limit": 5}
    assert parse_request('{"id":"a","cmd":"call","args":{"target":" mom "}}') == Request(
        "call", {"target": "mom", "prompt": None}, "a"
    )
    req = parse_request('{"cmd":"call","args":{"target":"+15551234567","prompt":"Say hi."}}')
    assert req.args == {"target": "+15551234567", "prompt": "Say hi."}
    assert parse_request('{"cmd":"transcript","args":{"sid":"CA1"}}').args == {"sid": "CA1"}
    assert parse_request('{"cmd":"hangup","args":{"sid":"CA1"},"id":null}').args == {"sid": "CA1"}
    assert parse_request('{"cmd":"reload","args":null}') == Request("reload", {})


def test_round_trip_through_encode_request() -> None:
    line = encode_request("call", {"target": "mom", "prompt": "Zoë says hi"}, 7)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_request(line.rstrip(b"\n")) == Request(
        "call", {"target": "mom", "prompt": "Zoë says hi"}, 7
    )


@pytest.mark.parametrize(
    ("line", "code", "fragment", "rid"),
    [
        (b"not json", E_BAD_JSON, "not valid JSON", None),
        (b"\xff\xfe{}", E_BAD_JSON, "not UTF-8", None),
        (b"[1,2]", E_BAD_REQUEST, "must be a JSON object, got an array", None),
        (b'{"id":true,"cmd":"status"}', E_BAD_REQUEST, "'id' must be", None),
        (b'{"id":1.5,"cmd":"status"}', E_BAD_REQUEST, "'id' must be", None),
        (b'{"id":3}', E_BAD_REQUEST, "no 'cmd'", 3),
        (b'{"id":3,"cmd":5}', E_BAD_REQUEST, "'cmd' must be a string", 3),
        (b'{"id":3,"cmd":"status","x":1}', E_BAD_REQUEST, "unknown request field 'x'", 3),
        (b'{"id":3,"cmd":"dial"}', E_UNKNOWN_COMMAND, "unknown command 'dial'", 3),
        (b'{"id":3,"cmd":"status","args":[]}', E_BAD_ARGS, "'args' must be an object", 3),
        (b'{"id":3,"cmd":"status","args":{"v":1}}', E_BAD_ARGS, "unknown argument 'v'", 3),
        (b'{"id":3,"cmd":"call","args":{}}', E_BAD_ARGS, "missing argument 'target'", 3),
        (b'{"id":3,"cmd":"call","args":{"target":""}}', E_BAD_ARGS, "must not be empty", 3),
        (b'{"id":3,"cmd":"call","args":{"target":7}}', E_BAD_ARGS, "must be a string", 3),
        (b'{"id":3,"cmd":"call","args":{"target":null}}', E_BAD_ARGS, "must not be null", 3),
        (b'{"cmd":"call","args":{"target":"m","promt":"x"}}', E_BAD_ARGS, "'promt'", None),
        (b'{"cmd":"calls","args":{"limit":"5"}}', E_BAD_ARGS, "must be an integer", None),
        (b'{"cmd":"calls","args":{"limit":true}}', E_BAD_ARGS, "must be an integer", None),
        (b'{"cmd":"calls","args":{"limit":0}}', E_BAD_ARGS, "from 1 to 1000", None),
        (b'{"cmd":"hangup"}', E_BAD_ARGS, "missing argument 'sid'", None),
    ],
)
def test_bad_requests_say_precisely_what_is_wrong(
    line: bytes, code: str, fragment: str, rid: object
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert info.value.code == code
    assert fragment in info.value.message
    assert info.value.request_id == rid


def test_overlong_arguments_are_refused() -> None:
    prompt = "x" * 4001
    line = json.dumps({"cmd": "call", "args": {"target": "mom", "prompt": prompt}})
    with pytest.raises(ProtocolError, match="longer than 4000"):
        parse_request(line)


def test_encode_and_parse_responses() -> None:
    ok = encode_result(4, {"sid": "CA1", "text": "Zoë"})
    assert ok == '{"id":4,"ok":true,"result":{"sid":"CA1","text":"Zoë"}}\n'.encode()
    response = parse_response(ok)
    assert (response.id, response.ok, response.result, response.error) == (
        4,
        True,
        {"sid": "CA1", "text": "Zoë"},
        None,
    )
    err = encode_error("x", "twilio_refused", "Twilio refused", {"twilio_code": 21215})
    assert json.loads(err) == {
        "id": "x",
        "ok": False,
        "error": {
            "code": "twilio_refused",
            "message": "Twilio refused",
            "details": {"twilio_code": 21215},
        },
    }
    parsed = parse_response(err)
    assert parsed.ok is False and isinstance(parsed.error, ControlError)
    assert (parsed.error.code, parsed.error.details) == ("twilio_refused", {"twilio_code": 21215})
    assert "details" not in json.loads(encode_error(None, "internal", "boom"))["error"]


def test_results_must_be_real_json() -> None:
    with pytest.raises(ValueError):
        encode_result(1, {"p50": float("nan")})
    with pytest.raises(TypeError):
        encode_result(1, {"when": object()})


@pytest.mark.parametrize(
    "line", [b"{}", b'{"ok":"yes"}', b'{"ok":true}', b'{"ok":false,"error":"x"}', b"[]", b"nope"]
)
def test_parse_response_refuses_garbage(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response(line)


def test_splitter_handles_partial_crlf_and_blank_lines() -> None:
    s = LineSplitter(max_line=100)
    assert s.feed(b'{"a"') == []
    assert s.feed(b':1}\r\n\n  \n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert s.close() == [b'{"c"']  # a last line without newline still counts
    assert s.close() == []


def test_splitter_drops_an_overlong_line_and_recovers() -> None:
    s = LineSplitter(max_line=10)
    assert s.feed(b"x" * 8) == []
    assert s.feed(b"x" * 8) == [LINE_TOO_LONG]  # reported as soon as it is known
    assert s.feed(b"x" * 1000) == []  # the rest of that line is dropped, memory stays small
    assert s.feed(b'xx\n{"ok":1}\n') == [b'{"ok":1}']
    assert s.feed(b"y" * 11 + b"\n" + b"z\n") == [LINE_TOO_LONG, b"z"]
    assert s.feed(b"y" * 10 + b"\r\n") == [b"y" * 10]  # exactly the limit, CRLF: fine
    assert s.feed(b"w" * 50) == [LINE_TOO_LONG]
    assert s.close() == []  # an overlong tail at EOF is not a request


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[" * 60_000, "request is nested too deeply"),
        (b'{"cmd":' * 9_000, "request is nested too deeply"),
        (b'{"id":' + b"9" * 5_000 + b',"cmd":"status"}', "request holds a number too long to read"),
    ],
)
def test_hostile_lines_are_bad_requests_not_crashes(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert (info.value.code, info.value.message) == (E_BAD_REQUEST, message)


def test_a_deeply_nested_argument_is_named_by_its_kind() -> None:
    deep = "[" * 900 + "]" * 900
    with pytest.raises(ProtocolError, match="'limit' must be an integer, got an array"):
        parse_request('{"cmd":"calls","args":{"limit":' + deep + "}}")
