"""`ReplyClient`, the --first-message / --expect side of a load worker, fed bytes by hand."""

import pytest

from tcpmax.engine.opening import OpeningFailure, ReplyClient

CONNACK = b"\x20\x02\x00\x00"


def test_a_reply_in_two_reads_matches_and_hands_back_what_follows_it():
    client = ReplyClient(b"CONNECT", CONNACK)
    assert client.answer(7, CONNACK[:1]) is None
    assert client.answer(7, CONNACK[1:] + b"\x30more") == b"\x30more"
    assert client.pending == {}                  # nothing kept once judged


def test_a_wrong_first_byte_fails_at_once_with_the_reply_as_sample():
    client = ReplyClient(b"CONNECT", CONNACK)
    with pytest.raises(OpeningFailure) as caught:
        client.answer(7, b"\x20\x02\x00\x05")    # CONNACK "not authorized"
    assert caught.value.name == "UNEXPECTED_REPLY"
    assert caught.value.sample == b"\x20\x02\x00\x05"


def test_a_close_after_part_of_the_reply_keeps_that_part_as_sample():
    client = ReplyClient(None, b"220 smtp ready")
    assert client.answer(3, b"220 ") is None
    failure = client.closed(3)
    assert failure.name == "CLOSED_BEFORE_REPLY" and failure.sample == b"220 "
    assert client.pending == {}


def test_a_timeout_with_nothing_received_has_no_sample():
    failure = ReplyClient(b"GET /\r\n", b"HTTP/1.1 200").timed_out(5)
    assert failure.name == "REPLY_TIMEOUT" and failure.sample is None


def test_without_expect_nothing_is_awaited_and_the_message_is_the_request():
    client = ReplyClient(b"hello\n", None)
    assert not client.awaits_reply and client.request(1) == b"hello\n"
    assert ReplyClient(None, b"SSH-").request(1) == b""
