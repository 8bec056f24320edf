"""Measuring what one idle TCP socket costs this kernel, for `tcpmax doctor --measure`.

Opens `pairs` loopback connections (2 x pairs sockets) to a private listener on 127.0.0.1,
reads the kernel's meminfo before and after, closes everything with RST (SO_LINGER 0) so no
TIME_WAIT is left, and repeats for a few rounds.

Every socket is registered in an epoll instance, as a server holds it, so the epoll entry is
counted too (the figures with and without it: docs/benchmarks.md, section "The stretch:
toward 2,000,000").

The figure is the growth of "Slab" per socket. An idle established socket's kernel memory is
slab objects (the TCP sock, its inode, file, dentry and epoll entry); nothing is queued. Slab
growth proved steady over rounds, opening and closing alike, while MemAvailable swung widely
on a machine still returning memory from earlier work, so MemAvailable is reported beside it,
not used.

Invariant: every socket it opens is closed on every exit path, exceptions included.
"""

from __future__ import annotations

import select
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from tcpmax.engine.sockopts import set_linger_reset
from tcpmax.host.inspect import LIVE_PROC, read_meminfo
from tcpmax.host.process import raise_nofile, rss_bytes
from tcpmax.model.capacity import KernelMemoryMeasurement

__all__ = ["KernelMemoryMeasurement", "measure_kernel_bytes_per_socket"]

def _open_pairs(pairs: int) -> list[socket.socket]:
    held: list[socket.socket] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(min(pairs, 4096))
        address = listener.getsockname()
        # Connect in batches no larger than the backlog, then accept the batch: a blocking
        # connect to a full accept queue would wait for a SYN retry (about a second).
        batch = min(pairs, 1024)
        while len(held) < 2 * pairs:
            todo = min(batch, pairs - len(held) // 2)
            clients = []
            for _ in range(todo):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                set_linger_reset(c)
                held.append(c)
                c.connect(address)
                clients.append(c)
            for _ in clients:
                server_side, _peer = listener.accept()
                set_linger_reset(server_side)
                held.append(server_side)
        return held
    except BaseException:
        for s in held:
            s.close()
        raise
    finally:
        listener.close()


def measure_kernel_bytes_per_socket(
    pairs: int = 8000,
    rounds: int = 3,
    proc_root: Path = LIVE_PROC,
    settle: float = 0.3,
    on_round: Callable[[int, int], None] | None = None,
) -> KernelMemoryMeasurement:
    """Measure kernel bytes per idle established socket on this host (see module doc).

    `pairs` is lowered to what this process's open-file limit allows.
    """
    pairs = max(1, min(pairs, (raise_nofile() - 64) // 2))
    slab: list[int] = []
    available: list[int] = []
    for index in range(rounds):
        if on_round is not None:
            on_round(index, rounds)
        time.sleep(settle)
        before = read_meminfo(proc_root)
        rss_before = rss_bytes(["self"], proc_root)
        held = _open_pairs(pairs)
        ep = select.epoll()
        try:
            for sock in held:
                ep.register(sock.fileno(), select.EPOLLIN)
            time.sleep(settle)
            after = read_meminfo(proc_root)
            rss_after = rss_bytes(["self"], proc_root)
        finally:
            ep.close()
            for s in held:
                s.close()
        sockets = 2 * pairs
        slab.append((after.get("Slab", 0) - before.get("Slab", 0)) // sockets)
        drop = before["MemAvailable"] - after["MemAvailable"] - (rss_after - rss_before)
        available.append(drop // sockets)
    return KernelMemoryMeasurement(
        sockets=2 * pairs, rounds=rounds,
        bytes_per_socket=int(statistics.median(slab)),
        memavailable_bytes_per_socket=int(statistics.median(available)),
        samples=tuple(slab),
        method=f"{2 * pairs} loopback sockets in epoll x {rounds} rounds: Slab growth / "
               "sockets, median")
