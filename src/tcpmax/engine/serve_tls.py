"""TLS for a `tcpmax serve` worker: the server context, handshakes driven by epoll, and the
read, write and close functions of a worker whose connections all carry TLS.

The worker picks these functions once per run (`read = tls.read` instead of `os.read`), so a
plain-TCP run never calls into this module and its hot loop is the same code as before.

TLS keeps state per connection that no flat array can hold (OpenSSL's SSL object): one
`ssl.SSLSocket` per connection in a dict keyed by fd, created at accept and dropped at close,
as engine/tls.py does on the load side. CPython sets SSL_MODE_RELEASE_BUFFERS on every
context (bpo-25672), so an idle connection keeps no 16 KiB record buffers; what stays is
OpenSSL's per-connection state and two Python objects.

The handshake needs no branch in the worker's loop: `read` advances it while it is not done
(raising BlockingIOError, "nothing to read yet", until it is), so a readable TLS fd goes
through the same path as a plain one. The rare handshake that must wait for the socket to
be writable parks an empty write in the worker's `pending` dict and switches the fd to
EPOLLOUT; the worker's write path then calls `write(fd, b"")`, which moves the handshake on.

`handshaking` maps fd -> deadline; every entry gets the same timeout, so insertion order is
deadline order and `expired` stops at the first entry not yet due (as serve_ws does).
A failed handshake is counted under its name (model.errors.tls_error_name, bucketed by
model.serve.tls_failure_kind) and the worker closes the connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import ssl
import time
from array import array
from dataclasses import dataclass

from tcpmax.engine.certs import SelfSigned, self_signed, server_context
from tcpmax.engine.counters import Col
from tcpmax.engine.sockopts import LINGER_RESET
from tcpmax.engine.tls import failure_name
from tcpmax.engine.worker import pop_expired
from tcpmax.model.serve import TLS_FAILURES, ServeTls, tls_failure_kind

__all__ = ["ServerTls", "TlsServerError", "TlsSide", "load_server_tls"]

_FAIL_COL = tuple(Col[f"TLS_FAIL_{name[4:]}"] for name in TLS_FAILURES)
_FAIL_INDEX = {name: i for i, name in enumerate(TLS_FAILURES)}
_TIMEOUT = _FAIL_INDEX["TLS_HANDSHAKE_TIMEOUT"]
_CLOSED = _FAIL_INDEX["TLS_CLOSED_IN_HANDSHAKE"]
_WANT_READ = select.EPOLLIN
_WANT_WRITE = select.EPOLLOUT


class TlsServerError(ValueError):
    """The certificate or key cannot serve: unreadable, not PEM, or not a matching pair."""


@dataclass(frozen=True)
class ServerTls:
    """A context ready to serve, and what a client needs to trust it."""

    context: ssl.SSLContext
    cert_pem: bytes            # the certificate (chain) the server presents
    sha256: str                # of the leaf certificate's DER, AA:BB:... as browsers show it
    names: tuple[str, ...]     # a self-signed certificate's names; () for a given one


def _fingerprint(cert_pem: bytes) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii", "replace"))
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _first_cert(pem: bytes) -> bytes:
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        return b""
    return pem[start:stop + len(end)] + b"\n"


def _tune(ctx: ssl.SSLContext) -> ssl.SSLContext:
    # A client that hangs up without close_notify is an ordinary end of connection for a
    # server that holds connections, not a protocol error to report.
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def load_server_tls(tls: ServeTls) -> ServerTls:
    """Build the context for `tls` (files read, or a certificate made now) in the caller,
    before any fork, so every worker shares it and bad input fails here.

    Raises:
        TlsServerError: a file that cannot be read, a file with no certificate or no
            private key, an encrypted key, or a key that does not belong to the
            certificate.
    """
    if tls.self_signed:
        pair = self_signed(tls.self_signed)
        return ServerTls(_tune(server_context(pair)), pair.cert_pem,
                         _fingerprint(pair.cert_pem), tls.self_signed)
    assert tls.cert_file is not None
    paths = [tls.cert_file] + ([tls.key_file] if tls.key_file else [])
    blobs = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                blobs.append(f.read())
        except OSError as exc:
            raise TlsServerError(f"cannot read {path}: {exc.strerror}") from exc
    cert = _first_cert(blobs[0])
    if not cert:
        raise TlsServerError(f"{tls.cert_file} holds no PEM certificate "
                             "(-----BEGIN CERTIFICATE-----)")
    key = blobs[-1]
    if b"PRIVATE KEY-----" not in key:
        raise TlsServerError(
            f"{paths[-1]} holds no PEM private key"
            + ("" if tls.key_file else ": pass the key with --tls-key"))
    if b"ENCRYPTED" in key:
        # OpenSSL would ask for the passphrase on the terminal, and a server has none.
        raise TlsServerError(f"{paths[-1]} holds an encrypted private key: decrypt it first "
                             "(openssl pkey -in KEY -out KEY.plain)")
    try:
        ctx = server_context(SelfSigned(cert_pem=blobs[0], key_pem=key))
    except ssl.SSLError as exc:
        why = ("the key does not belong to the certificate"
               if exc.reason == "KEY_VALUES_MISMATCH" else f"OpenSSL says {exc.reason}")
        raise TlsServerError(f"{tls.cert_file}{' + ' + tls.key_file if tls.key_file else ''}"
                             f": {why}") from exc
    try:
        sha = _fingerprint(cert)
    except ValueError as exc:
        raise TlsServerError(f"{tls.cert_file}: the certificate is not valid PEM") from exc
    return ServerTls(_tune(ctx), blobs[0], sha, ())


class TlsSide:
    """The TLS side of one serve worker: its connections' SSL sockets by fd, the handshakes
    under way, and their counters."""

    def __init__(self, ctx: ssl.SSLContext, timeout: float, ep: select.epoll,
                 pending: dict[int, bytes], row: memoryview,
                 family: int = socket.AF_INET) -> None:
        self.ctx = ctx
        self.family = family            # of the listeners: no getsockopt per accept
        self.timeout = timeout
        self.ep = ep
        self.pending = pending
        self.conns: dict[int, ssl.SSLSocket] = {}
        self.handshaking: dict[int, float] = {}
        self.done = row[Col.TLS_HANDSHAKES]
        self.done_us = row[Col.TLS_HANDSHAKE_US]
        self.failures = array("Q", [row[c] for c in _FAIL_COL])

    def counts(self) -> tuple[tuple[Col, int], ...]:
        return ((Col.TLS_HANDSHAKES, self.done), (Col.TLS_HANDSHAKE_US, self.done_us),
                *zip(_FAIL_COL, self.failures, strict=True))

    def accepted(self, fd: int, now: float) -> None:
        """Wrap a freshly accepted fd; its handshake starts with its first readable event."""
        sock = socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)     # a socket object made from an fd starts out blocking
        self.conns[fd] = self.ctx.wrap_socket(sock, server_side=True,
                                              do_handshake_on_connect=False)
        self.handshaking[fd] = now + self.timeout

    def _advance(self, fd: int, conn: ssl.SSLSocket) -> int:
        """Move a handshake on: 0 once done, else the epoll event it waits for. Raises
        OSError (the worker then closes the fd) after counting the failure by name."""
        try:
            conn.do_handshake()
        except ssl.SSLWantReadError:
            return _WANT_READ
        except ssl.SSLWantWriteError:
            return _WANT_WRITE
        except OSError as exc:          # ssl.SSLError is an OSError
            del self.handshaking[fd]
            self.failures[_FAIL_INDEX[tls_failure_kind(failure_name(exc))]] += 1
            raise
        started = self.handshaking.pop(fd) - self.timeout
        self.done += 1
        self.done_us += int((time.monotonic() - started) * 1e6)
        return 0

    def read(self, fd: int, size: int) -> bytes:
        """os.read's contract: BlockingIOError while the handshake or a record is incomplete,
        b"" at the end of the connection."""
        conn = self.conns[fd]
        if fd in self.handshaking:
            wanted = self._advance(fd, conn)
            if wanted == _WANT_WRITE and fd not in self.pending:
                self.pending[fd] = b""          # the worker's write path resumes it
                self.ep.modify(fd, _WANT_WRITE)
            if wanted:
                raise BlockingIOError
        try:
            return conn.recv(size)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None
        except ssl.SSLZeroReturnError:      # the client's close_notify: answer with ours
            with contextlib.suppress(OSError, ValueError):
                conn.unwrap()
            return b""

    def write(self, fd: int, data: bytes) -> int:
        """os.write's contract. OpenSSL writes whole records: after BlockingIOError the
        same bytes must be offered again (the worker's pending buffer does exactly that)."""
        conn = self.conns[fd]
        if fd in self.handshaking:
            if data:                        # a push before the handshake is done: skipped
                raise BlockingIOError
            # The empty write parked by `read`: 0 ("all written") sends the fd back to
            # EPOLLIN, unless the handshake still waits for room to write.
            if self._advance(fd, conn) == _WANT_WRITE:
                raise BlockingIOError
            return 0
        try:
            return conn.send(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError from None

    def close(self, fd: int) -> None:
        """Close a connection the client ended or broke (FIN)."""
        conn = self.conns.pop(fd)
        if self.handshaking.pop(fd, None) is not None:
            self.failures[_CLOSED] += 1
        conn.close()

    def reset(self, fd: int) -> None:
        """Close with RST (idle timeout, handshake timeout, stop), forgetting the fd."""
        conn = self.conns.pop(fd, None)
        self.handshaking.pop(fd, None)
        if conn is None:
            os.close(fd)
            return
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        conn.close()

    def expired(self, now: float) -> list[int]:
        """Handshakes past their deadline, forgotten and counted; the worker resets them."""
        late = pop_expired(self.handshaking, now)
        self.failures[_TIMEOUT] += len(late)
        return late
