"""Benchmark of `tcpmax load --cluster`: the cost of distribution on one machine.

One `tcpmax serve` takes, in alternation, N connections from one `tcpmax load -n N` and N
from `tcpmax load -n N --cluster` over S Dask workers on loopback (a scheduler and S
`dask worker --nworkers 1 --nthreads 1` started here), in the same run, `--rounds` times.
The ratio compares the ramp rates each reports (peak / time to peak from the barrier), so it
measures what splitting, starting at one barrier and merging cost, not Dask's start-up.

    python bench/bench_cluster.py --connections 300k --shards 3 --rounds 2

Every load is bounded (-n, --hold); the server, scheduler and workers are stopped at the end
whatever happens. Prints one JSON document; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tcpmax.model.units import parse_count

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(target: str, n: int, *extra: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "tcpmax", "load", target, "-n", str(n),
                          "--hold", "2s", "--json", "--quiet", *extra], capture_output=True,
                         text=True, timeout=600)
    if out.returncode not in (0, 1):
        raise RuntimeError(out.stderr)
    doc: dict[str, Any] = json.loads(out.stdout)
    if doc.get("cluster", {}).get("lost"):
        raise RuntimeError(f"machines lost: {out.stderr}")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", default="300k")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    n = parse_count(args.connections)
    procs: list[subprocess.Popen[bytes]] = []
    logs = Path(tempfile.mkdtemp(prefix="tcpmax-bench-cluster-"))
    try:
        port, sched = free_port(), free_port()
        address = f"tcp://127.0.0.1:{sched}"
        procs.append(subprocess.Popen([BIN / "tcpmax", "serve", "--port", str(port),
                                       "--max-connections", str(n + n // 10), "--duration",
                                       "30m", "--quiet"], stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1",
                                       "--port", str(sched), "--no-dashboard"],
                                      stderr=open(logs / "scheduler.log", "wb")))  # noqa: SIM115
        for i in range(args.shards):
            procs.append(subprocess.Popen(
                [BIN / "dask", "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--no-nanny", "--no-dashboard"],
                stderr=open(logs / f"worker{i}.log", "wb")))  # noqa: SIM115
        deadline = time.monotonic() + 90
        while sum("Registered to" in (logs / f"worker{i}.log").read_text()
                  for i in range(args.shards)) < args.shards:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register")
            time.sleep(0.5)
        target = f"127.0.0.1:{port}"
        rounds: list[dict[str, Any]] = []
        for _ in range(args.rounds):
            one = load(target, n)
            time.sleep(3)
            many = load(target, n, "--cluster", address)
            time.sleep(3)
            rounds.append({
                "single": {"peak": one["peak_established"], "ramp_rate": one["ramp_rate"],
                           "p99_us": one["connect_latency_us"].get("p99")},
                "cluster": {"peak": many["peak_established"], "ramp_rate": many["ramp_rate"],
                            "p99_us": many["connect_latency_us"].get("p99"),
                            "per_machine": [(m["share"], m["final_established"],
                                             m["ramp_rate"]) for m in many["machines"]]},
                "ratio": round(many["ramp_rate"] / one["ramp_rate"], 2)})
        print(json.dumps({"connections": n, "shards": args.shards, "rounds": rounds,
                          "median_ratio": statistics.median(r["ratio"] for r in rounds)},
                         indent=2))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
