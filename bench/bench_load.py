"""Benchmarks for `tcpmax load`, each against a baseline measured in the same run.

    python bench/bench_load.py ramp     --connections 100k --rounds 3
        tcpmax load vs a minimal raw-epoll connect loop (bench/harness.py), same server
    python bench/bench_load.py strategy --connections 100k --sources 4
        kernel vs explicit source-port allocation with pairs past half their range
    python bench/bench_load.py million  --connections 1M
        `tcpmax serve` and `tcpmax load`, one command each, as a user runs them

Loopback only; every run is bounded and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import open_connections

from tcpmax.engine.loader import LoadRun
from tcpmax.engine.server import Server
from tcpmax.model.load import Endpoint, LoadConfig, PortStrategy, loopback_sources
from tcpmax.model.serve import ServeConfig
from tcpmax.model.units import parse_count


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def wait_server_empty(server: Server) -> None:
    deadline = time.monotonic() + 60
    while server.stats().open and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)


def bench_ramp(n: int, rounds: int) -> None:
    times: dict[str, list[float]] = {"tcpmax load": [], "raw epoll loop": []}
    with Server(ServeConfig(ports=(0,), max_connections=n + 10_000)) as server:
        address = server.addresses[0]
        for _ in range(rounds):
            t0 = time.perf_counter()
            client = open_connections(address, n)
            elapsed = time.perf_counter() - t0
            client.release()
            times["raw epoll loop"].append(elapsed)
            emit({"bench": "ramp", "client": "raw epoll loop", "connections": n,
                  "established": client.established, "seconds": round(elapsed, 3)})
            wait_server_empty(server)
            result = LoadRun(LoadConfig((Endpoint(*address),), n, hold=0)).run()
            times["tcpmax load"].append(result.ramp_seconds)
            emit({"bench": "ramp", "client": "tcpmax load", "connections": n,
                  "established": result.peak_established, "seconds": result.ramp_seconds,
                  "workers": result.workers, "sources": result.sources})
            wait_server_empty(server)
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"bench": "ramp", "summary": True,
          "median_rate": {k: round(n / v) for k, v in med.items()},
          "tcpmax_vs_raw": round(med["raw epoll loop"] / med["tcpmax load"], 3)})


def bench_strategy(n: int, sources: int, rounds: int) -> None:
    times: dict[str, list[float]] = {"kernel": [], "explicit": []}
    with Server(ServeConfig(ports=(0,), max_connections=n + 10_000)) as server:
        address = server.addresses[0]
        for _ in range(rounds):
            for strategy in times:
                cfg = LoadConfig((Endpoint(*address),), n, hold=0,
                                 sources=loopback_sources(sources)[-sources:],
                                 port_strategy=PortStrategy(strategy))
                result = LoadRun(cfg).run()
                times[strategy].append(result.ramp_seconds)
                emit({"bench": "strategy", "strategy": strategy, "connections": n,
                      "sources": sources, "per_pair": n // sources,
                      "established": result.peak_established,
                      "seconds": result.ramp_seconds,
                      "errors": {e["name"]: e["count"] for e in result.errors}})
                wait_server_empty(server)
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"bench": "strategy", "summary": True, "median_seconds": med,
          "kernel_over_explicit": round(med["kernel"] / med["explicit"], 2)})


def bench_million(n: int) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    serve = subprocess.Popen([sys.executable, "-m", "tcpmax", "serve", "--port", str(port),
                              "--max-connections", str(n), "--quiet", "--duration", "300s"],
                             stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        out = subprocess.run([sys.executable, "-m", "tcpmax", "load", f"127.0.0.1:{port}",
                              "-n", str(n), "--hold", "5s", "--json", "--quiet"],
                             capture_output=True, text=True, timeout=600)
        r = json.loads(out.stdout)
        r.pop("curve", None)
        r.pop("per_source", None)
        emit({"bench": "million", "exit_code": out.returncode, **r})
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["ramp", "strategy", "million"])
    p.add_argument("--connections", default="100k", type=parse_count)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sources", type=int, default=4)
    a = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if a.which == "ramp":
        bench_ramp(a.connections, a.rounds)
    elif a.which == "strategy":
        bench_strategy(a.connections, a.sources, a.rounds)
    else:
        bench_million(a.connections)


if __name__ == "__main__":
    main()
