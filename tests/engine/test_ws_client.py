"""The load worker's WebSocket state, without sockets: the request it sends, how it judges
answers (a cached shape never lets a wrong key through), frames split across reads, and that
nothing is kept for a connection once its upgrade is judged."""

import pytest
from websockets.http11 import Request
from websockets.streams import StreamReader

from tcpmax.engine.ws_client import WsClient, WsFailure, probe_sent_ns
from tcpmax.model.load import WsOptions
from tcpmax.model.ws import Opcode, accept_response, encode_frame


def client(**kw) -> WsClient:
    return WsClient(WsOptions(host="gw.test:8080", path="/chat", **kw), 64)


def parsed(request: bytes) -> Request:
    """The request as the `websockets` library's own HTTP parser reads it."""
    reader = StreamReader()
    reader.feed_data(request)
    parser = Request.parse(reader.read_line)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete request")


def key_of(request: bytes) -> bytes:
    return parsed(request).headers["Sec-WebSocket-Key"].encode()


def test_the_request_is_a_valid_upgrade_with_a_fresh_key_each_time():
    ws = client(headers=(("Origin", "http://o.test"),), subprotocol="chat")
    one, two = ws.request(3), ws.request(4)
    req = parsed(one)
    assert req.path == "/chat" and req.headers["Host"] == "gw.test:8080"
    assert req.headers["Upgrade"] == "websocket" and req.headers["Origin"] == "http://o.test"
    assert req.headers["Sec-WebSocket-Protocol"] == "chat"
    assert key_of(one) != key_of(two)


def test_a_right_answer_completes_and_frees_the_upgrade_state():
    ws = client()
    key = key_of(ws.request(5))
    rest = ws.answer(5, accept_response(key) + b"\x81\x02hi")
    assert rest == b"\x81\x02hi" and ws.pending == {}


def test_an_answer_in_pieces_waits_for_its_blank_line():
    ws = client()
    answer = accept_response(key_of(ws.request(5)))
    assert ws.answer(5, answer[:20]) is None
    assert ws.answer(5, answer[20:]) == b""


def test_a_known_answer_shape_with_the_wrong_key_is_still_refused():
    ws = client()
    ws.answer(1, accept_response(key_of(ws.request(1))))      # the shape is now cached
    ws.request(2)
    wrong = accept_response(b"dGhlIHNhbXBsZSBub25jZQ==")
    with pytest.raises(WsFailure, match="WS_BAD_ACCEPT"):
        ws.answer(2, wrong)
    assert ws.pending == {}


@pytest.mark.parametrize(("answer", "name"), [
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "WS_HTTP_403"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "WS_HTTP_200"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "WS_NOT_HTTP"),
    (b"GET /chat HTTP/1.1\r\n", "WS_NOT_HTTP"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "WS_BAD_ACCEPT"),
])
def test_a_wrong_answer_is_named_by_its_cause(answer, name):
    ws = client()
    ws.request(7)
    with pytest.raises(WsFailure, match=name):
        ws.answer(7, answer)
    assert ws.pending == {}


def test_an_endless_head_is_refused_within_the_bound():
    ws = client()
    ws.request(7)
    with pytest.raises(WsFailure, match="WS_NOT_HTTP"):
        for _ in range(100):
            ws.answer(7, b"HTTP/1.1 101 OK\r\nX-Pad: " + b"a" * 1000)


def test_a_frame_split_across_reads_is_kept_only_until_it_is_whole():
    ws = client()
    frame = encode_frame(Opcode.TEXT, b"hello world")
    assert ws.frames(9, frame[:5]) == [] and 9 in ws.partial
    (got,) = ws.frames(9, frame[5:])
    assert (got.opcode, got.payload) == (Opcode.TEXT, b"hello world") and ws.partial == {}


def test_messages_are_masked_frames_of_the_chosen_type():
    for binary, opcode in ((False, Opcode.TEXT), (True, Opcode.BINARY)):
        frame = client(binary=binary).message(b"abc")
        assert frame[0] == 0x80 | opcode and frame[1] == 0x80 | 3


def test_a_probe_is_text_that_carries_its_send_time():
    frame = client().probe(123456789, b"....")
    payload = bytes(b ^ frame[2 + i % 4] for i, b in enumerate(frame[6:]))
    assert payload.decode("ascii") and probe_sent_ns(payload) == 123456789
    assert probe_sent_ns(b"not a probe at all") == 0

