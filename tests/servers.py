"""A plain Python server for tests, sharing no code with tcpmax: forked processes that accept
from one listener with select.epoll and keep (or echo on) what they accept."""

from __future__ import annotations

import ctypes
import os
import resource
import select
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


def _serve(listener: socket.socket, echo: bool) -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    while True:
        for fd, _ in ep.poll():
            if fd == listener.fileno():
                try:
                    while True:
                        c, _ = listener.accept()
                        c.setblocking(False)
                        conns[c.fileno()] = c
                        ep.register(c.fileno(), select.EPOLLIN)
                except BlockingIOError:
                    pass
                except OSError:
                    time.sleep(0.05)
                continue
            c = conns[fd]
            try:
                data = c.recv(65536)
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd]
                c.close()
            elif echo:
                with suppress(OSError):
                    c.send(data)


@contextmanager
def plain_server(processes: int = 6, echo: bool = False,
                 host: str = "127.0.0.1") -> Iterator[tuple[str, int]]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(4096)
    listener.setblocking(False)
    pids = []
    try:
        for _ in range(processes):
            pid = os.fork()
            if pid == 0:
                try:
                    _serve(listener, echo)
                finally:
                    os._exit(0)
            pids.append(pid)
        yield listener.getsockname()
    finally:
        listener.close()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


@contextmanager
def _peer(module: str, *args: str) -> Iterator[tuple[str, int]]:
    """A peer server `python -m module args` in a child process on 127.0.0.1: it prints its
    port, and exits when the block ends, because its stdin closes."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", module, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield "127.0.0.1", port
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@contextmanager
def tls_server(cert: str, key: str, echo: bool = False) -> Iterator[tuple[str, int]]:
    """A TLS server in a child process (tests/tls_peer.py) on 127.0.0.1."""
    with _peer("tests.tls_peer", cert, key, *(["--echo"] if echo else [])) as address:
        yield address


@contextmanager
def ws_server(*args: str) -> Iterator[tuple[tuple[str, int], dict[str, Any]]]:
    """A `websockets` server in a child process (tests/ws_peer.py) on 127.0.0.1, and what it
    saw (filled in when the block ends and the server has exited)."""
    import json
    import subprocess
    import sys

    seen: dict[str, Any] = {}
    proc = subprocess.Popen([sys.executable, "-m", "tests.ws_peer", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield ("127.0.0.1", port), seen
    finally:
        try:
            out, _ = proc.communicate(timeout=15)       # closes its stdin: it exits
            if out.strip():
                seen.update(json.loads(out.strip().splitlines()[-1]))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@contextmanager
def reply_server(*args: str) -> Iterator[tuple[str, int]]:
    """A server of tests/reply_peer.py (`http 200`, `banner TEXT`, `close`) on 127.0.0.1."""
    with _peer("tests.reply_peer", *args) as address:
        yield address
