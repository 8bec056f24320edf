"""The optional C module (tcpmax._fast): each call against real loopback sockets, and the
switch that turns it off. The workers' behaviour on both paths is in test_load.py,
test_serve.py and test_sources.py (the `hot_path` fixture)."""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tcpmax.engine import native
from tcpmax.model.flathist import flat_counts, flat_index

fast = native.fast
pytestmark = pytest.mark.skipif(fast is None and os.environ.get("TCPMAX_NATIVE") == "0",
                                reason="TCPMAX_NATIVE=0: the C module is off by request")
FD_LIMIT = 4096


@contextmanager
def listener(backlog: int = 128) -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(backlog)
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


class Arrays:
    """A load worker's flat per-fd arrays, two sources."""

    def __init__(self) -> None:
        self.state = bytearray(FD_LIMIT)
        self.started = array("d", bytes(8 * FD_LIMIT))
        self.source_of = array("I", bytes(4 * FD_LIMIT))
        self.counts = flat_counts()
        self.by_source = array("q", bytes(16))
        self.peak = array("q", bytes(16))


def open_batch(ep: select.epoll, a: Arrays, dst: tuple[str, int], n: int, src: str = "127.0.0.1",
               ports: array[int] | None = None, src_index: int = 0,
               now: float | None = None) -> tuple[int, list[int]]:
    assert fast is not None
    flags = fast.OPEN_RESET | (fast.OPEN_EXPLICIT if ports is not None else 0)
    return fast.open_batch(ep.fileno(), socket.AF_INET, src, dst[0], dst[1], n, ports, 0,
                           flags, a.state, a.started, a.source_of, src_index,
                           time.monotonic() if now is None else now)


def poll(ep: select.epoll, a: Arrays, timeout: float = 0.5) -> tuple[int, list[tuple[int, int]]]:
    assert fast is not None
    return fast.poll_connects(ep.fileno(), 1024, timeout, a.state, a.started, a.counts,
                              a.source_of, a.by_source, a.peak)


def local_addr(fd: int) -> tuple[str, int]:
    with socket.socket(fileno=os.dup(fd)) as s:
        return s.getsockname()


def close_all(a: Arrays) -> None:
    for fd, st in enumerate(a.state):
        if st:
            os.close(fd)


def test_the_c_module_is_built_by_the_install():
    assert fast is not None


def test_open_batch_starts_each_connect_and_marks_it_in_the_workers_arrays():
    a, ep = Arrays(), select.epoll()
    with listener() as srv:
        opened, errors = open_batch(ep, a, srv.getsockname(), 20, src="127.0.0.5", src_index=1,
                                    now=123.5)
        try:
            assert (opened, errors) == (20, [])
            fds = [fd for fd, st in enumerate(a.state) if st == fast.CONNECTING]
            assert len(fds) == 20
            assert {a.started[fd] for fd in fds} == {123.5}
            assert {a.source_of[fd] for fd in fds} == {1}
            assert {local_addr(fd)[0] for fd in fds} == {"127.0.0.5"}
        finally:
            close_all(a)
            ep.close()


def test_open_batch_binds_the_given_ports_when_explicit():
    a, ep = Arrays(), select.epoll()
    with listener() as srv:
        probe = socket.socket()
        probe.bind(("127.0.0.6", 0))
        base = probe.getsockname()[1]
        probe.close()
        ports = array("i", [base, base + 1, base + 2])
        opened, errors = open_batch(ep, a, srv.getsockname(), 3, src="127.0.0.6", ports=ports)
        try:
            assert (opened, errors) == (3, [])
            bound = {local_addr(fd)[1] for fd, st in enumerate(a.state) if st}
            assert bound == set(ports)
        finally:
            close_all(a)
            ep.close()


def test_open_batch_names_the_errno_of_each_connect_that_cannot_start():
    a, ep = Arrays(), select.epoll()
    # 198.18.0.1 is on no interface here: bind() fails at once, nothing is sent.
    opened, errors = open_batch(ep, a, ("127.0.0.1", 9), 3, src="198.18.0.1")
    ep.close()
    assert (opened, errors) == (0, [errno.EADDRNOTAVAIL] * 3)
    assert not any(a.state)


def test_poll_connects_finishes_completed_connects_in_c():
    a, ep = Arrays(), select.epoll()
    with listener() as srv:
        open_batch(ep, a, srv.getsockname(), 30, src_index=1)
        done, others = 0, []
        deadline = time.monotonic() + 10
        while done < 30 and time.monotonic() < deadline:
            k, rest = poll(ep, a)
            done += k
            others += rest
        try:
            assert (done, others) == (30, [])
            assert sum(1 for st in a.state if st == fast.ESTABLISHED) == 30
            assert (a.by_source[1], a.peak[1], a.by_source[0]) == (30, 30, 0)
            assert sum(a.counts) == 30
        finally:
            close_all(a)
            ep.close()


def test_poll_connects_counts_latency_where_the_flat_histogram_does():
    a, ep = Arrays(), select.epoll()
    with listener() as srv:
        # Started "2.5 s ago": the counted latency lands in 2.5 s's bucket or just above.
        before = time.monotonic()
        open_batch(ep, a, srv.getsockname(), 1, now=before - 2.5)
        k, _ = poll(ep, a, timeout=5)
        after = time.monotonic()
        close_all(a)
        ep.close()
    assert k == 1
    (index,) = [i for i, n in enumerate(a.counts) if n]
    low = flat_index(2_500_000)
    high = flat_index(int((after - before + 2.5) * 1e6) + 1)
    assert low <= index <= high


def test_poll_connects_hands_every_other_event_back_as_epoll_pairs():
    a, ep = Arrays(), select.epoll()
    with listener() as srv:
        port = srv.getsockname()[1]
    # Nobody listens on `port` now: the connect is refused (an error event, left to Python).
    open_batch(ep, a, ("127.0.0.1", port), 1)
    (fd,) = [fd for fd, st in enumerate(a.state) if st]
    k, others = poll(ep, a, timeout=5)
    close_all(a)
    ep.close()
    assert k == 0
    assert [f for f, _ev in others] == [fd]
    assert others[0][1] & (select.EPOLLERR | select.EPOLLHUP)
    assert a.state[fd] == fast.CONNECTING          # untouched: the caller decides


@contextmanager
def queued(n: int) -> Iterator[tuple[socket.socket, select.epoll, bytearray, list[socket.socket]]]:
    """A listener with `n` connections waiting in its accept queue, an epoll, a `held` array
    and the clients; every fd accepted into `held` is closed afterwards."""
    ep = select.epoll()
    held = bytearray(FD_LIMIT)
    with listener() as srv:
        clients = [socket.create_connection(srv.getsockname()) for _ in range(n)]
        time.sleep(0.1)
        try:
            yield srv, ep, held, clients
        finally:
            for c in clients:
                c.close()
            for fd, h in enumerate(held):
                if h:
                    os.close(fd)
            ep.close()


def test_accept_batch_accepts_what_the_queue_holds_and_marks_each_fd():
    assert fast is not None
    with queued(10) as (srv, ep, held, clients):
        got = fast.accept_batch(srv.fileno(), ep.fileno(), 64, False, held, 7)
        again = fast.accept_batch(srv.fileno(), ep.fileno(), 64, False, held, 7)
        assert got == (10, 0, 0)
        assert again == (0, 0, 0)            # an empty queue: no accept() tried
        assert held.count(7) == 10
        clients[0].send(b"x")
        (fd, ev), = ep.poll(5)
        assert held[fd] == 7 and ev & select.EPOLLIN


def test_accept_batch_stops_at_max_n():
    assert fast is not None
    with queued(5) as (srv, ep, held, _clients):
        assert fast.accept_batch(srv.fileno(), ep.fileno(), 3, True, held, 1) == (3, 0, 0)
        fd = held.index(1)
        assert os.get_blocking(fd) is False


def test_a_wrong_array_type_is_a_type_error_not_a_corruption():
    a, ep = Arrays(), select.epoll()
    assert fast is not None
    with pytest.raises(TypeError, match="started"):
        fast.open_batch(ep.fileno(), socket.AF_INET, "127.0.0.1", "127.0.0.1", 9, 1, None, 0,
                        0, a.state, array("f", bytes(4 * FD_LIMIT)), a.source_of, 0, 0.0)
    ep.close()
    assert not any(a.state)


def test_tcpmax_native_0_turns_the_c_module_off():
    code = "from tcpmax.engine import native; print(native.fast is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TCPMAX_NATIVE": "0"}, check=True)
    assert out.stdout.strip() == "True"


def test_the_load_result_says_which_path_ran_the_connects(hot_path):
    from tcpmax.engine.loader import LoadRun
    from tcpmax.model.load import Endpoint, LoadConfig

    with listener(4096) as srv:
        result = LoadRun(LoadConfig((Endpoint(*srv.getsockname()),), 50, hold=0)).run()
    assert result.connect_path == hot_path
