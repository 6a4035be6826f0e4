import xml.etree.ElementTree as ET

import pytest

from aicallerd.twilio.twiml import connect_stream, say_hangup

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def test_connect_stream_exact_output() -> None:
    twiml = connect_stream("wss://host.example/ai_caller/stream", {"token": "abc.123"})
    assert twiml == (
        DECLARATION + '<Response><Connect><Stream url="wss://host.example/ai_caller/stream">'
        '<Parameter name="token" value="abc.123"/></Stream></Connect></Response>'
    )


def test_connect_stream_escapes_and_parses() -> None:
    params = {"token": 'a&b<c>d"e', "note": "line1\nline2\ttab", "who": "Zoë 日本"}
    twiml = connect_stream("wss://host.example/s", params)
    root = ET.fromstring(twiml.encode("utf-8"))
    assert root.tag == "Response"
    stream = root.find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://host.example/s"
    parsed = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parsed == params  # every character survives, newlines and tabs included
    assert [p.get("name") for p in stream.findall("Parameter")] == list(params)


def test_connect_stream_without_parameters() -> None:
    root = ET.fromstring(connect_stream("wss://h/s", {}))
    assert root.find("Connect/Stream").findall("Parameter") == []


@pytest.mark.parametrize(
    "url",
    [
        "https://host.example/stream",
        "ws://host.example/stream",
        "wss:///stream",
        "wss://host.example/stream?token=abc",
        "wss://host.example/stream?",
        "wss://host.example/stream#frag",
        "host.example/stream",
    ],
)
def test_connect_stream_rejects_urls_twilio_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        connect_stream(url, {"token": "x"})


def test_connect_stream_parameter_length_limit() -> None:
    connect_stream("wss://h/s", {"token": "x" * 494})  # 5 + 494 = 499 characters: fine
    with pytest.raises(ValueError, match="token"):
        connect_stream("wss://h/s", {"token": "x" * 495})
    with pytest.raises(ValueError):
        connect_stream("wss://h/s", {"": "x"})


def test_control_characters_are_refused() -> None:
    with pytest.raises(ValueError):
        connect_stream("wss://h/s", {"token": "a\x00b"})
    with pytest.raises(ValueError):
        say_hangup("bell\x07")


def test_say_hangup() -> None:
    twiml = say_hangup('Sorry, R&D is <closed> "today".')
    assert twiml.startswith(DECLARATION)
    assert twiml.endswith("<Hangup/></Response>")
    root = ET.fromstring(twiml)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root.find("Say").text == 'Sorry, R&D is <closed> "today".'
    assert "R&amp;D is &lt;closed&gt;" in twiml
