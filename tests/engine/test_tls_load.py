"""`tcpmax load tls://`: handshakes completed and timed, every failure named by its cause."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tcpmax.engine.loader import LoadError, LoadRun
from tcpmax.model.load import Endpoint, LoadConfig, TlsOptions
from tests.servers import plain_server, tls_server


@dataclass(frozen=True)
class Pki:
    ca: str            # the CA to trust (--ca)
    server: str        # key and chain for 127.0.0.1 and localhost
    other: str         # key and chain for other.test only


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    paths = Pki(str(root / "ca.pem"), str(root / "server.pem"), str(root / "other.pem"))
    ca.cert_pem.write_to_path(paths.ca)
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        paths.server)
    ca.issue_cert("other.test").private_key_and_cert_chain_pem.write_to_path(paths.other)
    return paths


def tls_load(address, n: int, tls: TlsOptions, **kw):
    kw.setdefault("hold", 0.2)
    kw.setdefault("connect_timeout", 5.0)
    return LoadRun(LoadConfig((Endpoint(*address),), n, tls=tls, **kw)).run()


def test_every_connection_completes_a_verified_handshake_and_it_is_timed(pki):
    with tls_server(pki.server, pki.server) as address:
        result = tls_load(address, 300, TlsOptions(ca_file=pki.ca))
    assert result.reached and result.peak_established == 300
    assert result.tls_handshakes == 300
    assert result.tls_handshake_latency_us is not None
    assert result.tls_handshake_latency_us["count"] == 300
    assert result.tls_handshake_rate > 0
    assert result.errors == []


def test_echoed_probes_travel_inside_tls(pki):
    with tls_server(pki.server, pki.server, echo=True) as address:
        result = tls_load(address, 20, TlsOptions(ca_file=pki.ca), message_rate=200,
                          hold=1.0)
    # Replies still on their way when the connections close are not counted.
    assert result.messages_sent > 100
    assert result.messages_received >= 0.8 * result.messages_sent
    assert result.message_latency_us is not None


def test_a_certificate_for_another_name_is_named_wrong_name(pki):
    with tls_server(pki.other, pki.other) as address:
        result = tls_load(address, 20, TlsOptions(ca_file=pki.ca))
    assert result.error_counts == {"TLS_CERT_WRONG_NAME": 20}
    advice = result.errors[0].advice
    assert "--sni" in advice


def test_the_right_sni_makes_the_other_certificate_valid(pki):
    with tls_server(pki.other, pki.other) as address:
        result = tls_load(address, 20, TlsOptions(ca_file=pki.ca, server_name="other.test"))
    assert result.reached and result.errors == []


def test_an_untrusted_ca_is_named_and_insecure_skips_the_check(pki):
    with tls_server(pki.server, pki.server) as address:
        untrusted = tls_load(address, 20, TlsOptions())
        insecure = tls_load(address, 20, TlsOptions(insecure=True))
    assert untrusted.error_counts == {"TLS_CERT_UNTRUSTED": 20}
    assert insecure.reached and insecure.errors == []


def test_a_plain_tcp_server_that_waits_is_a_handshake_timeout():
    with plain_server(processes=1) as address:
        result = tls_load(address, 10, TlsOptions(insecure=True), connect_timeout=0.5)
    assert result.error_counts == {"TLS_HANDSHAKE_TIMEOUT": 10}


def test_a_plain_tcp_echo_server_is_named_as_not_speaking_tls():
    with plain_server(processes=1, echo=True) as address:
        result = tls_load(address, 10, TlsOptions(insecure=True))
    assert result.error_counts == {"TLS_UNEXPECTED_MESSAGE": 10}
    assert "plain-TCP" in result.errors[0].meaning


def test_a_ca_file_without_certificates_is_refused_before_anything_starts(tmp_path):
    bogus = tmp_path / "not-a-ca.pem"
    bogus.write_text("hello\n")
    with pytest.raises(LoadError, match="--ca"):
        LoadRun(LoadConfig((Endpoint("127.0.0.1", 9),), 1,
                           tls=TlsOptions(ca_file=str(Path(bogus)))))
