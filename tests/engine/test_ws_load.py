"""`tcpmax load ws://` and `wss://`: upgrades completed and timed against third-party and our
own servers, pings answered, closes in both directions, every failure named by its cause."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
import trustme

from tcpmax.engine.loader import LoadRun
from tcpmax.engine.server import Server
from tcpmax.model.load import CloseMode, Endpoint, LoadConfig, TlsOptions, WsOptions
from tcpmax.model.serve import Mode, ServeConfig
from tests.engine.test_serve import wait_for
from tests.servers import plain_server, ws_server


def ws_load(address, n: int, path: str = "/", tls: TlsOptions | None = None, **kw):
    kw.setdefault("hold", 0.3)
    kw.setdefault("connect_timeout", 5.0)
    ws = WsOptions(host=f"{address[0]}:{address[1]}", path=path,
                   headers=kw.pop("headers", ()), subprotocol=kw.pop("subprotocol", None),
                   binary=kw.pop("binary", False))
    return LoadRun(LoadConfig((Endpoint(*address),), n, ws=ws, tls=tls, **kw)).run()


@contextmanager
def canned_server(answer: bytes | None) -> Iterator[tuple[str, int]]:
    """Reads each upgrade request whole, then sends `answer` (None: closes at once)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, suppress(OSError):
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                    data += chunk
                if answer is not None:
                    conn.sendall(answer)
                    conn.recv(1)        # until the client goes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_every_connection_upgrades_against_websockets_and_the_upgrade_is_timed():
    with ws_server() as (address, seen):
        result = ws_load(address, 200, path="/chat?room=1")
    assert result.reached and result.peak_established == 200 and result.errors == []
    assert result.ws_handshakes == 200
    assert result.ws_handshake_latency_us is not None
    assert result.ws_handshake_latency_us["count"] == 200
    assert result.ws_handshake_rate > 0
    assert seen["connections"] == 200 and seen["paths"] == ["/chat?room=1"]


def test_headers_and_the_subprotocol_reach_the_server():
    with ws_server("--subprotocol", "chat") as (address, seen):
        result = ws_load(address, 5, headers=(("Origin", "http://tcpmax.test"),
                                              ("X-Token", "s3cret")), subprotocol="chat")
    assert result.reached and result.errors == []
    assert seen["headers"]["Origin"] == "http://tcpmax.test"
    assert seen["headers"]["X-Token"] == "s3cret"
    assert seen["subprotocol"] == "chat"


def test_probes_echoed_by_websockets_come_back_exact_and_are_timed():
    with ws_server("--echo") as (address, _seen):
        result = ws_load(address, 20, message_rate=400, message_size=40, hold=1.0)
    assert result.errors == [] and result.messages_sent > 200
    # Replies still on their way when the connections close are not counted.
    assert result.messages_received >= 0.8 * result.messages_sent
    assert result.message_latency_us is not None
    assert result.message_latency_us["count"] == result.messages_received
    # A 40-byte unmasked frame comes back as 2 + 40 bytes: the payload, whole.
    assert result.bytes_received == 42 * result.messages_received


@pytest.mark.parametrize("binary", [False, True])
def test_a_fixed_message_goes_as_one_frame_of_its_type_and_comes_back_whole(binary):
    message = "héllo ✓".encode()
    with ws_server("--echo") as (address, _seen):
        result = ws_load(address, 10, message=message, message_rate=200, hold=1.0,
                         binary=binary)
    assert result.errors == [] and result.messages_sent > 50
    assert result.messages_received >= 0.8 * result.messages_sent
    assert result.bytes_received == (2 + len(message)) * result.messages_received
    assert result.bytes_sent == (6 + len(message)) * result.messages_sent


def test_pings_from_the_server_are_answered():
    with ws_server("--ping") as (address, seen):
        result = ws_load(address, 20, hold=1.0)
    assert result.reached and result.errors == []
    assert seen["pongs"] == 20


def test_a_close_frame_from_the_server_counts_as_closed_by_the_server_and_is_answered():
    with ws_server("--close-after", "0.3") as (address, seen):
        result = ws_load(address, 20, hold=1.5)
    assert result.peak_established == 20 and result.final_established == 0
    assert result.peer_closed == 20 and result.errors == []
    assert seen["close_codes"] == {"1001": 20}      # our answer echoed the server's code


def test_a_graceful_close_sends_close_1000_and_reset_sends_none():
    with ws_server() as (address, graceful):
        ws_load(address, 10, close=CloseMode.GRACEFUL)
    with ws_server() as (address, reset):
        ws_load(address, 10)
    assert graceful["close_codes"] == {"1000": 10}
    assert reset["close_codes"] == {"1006": 10}       # 1006: closed with no close frame


def test_a_refusal_by_status_is_named_by_its_code_with_advice():
    with ws_server("--refuse", "403") as (address, _seen):
        result = ws_load(address, 10)
    assert result.error_counts == {"WS_HTTP_403": 10}
    assert "403" in result.errors[0].meaning and "--header" in result.errors[0].advice


def test_a_wrong_accept_key_is_named_bad_accept():
    answer = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
    with canned_server(answer) as address:
        result = ws_load(address, 5)
    assert result.error_counts == {"WS_BAD_ACCEPT": 5}


def test_a_server_that_closes_before_answering_is_named_closed_in_handshake():
    with canned_server(None) as address:
        result = ws_load(address, 5)
    assert result.error_counts == {"WS_CLOSED_IN_HANDSHAKE": 5}


def test_a_plain_tcp_server_that_waits_is_a_handshake_timeout():
    with plain_server(processes=1) as address:
        result = ws_load(address, 10, connect_timeout=0.5)
    assert result.error_counts == {"WS_HANDSHAKE_TIMEOUT": 10}


def test_a_plain_tcp_echo_server_is_named_not_http():
    with plain_server(processes=1, echo=True) as address:
        result = ws_load(address, 10)
    assert result.error_counts == {"WS_NOT_HTTP": 10}
    assert "not HTTP" in result.errors[0].meaning


def test_an_answer_that_is_not_http_is_shown_as_the_server_sent_it():
    with plain_server(processes=1, echo=True) as address:
        result = ws_load(address, 3, path="/echoed")
    sample = result.errors[0].sample
    assert sample is not None and sample.startswith("GET /echoed HTTP/1.1\\r\\n")


def test_wss_completes_tls_then_the_upgrade_both_timed(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem"))
    with ws_server("--echo", "--tls", str(tmp_path / "server.pem")) as (address, seen):
        result = ws_load(address, 50, tls=TlsOptions(ca_file=str(tmp_path / "ca.pem")),
                         message_rate=200, hold=1.0)
    assert result.reached and result.errors == []
    assert result.tls_handshakes == 50 and result.ws_handshakes == 50
    assert result.messages_received >= 0.8 * result.messages_sent > 0
    assert seen["connections"] == 50


def _tcpmax_ws(then: Mode) -> Server:
    return Server(ServeConfig(mode=Mode.WS, ws_then=then, ports=(0,), max_connections=2000,
                              workers=2))


def test_tcpmax_serve_ws_hold_upgrades_and_holds_every_connection():
    with _tcpmax_ws(Mode.HOLD) as srv:
        result = ws_load(srv.addresses[0], 1000, path="/feed")
        assert wait_for(lambda: srv.stats().ws_upgraded == 1000)
    assert result.reached and result.errors == [] and result.ws_handshakes == 1000


def test_tcpmax_serve_ws_echo_returns_probes_with_latency():
    with _tcpmax_ws(Mode.ECHO) as srv:
        result = ws_load(srv.addresses[0], 50, message_rate=500, hold=1.0)
    assert result.errors == [] and result.messages_sent > 300
    assert result.messages_received >= 0.8 * result.messages_sent
    assert result.message_latency_us is not None


def test_an_upgrade_waits_for_a_connect_still_pending_and_times_it_out_as_a_connect():
    # A listener that never accepts, with a one-place queue: the first connections complete
    # (the request is written at once and never answered), the rest stay in SYN_SENT, where
    # the early write finds no connection and the connect path takes over.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        result = ws_load(listener.getsockname(), 6, connect_timeout=1.0, hold=0)
    finally:
        listener.close()
    errors = result.error_counts
    assert sum(errors.values()) == 6
    assert errors.get("WS_HANDSHAKE_TIMEOUT", 0) >= 1
    assert errors.get("ETIMEDOUT", 0) >= 1
