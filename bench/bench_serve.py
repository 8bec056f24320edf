"""Benchmarks for `tcpmax serve`, each against baselines measured in the same run.

    python bench/bench_serve.py memory  --connections 100k   # user-space bytes per connection
    python bench/bench_serve.py accept  --connections 100k   # accept rate vs simplest epoll
    python bench/bench_serve.py echo    --connections 100k   # messages/s and p99 vs uvloop
    python bench/bench_serve.py hold    --connections 1M     # hold a million
    python bench/bench_serve.py ws-memory --connections 50k  # bytes per held WebSocket
    python bench/bench_serve.py ws-accept --connections 20k  # upgrade rate vs plain accept
    python bench/bench_serve.py ws-echo --connections 10k --workers 2  # vs `websockets`

Everything runs on loopback and stops by itself. Results are printed as JSON lines and a
summary; docs/benchmarks.md quotes them with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BaselineServer,
    memory_of,
    open_connections,
    sockstat_inuse,
    start_baseline,
)

from tcpmax.engine import serve_worker
from tcpmax.engine import server as server_mod
from tcpmax.engine.server import Server
from tcpmax.model.serve import Mode, ServeConfig
from tcpmax.model.units import parse_count


class Subject:
    """A server under test: tcpmax or a baseline, with its address and worker pids."""

    def __init__(self, kind: str, workers: int, connections: int, echo: bool = False) -> None:
        self.kind = kind
        self.tcpmax: Server | None = None
        self.baseline: BaselineServer | None = None
        if kind in ("tcpmax", "tcpmax-ws", "tcpmax-ws-late"):
            then = Mode.ECHO if echo else Mode.HOLD
            # Plain subjects pass no ws option, so this file also drives older trees (A/B).
            ws = ({"mode": Mode.WS, "ws_then": then} if kind.startswith("tcpmax-ws")
                  else {"mode": then})
            self.tcpmax = Server(ServeConfig(ports=(0,), max_connections=connections,
                                             workers=workers, **ws)).start()
            self.address = self.tcpmax.addresses[0]
        else:
            self.baseline = start_baseline(kind, workers, echo=echo)
            self.address = ("127.0.0.1", self.baseline.port)

    def pids(self) -> list[int]:
        if self.tcpmax is not None:
            return self.tcpmax.worker_pids()
        assert self.baseline is not None
        return self.baseline.pids

    def stop(self) -> None:
        if self.tcpmax is not None:
            self.tcpmax.stop()
        if self.baseline is not None:
            self.baseline.stop()


def accept_queue(port: int) -> int:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                         text=True).stdout.split()
    return int(out[1]) if len(out) > 1 else 0


def wait_until(pred: Callable[[], bool], timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while not pred():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)
    return time.perf_counter() - start


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def bench_memory(n: int, workers: int) -> None:
    for kind in ("tcpmax", "asyncio", "uvloop"):
        subject = Subject(kind, workers, n)
        try:
            time.sleep(0.5)
            before = memory_of(subject.pids())
            base_inuse = sockstat_inuse()
            client = open_connections(subject.address, n)
            wait_until(lambda b=base_inuse: sockstat_inuse() - b >= 2 * n - 50)
            time.sleep(1.0)                       # let lazy per-connection work finish
            after = memory_of(subject.pids())
            client.release()
            emit({"bench": "memory", "server": kind, "connections": n,
                  "established": client.established, "workers": workers,
                  "rss_per_conn": (after["rss"] - before["rss"]) / n,
                  "private_per_conn": (after["private"] - before["private"]) / n,
                  "pss_per_conn": (after["pss"] - before["pss"]) / n})
        finally:
            subject.stop()


def bench_ws_memory(n: int, workers: int, warmup: int) -> None:
    """User-space bytes per held connection: plain TCP, then upgraded WebSocket, same run.

    `warmup` connections are opened and closed first: the first handshakes in a forked
    worker touch the pages of h11 and the model (reference counts), which become private
    copies once per worker, not per connection; "warmup_bytes" reports that one-off cost.
    """
    for kind in ("tcpmax", "tcpmax-ws"):
        subject = Subject(kind, workers, n)
        try:
            time.sleep(0.5)
            start = memory_of(subject.pids())
            if warmup:
                warm = open_connections(subject.address, warmup,
                                        websocket=kind == "tcpmax-ws")
                warm.release()
                assert subject.tcpmax is not None
                wait_until(lambda s=subject.tcpmax: s.stats().open == 0)
                time.sleep(0.5)
            before = memory_of(subject.pids())
            base_inuse = sockstat_inuse()
            client = open_connections(subject.address, n, websocket=kind == "tcpmax-ws")
            wait_until(lambda b=base_inuse: sockstat_inuse() - b >= 2 * n - 50)
            time.sleep(1.0)
            after = memory_of(subject.pids())
            assert subject.tcpmax is not None
            stats = subject.tcpmax.stats()
            client.release()
            emit({"bench": "ws-memory", "server": kind, "connections": n,
                  "established": client.established, "failed": client.failed,
                  "upgraded": stats.ws_upgraded, "workers": workers, "warmup": warmup,
                  "warmup_bytes": before["rss"] - start["rss"],
                  "rss_per_conn": (after["rss"] - before["rss"]) / n,
                  "private_per_conn": (after["private"] - before["private"]) / n,
                  "pss_per_conn": (after["pss"] - before["pss"]) / n})
        finally:
            subject.stop()
        time.sleep(1.0)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` so far (/proc/PID/stat, clock ticks)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def bench_ws_accept(n: int, workers: int, rounds: int) -> None:
    """Connections/s to 'accepted' (plain) and to '101 received' (ws), alternating rounds."""
    # tcpmax-ws-late: the upgrade request read on the next epoll wake-up instead of right
    # after accept (serve_worker.EARLY_READ off in the forked workers), for the A/B.
    times: dict[str, list[float]] = {"tcpmax": [], "tcpmax-ws": [], "tcpmax-ws-late": []}
    for index in range(rounds):
        kinds = list(times)
        for kind in kinds[index % 3:] + kinds[:index % 3]:
            serve_worker.EARLY_READ = kind != "tcpmax-ws-late"
            server_mod.DEFER_WS = kind != "tcpmax-ws-late"
            subject = Subject(kind, workers, n)
            try:
                t0 = time.perf_counter()
                cpu0 = cpu_seconds(subject.pids())
                client = open_connections(subject.address, n,
                                          websocket=kind.startswith("tcpmax-ws"))
                port = subject.address[1]
                wait_until(lambda p=port: accept_queue(p) == 0)
                elapsed = time.perf_counter() - t0
                server_cpu = cpu_seconds(subject.pids()) - cpu0
                client_cpu = cpu_seconds(client.pids)
                client.release()
                times[kind].append(elapsed)
                emit({"bench": "ws-accept", "server": kind, "connections": n,
                      "established": client.established, "failed": client.failed,
                      "seconds": round(elapsed, 3), "rate": round(n / elapsed),
                      "server_cpu_us_per_conn": round(server_cpu / n * 1e6, 1),
                      "client_cpu_us_per_conn": round(client_cpu / n * 1e6, 1)})
            finally:
                subject.stop()
            time.sleep(1.0)
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"bench": "ws-accept", "summary": True,
          "median_rate": {k: round(n / v) for k, v in med.items()},
          "ws_vs_plain": round(med["tcpmax"] / med["tcpmax-ws"], 3),
          "ws_late_vs_plain": round(med["tcpmax"] / med["tcpmax-ws-late"], 3)})


def bench_accept(n: int, workers: int, rounds: int) -> None:
    times: dict[str, list[float]] = {"tcpmax": [], "simplest": []}
    for _ in range(rounds):
        for kind in times:
            subject = Subject(kind, workers, n)
            try:
                t0 = time.perf_counter()
                client = open_connections(subject.address, n)
                port = subject.address[1]
                wait_until(lambda p=port: accept_queue(p) == 0)
                elapsed = time.perf_counter() - t0
                client.release()
                times[kind].append(elapsed)
                emit({"bench": "accept", "server": kind, "connections": n,
                      "established": client.established, "failed": client.failed,
                      "seconds": round(elapsed, 3), "rate": round(n / elapsed)})
            finally:
                subject.stop()
            time.sleep(1.0)
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"bench": "accept", "summary": True,
          "median_rate": {k: round(n / v) for k, v in med.items()},
          "tcpmax_vs_simplest": round(med["simplest"] / med["tcpmax"], 3)})


def bench_echo(n: int, workers: int, seconds: float) -> None:
    for kind in ("tcpmax", "uvloop"):
        subject = Subject(kind, workers, n, echo=True)
        try:
            client = open_connections(subject.address, n, echo_seconds=seconds)
            client.start_echo()
            count, hist = client.echo_results()
            client.release()
            emit({"bench": "echo", "server": kind, "connections": n, "seconds": seconds,
                  "messages_per_s": round(count / seconds),
                  "p50_us": hist.get_value_at_percentile(50),
                  "p99_us": hist.get_value_at_percentile(99),
                  "p999_us": hist.get_value_at_percentile(99.9)})
        finally:
            subject.stop()


def bench_ws_echo(n: int, workers: int, seconds: float, rounds: int) -> None:
    """Messages/s over WebSocket: tcpmax serve --mode ws --ws-then echo against the
    `websockets` library's echo server, with as many processes (SO_REUSEPORT), alternating
    which goes first each round. One 16-byte probe in flight per connection."""
    kinds = ["tcpmax-ws", "websockets"]
    for index in range(rounds):
        for kind in kinds if index % 2 == 0 else kinds[::-1]:
            subject = Subject(kind, workers, n, echo=True)
            try:
                client = open_connections(subject.address, n, echo_seconds=seconds,
                                          websocket=True)
                cpu_before = cpu_seconds(subject.pids())
                client.start_echo()
                count, hist = client.echo_results()
                cpu = cpu_seconds(subject.pids()) - cpu_before
                client.release()
                emit({"bench": "ws-echo", "server": kind, "round": index, "connections": n,
                      "established": client.established, "failed": client.failed,
                      "workers": workers, "seconds": seconds,
                      "messages_per_s": round(count / seconds),
                      "server_cpu_us_per_message": round(cpu / max(1, count) * 1e6, 2),
                      "p50_us": hist.get_value_at_percentile(50),
                      "p99_us": hist.get_value_at_percentile(99)})
            finally:
                subject.stop()
            time.sleep(1.0)


def bench_hold(n: int) -> None:
    server = Server(ServeConfig(ports=(0,), max_connections=n)).start(timeout=60)
    try:
        t0 = time.perf_counter()
        client = open_connections(server.addresses[0], n)
        wait_until(lambda: server.stats().open >= client.established, timeout=600)
        ramp = time.perf_counter() - t0
        mem = memory_of(server.worker_pids())
        emit({"bench": "hold", "connections": n, "established": client.established,
              "failed": client.failed, "server_open": server.stats().open,
              "ramp_s": round(ramp, 1), "client_ready_s": round(client.ramp_seconds, 1),
              "server_workers": server.plan.workers, "client_processes": len(client.pids),
              "tcp_inuse": sockstat_inuse(), "server_rss_bytes": mem["rss"],
              "server_private_bytes": mem["private"]})
        time.sleep(2)
        client.release()
    finally:
        server.stop(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["memory", "accept", "echo", "hold", "ws-memory",
                                     "ws-accept", "ws-echo"])
    p.add_argument("--connections", default="100k", type=parse_count)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", default="2k", type=lambda t: 0 if t == "0" else parse_count(t),
                   help="ws-memory: connections opened and closed before measuring")
    a = p.parse_args()
    if a.which == "memory":
        bench_memory(a.connections, a.workers)
    elif a.which == "accept":
        bench_accept(a.connections, a.workers, a.rounds)
    elif a.which == "ws-memory":
        bench_ws_memory(a.connections, a.workers, a.warmup)
    elif a.which == "ws-accept":
        bench_ws_accept(a.connections, a.workers, a.rounds)
    elif a.which == "ws-echo":
        bench_ws_echo(a.connections, a.workers, a.seconds, a.rounds)
    elif a.which == "echo":
        bench_echo(a.connections, a.workers, a.seconds)
    else:
        bench_hold(a.connections)


if __name__ == "__main__":
    main()
