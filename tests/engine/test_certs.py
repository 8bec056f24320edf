"""The throwaway certificate: a standard client that trusts it completes a handshake."""

import socket
import ssl
import threading

from tcpmax.engine.certs import self_signed, server_context


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str,
               errors: list[BaseException]) -> str:
    """What the client reads; the server's own failures go into `errors`."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=host) as tls:
            return tls.recv(2).decode()
    finally:
        thread.join(5)
        listener.close()


def test_a_client_trusting_the_pem_verifies_localhost_and_loopback():
    pair = self_signed()
    client = ssl.create_default_context(cadata=pair.cert_pem.decode())
    errors: list[BaseException] = []
    assert _handshake(server_context(pair), client, "localhost", errors) == "ok"
    assert _handshake(server_context(pair), client, "127.0.0.1", errors) == "ok"
    assert errors == []


def test_a_name_not_in_the_certificate_is_refused_by_a_verifying_client():
    pair = self_signed(("gateway.test",))
    client = ssl.create_default_context(cadata=pair.cert_pem.decode())
    try:
        _handshake(server_context(pair), client, "other.test", [])
    except ssl.SSLCertVerificationError as exc:
        assert "other.test" in str(exc)
    else:
        raise AssertionError("a certificate for gateway.test verified as other.test")
