"""`tcpmax serve --mode ws` against a third-party peer: the `websockets` library's client."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from tcpmax.engine.server import Server
from tcpmax.model.serve import Mode, ServeConfig
from tcpmax.model.ws import Opcode, decode_frames, encode_frame, make_key, upgrade_request
from tests.engine.test_serve import alive, wait_for


def ws_server(then: Mode = Mode.HOLD, **kw):
    kw.setdefault("ports", (0,))
    kw.setdefault("max_connections", 1000)
    kw.setdefault("workers", 2)
    return Server(ServeConfig(mode=Mode.WS, ws_then=then, **kw))


def url(srv, path="/feed"):
    host, port = srv.addresses[0]
    return f"ws://{host}:{port}{path}"


def raw(srv, data: bytes = b"") -> socket.socket:
    s = socket.create_connection(srv.addresses[0], timeout=10)
    if data:
        s.sendall(data)
    return s


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_echo_returns_text_and_binary_messages_exactly_with_their_type():
    text = "héllo ✓ " * 1000
    binary = os.urandom(60_000)
    with ws_server(Mode.ECHO) as srv, connect(url(srv), max_size=None) as ws:
        ws.send(text)
        assert ws.recv(timeout=10) == text
        ws.send(binary)
        assert ws.recv(timeout=10) == binary
        ws.send(["frag", "mented"])        # one text message in two frames
        assert ws.recv(timeout=10) == "fragmented"
        assert wait_for(lambda: srv.stats().ws_upgraded == 1 and srv.stats().ws_frames_in >= 4)


def test_a_frame_over_the_size_limit_is_closed_with_1009():
    with ws_server(Mode.ECHO, ws_max_frame=1000) as srv, connect(url(srv)) as ws:
        ws.send(b"x" * 1001)
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert wait_for(lambda: srv.stats().ws_protocol_errors == 1)


def test_a_ping_is_answered_while_holding():
    with ws_server(Mode.HOLD) as srv, connect(url(srv)) as ws:
        ws.send("discarded")
        assert ws.ping(b"are you there").wait(timeout=5)


def test_the_close_handshake_returns_the_clients_code():
    with ws_server(Mode.ECHO) as srv, connect(url(srv)) as ws:
        ws.close(code=4001, reason="done")
        assert ws.close_code == 4001      # the code the server sent back in its close frame
        assert wait_for(lambda: srv.stats().open == 0 and srv.stats().closed == 1)


def test_push_sends_a_timestamped_text_frame_to_every_connection():
    with ws_server(Mode.PUSH, push_interval=0.2) as srv, \
            connect(url(srv)) as a, connect(url(srv)) as b:
        for ws in (a, b):
            stamp = int(ws.recv(timeout=5))
            assert abs(stamp / 1e9 - time.time()) < 5
        assert wait_for(lambda: srv.stats().pushed >= 2)


@pytest.mark.parametrize(("drop", "replace", "cause"), [
    ("Upgrade", {}, "no_upgrade"),
    ("", {"Sec-WebSocket-Version": "8"}, "bad_version"),
    ("", {"Sec-WebSocket-Key": "c2hvcnQ="}, "bad_key"),
])
def test_a_bad_upgrade_gets_400_and_is_counted_by_cause(drop, replace, cause):
    headers = {"Host": "x", "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": make_key().decode(), "Sec-WebSocket-Version": "13"}
    headers.update(replace)
    head = "GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()
                                          if k != drop) + "\r\n"
    with ws_server() as srv, raw(srv, head.encode()) as s:
        answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 400 ") and cause.encode() in answer
        assert wait_for(lambda: srv.stats().ws_handshake_failures[cause] == 1)
        assert srv.stats().ws_upgraded == 0


def test_a_silent_client_is_dropped_at_the_handshake_timeout():
    with ws_server(handshake_timeout=0.5) as srv, raw(srv) as s:
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionResetError):    # dropped with RST or FIN
            assert s.recv(1) == b""
        assert 0.4 < time.monotonic() - t0 < 3
        assert wait_for(lambda: srv.stats().ws_handshake_failures["timeout"] == 1)
        assert srv.stats().open == 0


def test_a_request_sent_a_byte_at_a_time_is_still_upgraded():
    key = make_key()
    with ws_server() as srv, raw(srv) as s:
        for byte in upgrade_request(b"x", b"/", key):
            s.send(bytes([byte]))
        assert s.recv(4096).startswith(b"HTTP/1.1 101 ")
        assert wait_for(lambda: srv.stats().ws_upgraded == 1)


def test_an_unmasked_client_frame_is_closed_with_1002_and_counted():
    with ws_server(Mode.ECHO) as srv, raw(srv, upgrade_request(b"x", b"/", make_key())) as s:
        assert s.recv(4096).startswith(b"HTTP/1.1 101 ")
        s.sendall(b"\x81\x02hi")                       # a text frame without a mask
        answer = read_all(s)                            # a close frame, then EOF
        assert answer[0] == 0x88 and answer[2:4] == (1002).to_bytes(2, "big")
        assert wait_for(lambda: srv.stats().ws_protocol_errors == 1)


def test_an_idle_websocket_is_closed_after_the_idle_timeout():
    with ws_server(idle_timeout=0.5) as srv, connect(url(srv)) as ws:
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=5)
        assert wait_for(lambda: srv.stats().idle_closed == 1)


def test_stop_leaves_no_worker_with_connections_and_handshakes_open():
    srv = ws_server().start()
    pids = srv.worker_pids()
    with connect(url(srv)), raw(srv):
        assert wait_for(lambda: srv.stats().open == 2)
        srv.stop()
    assert srv.pid == 0 and not any(alive(p) for p in pids)


def test_upgrades_frames_and_failures_reach_metrics_and_stats():
    with ws_server(Mode.ECHO, metrics=("127.0.0.1", 0)) as srv:
        with connect(url(srv)) as ws:
            ws.send("one")
            ws.recv(timeout=5)
        with raw(srv, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") as s:
            read_all(s)
        assert wait_for(lambda: srv.stats().ws_handshake_failures["no_upgrade"] == 1)
        host, port = srv.metrics_address
        base = f"http://{host}:{port}"
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        stats = json.load(urllib.request.urlopen(base + "/stats", timeout=5))
    assert "tcpmax_serve_ws_upgrades_total 1.0" in metrics
    assert 'tcpmax_serve_ws_handshake_failures_total{cause="no_upgrade"} 1.0' in metrics
    assert (stats["ws_upgraded"], stats["ws_frames_in"], stats["ws_frames_out"]) == (1, 2, 2)


def test_a_ping_between_fragments_is_answered_and_the_fragments_echoed_in_order():
    mask = b"\x01\x02\x03\x04"
    frames = (encode_frame(Opcode.TEXT, b"frag", fin=False, mask=mask)
              + encode_frame(Opcode.PING, b"mid", mask=mask)
              + encode_frame(Opcode.CONTINUATION, b"mented", mask=mask))
    with ws_server(Mode.ECHO) as srv, raw(srv, upgrade_request(b"x", b"/", make_key())) as s:
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ") and head.endswith(b"\r\n\r\n")
        s.sendall(frames)
        got = b""
        while len(decode_frames(got, masked=False, max_payload=1000)[0]) < 3:
            got += s.recv(4096)
    assert [(f.fin, f.opcode, f.payload) for f in decode_frames(
        got, masked=False, max_payload=1000)[0]] == [
        (False, Opcode.TEXT, b"frag"), (True, Opcode.PONG, b"mid"),
        (True, Opcode.CONTINUATION, b"mented")]
