"""The WebSocket handshake and frame codec, without sockets; wsproto is the independent peer."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import generate_accept_token

from tcpmax.model.ws import (
    CloseCode,
    Frame,
    FrameError,
    HandshakeError,
    HandshakeFailure,
    Opcode,
    accept_key,
    accept_response,
    check_response,
    close_payload,
    decode_frames,
    encode_frame,
    head_complete,
    make_key,
    next_message_state,
    parse_upgrade,
    peer_close_code,
    reject_response,
    upgrade_request,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="     # RFC 6455 1.3's example


def request(*drop: bytes, **replace: bytes) -> bytes:
    headers = {b"Host": b"server.example.com", b"Upgrade": b"websocket",
               b"Connection": b"Upgrade", b"Sec-WebSocket-Key": KEY,
               b"Sec-WebSocket-Version": b"13"}
    for name, value in replace.items():
        headers[name.replace("_", "-").encode()] = value
    lines = [b"GET /chat HTTP/1.1"] + [k + b": " + v for k, v in headers.items()
                                       if k not in drop]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_accept_key_is_the_rfc_example():
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accept_key_agrees_with_wsproto_for_random_keys():
    for _ in range(20):
        key = make_key()
        assert accept_key(key).decode() == generate_accept_token(key).decode()


def test_a_valid_upgrade_gives_key_target_subprotocols_and_early_bytes():
    up = parse_upgrade(request(Sec_WebSocket_Protocol=b"chat, superchat") + b"\x81\x80")
    assert (up.key, up.target, up.subprotocols, up.rest) == (
        KEY, b"/chat", (b"chat", b"superchat"), b"\x81\x80")


def test_header_tokens_are_matched_case_insensitively_in_lists():
    up = parse_upgrade(request(Upgrade=b"WebSocket", Connection=b"keep-alive, Upgrade"))
    assert up.key == KEY


@pytest.mark.parametrize(("data", "cause"), [
    (request(b"Upgrade"), HandshakeFailure.NO_UPGRADE),
    (request(Upgrade=b"h2c"), HandshakeFailure.NO_UPGRADE),
    (request(b"Connection"), HandshakeFailure.NO_UPGRADE),
    (request(Sec_WebSocket_Version=b"8"), HandshakeFailure.BAD_VERSION),
    (request(b"Sec-WebSocket-Version"), HandshakeFailure.BAD_VERSION),
    (request(b"Sec-WebSocket-Key"), HandshakeFailure.BAD_KEY),
    (request(Sec_WebSocket_Key=b"c2hvcnQ="), HandshakeFailure.BAD_KEY),
    (request(Sec_WebSocket_Key=b"not base64 at all!!!!!=="), HandshakeFailure.BAD_KEY),
    (request(b"Host"), HandshakeFailure.MALFORMED),
    (request().replace(b"GET", b"POST", 1), HandshakeFailure.MALFORMED),
    (request().replace(b"HTTP/1.1", b"HTTP/1.0", 1), HandshakeFailure.MALFORMED),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", HandshakeFailure.MALFORMED),
])
def test_a_bad_upgrade_is_refused_with_its_cause(data, cause):
    with pytest.raises(HandshakeError) as info:
        parse_upgrade(data)
    assert info.value.cause is cause


def test_a_remembered_request_shape_still_gets_its_own_key_checked():
    keys = [make_key() for _ in range(3)]
    assert [parse_upgrade(request(Sec_WebSocket_Key=k)).key for k in keys] == keys
    with pytest.raises(HandshakeError) as info:
        parse_upgrade(request(Sec_WebSocket_Key=b"c2hvcnQ="))
    assert info.value.cause is HandshakeFailure.BAD_KEY


def test_a_key_sent_twice_is_refused_however_often_the_shape_is_seen():
    head = request().replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: " + make_key() + b"\r\n\r\n")
    for _ in range(3):
        with pytest.raises(HandshakeError) as info:
            parse_upgrade(head)
        assert info.value.cause is HandshakeFailure.BAD_KEY


def test_a_remembered_shape_keeps_its_target_and_subprotocols_and_early_bytes_are_fresh():
    first = parse_upgrade(request(Sec_WebSocket_Protocol=b"mqtt") + b"one")
    second = parse_upgrade(request(Sec_WebSocket_Protocol=b"mqtt",
                                   Sec_WebSocket_Key=make_key()) + b"two")
    assert (second.target, second.subprotocols, first.rest, second.rest) == (
        b"/chat", (b"mqtt",), b"one", b"two")


def test_a_head_over_the_size_bound_is_too_large():
    data = request(X_Padding=b"a" * 9000)
    with pytest.raises(HandshakeError) as info:
        parse_upgrade(data, max_size=8192)
    assert info.value.cause is HandshakeFailure.TOO_LARGE


def test_head_complete_waits_for_the_blank_line():
    data = request()
    assert not head_complete(data[:-2])
    assert head_complete(data)


def test_the_refusal_is_a_400_naming_the_cause_and_the_version_we_speak():
    with pytest.raises(HandshakeError) as info:
        parse_upgrade(request(Sec_WebSocket_Version=b"8"))
    answer = reject_response(info.value)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Version: 13\r\n" in answer
    assert answer.endswith(b"bad_version: Sec-WebSocket-Version 8; this server speaks 13\n")


def test_a_client_request_and_the_server_answer_complete_a_handshake():
    key = make_key()
    up = parse_upgrade(upgrade_request(b"example.com:80", b"/feed", key))
    status, rest = check_response(accept_response(up.key) + b"\x81\x00", key)
    assert (up.target, status, rest) == (b"/feed", 101, b"\x81\x00")


def test_a_client_rejects_an_accept_for_another_key():
    with pytest.raises(HandshakeError) as info:
        check_response(accept_response(make_key()), make_key())
    assert info.value.cause is HandshakeFailure.BAD_KEY


def test_a_client_sees_the_status_of_a_refusal():
    with pytest.raises(HandshakeError) as info:
        parse_upgrade(request(b"Upgrade"))
    status, _rest = check_response(reject_response(info.value), KEY)
    assert status == 400


def _wsproto_client_frame(payload: bytes) -> bytes:
    """What a wsproto client sends: a masked binary frame."""
    return FrameProtocol(client=True, extensions=[]).send_data(payload, True)


@given(st.binary(max_size=70_000))
def test_masked_client_frames_from_wsproto_decode_to_their_payload(payload):
    data = _wsproto_client_frame(payload)
    frames, used = decode_frames(data, masked=True, max_payload=1 << 20)
    assert frames == [Frame(True, Opcode.BINARY, payload)] and used == len(data)


@given(st.text(max_size=300), st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
def test_server_frames_decode_in_wsproto_as_sent(text, opcode):
    payload = text.encode()
    conn = Connection(ConnectionType.CLIENT)
    conn.receive_data(encode_frame(opcode, payload))
    (event,) = conn.events()
    got = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
    assert got == payload and isinstance(event, TextMessage) == (opcode == Opcode.TEXT)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 100_000])
def test_every_length_encoding_round_trips_masked_and_unmasked(size):
    payload = os.urandom(size)
    for mask, masked in ((None, False), (b"\x01\x02\x03\x04", True)):
        data = encode_frame(Opcode.BINARY, payload, mask=mask)
        assert decode_frames(data, masked=masked, max_payload=size) == (
            [Frame(True, Opcode.BINARY, payload)], len(data))


def test_a_partial_frame_is_left_for_the_next_read():
    data = encode_frame(Opcode.TEXT, b"one", mask=b"abcd") + encode_frame(
        Opcode.TEXT, b"two" * 100, mask=b"abcd")
    for cut in range(len(data)):
        frames, used = decode_frames(data[:cut], masked=True, max_payload=1000)
        more, used2 = decode_frames(data[used:], masked=True, max_payload=1000)
        assert [f.payload for f in frames + more] == [b"one", b"two" * 100]
        assert used + used2 == len(data)


@pytest.mark.parametrize(("data", "masked", "code"), [
    (encode_frame(Opcode.TEXT, b"hi"), True, CloseCode.PROTOCOL_ERROR),     # client unmasked
    (encode_frame(Opcode.TEXT, b"hi", mask=b"abcd"), False, CloseCode.PROTOCOL_ERROR),
    (b"\xc1\x80abcd", True, CloseCode.PROTOCOL_ERROR),                     # RSV1 set
    (b"\x83\x80abcd", True, CloseCode.PROTOCOL_ERROR),                     # opcode 3
    (encode_frame(Opcode.PING, b"x" * 126, mask=b"abcd"), True, CloseCode.PROTOCOL_ERROR),
    (encode_frame(Opcode.PING, b"x", fin=False, mask=b"abcd"), True, CloseCode.PROTOCOL_ERROR),
    (b"\x82\xff" + (1 << 63).to_bytes(8, "big"), True, CloseCode.PROTOCOL_ERROR),
    (b"\x82\xfe\x04\x01", True, CloseCode.TOO_BIG),                        # 1025 > 1024
])
def test_a_frame_breaking_the_rules_is_refused_with_a_close_code(data, masked, code):
    with pytest.raises(FrameError) as info:
        decode_frames(data, masked=masked, max_payload=1024)
    assert info.value.code is code


def test_a_too_big_frame_is_refused_from_its_header_alone():
    with pytest.raises(FrameError):
        decode_frames(b"\x82\xff" + (1 << 40).to_bytes(8, "big"), masked=True, max_payload=10)


FIRST = Frame(False, Opcode.TEXT, b"a")
MIDDLE = Frame(False, Opcode.CONTINUATION, b"b")
LAST = Frame(True, Opcode.CONTINUATION, b"c")
PING = Frame(True, Opcode.PING, b"")
WHOLE = Frame(True, Opcode.BINARY, b"x")


@pytest.mark.parametrize(("frames", "end"), [
    ([WHOLE], 0),
    ([FIRST], Opcode.TEXT),
    ([FIRST, MIDDLE, PING, LAST], 0),
    ([FIRST, PING, MIDDLE], Opcode.TEXT),
    ([FIRST, LAST, WHOLE], 0),
])
def test_fragmented_messages_may_carry_control_frames_between_fragments(frames, end):
    state = 0
    for frame in frames:
        state = next_message_state(state, frame)
    assert state == end


@pytest.mark.parametrize("frames", [[MIDDLE], [LAST], [FIRST, WHOLE], [FIRST, FIRST]])
def test_fragments_out_of_order_are_a_protocol_error(frames):
    state = 0
    with pytest.raises(FrameError):
        for frame in frames:
            state = next_message_state(state, frame)


@pytest.mark.parametrize(("payload", "code"), [
    (b"", None), (close_payload(1000), 1000), (close_payload(4001, b"bye"), 4001)])
def test_a_close_frame_gives_its_code(payload, code):
    assert peer_close_code(payload) == code


@pytest.mark.parametrize("payload", [b"\x03", close_payload(1005), close_payload(999),
                                     close_payload(2000), close_payload(5000)])
def test_a_close_code_no_endpoint_may_send_is_a_protocol_error(payload):
    with pytest.raises(FrameError):
        peer_close_code(payload)
