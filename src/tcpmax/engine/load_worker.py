"""One `tcpmax load` worker: open its shares of connections, hold them, report, tear down.

Connects are non-blocking and completed through epoll with at most `window` in flight, paced
by a token bucket (the run's --rate split across workers). A connect that fails is named by
the errno the kernel left on the socket, read back with a 1-byte read (which returns the
pending socket error), so no socket object is needed after connect(). A connect unanswered
after --connect-timeout is closed and counted as ETIMEDOUT: the kernel's own SYN retries
would take two minutes.

Per-connection state is flat arrays keyed by fd: a state byte, the connect start time, the
index of its source IP. Probes (echo latency) carry their send time, so no per-message state
is kept either.

TLS (`tls://`, `wss://`) adds a handshake state after the connect (engine/tls.py). An opening
exchange adds one state after that (OPENING, engine/opening.py): the WebSocket upgrade
(`ws://`, `wss://`; engine/ws_client.py) or `--first-message` / `--expect`. Either sends its
request once the connection is ready, and the connection counts as established when the
reply is judged good; what is kept for it (a key, a reply cut short, a request too long
for one write) lives only until then. Plain runs take neither branch: one `is None` test per
connect and per read.

Phases: ramp (until every share was attempted and nothing is in flight), then wait for the
supervisor's release time (all workers hold together for --hold), then close (RST by
default) and send the results (histograms, errors, per-source counts) up a pipe.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import signal
import socket
import struct
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import suppress

from hdrh.histogram import HdrHistogram

from tcpmax.engine import native
from tcpmax.engine.counters import Col, CounterTable
from tcpmax.engine.opening import Opening, OpeningFailure, ReplyClient
from tcpmax.engine.sockopts import IP_BIND_ADDRESS_NO_PORT, LINGER_RESET
from tcpmax.engine.tls import DONE as TLS_DONE
from tcpmax.engine.tls import TlsClient, TlsFailure
from tcpmax.engine.worker import FLUSH_EVERY, flush_counters, worker_prologue
from tcpmax.engine.ws_client import PROBE_MIN, WsClient, probe_sent_ns
from tcpmax.model.first_message import show_bytes
from tcpmax.model.flathist import SUB_BITS, SUB_MASK, flat_counts, record, to_hdr
from tcpmax.model.load import CloseMode, LoadConfig, PortStrategy, Share, TokenBucket
from tcpmax.model.worker_result import WorkerResult, encode_worker_result
from tcpmax.model.ws import FrameError, Opcode, peer_close_code

__all__ = ["CONTROL_RELEASE_MS", "CONTROL_STOP_OPENING", "new_histogram", "run_load_worker"]

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLERR, EPOLLHUP, EPOLLRDHUP = select.EPOLLERR, select.EPOLLHUP, select.EPOLLRDHUP
FREE, CONNECTING, ESTABLISHED, HANDSHAKING, OPENING = 0, 1, 2, 3, 4
TICK = 0.05
CONTROL_RELEASE_MS = 0     # column of the control row: when every worker may start closing
CONTROL_STOP_OPENING = 1   # column of the control row: non-zero = open no more (memory floor)
# A module switch so bench/bench_load.py can compare both ways in one run.
EAGER_OPENING = True
_ERR_COL = {getattr(errno, c.name[4:]): c for c in Col
            if c.name.startswith("ERR_") and c.name != "ERR_OTHER"}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, 3_600_000_000, 3)          # microseconds, up to an hour


def _attempts(shares: tuple[Share, ...], sources: list[str],
              ports: list[int] | None) -> Iterator[tuple[int, str, tuple[str, int], int]]:
    for share in shares:
        src_index = sources.index(share.source)
        addr = (share.endpoint.host, share.endpoint.port)
        if share.first_port is None or ports is None:
            for _ in range(share.count):
                yield src_index, share.source, addr, 0
        else:
            for i in range(share.first_port, share.first_port + share.count):
                yield src_index, share.source, addr, ports[i]


def run_load_worker(cfg: LoadConfig, strategy: PortStrategy, shares: tuple[Share, ...],
                    table: CounterTable, slot: int, control: int, workers: int,
                    ports: list[int] | None, result_w: int) -> None:
    row, wake_r, fd_limit, ep = worker_prologue(table, slot, sum(s.count for s in shares))
    state = bytearray(fd_limit)
    started = array("d", bytes(8 * fd_limit))
    source_of = array("I", bytes(4 * fd_limit))
    sources = list(dict.fromkeys(s.source for s in shares))
    established_by_source = array("q", bytes(8 * len(sources)))
    peak_by_source = array("q", bytes(8 * len(sources)))
    errors: dict[int, int] = {}
    # The connect latencies, one per connection: a flat array in the loop (model/flathist.py),
    # an HdrHistogram in the result.
    connect_counts = flat_counts()
    msg_hist = new_histogram()
    family = socket.AF_INET6 if shares and ":" in shares[0].endpoint.host else socket.AF_INET
    explicit = strategy is PortStrategy.EXPLICIT
    reset = cfg.close is CloseMode.RESET
    probing = cfg.message is None
    payload_pad = b"\0" * (cfg.message_size - 16)
    # TLS runs read, write and close through their SSL sockets; plain runs never pay for it.
    tls = TlsClient(cfg.tls, shares[0].endpoint.host) if cfg.tls is not None and shares \
        else None
    tls_hist = new_histogram()
    # WebSocket runs send an upgrade after connect (and TLS); plain runs keep ws None.
    ws = WsClient(cfg.ws, fd_limit) if cfg.ws is not None else None
    ws_pad = b"." * (cfg.message_size - PROBE_MIN)
    graceful_ws = ws is not None and not reset
    # The opening exchange: the upgrade, or --first-message / --expect; None for plain runs.
    opening: Opening | None = ws
    if cfg.first_message is not None or cfg.expect is not None:
        opening = ReplyClient(cfg.first_message, cfg.expect)
    opening_hist = new_histogram()
    count_opening = ws is None          # first messages and replies count as bytes; upgrades not
    unsent: dict[int, bytes] = {}       # fd -> the rest of a request one write did not take
    # Write the opening request right after connect(): on loopback the handshake has usually
    # completed inside connect() and the write goes through, saving the EPOLLOUT wake-up and
    # an epoll_ctl per connection (measured: docs/benchmarks.md). Elsewhere the write fails
    # with EAGAIN (still connecting) and the connection takes the usual path.
    eager = (EAGER_OPENING and opening is not None and tls is None
             and (ws is not None or cfg.first_message is not None))
    named_errors: dict[str, int] = {}     # failures after connect: TLS_*, WS_*, *_REPLY
    samples: dict[str, str] = {}          # failure name -> what the server sent, the first time

    todo = _attempts(shares, sources, ports)
    # Plain runs hand each batch of connects, and each poll's completed connects, to the C
    # module when it is built (engine/native.py): the same calls and the same arrays, without
    # the interpreter between them. The shares are then walked by index instead of `todo`.
    hosts = [*sources, *{s.endpoint.host for s in shares}]
    fast = native.fast if native.connect_path(tls is None and opening is None, family,
                                              hosts) == "c" else None
    epfd = ep.fileno()
    share_at = share_used = 0
    port_table = array("i", ports) if explicit and ports is not None else None
    base_flags = fast.OPEN_RESET if fast is not None and reset else 0
    exhausted = not shares
    now = time.monotonic()
    bucket = TokenBucket(cfg.rate / workers, max(1.0, cfg.rate / workers / 20), now)
    msg_bucket = TokenBucket(cfg.message_rate / workers,
                             max(1.0, cfg.message_rate / workers / 20), now)
    sending = cfg.message_rate > 0
    cursor = 0
    in_flight = attempted = connected = failed = n_open = peer_closed = 0
    awaiting = 0      # of in_flight: connected, in the opening exchange (not a connect)
    peak_open = 0
    bytes_in = bytes_out = sent = received = 0
    ramp_done = False
    stopping = False
    next_flush = next_timeout_scan = now
    timeout = cfg.connect_timeout
    read, close, poll = os.read, os.close, ep.poll
    recv: Callable[[int, int], bytes] = os.read
    write: Callable[[int, bytes], int] = os.write
    if tls is not None:
        recv, write, close = tls.read, tls.write, tls.close

    # The connect path's names as locals: each global or attribute lookup is paid per connect.
    new_socket, stream = _socket.socket, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    SOL_SOCKET, SO_LINGER, IPPROTO_IP = socket.SOL_SOCKET, socket.SO_LINGER, socket.IPPROTO_IP
    EINPROGRESS, monotonic = errno.EINPROGRESS, time.monotonic
    stop_opening_col, release_col = Col(CONTROL_STOP_OPENING), Col(CONTROL_RELEASE_MS)

    def fail(code: int) -> None:
        nonlocal failed
        failed += 1
        errors[code] = errors.get(code, 0) + 1
        row[_ERR_COL.get(code, Col.ERR_OTHER)] += 1

    def free(fd: int) -> None:
        """Close a connection and forget every trace of it (off the hot path)."""
        state[fd] = FREE
        close(fd)
        if opening is not None:
            opening.forget(fd)
            if unsent:
                unsent.pop(fd, None)

    def named_fail(fd: int, name: str, sample: bytes | None = None) -> None:
        nonlocal failed, in_flight, awaiting
        if state[fd] == OPENING:
            awaiting -= 1
        free(fd)
        in_flight -= 1
        failed += 1
        named_errors[name] = named_errors.get(name, 0) + 1
        row[Col.ERR_OTHER] += 1
        if sample is not None and name not in samples:
            samples[name] = show_bytes(sample)

    def opening_failed(fd: int, exc: OpeningFailure) -> None:
        named_fail(fd, exc.name, exc.sample)

    def established(fd: int, armed: bool = False) -> None:
        """`armed`: epoll already waits for EPOLLIN | EPOLLRDHUP (one syscall saved)."""
        nonlocal connected, n_open, peak_open
        state[fd] = ESTABLISHED
        if not armed:
            ep.modify(fd, EPOLLIN | EPOLLRDHUP)
        connected += 1
        n_open += 1
        i = source_of[fd]
        established_by_source[i] += 1
        if n_open > peak_open:
            peak_open = n_open
        if established_by_source[i] > peak_by_source[i]:
            peak_by_source[i] = established_by_source[i]

    def handshake(fd: int) -> None:
        """Advance a TLS handshake (only TLS runs come here)."""
        nonlocal in_flight
        assert tls is not None
        try:
            wanted = tls.advance(fd)
        except TlsFailure as exc:
            named_fail(fd, exc.name)
            return
        if wanted == TLS_DONE:
            now = time.monotonic()
            tls_hist.record_value(max(1, int((now - started[fd]) * 1e6)))
            if opening is not None:
                send_opening(fd, now)
            else:
                in_flight -= 1
                established(fd)
        else:
            ep.modify(fd, wanted)

    def send_opening(fd: int, now: float) -> None:
        """Start the opening exchange of a ready connection (only runs with one come here):
        send its request, then wait for the reply (or count it established if none is due)."""
        nonlocal awaiting
        assert opening is not None
        awaiting += 1
        state[fd] = OPENING
        started[fd] = now
        request = opening.request(fd)
        if request:
            write_opening(fd, request)
        else:                       # --expect alone: the server speaks first
            ep.modify(fd, EPOLLIN | EPOLLRDHUP)

    def eager_opening(fd: int) -> bool:
        """Try the opening request on a connection whose connect() just returned; False: not
        connected yet, wait for EPOLLOUT as usual (nothing kept for it)."""
        nonlocal awaiting, bytes_out, in_flight
        assert opening is not None
        request = opening.request(fd)
        try:
            n = write(fd, request)
        except BlockingIOError:
            opening.forget(fd)
            return False
        except OSError as exc:          # refused or reset at once: a failed connect
            opening.forget(fd)
            in_flight -= 1
            state[fd] = FREE
            close(fd)
            fail(exc.errno or 0)
            return True
        t = time.monotonic()
        record(connect_counts, int((t - started[fd]) * 1e6))
        awaiting += 1
        state[fd] = OPENING
        started[fd] = t
        if count_opening:
            bytes_out += n
        if n < len(request):
            unsent[fd] = request[n:]
            ep.register(fd, EPOLLOUT)
        elif opening.awaits_reply:
            ep.register(fd, EPOLLIN | EPOLLRDHUP)
        else:                           # --first-message alone: sent is established
            ep.register(fd, EPOLLIN | EPOLLRDHUP)
            in_flight -= 1
            awaiting -= 1
            established(fd, armed=True)
        return True

    def write_opening(fd: int, data: bytes) -> None:
        """Write the request, or what is left of it; a short write keeps the rest in `unsent`
        and waits for EPOLLOUT (a long --first-message or upgrade: the usual request fits an
        empty send buffer at once). The reply is read only once the request is whole: a
        server that closes meanwhile fails the write, one that stops reading times out."""
        nonlocal bytes_out, in_flight, awaiting
        assert opening is not None
        try:
            n = write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            opening_failed(fd, opening.closed(fd))
            return
        if count_opening:
            bytes_out += n
        if n < len(data):
            unsent[fd] = data[n:]
            ep.modify(fd, EPOLLOUT)
            return
        if unsent:
            unsent.pop(fd, None)
        if opening.awaits_reply:
            ep.modify(fd, EPOLLIN | EPOLLRDHUP)
        else:                       # --first-message alone: sent is established
            in_flight -= 1
            awaiting -= 1
            established(fd)

    def opening_answer(fd: int) -> None:
        nonlocal in_flight, awaiting, bytes_in
        assert opening is not None
        try:
            data = recv(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            opening_failed(fd, opening.closed(fd))
            return
        if count_opening:
            bytes_in += len(data)
        try:
            rest = opening.answer(fd, data)
        except OpeningFailure as exc:
            opening_failed(fd, exc)
            return
        if rest is None:
            return
        opening_hist.record_value(max(1, int((time.monotonic() - started[fd]) * 1e6)))
        in_flight -= 1
        awaiting -= 1
        established(fd, armed=True)
        if rest and ws is not None:
            on_frames(fd, rest)

    def lost(fd: int) -> None:
        """An established connection the server closed (or broke)."""
        nonlocal n_open, peer_closed
        free(fd)
        n_open -= 1
        peer_closed += 1
        established_by_source[source_of[fd]] -= 1

    def on_frames(fd: int, data: bytes) -> None:
        """Frames on an upgraded connection: pongs for pings, a close answered, probes timed."""
        nonlocal received
        assert ws is not None
        try:
            frames = ws.frames(fd, data)
        except FrameError:
            named_errors["WS_PROTOCOL_ERROR"] = named_errors.get("WS_PROTOCOL_ERROR", 0) + 1
            lost(fd)
            return
        t_now = 0
        for op, payload in ((f.opcode, f.payload) for f in frames):
            if op == Opcode.PING:
                with suppress(OSError):       # a dying connection: the read side sees it
                    write(fd, ws.pong(payload))
            elif op == Opcode.CLOSE:
                try:
                    code = peer_close_code(payload) or 1000
                except FrameError as exc:
                    code = exc.code
                with suppress(OSError):
                    write(fd, ws.close_frame(code))
                lost(fd)
                return
            elif op != Opcode.PONG and op != Opcode.CONTINUATION:
                received += 1
                if probing and len(payload) >= PROBE_MIN:
                    t_sent = probe_sent_ns(payload)
                    t_now = t_now or time.perf_counter_ns()
                    if 0 < t_sent <= t_now:
                        msg_hist.record_value(max(1, (t_now - t_sent) // 1000))

    while True:
        now = time.monotonic()
        # Start connects: window and rate permitting. Opening exchanges waiting for their
        # reply are in flight but not connects: they do not hold the window (the server's
        # answer takes a round trip and its CPU; counting them halved the ws ramp, measured).
        if not exhausted and not stopping and in_flight - awaiting < cfg.window:
            if table.get(control, stop_opening_col):
                exhausted = True      # the memory floor: hold what is open, open no more
                continue
            if fast is not None:
                k = bucket.take(cfg.window - in_flight + awaiting, now)
                while k > 0:
                    if share_at == len(shares):
                        exhausted = True
                        break
                    share = shares[share_at]
                    m = min(k, share.count - share_used)
                    by_port = port_table is not None and share.first_port is not None
                    opened_now, codes = fast.open_batch(
                        epfd, family, share.source, share.endpoint.host, share.endpoint.port,
                        m, port_table if by_port else None,
                        (share.first_port or 0) + share_used if by_port else 0,
                        base_flags | (fast.OPEN_EXPLICIT if by_port else 0),
                        state, started, source_of, sources.index(share.source), now)
                    attempted += m
                    in_flight += opened_now
                    for code in codes:
                        fail(code)
                    k -= m
                    share_used += m
                    if share_used == share.count:
                        share_at, share_used = share_at + 1, 0
                if share_at == len(shares):
                    exhausted = True
            else:
                for _ in range(bucket.take(cfg.window - in_flight + awaiting, now)):
                    try:
                        src_index, src, addr, port = next(todo)
                    except StopIteration:
                        exhausted = True
                        break
                    attempted += 1
                    try:
                        s = new_socket(family, stream)
                    except OSError as exc:
                        fail(exc.errno or 0)
                        continue
                    try:
                        if reset:
                            s.setsockopt(SOL_SOCKET, SO_LINGER, LINGER_RESET)
                        if explicit:
                            s.setsockopt(SOL_SOCKET, socket.SO_REUSEADDR, 1)
                            try:
                                s.bind((src, port))
                            except OSError as exc:
                                if exc.errno != errno.EADDRINUSE:
                                    raise
                                # Another program's connection holds this port on this source
                                # (the plan skips only listeners): let the kernel pick a free one,
                                # without SO_REUSEADDR: with it kept, connect() answered
                                # EADDRNOTAVAIL for 2 of 4 fallbacks in 1 of 12 runs (0 in 24 off).
                                s.setsockopt(SOL_SOCKET, socket.SO_REUSEADDR, 0)
                                s.setsockopt(IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                                s.bind((src, 0))
                        else:
                            s.setsockopt(IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                            s.bind((src, 0))
                        rc = s.connect_ex(addr)
                    except OSError as exc:
                        s.close()
                        fail(exc.errno or 0)
                        continue
                    if rc != EINPROGRESS and rc != 0:
                        s.close()
                        fail(rc)
                        continue
                    fd = s.detach()
                    state[fd] = CONNECTING
                    started[fd] = now
                    source_of[fd] = src_index
                    in_flight += 1
                    if eager and eager_opening(fd):
                        continue
                    ep.register(fd, EPOLLOUT)

        if fast is not None:
            done, events = fast.poll_connects(epfd, 1024, TICK, state, started, connect_counts,
                                              source_of, established_by_source,
                                              peak_by_source)
            if done:
                in_flight -= done
                connected += done
                n_open += done
                if n_open > peak_open:
                    peak_open = n_open
        else:
            events = poll(TICK, 1024)
        for fd, ev in events:
            st = state[fd]
            if st == CONNECTING:
                if ev & (EPOLLERR | EPOLLHUP):
                    in_flight -= 1
                    try:
                        read(fd, 1)
                        code = errno.ECONNRESET
                    except OSError as exc:
                        code = exc.errno or 0
                    state[fd] = FREE
                    close(fd)
                    fail(code)
                    continue
                t = monotonic()
                us = int((t - started[fd]) * 1e6)
                b = us.bit_length()      # model/flathist.py: the counter of `us`, inline
                connect_counts[us if b <= SUB_BITS else ((b - SUB_BITS) << SUB_BITS)
                               | ((us >> (b - SUB_BITS - 1)) & SUB_MASK)] += 1
                if tls is None:
                    if opening is None:
                        in_flight -= 1
                        established(fd)
                    else:            # in flight until the opening exchange is done
                        send_opening(fd, t)
                else:                # in flight until the TLS handshake is done
                    state[fd] = HANDSHAKING
                    started[fd] = t
                    tls.start(fd)
                    handshake(fd)
            elif st == HANDSHAKING:
                handshake(fd)
            elif st == OPENING:
                if unsent and fd in unsent:
                    write_opening(fd, unsent[fd])
                else:
                    opening_answer(fd)
            elif st == ESTABLISHED:
                try:
                    data = recv(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    lost(fd)
                    continue
                bytes_in += len(data)
                if ws is not None:
                    on_frames(fd, data)
                elif probing and len(data) >= 16:
                    # Replies may coalesce; each carries its send time in its first 8 bytes.
                    size = cfg.message_size
                    t_now = time.perf_counter_ns()
                    for off in range(0, len(data) - 15, size):
                        (t_sent,) = struct.unpack_from("q", data, off)
                        if 0 < t_sent <= t_now:
                            msg_hist.record_value(max(1, (t_now - t_sent) // 1000))
                            received += 1
            elif fd == wake_r:
                try:
                    sigs = read(wake_r, 64)
                except BlockingIOError:
                    sigs = b""
                if signal.SIGTERM in sigs:
                    stopping = True

        now = time.monotonic()
        if in_flight and now >= next_timeout_scan:
            cutoff = now - timeout
            fd = state.find(CONNECTING)
            while fd != -1:
                if started[fd] < cutoff:
                    state[fd] = FREE
                    close(fd)
                    in_flight -= 1
                    fail(errno.ETIMEDOUT)
                fd = state.find(CONNECTING, fd + 1)
            if tls is not None:
                fd = state.find(HANDSHAKING)
                while fd != -1:
                    if started[fd] < cutoff:
                        named_fail(fd, "TLS_HANDSHAKE_TIMEOUT")
                    fd = state.find(HANDSHAKING, fd + 1)
            if opening is not None:
                fd = state.find(OPENING)
                while fd != -1:
                    if started[fd] < cutoff:
                        opening_failed(fd, opening.timed_out(fd))
                    fd = state.find(OPENING, fd + 1)
            next_timeout_scan = now + 0.1
        if sending and n_open and not stopping:
            for _ in range(msg_bucket.take(n_open, now)):
                cursor = state.find(ESTABLISHED, cursor + 1)
                if cursor == -1:
                    cursor = state.find(ESTABLISHED)
                    if cursor == -1:
                        break
                if ws is not None:
                    msg = (ws.message(cfg.message) if cfg.message is not None else
                           ws.probe(time.perf_counter_ns(), ws_pad))
                else:
                    msg = (cfg.message if cfg.message is not None else
                           struct.pack("qq", time.perf_counter_ns(), sent) + payload_pad)
                try:
                    bytes_out += write(cursor, msg)
                    sent += 1
                except OSError:
                    pass          # a full buffer or a dying connection: the read side sees it
        if not ramp_done and exhausted and in_flight == 0:
            ramp_done = True
            row[Col.RAMP_DONE_MS] = int(now * 1000)
        release = table.get(control, release_col)
        finished = stopping or (ramp_done and release and now * 1000 >= release)
        if finished and in_flight:
            for pending in (CONNECTING, HANDSHAKING, OPENING):
                fd = state.find(pending)
                while fd != -1:
                    free(fd)
                    fd = state.find(pending, fd + 1)
            in_flight = awaiting = 0
        if now >= next_flush or finished:
            flush_counters(row, now, (
                (Col.OPEN, n_open), (Col.CONNECTED, connected), (Col.CONNECT_ERRORS, failed),
                (Col.ATTEMPTED, attempted), (Col.IN_FLIGHT, in_flight),
                (Col.BYTES_IN, bytes_in), (Col.BYTES_OUT, bytes_out), (Col.MSG_SENT, sent),
                (Col.MSG_RECV, received), (Col.PEER_CLOSED, peer_closed)))
            next_flush = now + FLUSH_EVERY
        if finished:
            break

    final_open = n_open
    fd = state.find(ESTABLISHED)
    while fd != -1:
        if ws is not None and graceful_ws:
            with suppress(OSError):        # a close frame (1000, normal) before the FIN
                write(fd, ws.close_frame())
        close(fd)          # SO_LINGER 0 was set before connect when --close reset
        fd = state.find(ESTABLISHED, fd + 1)
    row[Col.OPEN] = 0
    opened = opening is not None and opening_hist.get_total_count()
    result = WorkerResult(
        errors={**{errno.errorcode.get(k, str(k)): v for k, v in errors.items()},
                **named_errors},
        samples=samples,
        peak_open=peak_open,
        final_open=final_open,
        per_source=dict(zip(sources, peak_by_source, strict=True)),
        connect_hist=to_hdr(connect_counts, new_histogram()).encode(),
        msg_hist=msg_hist.encode() if received else None,
        tls_hist=tls_hist.encode() if tls is not None and tls_hist.get_total_count() else None,
        ws_hist=opening_hist.encode() if opened and ws is not None else None,
        reply_hist=opening_hist.encode() if opened and ws is None else None,
    )
    os.set_blocking(result_w, True)
    view = memoryview(encode_worker_result(result))
    while view:
        view = view[os.write(result_w, view):]
