"""One `tcpmax serve` worker: an epoll loop over raw file descriptors.

Per-connection state is flat and keyed by fd: a bytearray marks held fds, an array of floats
holds last-activity times (only with --idle-timeout), and a dict holds unsent echo bytes for
the few connections that are backlogged. Nothing else is allocated per connection, which is
what keeps user space near zero bytes per held connection.

Accepting: every worker registers every listener with EPOLLEXCLUSIVE, so the kernel wakes one
worker per incoming connection. A worker at its budget unregisters the listeners (EPOLLEXCLUSIVE
registrations cannot be modified, only removed) and re-registers below a low-water mark, so
connections flow to workers with room. A woken worker reads the accept queue's length from
the listener's TCP_INFO and accepts that many, so no accept() ends on an empty queue.
EMFILE/ENFILE/ENOBUFS/ENOMEM from accept are counted and pause the listeners briefly instead
of spinning on a level-triggered readiness that will fail again.

Echo backpressure: bytes that do not fit in the socket buffer are kept (at most one read,
64 KiB) and the fd is switched from EPOLLIN to EPOLLOUT, so nothing more is read from a client
that does not read its replies.

WebSocket (--mode ws): the same loop, with the protocol in serve_ws.WsSide. Its branches sit
behind a `side is not None` test where the plain modes pass (a hold read, accept, close), so
plain hold, echo and push run as before.

TLS (--tls): the loop's `read`, `write` and `close` are picked once, before it starts: os's
for plain TCP, serve_tls.TlsSide's for TLS, which also drives each handshake from inside
`read`. The plain path pays one `tls is not None` test per accept and per poll, nothing per
read or write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import ssl
import struct
import time
from array import array

from tcpmax.engine import native
from tcpmax.engine.counters import Col, CounterTable, WorkerState
from tcpmax.engine.serve_tls import TlsSide
from tcpmax.engine.serve_ws import HANDSHAKING, WsSide
from tcpmax.engine.sockopts import LINGER_RESET
from tcpmax.engine.worker import FLUSH_EVERY, flush_counters, worker_prologue
from tcpmax.model.serve import Mode, ServeConfig
from tcpmax.model.ws import Opcode, encode_frame

__all__ = ["run_worker"]

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLRDHUP = select.EPOLLRDHUP
EPOLLERR = select.EPOLLERR
EPOLLEXCLUSIVE = select.EPOLLEXCLUSIVE
READ_SIZE = 65536
ACCEPT_BATCH = 64
# ws without TLS: read the upgrade request right after accept; with the listener's
# TCP_DEFER_ACCEPT (engine/server.py) it is there. A module switch so bench/bench_serve.py
# can compare both ways in one run (forked workers inherit it).
EARLY_READ = True
PAUSE_FIRST, PAUSE_MAX = 0.05, 1.0
# A listener's TCP_INFO carries its accept queue's length in tcpi_unacked (bytes 24-27; the
# kernel's tcp_get_info aliases the field for listeners).
queue_len = struct.Struct("=I").unpack_from
_ACCEPT_COL = {
    errno.EMFILE: Col.ACCEPT_EMFILE,
    errno.ENFILE: Col.ACCEPT_ENFILE,
    errno.ENOBUFS: Col.ACCEPT_ENOBUFS,
    errno.ENOMEM: Col.ACCEPT_ENOMEM,
    errno.ECONNABORTED: Col.ACCEPT_ECONNABORTED,
}


def _reset_close(fd: int) -> None:
    """Close with RST: no FIN handshake, no TIME_WAIT left behind."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    s.close()


def run_worker(cfg: ServeConfig, listeners: list[socket.socket], table: CounterTable,
               slot: int, budget: int, tls_context: ssl.SSLContext | None = None) -> None:
    """Serve until SIGTERM; returns after closing (or draining) every connection. With
    `tls_context`, every connection is TLS (the context the supervisor built before forking)."""
    row, wake_r, fd_limit, ep = worker_prologue(table, slot, budget)
    held = bytearray(fd_limit)                      # 1 where the fd is a held connection
    track_idle = cfg.idle_timeout is not None
    last = array("d", bytes(8 * fd_limit)) if track_idle else None
    pending: dict[int, bytes] = {}                  # echo: bytes not yet written, by fd
    ws = cfg.mode is Mode.WS
    echo = cfg.mode is Mode.ECHO
    push = cfg.mode is Mode.PUSH or (ws and cfg.ws_then is Mode.PUSH)
    nonblocking = echo or push or ws    # TLS sockets are made non-blocking when wrapped
    fresh = HANDSHAKING if ws else 1                # `held` value of a just-accepted fd
    tls = (None if tls_context is None else
           TlsSide(tls_context, cfg.handshake_timeout, ep, pending, row,
                   listeners[0].family if listeners else socket.AF_INET))
    read, write, close = (os.read, os.write, os.close) if tls is None else \
        (tls.read, tls.write, tls.close)
    reset = _reset_close if tls is None else tls.reset
    side = WsSide(cfg, fd_limit, ep, pending, row, write) if ws else None
    early_read = ws and tls is None and EARLY_READ

    lsocks = {s.fileno(): s for s in listeners}

    listening = False

    def listen_on() -> None:
        nonlocal listening
        if not listening:
            for lfd in lsocks:
                ep.register(lfd, EPOLLIN | EPOLLEXCLUSIVE)
            listening = True

    def listen_off() -> None:
        nonlocal listening
        if listening:
            for lfd in lsocks:
                ep.unregister(lfd)
            listening = False

    listen_on()
    pause_until = 0.0
    pause_len = PAUSE_FIRST
    low_water = budget - max(1, budget // 20)

    # Hot counters live in locals and are stored in shared memory every FLUSH_EVERY seconds.
    opened = row[Col.ACCEPTED]
    closed = row[Col.CLOSED]
    n_open = 0
    bytes_in = row[Col.BYTES_IN]
    bytes_out = row[Col.BYTES_OUT]
    pushed = row[Col.PUSHED]
    push_skipped = row[Col.PUSH_SKIPPED]
    backpressure = row[Col.BACKPRESSURE]
    idle_closed = row[Col.IDLE_CLOSED]
    state = WorkerState.RUNNING
    row[Col.STATE] = state

    def pause_accepts() -> None:
        """Stop accepting for a while after EMFILE/ENFILE/ENOBUFS/ENOMEM, longer each time:
        the listener stays readable, and accepting again at once would fail again."""
        nonlocal state, pause_until, pause_len
        row[Col.ACCEPT_PAUSES] += 1
        listen_off()
        state = WorkerState.PAUSED
        pause_until = time.monotonic() + pause_len
        pause_len = min(PAUSE_MAX, pause_len * 2)

    now = time.monotonic()
    next_flush = now
    next_push = now + cfg.push_interval if push else float("inf")
    next_idle = now + 1.0 if track_idle else float("inf")
    stopping = False
    drain_deadline = float("inf")
    pad = b" " * max(0, cfg.message_size - 21)
    # The accept path's names as locals: each global or attribute lookup is paid per accept.
    poll, register, held_events = ep.poll, ep.register, EPOLLIN | EPOLLRDHUP
    mem_floor_col = Col.MEM_FLOOR
    IPPROTO_TCP, TCP_INFO = socket.IPPROTO_TCP, socket.TCP_INFO
    # Plain accepts (no TLS, no WebSocket, no idle clock) go through the C module when it is
    # built (engine/native.py): the same TCP_INFO, accept4 and epoll_ctl calls, a batch each.
    fast_accept = (native.fast.accept_batch if native.fast is not None and side is None
                   and tls is None and last is None else None)
    epfd = ep.fileno()

    while True:
        events = poll(FLUSH_EVERY, 1024)
        for fd, ev in events:
            if held[fd]:
                # Each path that keeps the connection ends in `continue`; falling through
                # means it is gone (EOF, reset, a failed write) and is forgotten below.
                if ev & EPOLLOUT:
                    buf = pending[fd]
                    try:
                        n = write(fd, buf)
                    except BlockingIOError:
                        continue
                    except OSError:
                        n = -1
                    if n >= 0:
                        bytes_out += n
                        if n == len(buf):
                            del pending[fd]
                            ep.modify(fd, EPOLLIN | EPOLLRDHUP)
                        else:
                            pending[fd] = buf[n:]
                        continue
                # A pending error (a reset) is closed without the read, whose exception costs
                # more than the rest of the close; bytes that came just before the reset go
                # uncounted (the echo could not have been written back anyway).
                elif not ev & EPOLLERR:
                    try:
                        data = read(fd, READ_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        bytes_in += len(data)
                        if last is not None:
                            last[fd] = now
                        if not echo:
                            if side is None or side.received(fd, data, held):
                                continue
                        else:
                            try:
                                n = write(fd, data)
                            except BlockingIOError:
                                n = 0
                            except OSError:
                                n = -1
                            if n >= 0:
                                bytes_out += n
                                if n < len(data):
                                    pending[fd] = data[n:]
                                    backpressure += 1
                                    ep.modify(fd, EPOLLOUT)
                                continue
                if side is not None:
                    side.forget(fd)
                pending.pop(fd, None)
                held[fd] = 0
                n_open -= 1
                closed += 1
                close(fd)
            elif fd == wake_r:
                try:
                    signals = os.read(wake_r, 64)
                except BlockingIOError:
                    signals = b""
                if signal.SIGTERM in signals and not stopping:
                    stopping = True
                    state = WorkerState.STOPPING
                    listen_off()
                    for lsock in lsocks.values():
                        lsock.close()
                    lsocks = {}
                    drain_deadline = (time.monotonic() + cfg.drain_timeout if cfg.drain
                                      else 0.0)
            else:
                listener = lsocks.get(fd)
                if listener is None or not listening:
                    continue
                if fast_accept is not None:
                    if n_open >= budget or row[mem_floor_col]:
                        listen_off()
                        state = WorkerState.FULL
                        continue
                    got, aborted, err = fast_accept(fd, epfd, min(budget - n_open, ACCEPT_BATCH),
                                                    nonblocking, held, fresh)
                    n_open += got
                    opened += got
                    if aborted:
                        row[Col.ACCEPT_ECONNABORTED] += aborted
                    if got:
                        pause_len = PAUSE_FIRST
                    if err and err != errno.EAGAIN:
                        row[_ACCEPT_COL.get(err, Col.ACCEPT_OTHER)] += 1
                        pause_accepts()
                    continue
                accept = listener._accept  # type: ignore[attr-defined]  # raw fd, no object
                # Accept what the queue holds, no more: an accept() on an empty queue costs
                # 4.6 us (the kernel makes and frees a socket, Python raises), TCP_INFO 0.6 us
                # (measured: docs/benchmarks.md). Another worker may still take some first.
                queued = queue_len(listener.getsockopt(IPPROTO_TCP, TCP_INFO, 32), 24)[0]
                for _ in range(min(queued, ACCEPT_BATCH)):
                    if n_open >= budget or row[mem_floor_col]:
                        listen_off()
                        state = WorkerState.FULL
                        break
                    try:
                        cfd, _addr = accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        col = _ACCEPT_COL.get(exc.errno or 0, Col.ACCEPT_OTHER)
                        row[col] += 1
                        if exc.errno == errno.ECONNABORTED:
                            continue
                        pause_accepts()
                        break
                    if nonblocking:
                        fcntl.fcntl(cfd, fcntl.F_SETFL, os.O_RDWR | os.O_NONBLOCK)
                    register(cfd, held_events)
                    held[cfd] = fresh
                    n_open += 1
                    opened += 1
                    if last is not None:
                        last[cfd] = now
                    if side is not None:
                        side.accepted(cfd, now)
                    if tls is not None:
                        tls.accepted(cfd, now)
                    pause_len = PAUSE_FIRST
                    if early_read:
                        # The upgrade request has usually arrived with the connection: read it
                        # now, saving an epoll wake-up per upgrade (measured: benchmarks.md).
                        try:
                            data = read(cfd, READ_SIZE)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        bytes_in += len(data)
                        assert side is not None
                        if data and side.received(cfd, data, held):
                            continue
                        side.forget(cfd)
                        pending.pop(cfd, None)
                        held[cfd] = 0
                        n_open -= 1
                        closed += 1
                        close(cfd)

        now = time.monotonic()
        if not listening and not stopping and (
                (state is WorkerState.FULL and n_open <= low_water
                 and not row[Col.MEM_FLOOR])
                or (state is WorkerState.PAUSED and now >= pause_until and n_open < budget)):
            listen_on()
            state = WorkerState.RUNNING
        if tls is not None and tls.handshaking:
            for fd in tls.expired(now):
                if side is not None:
                    side.discard(fd)
                pending.pop(fd, None)
                held[fd] = 0
                n_open -= 1
                closed += 1
                reset(fd)
        if side is not None and side.handshaking:
            for fd in side.expired(now):
                pending.pop(fd, None)
                held[fd] = 0
                n_open -= 1
                closed += 1
                reset(fd)
        if now >= next_push and side is not None:
            sent, skipped = side.push(held, encode_frame(
                Opcode.TEXT, b"%d" % time.time_ns() + pad))
            pushed += sent
            push_skipped += skipped
            next_push = now + cfg.push_interval
        if now >= next_push:
            line = b"%d" % time.time_ns() + pad + b"\n"
            fd = held.find(1)
            while fd != -1:
                try:
                    n = write(fd, line)
                    bytes_out += n
                    pushed += 1
                except BlockingIOError:
                    push_skipped += 1
                except OSError:
                    pass    # the read side sees the reset and closes it
                fd = held.find(1, fd + 1)
            next_push = now + cfg.push_interval
        if now >= next_idle and last is not None and cfg.idle_timeout is not None:
            cutoff = now - cfg.idle_timeout
            fd = held.find(1)
            while fd != -1:
                if last[fd] < cutoff:
                    if side is not None:
                        side.forget(fd)
                    pending.pop(fd, None)
                    held[fd] = 0
                    n_open -= 1
                    closed += 1
                    idle_closed += 1
                    reset(fd)
                fd = held.find(1, fd + 1)
            next_idle = now + 1.0
        if stopping and (n_open == 0 or now >= drain_deadline):
            if side is not None:
                for fd in side.drop_handshakes():
                    held[fd] = 0
                    closed += 1
                    reset(fd)
            fd = held.find(1)
            while fd != -1:
                held[fd] = 0
                closed += 1
                reset(fd)
                fd = held.find(1, fd + 1)
            n_open = 0
            pending.clear()
            state = WorkerState.DEAD
            next_flush = 0.0
        if now >= next_flush:
            flush_counters(row, now, (
                (Col.OPEN, n_open), (Col.ACCEPTED, opened), (Col.CLOSED, closed),
                (Col.BYTES_IN, bytes_in), (Col.BYTES_OUT, bytes_out), (Col.PUSHED, pushed),
                (Col.PUSH_SKIPPED, push_skipped), (Col.BACKPRESSURE, backpressure),
                (Col.IDLE_CLOSED, idle_closed), (Col.STATE, state),
                *(() if side is None else (     # later pairs overwrite the plain totals
                    (Col.BYTES_OUT, bytes_out + side.bytes_out),
                    (Col.BACKPRESSURE, backpressure + side.backpressure),
                    *side.counts())),
                *(() if tls is None else tls.counts())))
            next_flush = now + FLUSH_EVERY
            if state is WorkerState.DEAD:
                return
