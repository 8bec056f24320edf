"""Benchmark of `tcpmax load --cluster` through the fleet lab (root): the cost of distribution
when the load machines are namespaces behind the nftables balancer (issue 10's distribution
overhead target, >= 0.9x, measured in the same run).

A fleet of 3 client hosts (K source addresses each), 3 servers and the balancer is built
(`tcpmax fleet up`); a Dask scheduler listens on the host namespace's fleet address and one
`dask worker --nworkers 1 --nthreads 1` runs inside each client namespace. Then, in
alternation (the order flips each round), N connections to the VIP come from:

- one `tcpmax load -n N` inside ONE client namespace (c0, its K source addresses): the
  single-machine baseline. Not from the host namespace, as the issue words it: the host
  namespace has one fleet address, so it could hold only about 14,000 connections toward
  the one VIP before the kernel's port search slows (half the port range per pair);
- `tcpmax load -n N --cluster tcp://HOST:PORT` from the host namespace: N/3 per client host.

Rate = peak / time to peak, as each run reports it (for the cluster, from the common start
barrier to the slowest machine's peak), so Dask's start-up is not counted. N must stay under
the kernel's nf_conntrack_max with a margin: every connection through the balancer takes
one conntrack entry (nf_conntrack_max is global and only read here), and the entries of a
reset run linger about 10 s, so each run waits for the servers and the balancer to drain.

    sudo python bench/bench_fleet_cluster.py --connections 210k --ips 16 --rounds 3

Before any load, the route from every sending namespace to the VIP, and between the
scheduler and the workers, is checked to use a fleet link (never the host's default
gateway). Every load is bounded (-n, --hold, a timeout), the fleet has a ttl, and the
scheduler, workers and fleet are removed at the end whatever happens. Prints one JSON
document; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tcpmax.lab.c12_fleet import check_route, default_gateways
from tcpmax.model.units import parse_count

NAME = "benchcl"
BIN = Path(sys.executable).parent
HALF_RANGE = (60999 - 32768 + 1) // 2   # a new namespace's default ip_local_port_range, halved
CONNTRACK_MARGIN = 0.05                 # of nf_conntrack_max, left for everything else


def tcpmax(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpmax", *args], capture_output=True,
                          text=True, check=True, timeout=120)


def read_int(path: str, netns: str | None = None) -> int:
    if netns is None:
        return int(Path(path).read_text())
    return int(subprocess.run(["ip", "netns", "exec", netns, "cat", path], capture_output=True,
                              text=True, check=True, timeout=10).stdout)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def fleet_status(state: str) -> dict[str, Any]:
    fleets: list[dict[str, Any]] = json.loads(
        tcpmax("fleet", "status", "--name", NAME, "--state-dir", state, "--json").stdout
    )["fleets"]
    return fleets[0]


def load(inside: str | None, target: str, n: int, hold: str, *extra: str) -> dict[str, Any]:
    prefix = ["ip", "netns", "exec", inside] if inside else []
    out = subprocess.run([*prefix, sys.executable, "-m", "tcpmax", "load", target, "-n", str(n),
                          "--hold", hold, "--json", "--quiet", *extra], capture_output=True,
                         text=True, timeout=600)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"load exited {out.returncode}: {out.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(out.stdout)
    if doc.get("cluster", {}).get("lost"):
        raise RuntimeError(f"machines lost: {out.stderr[-2000:]}")
    return doc


def drain(state: str, balancer: str, n: int, timeout: float = 180.0) -> dict[str, Any]:
    """Wait until no server holds a connection and the balancer's conntrack entries of the
    last run are gone (under 1% of N), so a run never starts against the last one's leftovers."""
    started = time.monotonic()
    while True:
        fleet = fleet_status(state)
        held = sum(h.get("open") or 0 for h in fleet["hosts"] if h["role"] == "server")
        tracked = read_int("/proc/sys/net/netfilter/nf_conntrack_count", balancer)
        if (held == 0 and tracked < n // 100) or time.monotonic() - started > timeout:
            return {"seconds": round(time.monotonic() - started, 1), "servers_open": held,
                    "conntrack": tracked}
        time.sleep(2)


class Sampler:
    """The balancer's nf_conntrack_count every 0.5 s, read by a shell loop inside its
    namespace (two tiny processes a sample, not a Python start-up on a busy 2-core host)."""

    def __init__(self, balancer: str, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", balancer, "sh", "-c",
             "while :; do echo $(date +%s.%N) $(cat /proc/sys/net/netfilter/nf_conntrack_count)"
             "; sleep 0.5; done"], stdout=open(path, "w"),  # noqa: SIM115
            start_new_session=True)

    def peak(self, since: float, until: float) -> int:
        best = 0
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and since <= float(parts[0]) <= until:
                best = max(best, int(parts[1]))
        return best


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    errors = {e["name"]: int(e["count"]) for e in doc.get("errors", [])}
    out = {"strategy": doc.get("strategy"), "peak": doc["peak_established"],
           "time_to_peak_s": doc["time_to_peak_seconds"],
           "ramp_rate": doc["ramp_rate"], "errors": errors,
           "p99_us": doc.get("connect_latency_us", {}).get("p99")}
    if "machines" in doc:
        out["per_machine"] = [{"share": m["share"], "held": m["final_established"],
                               "ramp_rate": m["ramp_rate"]} for m in doc["machines"]]
    return out


def stop(procs: list[subprocess.Popen[Any]]) -> None:
    """Stop what this bench started, by process group (each was started in its own session)."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", default="210k")
    ap.add_argument("--ips", type=int, default=16, help="source addresses per client host")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold", default="2s")
    ap.add_argument("--port-strategy", default="auto", choices=["auto", "kernel", "explicit"],
                    help="passed to both loads: explicit takes the kernel's port search, whose "
                         "cost grows with each (source, VIP) pair's share of the range, out of "
                         "the comparison (one host's 16 addresses against three hosts' 48)")
    args = ap.parse_args()
    n = parse_count(args.connections)
    if n / args.ips > HALF_RANGE:
        sys.exit(f"{n:,} from one client host over {args.ips} addresses is {n // args.ips:,} "
                 f"per (source, VIP) pair, past half the port range ({HALF_RANGE:,}): add --ips")
    ct_max = read_int("/proc/sys/net/netfilter/nf_conntrack_max")
    host_ct = read_int("/proc/sys/net/netfilter/nf_conntrack_count")
    if n + host_ct > ct_max * (1 - CONNTRACK_MARGIN):
        sys.exit(f"{n:,} connections through the balancer need {n:,} conntrack entries; "
                 f"nf_conntrack_max is {ct_max:,} ({host_ct:,} in use here): lower -n")

    state = tempfile.mkdtemp(prefix="tcpmax-bench-fleet-cluster-")
    logs = Path(state)
    procs: list[subprocess.Popen[Any]] = []
    finished = False
    try:
        tcpmax("fleet", "up", "--name", NAME, "--clients", "3", "--servers", "3",
               "--ips", str(args.ips), "--ttl", "30m",
               "--server-connections", str(n * 5 // 12 + 1000),  # a third each, and a margin
               "--state-dir", state)
        fleet = fleet_status(state)
        clients = [h for h in fleet["hosts"] if h["role"] == "client"]
        balancer = next(h["netns"] for h in fleet["hosts"] if h["role"] == "balancer")
        vip, host = fleet["vip"], fleet["host_address"].split("/")[0]
        forbidden = default_gateways()
        routes = [check_route(c["netns"], dst, {"eth0"}, forbidden)
                  for c in clients for dst in (vip, host)]
        routes += [check_route(None, c["addresses"][0], {fleet["bridges"][0]}, forbidden)
                   for c in clients]
        balancer_ct_before = read_int("/proc/sys/net/netfilter/nf_conntrack_count", balancer)

        sched = f"tcp://{host}:{free_port(host)}"
        procs.append(subprocess.Popen(
            [BIN / "dask", "scheduler", "--host", host, "--port", sched.rsplit(":", 1)[1],
             "--no-dashboard"], stdout=subprocess.DEVNULL,
            stderr=open(logs / "scheduler.log", "wb"), start_new_session=True))  # noqa: SIM115
        for i, c in enumerate(clients):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", c["netns"], BIN / "dask", "worker", sched,
                 "--nworkers", "1", "--nthreads", "1", "--no-nanny", "--no-dashboard"],
                stdout=subprocess.DEVNULL, stderr=open(logs / f"worker{i}.log", "wb"),  # noqa: SIM115
                start_new_session=True))
        deadline = time.monotonic() + 90
        while sum("Registered to" in (logs / f"worker{i}.log").read_text()
                  for i in range(len(clients))) < len(clients):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register")
            time.sleep(0.5)
        sampler = Sampler(balancer, logs / "conntrack.log")
        procs.append(sampler.proc)

        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = ["single", "cluster"] if r % 2 == 0 else ["cluster", "single"]
            row: dict[str, Any] = {"order": order}
            for kind in order:
                row[f"drain_before_{kind}"] = drain(state, balancer, n)
                started = time.time()
                strategy = ("--port-strategy", args.port_strategy)
                doc = (load(clients[0]["netns"], fleet["target"], n, args.hold, *strategy)
                       if kind == "single" else
                       load(None, fleet["target"], n, args.hold, *strategy, "--cluster", sched))
                row[kind] = summary(doc)
                row[kind]["balancer_conntrack_peak"] = sampler.peak(started, time.time())
                row[kind]["loadavg_after"] = round(os.getloadavg()[0], 1)
                print(f"round {r + 1} {kind}: {json.dumps(row[kind])}", file=sys.stderr,
                      flush=True)
            row["ratio"] = round(row["cluster"]["ramp_rate"] / row["single"]["ramp_rate"], 3)
            rounds.append(row)
        result = {"connections": n, "ips_per_client": args.ips,
                  "port_strategy": args.port_strategy, "clients": len(clients),
                  "vip": fleet["target"], "scheduler": sched, "routes": routes,
                  "nf_conntrack_max": ct_max, "host_conntrack_before": host_ct,
                  "balancer_conntrack_before": balancer_ct_before, "rounds": rounds,
                  "median_ratio": statistics.median(x["ratio"] for x in rounds)}
        finished = True
    finally:
        stop(procs)
        subprocess.run([sys.executable, "-m", "tcpmax", "fleet", "down", "--name", NAME,
                        "--state-dir", state], capture_output=True, timeout=120, check=False)
        if finished:
            shutil.rmtree(state, ignore_errors=True)
        else:  # the scheduler's and workers' logs say why
            print(f"logs kept in {state}", file=sys.stderr)
    result["namespaces_left"] = [
        line for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout.splitlines()
        if line.startswith(f"tcpmax-fleet-{NAME}-")]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
