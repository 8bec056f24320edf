"""`tcpmax serve` as a library: what it holds, echoes and survives."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tcpmax.engine.counters import Col, CounterTable
from tcpmax.engine.serve_worker import run_worker
from tcpmax.engine.server import Server
from tcpmax.engine.sockopts import set_linger_reset
from tcpmax.host.inspect import read_sockstat
from tcpmax.model.serve import Mode, ServeConfig
from tests.clients import connect_many, held_connections
from tests.conftest import CAN_MAKE_NETNS, in_own_netns
from tests.kernel import tcp_sockets_on


def wait_for(predicate, timeout=20.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def server(**kw):
    kw.setdefault("ports", (0,))
    kw.setdefault("max_connections", 10_000)
    return Server(ServeConfig(**kw))


def test_holds_more_than_65535_connections_on_one_port():
    with server(max_connections=80_000) as srv, \
            held_connections(srv.addresses[0], 70_000) as n:
        assert wait_for(lambda: srv.stats().open == n)
        assert srv.addresses[0][1] != 0 and len(srv.addresses) == 1


def _stats_metrics_and_kernel(count_own) -> dict:
    with server(max_connections=40_000, metrics=("127.0.0.1", 0)) as srv, \
            held_connections(srv.addresses[0], 30_000) as n:
        assert wait_for(lambda: srv.stats().open == n)
        kernel = count_own(srv.addresses[0][1])    # before the HTTP requests add sockets
        host, port = srv.metrics_address
        base = f"http://{host}:{port}"
        stats = json.load(urllib.request.urlopen(base + "/stats", timeout=5))
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        return {"n": n, "open": stats["open"], "kernel": kernel,
                "gauge": f"tcpmax_serve_open_connections {float(n)}" in metrics}


def test_stats_metrics_and_the_kernel_agree_with_an_independent_client():
    if CAN_MAKE_NETNS:
        # Alone in a namespace, sockstat's `inuse` is this test's: both ends of every
        # connection, the listener and the metrics listener.
        m = in_own_netns(lambda: _stats_metrics_and_kernel(
            lambda _port: read_sockstat().tcp_inuse))
        extra = 2
    else:
        # On the host, only the sockets on this server's port are this test's.
        m = _stats_metrics_and_kernel(lambda port: tcp_sockets_on(port, "established"))
        extra = 0
    assert m["open"] == m["n"] == 30_000
    assert m["gauge"]
    assert m["kernel"] == 2 * m["n"] + extra


def test_a_worker_at_its_budget_leaves_the_rest_to_the_others(hot_path):
    with server(max_connections=100, workers=2) as srv:
        socks = connect_many(srv.addresses[0], 100, "127.0.0.1")
        try:
            assert wait_for(lambda: srv.stats().open == 100)
            assert [w.open for w in srv.stats().per_worker] == [50, 50]
        finally:
            for s in socks:
                s.close()


def _echo_round_trip(address, payload, results, index, slow):
    with socket.create_connection(address) as s:
        got = bytearray()

        def reader():
            while len(got) < len(payload):
                if slow:
                    time.sleep(0.001)                 # a slow reader: the server must wait
                chunk = s.recv(16384)
                if not chunk:
                    break
                got.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        t.join(60)
        results[index] = bytes(got)


def test_echo_returns_exactly_the_bytes_sent_with_many_clients_and_partial_writes():
    with server(mode=Mode.ECHO) as srv:
        # 20 quick clients, and 4 slow ones sending more than a socket buffer holds (4 MiB),
        # so some of the server's writes must be partial.
        payloads = [os.urandom(256 * 1024 + i) for i in range(20)]
        payloads += [os.urandom(8 * 1024 * 1024 + i) for i in range(4)]
        results: list[bytes | None] = [None] * len(payloads)
        threads = [threading.Thread(target=_echo_round_trip,
                                    args=(srv.addresses[0], p, results, i, i >= 20))
                   for i, p in enumerate(payloads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == payloads
        assert wait_for(lambda: srv.stats().backpressure > 0)   # partial writes really ran


def test_echo_stops_reading_from_a_client_that_does_not_read():
    with server(mode=Mode.ECHO) as srv:
        s = socket.create_connection(srv.addresses[0])
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                sent += s.send(b"x" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
        assert wait_for(lambda: srv.stats().backpressure > 0)
        time.sleep(0.3)
        st = srv.stats()
        # What the server read but could not write back is at most one read (64 KiB); the
        # rest waits in kernel buffers, so the client could not send without limit.
        assert 0 <= st.bytes_in - st.bytes_out <= 65536
        assert sent < 3 * 4 * 1024 * 1024 * 4
        set_linger_reset(s)
        s.close()


def test_push_sends_timestamped_lines_to_every_connection():
    with server(mode=Mode.PUSH, push_interval=0.1) as srv:
        socks = connect_many(srv.addresses[0], 20, "127.0.0.1")
        try:
            for s in socks:
                s.settimeout(5)
                line = s.recv(64).split(b"\n")[0]
                sent_ns = int(line)
                assert abs(time.time_ns() - sent_ns) < 5e9
            # Workers flush their counters periodically: the lines can arrive first.
            assert wait_for(lambda: srv.stats().pushed >= 20, timeout=5)
        finally:
            for s in socks:
                s.close()


def test_idle_connections_are_closed_after_the_idle_timeout():
    with server(idle_timeout=0.5) as srv:
        s = socket.create_connection(srv.addresses[0])
        s.settimeout(5)
        with pytest.raises(ConnectionResetError):   # closed by the server with RST
            s.recv(1)
        assert wait_for(lambda: srv.stats().idle_closed == 1, timeout=5)
        s.close()


def test_garbage_slow_readers_half_closes_and_resets_do_not_stop_it():
    with server(mode=Mode.ECHO) as srv:
        addr = srv.addresses[0]
        garbage = socket.create_connection(addr)
        garbage.sendall(os.urandom(100_000))
        slow = socket.create_connection(addr)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"y" * 200_000)                 # and never read
        half = socket.create_connection(addr)
        half.sendall(b"last words")
        half.shutdown(socket.SHUT_WR)
        reset = socket.create_connection(addr)
        set_linger_reset(reset)
        reset.sendall(b"bye")
        reset.close()
        half.settimeout(5)
        echoed = b""
        while chunk := half.recv(100):
            echoed += chunk
        assert echoed == b"last words"               # echoed, then closed after our FIN
        probe = socket.create_connection(addr, timeout=5)
        probe.sendall(b"still there?")
        assert probe.recv(100) == b"still there?"
        assert srv.stats().workers_alive == srv.plan.workers
        for s in (garbage, slow, half, probe):
            s.close()


def test_a_killed_worker_is_replaced_and_the_others_keep_their_connections():
    with server(max_connections=200, workers=2) as srv:
        socks = connect_many(srv.addresses[0], 200, "127.0.0.1")
        try:
            assert wait_for(lambda: srv.stats().open == 200)
            victim, survivor = srv.worker_pids()
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda: srv.worker_pids()[0] not in (0, victim)
                            and srv.stats().restarts == 1)
            stats = srv.stats()
            assert stats.per_worker[1].pid == survivor
            assert stats.per_worker[1].open == 100
            assert wait_for(lambda: srv.stats().workers_alive == 2)
        finally:
            for s in socks:
                s.close()


def test_no_worker_survives_a_killed_supervisor():
    srv = server(workers=3).start()
    workers = srv.worker_pids()
    assert all(alive(p) for p in workers)
    os.kill(srv.pid, signal.SIGKILL)
    os.waitpid(srv.pid, 0)
    srv.pid = 0
    assert wait_for(lambda: not any(alive(p) for p in workers), timeout=5)


def test_stop_resets_connections_and_reaps_every_worker():
    srv = server(workers=2).start()
    workers = srv.worker_pids()
    socks = connect_many(srv.addresses[0], 10, "127.0.0.1")
    assert wait_for(lambda: srv.stats().open == 10)
    srv.stop()
    assert not any(alive(p) for p in workers)
    for s in socks:
        s.settimeout(5)
        # An RST, not a FIN: a FIN would leave TIME_WAIT on the server's side for every
        # connection it held, and recv() would return b"" instead of raising.
        with pytest.raises(ConnectionResetError):
            s.recv(1)
        s.close()


def test_accept_emfile_is_counted_and_pauses_instead_of_spinning(hot_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    table = CounterTable(1)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
            run_worker(ServeConfig(ports=(0,)), [listener], table, 0, budget=10_000)
            code = 0
        finally:
            os._exit(code)
    socks = []
    try:
        socks = connect_many(listener.getsockname(), 200, "127.0.0.1")
        assert wait_for(lambda: table.get(0, Col.ACCEPT_EMFILE) > 0, timeout=10)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        start = cpu()
        time.sleep(1.0)
        assert cpu() - start < 0.5                   # paused, not spinning on EMFILE
        assert table.get(0, Col.ACCEPT_PAUSES) > 0
        assert 0 < table.get(0, Col.OPEN) < 64
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        for s in socks:
            s.close()
        listener.close()


def test_drain_waits_for_clients_to_close_before_stopping():
    srv = server(workers=1, drain=True, drain_timeout=10.0).start()
    sock = socket.create_connection(srv.addresses[0])
    assert wait_for(lambda: srv.stats().open == 1)
    os.kill(srv.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert alive(srv.worker_pids()[0])               # still serving the open connection
    sock.close()                                     # the client leaves: the worker can go
    _, status = os.waitpid(srv.pid, 0)
    srv.pid = 0
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
