"""Benchmark of the fleet lab (root): how long `tcpmax fleet up` + `fleet down` take for
3 clients + 3 servers + the balancer, and how many connections the fleet holds through the
balancer's VIP (every client host loading at once), with the balancer's conntrack count.
With --walls: C12's experiment at a chosen scale, round after round: one client host capped
by its port range, one server by --max-connections, then three capped clients through the
VIP (issue 10's target: >= 2.9x what one held).

    sudo python bench/bench_fleet.py --connections 20k --rounds 3
    sudo python bench/bench_fleet.py --walls --ports 10000 --rounds 3

Runs the commands as a user would (subprocesses of the installed `tcpmax`), in a private
state directory; every load is bounded (-n, --hold) and the fleet is removed at the end,
whatever happens. Prints one JSON document; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from tcpmax.lab import c12_fleet
from tcpmax.model.facts import PortRange
from tcpmax.model.units import parse_count

NAME = "bench"


def tcpmax(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpmax", *args], capture_output=True,
                          text=True, check=True, **kw)


def timed(*args: str) -> float:
    start = time.monotonic()
    tcpmax(*args)
    return time.monotonic() - start


def status(state: str) -> dict[str, Any]:
    fleets: list[dict[str, Any]] = json.loads(
        tcpmax("fleet", "status", "--name", NAME, "--state-dir", state, "--json").stdout
    )["fleets"]
    return fleets[0]


def hold_through_vip(state: str, clients: int, connections: int, hold: float,
                     ips: int) -> dict[str, Any]:
    up = ["fleet", "up", "--name", NAME, "--clients", str(clients), "--servers", "3",
          "--ips", str(ips),
          "--ttl", "10m", "--server-connections", str(connections * 5 // 12 + 1000),
          "--state-dir", state]  # a third each, and a margin for round robin
    tcpmax(*up)
    try:
        fleet = status(state)
        client_ns = [h["netns"] for h in fleet["hosts"] if h["role"] == "client"]
        share = [connections // clients + (i < connections % clients) for i in range(clients)]
        started = time.monotonic()
        loads = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tcpmax",
                                   "load", fleet["target"], "-n", str(n), "--hold",
                                   f"{hold:g}s", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for ns, n in zip(client_ns, share, strict=True)]
        best: dict[str, Any] = {}
        while any(p.poll() is None for p in loads):
            now = status(state)
            held = sum(h.get("open") or 0 for h in now["hosts"] if h["role"] == "server")
            if held > best.get("held", -1):
                best = {"held": held, "seconds": round(time.monotonic() - started, 2),
                        "per_server": [h.get("open") for h in now["hosts"]
                                       if h["role"] == "server"],
                        "conntrack": now["conntrack"]}
            time.sleep(0.5)
        results = [json.loads(p.communicate()[0]) for p in loads]
        best["client_peaks"] = [r["peak_established"] for r in results]
        best["client_ramp_seconds"] = [r["time_to_peak_seconds"] for r in results]
        best["errors"] = [e for r in results for e in r["errors"]]
        return best
    finally:
        tcpmax("fleet", "down", "--name", NAME, "--state-dir", state)


def walls(rounds: int, ports: int, state: str) -> dict[str, Any]:
    """C12's three phases with `ports` per client host; servers capped at 1.5x that."""
    from pathlib import Path

    out = []
    for _ in range(rounds):
        started = time.monotonic()
        f = c12_fleet.measure_fleet(Path(state), PortRange(40000, 40000 + ports - 1),
                                    server_cap=ports * 3 // 2, client_ask=ports * 3 // 2,
                                    server_ask=ports * 2)
        one, three = f["client_wall"]["servers_held"], f["fleet"]["held"]
        out.append({"seconds": round(time.monotonic() - started, 2),
                    "one_client_held": f["client_wall"]["held"],
                    "one_client_errors": f["client_wall"]["errors"],
                    "server_cap": f["server_wall"]["cap"],
                    "server_held": f["server_wall"]["held"],
                    "three_clients_held": three, "ratio": round(three / max(1, one), 3),
                    "per_server": f["fleet"]["per_server"],
                    "per_client": f["fleet"]["per_client"], "conntrack": f["conntrack"],
                    "host_sysctls_unchanged": f["host_sysctls_unchanged"]})
    return {"ports_per_client": ports, "rounds": out,
            "median_ratio": statistics.median(r["ratio"] for r in out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="20k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--ips", type=int, default=2,
                        help="source addresses per client host (keep each under ~14k "
                             "connections: the kernel's port search slows past half the range)")
    parser.add_argument("--walls", action="store_true",
                        help="run C12's walls experiment instead (see the module docstring)")
    parser.add_argument("--ports", type=int, default=1000,
                        help="--walls: each client host's port range size")
    args = parser.parse_args()
    if args.walls:
        with tempfile.TemporaryDirectory(prefix="tcpmax-bench-fleet-") as state:
            print(json.dumps(walls(args.rounds, args.ports, state), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="tcpmax-bench-fleet-") as state:
        ups, downs = [], []
        for _ in range(args.rounds):
            ups.append(timed("fleet", "up", "--name", NAME, "--clients", "3", "--servers",
                             "3", "--ttl", "5m", "--state-dir", state))
            downs.append(timed("fleet", "down", "--name", NAME, "--state-dir", state))
        vip = hold_through_vip(state, 3, parse_count(args.connections), args.hold,
                               args.ips)
        leftover = [line for line in subprocess.run(["ip", "netns", "list"],
                                                    capture_output=True, text=True).stdout
                    .splitlines() if line.startswith(f"tcpmax-fleet-{NAME}-")]
    print(json.dumps({
        "up_seconds": [round(x, 2) for x in ups], "down_seconds": [round(x, 2) for x in downs],
        "up_plus_down_median_seconds": round(statistics.median(
            u + d for u, d in zip(ups, downs, strict=True)), 2),
        "through_vip": vip, "requested": parse_count(args.connections),
        "namespaces_left": leftover}, indent=2))


if __name__ == "__main__":
    main()
