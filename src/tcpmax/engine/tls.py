"""TLS for a load worker's connections: the client context, handshakes driven by epoll, and
reads, writes and closes for connections that carry TLS.

TLS keeps state per connection that no flat array can hold (OpenSSL's session, its buffers):
one `ssl.SSLSocket` per connection, in a dict keyed by fd, created when the TCP connect
completes and dropped when the connection closes. Plain-TCP runs never create one: the worker
picks these functions only when the run's targets are `tls://`.

A handshake is advanced whenever epoll says the socket is ready; `advance` answers which
readiness it waits for next, or raises `TlsFailure` with the failure's name
(`model.errors.tls_error_name`), so the worker counts it like an errno.
"""

from __future__ import annotations

import os
import select
import socket
import ssl

from tcpmax.model.errors import tls_error_name
from tcpmax.model.load import TlsOptions

__all__ = ["DONE", "TlsClient", "TlsFailure", "client_context"]

DONE = 0
WANT_READ = select.EPOLLIN
WANT_WRITE = select.EPOLLOUT


class TlsFailure(Exception):
    """A handshake that failed; `name` says why (TLS_CERT_WRONG_NAME, TLS_NOT_TLS, ...)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def client_context(options: TlsOptions) -> ssl.SSLContext:
    """The context every connection of a run uses. Raises OSError / ssl.SSLError for a CA
    file that cannot be read or holds no certificate, so the CLI can refuse it up front."""
    ctx = ssl.create_default_context(cafile=options.ca_file)
    if options.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if options.alpn:
        ctx.set_alpn_protocols(list(options.alpn))
    return ctx


def failure_name(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return tls_error_name(exc.reason, exc.verify_code)
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError):
        return "TLS_CLOSED_IN_HANDSHAKE"
    if isinstance(exc, ssl.SSLError):
        return tls_error_name(exc.reason)
    return tls_error_name(type(exc).__name__.upper())


class TlsClient:
    """The TLS side of one worker: its context and its connections' SSL sockets by fd."""

    def __init__(self, options: TlsOptions, target_host: str) -> None:
        self.ctx = client_context(options)
        # Without --sni the certificate is checked against the address typed (an IP SAN).
        self.server_name = options.server_name or (None if options.insecure else target_host)
        self.conns: dict[int, ssl.SSLSocket] = {}

    def start(self, fd: int) -> None:
        """Wrap a connected fd; the handshake starts with the first `advance`."""
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)     # a socket object made from an fd starts out blocking
        self.conns[fd] = self.ctx.wrap_socket(sock, server_hostname=self.server_name,
                                              do_handshake_on_connect=False)

    def advance(self, fd: int) -> int:
        """Move the handshake on: DONE, or the epoll event it waits for next."""
        try:
            self.conns[fd].do_handshake()
        except ssl.SSLWantReadError:
            return WANT_READ
        except ssl.SSLWantWriteError:
            return WANT_WRITE
        except (ssl.SSLError, OSError) as exc:
            raise TlsFailure(failure_name(exc)) from exc
        return DONE

    def read(self, fd: int, size: int) -> bytes:
        """os.read's contract: BlockingIOError when nothing is decrypted yet, b"" at the end."""
        try:
            return self.conns[fd].recv(size)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None
        except ssl.SSLZeroReturnError:
            return b""

    def write(self, fd: int, data: bytes) -> int:
        try:
            return self.conns[fd].send(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None

    def close(self, fd: int) -> None:
        """Close the connection (an RST when SO_LINGER 0 was set before connect)."""
        conn = self.conns.pop(fd, None)
        if conn is not None:
            conn.close()
        else:                   # still connecting: not wrapped yet
            os.close(fd)
