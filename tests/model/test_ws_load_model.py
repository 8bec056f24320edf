"""The WebSocket parts of a load's model: its options, checked when built, and the names of
its failures with their meaning and advice."""

import pytest

from tcpmax.model.errors import classify_name
from tcpmax.model.load import WsOptions


def test_options_keep_what_was_asked():
    o = WsOptions(host="gw.test:443", path="/chat?room=1", headers=(("Origin", "x"),),
                  subprotocol="mqtt", binary=True)
    assert (o.path, o.headers, o.subprotocol, o.binary) == ("/chat?room=1", (("Origin", "x"),),
                                                            "mqtt", True)


@pytest.mark.parametrize(("kw", "words"), [
    ({"path": "chat"}, "must start with /"),
    ({"path": "/a b"}, "no spaces"),
    ({"headers": (("Bad Name", "v"),)}, "--header"),
    ({"headers": (("X-Split", "a\r\nEvil: 1"),)}, "--header"),
    ({"subprotocol": "a,b"}, "--subprotocol"),
    ({"subprotocol": ""}, "--subprotocol"),
])
def test_options_that_would_break_the_request_are_refused(kw, words):
    with pytest.raises(ValueError, match=words):
        WsOptions(host="h:1", **kw)


@pytest.mark.parametrize(("status", "advice"), [
    ("403", "--header"), ("401", "Authorization"), ("404", "path"), ("426", "wss://"),
])
def test_a_refusal_by_status_names_the_status_and_advises_by_it(status, advice):
    c = classify_name(f"WS_HTTP_{status}")
    assert c.name == f"WS_HTTP_{status}" and f"HTTP {status}" in c.meaning
    assert advice in c.advice


def test_an_unlisted_status_still_has_a_meaning_and_advice():
    c = classify_name("WS_HTTP_503")
    assert "HTTP 503" in c.meaning and c.advice


@pytest.mark.parametrize("name", ["WS_BAD_ACCEPT", "WS_NOT_HTTP", "WS_HANDSHAKE_TIMEOUT",
                                  "WS_CLOSED_IN_HANDSHAKE", "WS_PROTOCOL_ERROR"])
def test_every_upgrade_failure_has_its_own_meaning(name):
    c = classify_name(name)
    assert c.name == name and c.meaning != classify_name("WS_HTTP_999").meaning
