"""The pure side of `serve --tls`: which certificate source is valid, and how a failed
handshake's name is bucketed into the server's fixed counters."""

import pytest

from tcpmax.model.serve import TLS_FAILURES, ServeTls, tls_failure_kind


@pytest.mark.parametrize(("name", "kind"), [
    ("TLS_NOT_TLS", "TLS_NOT_TLS"),
    ("TLS_CLOSED_IN_HANDSHAKE", "TLS_CLOSED_IN_HANDSHAKE"),
    ("TLS_HANDSHAKE_TIMEOUT", "TLS_HANDSHAKE_TIMEOUT"),
    ("TLS_ALERT_UNKNOWN_CA", "TLS_ALERT"),
    ("TLS_ALERT_BAD_CERTIFICATE", "TLS_ALERT"),
    ("TLS_NO_SHARED_CIPHER", "TLS_OTHER"),
    ("TLS_UNSUPPORTED_PROTOCOL", "TLS_OTHER"),
])
def test_a_failure_name_falls_in_one_counted_bucket(name, kind):
    assert tls_failure_kind(name) == kind
    assert kind in TLS_FAILURES


@pytest.mark.parametrize("kwargs", [
    {},                                                          # nothing to serve
    {"cert_file": "c.pem", "self_signed": ("localhost",)},       # both
    {"key_file": "k.pem", "self_signed": ("localhost",)},        # a key with no cert file
])
def test_a_certificate_source_is_a_file_or_self_signed_names_never_both(kwargs):
    with pytest.raises(ValueError):
        ServeTls(**kwargs)


def test_a_file_pair_and_self_signed_names_are_each_valid_alone():
    assert ServeTls(cert_file="c.pem", key_file="k.pem").self_signed == ()
    assert ServeTls(self_signed=("localhost",)).cert_file is None

