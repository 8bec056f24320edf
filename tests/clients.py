"""Test clients that share no code with tcpmax: plain sockets, forked processes (only the
socket option values come from tcpmax.engine.sockopts, where they are spelled once).

They are the "independent client" of the acceptance tests. Each process opens its share of
connections from its own loopback source address (127.0.0.0/8 is all local), so one process
never needs more than its open-file limit nor one source IP more than its port range.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tcpmax.engine.sockopts import IP_BIND_ADDRESS_NO_PORT, LINGER_RESET


def connect_many(address: tuple[str, int], count: int, source: str) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((source, 0))
        s.connect(address)
        socks.append(s)
    return socks


@contextmanager
def held_connections(address: tuple[str, int], total: int, per_process: int = 15_000,
                     timeout: float = 120.0) -> Iterator[int]:
    """Hold `total` connections from forked processes; yields once all are connected.

    On exit every process resets its connections (SO_LINGER 0) and is reaped.
    """
    pids, ready_fds, release = [], [], []
    shares = [per_process] * (total // per_process) + ([total % per_process]
                                                       if total % per_process else [])
    try:
        for i, share in enumerate(shares):
            r, w = os.pipe()
            go_r, go_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(r)
                    os.close(go_w)
                    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                    socks = connect_many(address, share, f"127.0.{100 + i // 250}.{1 + i % 250}")
                    os.write(w, b"1")
                    os.read(go_r, 1)         # wait for the test to release us
                    for s in socks:
                        s.close()
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            os.close(go_r)
            pids.append(pid)
            ready_fds.append(r)
            release.append(go_w)
        deadline = time.monotonic() + timeout
        for r in ready_fds:
            os.set_blocking(r, True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("clients did not connect in time")
            if os.read(r, 1) != b"1":
                raise RuntimeError("a client process failed to connect its share")
        yield total
    finally:
        for w in release:
            os.close(w)
        for r in ready_fds:
            os.close(r)
        for pid in pids:
            with suppress(ChildProcessError):
                _, _status = os.waitpid(pid, 0)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
