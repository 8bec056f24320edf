"""--first-message / --expect text to bytes, the judgement of a reply, and printable samples:
pure functions, no sockets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpmax.model.errors import classify_name
from tcpmax.model.first_message import (
    SAMPLE_BYTES,
    EscapeError,
    Verdict,
    judge,
    parse_escapes,
    show_bytes,
)
from tcpmax.model.load import Endpoint, LoadConfig, WsOptions


@pytest.mark.parametrize(("text", "data"), [
    ("GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("\\x20\\x02\\x00\\x00", b"\x20\x02\x00\x00"),                 # an MQTT CONNACK
    ("a\\0b", b"a\x00b"),
    ("\\101\\1012", b"AA2"),                                       # octal: three digits at most
    ("\\t\\\\\\\"\\'\\?\\a\\b\\e\\f\\v", b"\t\\\"'?\x07\x08\x1b\x0c\x0b"),
    ("héllo", "héllo".encode()),
    ("plain", b"plain"),
])
def test_c_escapes_become_their_bytes(text, data):
    assert parse_escapes(text) == data


@pytest.mark.parametrize(("text", "words"), [
    ("a\\q", "unknown escape \\q at character 2"),
    ("\\x4", "two hex digits"),
    ("\\xzz", "two hex digits"),
    ("\\400", "above \\377"),
    ("end\\", "backslash at the end"),
])
def test_a_bad_escape_is_refused_saying_where(text, words):
    with pytest.raises(EscapeError, match=words.replace("\\", "\\\\")):
        parse_escapes(text)


@given(st.binary(max_size=200))
def test_a_sample_reads_back_as_the_bytes_it_shows(data):
    assert parse_escapes(show_bytes(data, limit=len(data))) == data


def test_a_sample_is_printable_and_bounded():
    reply = b"HTTP/1.1 404 Not Found\r\n" + b"\xff" * 500
    shown = show_bytes(reply)
    assert shown.startswith("HTTP/1.1 404 Not Found\\r\\n\\xff") and shown.endswith("...")
    assert shown.isprintable() and len(shown) <= 4 * SAMPLE_BYTES + 3


def test_a_zero_byte_before_a_digit_is_not_read_as_an_octal_escape():
    assert parse_escapes(show_bytes(b"\x001")) == b"\x001"


@pytest.mark.parametrize(("seen", "verdict"), [
    (b"HTTP/1.1 200 OK\r\n", Verdict.MATCH),          # starts with: the rest is the server's
    (b"HTTP/1.1 200", Verdict.MATCH),
    (b"HTTP/1.", Verdict.NEED_MORE),                   # agrees so far: wait for more
    (b"HTTP/1.1 404 Not Found", Verdict.MISMATCH),
    (b"X", Verdict.MISMATCH),                          # refused at the first byte that differs
])
def test_a_reply_matches_when_it_starts_with_the_expected_bytes(seen, verdict):
    assert judge(b"HTTP/1.1 200", seen) is verdict


@pytest.mark.parametrize("name", ["UNEXPECTED_REPLY", "CLOSED_BEFORE_REPLY", "REPLY_TIMEOUT"])
def test_each_reply_failure_has_a_meaning_and_advice(name):
    known = classify_name(name)
    assert known.name == name and "expect" in known.meaning.lower() + known.advice.lower()


@pytest.mark.parametrize(("kw", "words"), [
    ({"first_message": b""}, "--first-message is empty"),
    ({"expect": b""}, "--expect is empty"),
    ({"expect": b"x" * 65537}, "--expect is longer than 65,536"),
    ({"first_message": b"x", "ws": WsOptions(host="h:1")}, "do not go with ws://"),
])
def test_a_config_refuses_first_messages_it_cannot_send(kw, words):
    with pytest.raises(ValueError, match=words):
        LoadConfig((Endpoint("127.0.0.1", 9),), 1, **kw)
