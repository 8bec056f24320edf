"""C10: epoll instead of a thread per connection is what lets one machine hold C10K and beyond."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from typing import Any

from tcpmax.engine.loader import LoadProgress, LoadRun
from tcpmax.engine.server import Server
from tcpmax.engine.supervisor import fork_child
from tcpmax.host.process import process_memory, raise_nofile, thread_count
from tcpmax.lab.common import Context, Outcome, Verdict, listener
from tcpmax.lab.drive import drive
from tcpmax.model.load import Endpoint, LoadConfig

CLAIM = ("I/O multiplexing (epoll) instead of a thread per connection is what lets one machine "
         "hold C10K and beyond.")
METHOD = ("Hold 10,000 connections (tcpmax load) first against a thread-per-connection Python "
          "server (one blocking thread each), then against tcpmax serve (epoll); compare "
          "threads and the servers' private memory growth.")
N = 10_000


def _thread_server(lsock: socket.socket) -> None:
    raise_nofile()

    def handle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while conn.recv(4096):
                pass
        conn.close()

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def thread_per_connection() -> dict[str, Any]:
    lsock = listener()
    pid = fork_child(lambda: _thread_server(lsock))
    try:
        before = process_memory([pid]).private
        seen: dict[str, int] = {}

        def watch(p: LoadProgress) -> None:
            # The kernel completes handshakes before accept(): sample until the server has
            # caught up with a thread for every connection (or the hold ends).
            if p.established >= N and seen.get("threads", 0) <= N:
                seen["threads"] = thread_count(pid)
                seen["private"] = process_memory([pid]).private

        LoadRun(LoadConfig((Endpoint(*lsock.getsockname()),), N, hold=8.0)).run(
            on_progress=watch, progress_every=0.25)
        return {"threads": seen.get("threads", 0), "processes": 1,
                "bytes_per_connection": round((seen.get("private", 0) - before) / N, 1)}
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        lsock.close()


def epoll_server() -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ready(server: Server) -> None:
        seen["before"] = process_memory(server.worker_pids()).private

    def watch(p: LoadProgress, server: Server) -> None:
        if p.established >= N and "threads" not in seen:
            pids = server.worker_pids()
            seen["threads"] = sum(thread_count(pid) for pid in pids)
            seen["processes"] = len(pids)
            seen["private"] = process_memory(pids).private

    drive(N, hold=1.5, on_progress=watch, progress_every=0.25, on_ready=ready)
    return {"threads": seen.get("threads", 0), "processes": seen.get("processes", 0),
            "bytes_per_connection": round((seen.get("private", 0) - seen["before"]) / N, 1)}


def measure() -> dict[str, Any]:
    return {"connections": N, "threads_server": thread_per_connection(),
            "epoll_server": epoll_server()}


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    t, e = m["threads_server"], m["epoll_server"]
    if t["threads"] < m["connections"]:
        return Verdict.INCONCLUSIVE, (f"the thread server ran only {t['threads']:,} threads "
                                      f"for {m['connections']:,} connections")
    if e["threads"] < 100 and e["bytes_per_connection"] < t["bytes_per_connection"]:
        ratio = t["bytes_per_connection"] / max(1.0, e["bytes_per_connection"])
        return Verdict.CONFIRMED, (
            f"at {m['connections']:,} connections: {t['threads']:,} threads and "
            f"{t['bytes_per_connection']:,} B each for thread-per-connection, against "
            f"{e['threads']} threads and {e['bytes_per_connection']:,} B each with epoll "
            f"({ratio:,.0f}x less memory)")
    return Verdict.REFUTED, "the epoll server was not cheaper than the thread server"


def run(ctx: Context) -> Outcome:
    m = measure()
    verdict, reason = judge(m)
    t, e = m["threads_server"], m["epoll_server"]
    return Outcome("C10", CLAIM, METHOD, verdict, reason, "host loopback", 0.0, m, [
        f"thread per connection: {t['threads']:,} threads, {t['bytes_per_connection']:,} B "
        "private memory per connection",
        f"tcpmax serve (epoll): {e['processes']} processes, {e['threads']} threads, "
        f"{e['bytes_per_connection']:,} B per connection"])
