"""`tcpmax serve --tls`: TLS handshakes on the server side, driven by the worker's epoll loop,
against third-party clients (the stdlib `ssl` client, the `websockets` client) and tcpmax's
own `load tls://`."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass

import pytest
import trustme
from websockets.sync.client import connect

from tcpmax.engine.loader import LoadRun
from tcpmax.engine.serve_tls import TlsServerError
from tcpmax.engine.server import Server
from tcpmax.model.load import Endpoint, LoadConfig, TlsOptions
from tcpmax.model.serve import Mode, ServeConfig, ServeTls
from tests.engine.test_serve import wait_for


@dataclass(frozen=True)
class Pki:
    ca: str            # the CA to trust (--ca)
    cert: str          # the chain for 127.0.0.1 and localhost
    key: str           # its private key, in its own file


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    paths = Pki(str(root / "ca.pem"), str(root / "cert.pem"), str(root / "key.pem"))
    ca.cert_pem.write_to_path(paths.ca)
    issued = ca.issue_cert("127.0.0.1", "localhost")
    for i, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(paths.cert, append=i > 0)
    issued.private_key_pem.write_to_path(paths.key)
    return paths


def tls_server(tls: ServeTls, mode: Mode = Mode.HOLD, **kw) -> Server:
    kw.setdefault("ports", (0,))
    kw.setdefault("max_connections", 1000)
    kw.setdefault("workers", 2)
    return Server(ServeConfig(mode=mode, tls=tls, **kw))


def self_signed_server(mode: Mode = Mode.HOLD, **kw) -> Server:
    return tls_server(ServeTls(self_signed=("localhost", "127.0.0.1")), mode, **kw)


def trusting(srv: Server) -> ssl.SSLContext:
    assert srv.tls is not None
    return ssl.create_default_context(cadata=srv.tls.cert_pem.decode())


def test_load_tls_with_the_ca_holds_every_connection_to_a_cert_and_key_server(pki):
    n = 300
    with tls_server(ServeTls(cert_file=pki.cert, key_file=pki.key)) as srv:
        result = LoadRun(LoadConfig((Endpoint(*srv.addresses[0]),), n, hold=1.0,
                                    connect_timeout=10.0,
                                    tls=TlsOptions(ca_file=pki.ca))).run()
        assert wait_for(lambda: srv.stats().open == 0)
        stats = srv.stats()
    assert result.reached and result.peak_established == n and result.errors == []
    assert stats.tls_handshakes == n and stats.accepted == n
    assert stats.tls_handshake_mean_us is not None and stats.tls_handshake_mean_us > 0
    assert sum(stats.tls_handshake_failures.values()) == 0


def test_echo_over_tls_returns_exactly_the_bytes_sent():
    payload = os.urandom(300_000)           # many records, more than one socket buffer
    with self_signed_server(Mode.ECHO) as srv, \
            socket.create_connection(srv.addresses[0], timeout=10) as raw, \
            trusting(srv).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = tls.recv(65536)
            assert chunk, "the server closed before echoing everything"
            got += chunk
        assert bytes(got) == payload
        assert wait_for(lambda: srv.stats().bytes_in == len(payload))


def test_the_websockets_client_over_wss_gets_its_messages_back_exactly():
    text = "héllo ✓ " * 1000
    binary = os.urandom(60_000)
    with self_signed_server(Mode.WS, ws_then=Mode.ECHO) as srv:
        port = srv.addresses[0][1]
        with connect(f"wss://localhost:{port}/feed", ssl=trusting(srv), max_size=None) as ws:
            ws.send(text)
            assert ws.recv(timeout=10) == text
            ws.send(binary)
            assert ws.recv(timeout=10) == binary
        assert wait_for(lambda: srv.stats().ws_upgraded == 1 and srv.stats().tls_handshakes == 1)


def test_a_plain_tcp_client_is_counted_as_not_tls_and_closed():
    with self_signed_server() as srv, \
            socket.create_connection(srv.addresses[0], timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):    # reset: bytes were left unread
            assert plain.recv(100) == b""                  # or closed with FIN
        assert wait_for(lambda: srv.stats().tls_handshake_failures["TLS_NOT_TLS"] == 1)
        stats = srv.stats()
    assert (stats.open, stats.closed, stats.tls_handshakes) == (0, 1, 0)


def test_a_client_that_never_sends_a_client_hello_is_dropped_at_the_timeout():
    with self_signed_server(handshake_timeout=0.5) as srv, \
            socket.create_connection(srv.addresses[0], timeout=10) as silent:
        t0 = time.monotonic()
        with pytest.raises(ConnectionResetError):
            silent.recv(100)
        waited = time.monotonic() - t0
        assert wait_for(
            lambda: srv.stats().tls_handshake_failures["TLS_HANDSHAKE_TIMEOUT"] == 1)
        assert srv.stats().open == 0
    assert 0.4 <= waited < 5.0


def test_a_client_that_refuses_the_certificate_is_named_by_its_alert():
    with self_signed_server() as srv, \
            socket.create_connection(srv.addresses[0], timeout=10) as raw:
        untrusting = ssl.create_default_context()      # the system CAs only
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.wrap_socket(raw, server_hostname="localhost")
        assert wait_for(lambda: srv.stats().tls_handshake_failures["TLS_ALERT"] == 1)


def test_stats_and_metrics_report_tls_handshakes():
    with self_signed_server(metrics=("127.0.0.1", 0)) as srv:
        for _ in range(3):
            with socket.create_connection(srv.addresses[0], timeout=10) as raw, \
                    trusting(srv).wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
        assert wait_for(lambda: srv.stats().tls_handshakes == 3)
        host, port = srv.metrics_address
        stats = json.load(urllib.request.urlopen(f"http://{host}:{port}/stats", timeout=5))
        metrics = urllib.request.urlopen(f"http://{host}:{port}/metrics",
                                         timeout=5).read().decode()
    assert stats["tls_handshakes"] == 3 and stats["tls"]["self_signed"] is True
    assert "tcpmax_serve_tls_handshakes_total 3.0" in metrics
    assert 'tcpmax_serve_tls_handshake_failures_total{name="TLS_NOT_TLS"} 0.0' in metrics


def test_a_key_that_does_not_belong_to_the_certificate_is_refused_at_start(pki, tmp_path):
    other = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other))
    with pytest.raises(TlsServerError, match="does not belong"):
        tls_server(ServeTls(cert_file=pki.cert, key_file=str(other))).start()


def test_push_sends_its_timestamped_lines_inside_tls():
    with self_signed_server(Mode.PUSH, push_interval=0.1) as srv, \
            socket.create_connection(srv.addresses[0], timeout=10) as raw, \
            trusting(srv).wrap_socket(raw, server_hostname="localhost") as tls:
        got = b""
        while got.count(b"\n") < 3:
            chunk = tls.recv(4096)
            assert chunk, "the server closed instead of pushing"
            got += chunk
    stamps = [int(line) for line in got.split(b"\n")[:3]]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time_ns()) < 60e9
