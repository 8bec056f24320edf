"""The WebSocket half of a `tcpmax serve --mode ws` worker: handshakes, frames, push.

serve_worker.py owns the epoll loop, accepting, idle timeouts and closing; it hands this
object the bytes read from a WebSocket connection and asks it whether to keep it. One
`WsSide` exists per worker, never per connection.

Per-connection state is flat and keyed by fd, as in the plain paths:
- the worker's `held` bytearray says 2 while a connection is handshaking, 1 once upgraded;
- `handshaking` maps fd -> deadline while the request head is awaited. Every entry gets the
  same timeout, so insertion order is deadline order and a sweep stops at the first entry
  not yet due;
- `msg_state` (a bytearray) keeps the fragmentation state of model.ws;
- `inbuf` keeps the bytes of an incomplete request head or frame, for the few connections
  that have one; `pending` (shared with the worker) the bytes a full socket buffer refused.
A held idle connection is thus two bytes in preallocated arrays and no Python object.

Writes go through `send`, which queues behind bytes already pending and switches the fd to
EPOLLOUT when the socket buffer is full: a frame is never half-written and then interleaved.
Its `write` is os.write, or for wss the TLS side's (engine/serve_tls.py), picked at start.
"""

from __future__ import annotations

import os
import select
from array import array
from collections.abc import Callable

from tcpmax.engine.counters import Col
from tcpmax.engine.worker import pop_expired
from tcpmax.model.serve import Mode, ServeConfig
from tcpmax.model.ws import (
    MAX_HEAD,
    FrameError,
    HandshakeError,
    HandshakeFailure,
    Opcode,
    accept_response,
    close_payload,
    decode_frames,
    encode_frame,
    head_complete,
    make_key,
    next_message_state,
    parse_upgrade,
    peer_close_code,
    reject_response,
    upgrade_request,
)

__all__ = ["HANDSHAKING", "UPGRADED", "WsSide"]

UPGRADED = 1       # values of the worker's `held` cell for a WebSocket fd
HANDSHAKING = 2
_FAILURES = tuple(HandshakeFailure)
_FAIL_COL = tuple(Col[f"WS_FAIL_{c.name}"] for c in _FAILURES)
_FAIL_INDEX = {c: i for i, c in enumerate(_FAILURES)}
_PING, _PONG, _CLOSE = Opcode.PING.value, Opcode.PONG.value, Opcode.CLOSE.value


def _warm() -> None:
    """Run one handshake and frame round in the process that imports this, before any fork:
    what initialises lazily on first use (OpenSSL's SHA-1, h11's first parse) is then built
    once in shared pages instead of once in every worker."""
    key = make_key(bytes(16))
    accept_response(parse_upgrade(upgrade_request(b"warm", b"/", key)).key)
    decode_frames(encode_frame(Opcode.TEXT, b"warm", mask=b"warm"), masked=True,
                  max_payload=125)


_warm()


class WsSide:
    def __init__(self, cfg: ServeConfig, fd_limit: int, ep: select.epoll,
                 pending: dict[int, bytes], row: memoryview,
                 write: Callable[[int, bytes], int] = os.write) -> None:
        self.write = write             # os.write, or the TLS side's write for wss
        self.echo = cfg.ws_then is Mode.ECHO
        self.max_payload = cfg.ws_max_frame
        self.timeout = cfg.handshake_timeout
        self.ep = ep
        self.pending = pending
        self.handshaking: dict[int, float] = {}
        self.inbuf: dict[int, bytes] = {}
        self.msg_state = bytearray(fd_limit)
        self.upgraded = row[Col.WS_UPGRADED]
        self.frames_in = row[Col.WS_FRAMES_IN]
        self.frames_out = row[Col.WS_FRAMES_OUT]
        self.protocol_errors = row[Col.WS_PROTOCOL_ERRORS]
        self.failures = array("Q", [row[c] for c in _FAIL_COL])
        self.bytes_out = 0             # the worker adds it to its own count when it flushes
        self.backpressure = 0

    def counts(self) -> tuple[tuple[Col, int], ...]:
        return ((Col.WS_UPGRADED, self.upgraded), (Col.WS_FRAMES_IN, self.frames_in),
                (Col.WS_FRAMES_OUT, self.frames_out),
                (Col.WS_PROTOCOL_ERRORS, self.protocol_errors),
                *zip(_FAIL_COL, self.failures, strict=True))

    def accepted(self, fd: int, now: float) -> None:
        self.handshaking[fd] = now + self.timeout

    def forget(self, fd: int) -> None:
        """The worker closed `fd`: drop its state; a client gone mid-handshake is counted."""
        self.inbuf.pop(fd, None)
        self.msg_state[fd] = 0
        if self.handshaking.pop(fd, None) is not None:
            self.failures[_FAIL_INDEX[HandshakeFailure.ABANDONED]] += 1

    def discard(self, fd: int) -> None:
        """Forget `fd` without counting: closed for a reason already counted (TLS)."""
        self.inbuf.pop(fd, None)
        self.msg_state[fd] = 0
        self.handshaking.pop(fd, None)

    def expired(self, now: float) -> list[int]:
        """Handshakes past their deadline, forgotten and counted; the worker closes them."""
        late = pop_expired(self.handshaking, now)
        for fd in late:
            self.inbuf.pop(fd, None)
        self.failures[_FAIL_INDEX[HandshakeFailure.TIMEOUT]] += len(late)
        return late

    def drop_handshakes(self) -> list[int]:
        """The server stops: every unfinished handshake, forgotten (not the client's fault)."""
        fds = list(self.handshaking)
        self.handshaking.clear()
        for fd in fds:
            self.inbuf.pop(fd, None)
        return fds

    def send(self, fd: int, data: bytes) -> bool:
        """Write whole frames in order; False if the connection is broken."""
        queued = self.pending.get(fd)
        if queued is not None:
            self.pending[fd] = queued + data
            return True
        try:
            n = self.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return False
        self.bytes_out += n
        if n < len(data):
            self.pending[fd] = data[n:]
            self.backpressure += 1
            self.ep.modify(fd, select.EPOLLOUT)
        return True

    def received(self, fd: int, data: bytes, held: bytearray) -> bool:
        """Handle bytes read from a WebSocket fd; False: the worker closes it now."""
        if held[fd] == HANDSHAKING:
            return self._handshake(fd, data, held)
        buf = self.inbuf.pop(fd, None)
        if buf is not None:
            data = buf + data
        try:
            frames, used = decode_frames(data, masked=True, max_payload=self.max_payload)
            if used < len(data):
                self.inbuf[fd] = data[used:]
            out: list[bytes] = []
            state = self.msg_state[fd]
            for frame in frames:
                state = next_message_state(state, frame)
                op = frame.opcode
                if op == _PING:
                    out.append(encode_frame(_PONG, frame.payload))
                elif op == _CLOSE:
                    code = peer_close_code(frame.payload)
                    out.append(encode_frame(_CLOSE, b"" if code is None
                                            else close_payload(code)))
                    self.frames_in += len(frames)
                    self.frames_out += len(out)
                    self.send(fd, b"".join(out))
                    return False          # closing the TCP connection is the server's turn
                elif self.echo and op != _PONG:
                    out.append(encode_frame(op, frame.payload, fin=frame.fin))
            self.msg_state[fd] = state
        except FrameError as exc:
            self.protocol_errors += 1
            self.send(fd, encode_frame(_CLOSE, close_payload(exc.code, str(exc).encode())))
            return False
        self.frames_in += len(frames)
        if out:
            self.frames_out += len(out)
            return self.send(fd, b"".join(out))
        return True

    def _handshake(self, fd: int, data: bytes, held: bytearray) -> bool:
        buf = self.inbuf.pop(fd, None)
        if buf is not None:
            data = buf + data
        if not head_complete(data) and len(data) < MAX_HEAD:
            self.inbuf[fd] = data
            return True
        try:
            upgrade = parse_upgrade(data)
        except HandshakeError as exc:
            del self.handshaking[fd]
            self.failures[_FAIL_INDEX[exc.cause]] += 1
            self.send(fd, reject_response(exc))
            return False
        del self.handshaking[fd]
        held[fd] = UPGRADED
        self.upgraded += 1
        if not self.send(fd, accept_response(upgrade.key)):
            return False
        return not upgrade.rest or self.received(fd, upgrade.rest, held)

    def push(self, held: bytearray, frame: bytes) -> tuple[int, int]:
        """Send one frame to every upgraded connection; (sent, skipped for a full buffer)."""
        sent = skipped = 0
        pending = self.pending
        write = self.write
        fd = held.find(UPGRADED)
        while fd != -1:
            if fd in pending:
                skipped += 1
            else:
                try:
                    n = write(fd, frame)
                except BlockingIOError:
                    n = 0
                except OSError:
                    n = -1      # the read side sees the reset and closes it
                if n == len(frame):
                    sent += 1
                    self.bytes_out += n
                elif n == 0:
                    skipped += 1
                elif n > 0:     # never leave half a frame: the rest goes out first
                    sent += 1
                    self.bytes_out += n
                    pending[fd] = frame[n:]
                    self.backpressure += 1
                    self.ep.modify(fd, select.EPOLLOUT)
            fd = held.find(UPGRADED, fd + 1)
        self.frames_out += sent
        return sent, skipped
