"""`tcpmax load --first-message / --expect`: a connection counts as established only when the
server's reply starts with the expected bytes; every other outcome is named and counted, with
what the server sent."""

from __future__ import annotations

import time

import pytest
import trustme

from tcpmax.engine.loader import LoadRun
from tcpmax.model.load import Endpoint, LoadConfig, TlsOptions
from tests.servers import plain_server, reply_server, tls_server

HTTP_GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def first_load(address, n: int, first: bytes | None, expect: bytes | None, **kw):
    kw.setdefault("hold", 0.2)
    kw.setdefault("connect_timeout", 5.0)
    return LoadRun(LoadConfig((Endpoint(*address),), n, first_message=first, expect=expect,
                              **kw)).run()


def test_every_connection_gets_the_expected_http_answer_and_it_is_timed():
    with reply_server("http", "200") as address:
        result = first_load(address, 100, HTTP_GET, b"HTTP/1.1 200")
    assert result.reached and result.peak_established == 100 and result.errors == []
    assert result.replies == 100
    assert result.reply_latency_us is not None and result.reply_latency_us["count"] == 100
    assert result.bytes_sent == 100 * len(HTTP_GET)
    assert result.bytes_received > 100 * len(b"HTTP/1.1 200")


def test_another_status_is_an_unexpected_reply_with_what_the_server_sent():
    with reply_server("http", "404") as address:
        result = first_load(address, 50, HTTP_GET, b"HTTP/1.1 200")
    assert result.peak_established == 0 and not result.reached
    assert result.error_counts == {"UNEXPECTED_REPLY": 50}
    error = result.errors[0]
    assert error.sample is not None and error.sample.startswith("HTTP/1.1 404 ")
    assert "\\r\\n" in error.sample and "--expect" in error.advice
    assert result.reply_latency_us is None


def test_expect_alone_waits_for_a_server_that_speaks_first():
    with reply_server("banner", "220 smtp.test ESMTP ready\r\n") as address:
        result = first_load(address, 50, None, b"220 ")
    assert result.reached and result.errors == [] and result.replies == 50
    assert result.bytes_sent == 0


def test_a_server_that_closes_at_once_is_named_closed_before_reply():
    with reply_server("close") as address:
        result = first_load(address, 30, HTTP_GET, b"HTTP/1.1 200")
    assert result.error_counts == {"CLOSED_BEFORE_REPLY": 30}
    assert result.peak_established == 0


def test_a_silent_server_is_a_reply_timeout_within_the_connect_timeout():
    with plain_server(processes=1) as address:
        t0 = time.monotonic()
        result = first_load(address, 20, HTTP_GET, b"HTTP/1.1 200", connect_timeout=0.5,
                            hold=0)
        elapsed = time.monotonic() - t0
    assert result.error_counts == {"REPLY_TIMEOUT": 20}
    # The timeout scan runs every 0.1 s; the run's start and teardown add a second or so.
    assert elapsed < 0.5 + 3.0


def test_a_reply_that_arrives_in_pieces_is_judged_on_the_whole():
    with reply_server("split", "SSH-2.0-OpenSSH_9.2\r\n") as address:
        result = first_load(address, 10, None, b"SSH-2.0-OpenSSH_9.2\r\n")
    assert result.reached and result.errors == []


def test_a_first_message_without_expect_counts_the_connection_once_sent():
    with plain_server(processes=1) as address:
        result = first_load(address, 40, b"hello\n", None)
    assert result.reached and result.errors == [] and result.replies == 0
    assert result.bytes_sent == 40 * len(b"hello\n")


def test_a_first_message_longer_than_one_write_goes_whole():
    big = bytes(range(256)) * 256           # 64 KiB into a 4 KiB receive window
    with reply_server("echo") as address:
        result = first_load(address, 4, big, big[:1024])
    assert result.reached and result.errors == []
    assert result.bytes_sent == 4 * len(big)


@pytest.fixture(scope="module")
def server_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(root / "server.pem"))
    return str(root / "ca.pem"), str(root / "server.pem")


def test_over_tls_the_first_message_goes_after_the_handshake_and_its_echo_matches(server_pem):
    ca, pem = server_pem
    with tls_server(pem, pem, echo=True) as address:
        result = first_load(address, 30, b"PING 1\r\n", b"PING 1\r\n",
                            tls=TlsOptions(ca_file=ca))
    assert result.reached and result.errors == []
    assert result.tls_handshakes == 30 and result.replies == 30
