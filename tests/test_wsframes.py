"""The Media Stream's WebSocket framing (sans I/O), checked against wsproto's client as the
independent implementation that builds the frames a Twilio-like client sends."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.events import Ping as WsPing

from aicallerd.webstream import is_stream_request, parse_upgrade
from aicallerd.wsframes import (
    OP_TEXT,
    Close,
    FrameReader,
    Ping,
    WebSocketError,
    accept_key,
    close_frame,
    frame,
)

MEDIA = '{"event":"media","media":{"payload":"' + "/" * 216 + '"}}'


def client() -> Connection:
    return Connection(ConnectionType.CLIENT)


def test_accept_key_is_rfc6455s_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("text", ["", "a", MEDIA, "é" * 70_000 + "x", "x" * 125, "x" * 126])
def test_a_masked_client_message_reads_back_whole(text):
    data = client().send(TextMessage(data=text))
    assert FrameReader(1 << 20).feed(data) == [text]


def test_messages_split_anywhere_read_back_in_order():
    c = client()
    data = b"".join(c.send(TextMessage(data=f"{MEDIA}{i}")) for i in range(3))
    data += c.send(BytesMessage(data=b"\x00\xff"))
    for step in (1, 7, 300):
        reader = FrameReader(1 << 16)
        out = [m for i in range(0, len(data), step) for m in reader.feed(data[i : i + step])]
        assert out == [f"{MEDIA}0", f"{MEDIA}1", f"{MEDIA}2", b"\x00\xff"]


def test_fragments_join_with_a_ping_between_them():
    c = client()
    data = c.send(TextMessage(data="hel", message_finished=False))
    data += c.send(WsPing(payload=b"are you there"))
    data += c.send(TextMessage(data="lo", message_finished=True))
    assert FrameReader(1 << 16).feed(data) == [Ping(b"are you there"), "hello"]


def test_close_frame_gives_code_and_reason():
    data = client().send(CloseConnection(code=1000, reason="call ended"))
    assert FrameReader(1 << 16).feed(data) == [Close(1000, "call ended")]


def test_a_message_over_the_cap_is_1009_before_its_payload_arrives():
    data = client().send(TextMessage(data="x" * 70_000))
    reader = FrameReader(64 * 1024)
    with pytest.raises(WebSocketError) as err:
        reader.feed(data[:20])  # the header alone says how long it is
    assert err.value.code == 1009


def test_fragments_adding_up_over_the_cap_are_1009():
    c = client()
    reader = FrameReader(100)
    reader.feed(c.send(TextMessage(data="x" * 60, message_finished=False)))
    with pytest.raises(WebSocketError) as err:
        reader.feed(c.send(TextMessage(data="x" * 60, message_finished=True)))
    assert err.value.code == 1009


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(OP_TEXT, b"unmasked"), 1002),  # clients must mask
        (b"\xc1\x80" + b"\x00" * 4, 1002),  # RSV1 without a negotiated extension
        (b"\x83\x80" + b"\x00" * 4, 1002),  # opcode 3 is reserved
        (b"\x09\x80" + b"\x00" * 4, 1002),  # a fragmented ping
        (b"\x80\x80" + b"\x00" * 4, 1002),  # a continuation with nothing to continue
        (b"\x81\x82" + b"\x00" * 4 + b"\xc3\x28", 1007),  # text that is not UTF-8
        (b"\x88\x81" + b"\x00" * 4 + b"\x03", 1002),  # a one-byte close payload
        (b"\x88\x82" + b"\x00" * 4 + b"\x03\xed", 1002),  # close code 1005 may not be sent
    ],
)
def test_protocol_violations_name_their_close_code(data, code):
    with pytest.raises(WebSocketError) as err:
        FrameReader(1 << 16).feed(data)
    assert err.value.code == code


def test_server_frames_are_read_by_a_client():
    c = client()
    c.receive_data(frame(OP_TEXT, MEDIA.encode()) + close_frame(1008, "é" * 100))
    events = list(c.events())
    assert events[0].data == MEDIA
    assert events[1].code == 1008 and events[1].reason == "é" * 61  # cut whole, to 123 bytes


@pytest.mark.parametrize(
    ("head", "ours"),
    [
        (b"GET /ai_caller/stream HTTP/1.1\r\n", True),
        (b"GET /ai_caller/stream?x=1 HTTP/1.1\r\n", True),
        (b"GET /ai_caller/streamer HTTP/1.1\r\n", False),
        (b"POST /ai_caller/stream HTTP/1.1\r\n", False),
        (b"POST /voice HTTP/1.1\r\n", False),
        (b"GET /ai_c", None),  # not known until more arrives
        (b"", None),
        (b"G", None),
        (b"X", False),
    ],
)
def test_only_a_get_of_the_stream_route_is_taken_from_hypercorn(head, ours):
    assert is_stream_request(head, "/ai_caller/stream") is ours


def upgrade_head(*lines: str) -> bytes:
    return ("GET /ai_caller/stream HTTP/1.1\r\nHost: x\r\n" + "".join(lines) + "\r\n").encode()


def test_an_upgrade_request_is_parsed_with_what_followed_it():
    head = upgrade_head(
        "Upgrade: websocket\r\n",
        "Connection: keep-alive, Upgrade\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Sec-WebSocket-Version: 13\r\n",
    )
    upgrade = parse_upgrade(head + b"\x81\x80early")
    assert not isinstance(upgrade, str)
    assert upgrade.header(b"sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ=="
    assert upgrade.rest == b"\x81\x80early"


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (upgrade_head("Sec-WebSocket-Key: a\r\n"), "not a WebSocket upgrade"),
        (upgrade_head("Upgrade: websocket\r\n", "Connection: Upgrade\r\n"), "no Sec-WebSocket-Key"),
        (b"GET /ai_caller/stream HTTP/1.1\r\nbad header\r\n\r\n", "malformed request"),
    ],
)
def test_a_request_that_is_no_upgrade_says_why(head, problem):
    assert str(parse_upgrade(head)).startswith(problem)
