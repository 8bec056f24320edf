"""Benchmarks for `tcpmax load`, each against a baseline measured in the same run.

    python bench/bench_load.py ramp     --connections 100k --rounds 3
        tcpmax load vs a minimal raw-epoll connect loop (bench/harness.py), same server
    python bench/bench_load.py ramp     --connections 20k --against /tmp/base/src
        ... and also tcpmax load from another source tree (a baseline commit, extracted
        with `git archive COMMIT src | tar -x -C /tmp/base`), rounds interleaved
    python bench/bench_load.py ramp     --connections 20k --first
        ... and also, into `serve --mode echo`, plain TCP vs --first-message/--expect (each
        connection counted once its echo came back), rounds interleaved
    python bench/bench_load.py ws       --connections 20k --rounds 3
        ws:// into `serve --mode ws` vs plain TCP into `serve --mode hold`, rounds interleaved
    python bench/bench_load.py strategy --connections 100k --sources 4
        kernel vs explicit source-port allocation with pairs past half their range
    python bench/bench_load.py million  --connections 1M
        `tcpmax serve` and `tcpmax load`, one command each, as a user runs them
    python bench/bench_load.py slab     --at 100k,500k,1M
        kernel memory per socket by slab cache (/proc/slabinfo) while N loopback
        connections (2N sockets) are held, tcpmax load into tcpmax serve
    python bench/bench_load.py pair     --connections 1M --rounds 1
        tcpmax load into tcpmax serve against refconnect into refserve (the C pair), one
        after the other, with the established count sampled twice a second for both
    python bench/bench_load.py ehash    --connections 1M --rounds 3 --buckets 262144,2097152
        the pair (--pairs) in a network namespace of its own per round, made with each
        size of established-connection hash (net.ipv4.tcp_child_ehash_entries, set in an
        outer namespace of this run, never on the host), sizes interleaved
    python bench/bench_load.py vs-c     --connections 100k --rounds 3 --server refserve
        tcpmax load vs ../shared/bench/refconnect.c (a C client, 8 processes) into the same
        server (refserve.c, or `--server tcpmax` for tcpmax serve), rounds interleaved;
        wall time and CPU (user, system) per connection of each client

Loopback only; every run is bounded and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import open_connections

from tcpmax.engine import load_worker, serve_worker
from tcpmax.engine import server as server_mod
from tcpmax.engine.loader import LoadRun
from tcpmax.engine.server import Server
from tcpmax.model.load import Endpoint, LoadConfig, PortStrategy, WsOptions, loopback_sources
from tcpmax.model.serve import Mode, ServeConfig
from tcpmax.model.units import parse_count


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def wait_server_empty(server: Server) -> None:
    deadline = time.monotonic() + 60
    while server.stats().open and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)


_RAMP_ELSEWHERE = """
import json, sys
from tcpmax.engine import load_worker, serve_worker
from tcpmax.engine import server as server_mod
from tcpmax.engine.loader import LoadRun
from tcpmax.model.load import Endpoint, LoadConfig
r = LoadRun(LoadConfig((Endpoint(sys.argv[1], int(sys.argv[2])),), int(sys.argv[3]), hold=0)).run()
print(json.dumps({"seconds": r.ramp_seconds, "established": r.peak_established}))
"""


def ramp_with_source(src: str, address: tuple[str, int], n: int) -> dict[str, float]:
    """One `tcpmax load` ramp (hold 0) run from the tcpmax package under `src`."""
    out = subprocess.run([sys.executable, "-c", _RAMP_ELSEWHERE, address[0], str(address[1]),
                          str(n)], capture_output=True, text=True, timeout=600, check=True,
                         env={**os.environ, "PYTHONPATH": src})
    result: dict[str, float] = json.loads(out.stdout)
    return result


FIRST = b"HELLO tcpmax\r\n"
FIRST_PAIR = ("plain into serve --mode echo", "--first-message/--expect into serve --mode echo")


def ramp_first(echo: Server, n: int, round_no: int,
               times: dict[str, list[float]]) -> None:
    """Plain TCP, then a first message whose echo is expected, into one echo server (the
    order swapped each round): what the opening exchange costs the ramp."""
    for label in FIRST_PAIR if round_no % 2 == 0 else reversed(FIRST_PAIR):
        opening = label.startswith("--first")
        result = LoadRun(LoadConfig((Endpoint(*echo.addresses[0]),), n, hold=0,
                                    first_message=FIRST if opening else None,
                                    expect=FIRST if opening else None)).run()
        times[label].append(result.ramp_seconds)
        emit({"bench": "ramp", "client": label, "connections": n,
              "established": result.peak_established, "seconds": result.ramp_seconds,
              "errors": result.error_counts, "reply_us": result.reply_latency_us})
        wait_server_empty(echo)


def bench_ramp(n: int, rounds: int, against: str | None = None, first: bool = False) -> None:
    times: dict[str, list[float]] = {"tcpmax load": [], "raw epoll loop": []}
    own_src = str(Path(__file__).resolve().parent.parent / "src")
    if against is not None:
        times["tcpmax load (this tree, subprocess)"] = []
        times["tcpmax load (--against)"] = []
    if first:
        times.update({label: [] for label in FIRST_PAIR})
    with Server(ServeConfig(ports=(0,), max_connections=n + 10_000)) as server, \
            (Server(ServeConfig(mode=Mode.ECHO, ports=(0,), max_connections=n + 10_000))
             if first else contextlib.nullcontext()) as echo:
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
            if against is not None:
                # Both trees through the same subprocess path, the order swapped each round.
                pair = [("tcpmax load (this tree, subprocess)", own_src),
                        ("tcpmax load (--against)", against)]
                for label, src in pair if _ % 2 == 0 else reversed(pair):
                    r = ramp_with_source(src, address, n)
                    times[label].append(r["seconds"])
                    emit({"bench": "ramp", "client": label, "src": src, "connections": n,
                          **r})
                    wait_server_empty(server)
            if echo is not None:
                ramp_first(echo, n, _, times)
    med = {k: statistics.median(v) for k, v in times.items()}
    summary: dict[str, object] = {
        "bench": "ramp", "summary": True,
        "median_rate": {k: round(n / v) for k, v in med.items()},
        "tcpmax_vs_raw": round(med["raw epoll loop"] / med["tcpmax load"], 3)}
    if against is not None:
        summary["this_tree_vs_against"] = round(med["tcpmax load (--against)"]
                                                / med["tcpmax load (this tree, subprocess)"], 3)
    if first:
        summary["first_vs_plain"] = round(med[FIRST_PAIR[0]] / med[FIRST_PAIR[1]], 3)
    emit(summary)


def children_cpu() -> float:
    """User + system seconds of every reaped child process so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench_ws(n: int, rounds: int) -> None:
    """WebSocket ramp (TCP connect + upgrade) vs plain TCP ramp, each into its own server.

    CPU is counted from the children's rusage: the load workers are reaped when the load
    returns, the server's workers when the server stops (its start and stop included)."""
    late = "ws:// into serve --mode ws, no early write or deferred accept"
    times: dict[str, list[float]] = {"plain into serve --mode hold": [],
                                     "ws:// into serve --mode ws": [], late: []}
    configs = {"plain into serve --mode hold": ServeConfig(ports=(0,),
                                                          max_connections=n + 10_000),
               "ws:// into serve --mode ws": ServeConfig(mode=Mode.WS, ports=(0,),
                                                         max_connections=n + 10_000)}
    configs[late] = configs["ws:// into serve --mode ws"]
    labels = list(times)
    for i in range(rounds):
        for label in labels[i % 3:] + labels[:i % 3]:
            # The switches are read by the forked workers (client and server) of this run.
            on = label != late
            load_worker.EAGER_OPENING = serve_worker.EARLY_READ = server_mod.DEFER_WS = on
            cpu0 = children_cpu()
            with Server(configs[label]) as server:
                host, port = server.addresses[0]
                ws = (WsOptions(host=f"{host}:{port}", path="/bench")
                      if label.startswith("ws") else None)
                cpu1 = children_cpu()
                result = LoadRun(LoadConfig((Endpoint(host, port),), n, hold=0, ws=ws)).run()
                cpu2 = children_cpu()
                times[label].append(result.ramp_seconds)
                emit({"bench": "ws", "client": label, "connections": n,
                      "established": result.peak_established, "seconds": result.ramp_seconds,
                      "errors": {e.name: e.count for e in result.errors},
                      "ws_upgrade_us": result.ws_handshake_latency_us,
                      "server_upgraded": server.stats().ws_upgraded,
                      "client_cpu_s": round(cpu2 - cpu1, 2)})
                wait_server_empty(server)
            emit({"bench": "ws", "client": label, "server_cpu_s":
                  round(children_cpu() - cpu2 + cpu1 - cpu0, 2)})
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"bench": "ws", "summary": True,
          "median_rate": {k: round(n / v) for k, v in med.items()},
          "ws_vs_plain": round(med["plain into serve --mode hold"]
                               / med["ws:// into serve --mode ws"], 3),
          "ws_late_vs_plain": round(med["plain into serve --mode hold"] / med[late], 3)})


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
                      "errors": result.error_counts})
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


def read_slabinfo() -> dict[str, tuple[int, int]]:
    """(active objects x object size, slab pages x page size) per cache, in bytes."""
    out: dict[str, tuple[int, int]] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
        f = line.split()
        name, active, size, pages_per_slab, slabs = f[0], int(f[1]), int(f[3]), int(f[5]), \
            int(f[14])
        out[name] = (active * size, slabs * pages_per_slab * page)
    return out


def bench_slab(steps: list[int]) -> None:
    """Slab growth by cache per socket while N connections are held (host-wide counters:
    run it on a quiet machine; other programs' sockets would be counted too)."""
    for n in steps:
        with Server(ServeConfig(ports=(0,), max_connections=n + 10_000)) as server:
            address = server.addresses[0]
            time.sleep(1.0)
            before = read_slabinfo()
            meminfo0 = Path("/proc/meminfo").read_text()
            seen: dict[str, dict[str, tuple[int, int]]] = {}

            def at_peak(_t: float, server: Server = server, n: int = n,
                        seen: dict[str, dict[str, tuple[int, int]]] = seen) -> float:
                deadline = time.monotonic() + 120
                while server.stats().open < n and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(1.0)
                seen["after"] = read_slabinfo()
                return time.monotonic()

            result = LoadRun(LoadConfig((Endpoint(*address),), n, hold=1)).run(
                release_at=at_peak)
            after = seen["after"]
            sockets = 2 * result.peak_established
            rows = []
            for name, (objs, pages) in after.items():
                objs0, pages0 = before.get(name, (0, 0))
                if pages - pages0 > sockets * 8:      # caches that grew > 8 B per socket
                    rows.append({"cache": name,
                                 "objects_bytes_per_socket": round((objs - objs0) / sockets, 1),
                                 "slab_bytes_per_socket": round((pages - pages0) / sockets, 1)})
            rows.sort(key=lambda r: -float(r["slab_bytes_per_socket"]))  # type: ignore[arg-type]
            total_pages = sum(p for _o, p in after.values()) - sum(p for _o, p in before.values())
            total_objs = sum(o for o, _p in after.values()) - sum(o for o, _p in before.values())
            emit({"bench": "slab", "connections": n, "established": result.peak_established,
                  "sockets": sockets, "server_workers": len(server.worker_pids()),
                  "load_workers": result.workers,
                  "slab_bytes_per_socket": round(total_pages / sockets, 1),
                  "objects_bytes_per_socket": round(total_objs / sockets, 1),
                  "meminfo_slab_before": next(line for line in meminfo0.splitlines()
                                              if line.startswith("Slab:")),
                  "caches": rows})
            wait_server_empty(server)


REF_DIR = Path(__file__).resolve().parents[2] / "shared" / "bench"


def build_reference(out: Path) -> tuple[Path, Path]:
    """Compile refconnect and refserve (../shared/bench) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for name in ("refconnect", "refserve"):
        binary = out / name
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(REF_DIR / f"{name}.c")],
                       check=True)
        built.append(binary)
    return built[0], built[1]


def run_group(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run `argv` in its own process group; on timeout kill the whole group (refconnect's
    children would otherwise go on retrying)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out)
    return out


def established_on(port: int) -> int:
    out = subprocess.run(["ss", "-Htn", f"sport = :{port}"], capture_output=True, text=True)
    return len(out.stdout.splitlines())


def wait_port_empty(port: int) -> None:
    deadline = time.monotonic() + 60
    while established_on(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)


def cpu_split() -> tuple[float, float]:
    """(user, system) seconds of this process and its reaped children so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + kids.ru_utime, own.ru_stime + kids.ru_stime


def bench_vs_c(n: int, rounds: int, server_kind: str, procs: int = 8) -> None:
    """tcpmax load against refconnect into one server, alternating which goes first."""
    refconnect, refserve = build_reference(Path("/tmp/tcpmax-bench-ref"))
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server: subprocess.Popen[bytes] | Server
    if server_kind == "refserve":
        # Each worker stops accepting at CAP, below the per-process open-file limit (read,
        # not assumed): a worker out of descriptors would leave the rest in the accept
        # queue, and refconnect retries a timed-out connect for ever.
        cap = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100
        workers = max(2, -(-(n + 1000) // cap) + 1)
        server = subprocess.Popen([str(refserve), str(port), str(workers), str(cap)],
                                  start_new_session=True)
        time.sleep(0.5)
    else:
        server = Server(ServeConfig(ports=(port,), max_connections=n + 10_000)).start()
    times: dict[str, list[float]] = {"refconnect": [], "tcpmax load": [],
                                     "tcpmax load --port-strategy explicit": []}
    per_conn: dict[str, list[tuple[float, float]]] = {k: [] for k in times}
    try:
        labels = list(times)
        for i in range(rounds):
            # Rotate the order each round: no client always runs right after another.
            for label in labels[i % len(labels):] + labels[:i % len(labels)]:
                u0, s0 = cpu_split()
                t0 = time.perf_counter()
                if label == "refconnect":
                    out = run_group([str(refconnect), "127.0.0.1", str(port), str(n),
                                     str(procs), "0"], timeout=600)
                    fields = dict(part.split("=") for part in out.split())
                    seconds, established = float(fields["seconds"]), int(fields["opened"])
                else:
                    strategy = (PortStrategy.EXPLICIT if label.endswith("explicit")
                                else PortStrategy.AUTO)
                    result = LoadRun(LoadConfig((Endpoint("127.0.0.1", port),), n, hold=0,
                                                port_strategy=strategy)).run()
                    seconds, established = result.ramp_seconds, result.peak_established
                wall = time.perf_counter() - t0
                u1, s1 = cpu_split()
                times[label].append(seconds)
                per_conn[label].append(((u1 - u0) / n * 1e6, (s1 - s0) / n * 1e6))
                emit({"bench": "vs-c", "server": server_kind, "client": label,
                      "connections": n, "established": established,
                      "seconds": round(seconds, 3), "wall_seconds": round(wall, 3),
                      "user_us_per_conn": round((u1 - u0) / n * 1e6, 2),
                      "sys_us_per_conn": round((s1 - s0) / n * 1e6, 2)})
                wait_port_empty(port)
    finally:
        if isinstance(server, Server):
            server.stop()
        else:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"bench": "vs-c", "summary": True, "server": server_kind,
          "median_rate": {k: round(n / v) for k, v in med.items()},
          "tcpmax_vs_refconnect": {k: round(med["refconnect"] / v, 3)
                                   for k, v in med.items() if k != "refconnect"},
          "median_user_us_per_conn": {k: round(statistics.median(u for u, _ in v), 2)
                                      for k, v in per_conn.items()},
          "median_sys_us_per_conn": {k: round(statistics.median(s for _, s in v), 2)
                                     for k, v in per_conn.items()}})


def sockets_in_use() -> int:
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("inuse") + 1])
    return 0


def pid1_cpu_seconds() -> float:
    """CPU time of pid 1 so far. On this VM pid 1 is its agent (process_api), which lists
    every process's open files: its CPU grows with the sockets held (docs/benchmarks.md)."""
    fields = Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent not idle so far."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Connections held (TCP sockets in use over the baseline, / 2: both ends here), sampled
    every `every` seconds in a thread until stopped; with each sample, pid 1's CPU and the
    machine's busy CPU so far (seconds), to tell what else took the cores."""

    def __init__(self, every: float = 0.5) -> None:
        import threading
        self.base = sockets_in_use()
        self.t0 = time.monotonic()
        self.curve: list[tuple[float, int]] = []
        self.cpu: list[tuple[float, float, float]] = []      # (t, pid 1's, the machine's)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            held = max(0, sockets_in_use() - self.base) // 2
            t = round(time.monotonic() - self.t0, 1)
            self.curve.append((t, held))
            self.cpu.append((t, pid1_cpu_seconds(), busy_cpu_seconds()))

    def cores_per_10s(self, until: float) -> dict[str, list[float]]:
        """Cores used by pid 1 and by the whole machine over each 10 s up to `until`."""
        out: dict[str, list[float]] = {"pid1": [], "machine": []}
        mark = self.cpu[0] if self.cpu else None
        for row in self.cpu:
            assert mark is not None
            if row[0] - mark[0] >= 10.0 or (row[0] >= until and row[0] > mark[0]):
                dt = row[0] - mark[0]
                out["pid1"].append(round((row[1] - mark[1]) / dt, 2))
                out["machine"].append(round((row[2] - mark[2]) / dt, 2))
                mark = row
            if row[0] >= until:
                break
        return out

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join()
        return self.curve


def per_second_rates(curve: list[tuple[float, int]], step: float = 10.0) -> list[int]:
    """Connections per second over each `step` seconds of the curve, until the peak."""
    if not curve:
        return []
    peak = max(held for _t, held in curve)
    rates, mark = [], (0.0, 0)
    for t, held in curve:
        if t - mark[0] >= step or held >= peak:
            rates.append(round((held - mark[1]) / max(1e-6, t - mark[0])))
            mark = (t, held)
            if held >= peak:
                break
    return rates


PAIRS = {"C pair": ("C", "C"), "tcpmax pair": ("tcpmax", "tcpmax"),
         # Both tcpmax sides without the C module (engine/native.py): what it buys.
         "tcpmax pair (pure Python)": ("tcpmax-py", "tcpmax-py"),
         "tcpmax load into refserve": ("tcpmax", "C"),
         "refconnect into tcpmax serve": ("C", "tcpmax")}


def bench_pair(n: int, rounds: int, strategy: str = "auto",
               pairs: tuple[str, ...] = ("C pair", "tcpmax pair")) -> None:
    """Pairs of (client, server), C or tcpmax, alternating the order each round; time to
    the peak and the rate over time of each. The mixed pairs tell which side of the tcpmax
    pair costs what at scale."""
    refconnect, refserve = build_reference(Path("/tmp/tcpmax-bench-ref"))
    cap = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100
    procs = -(-n // (cap - 1000)) + 1
    times: dict[str, list[float]] = {label: [] for label in pairs}
    for i in range(rounds):
        for label in (list(times) if i % 2 == 0 else list(reversed(times))):
            client_kind, server_kind = PAIRS[label]
            py_env = {**os.environ, "TCPMAX_NATIVE": "0"}
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
            if server_kind == "C":
                server = subprocess.Popen([str(refserve), str(port), str(procs), str(cap)],
                                          start_new_session=True)
            else:
                server = subprocess.Popen(
                    [sys.executable, "-m", "tcpmax", "serve", "--port", str(port),
                     "--max-connections", str(n), "--quiet", "--duration", "600s"],
                    stderr=subprocess.DEVNULL, start_new_session=True,
                    env=py_env if server_kind == "tcpmax-py" else None)
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                time.sleep(2.0)          # every worker listening, the probe's socket gone
                sampler = Sampler()
                u0, s0 = cpu_split()
                if client_kind == "C":
                    out = run_group([str(refconnect), "127.0.0.1", str(port), str(n),
                                     str(procs), "5"], timeout=900)
                    fields = dict(part.split("=") for part in out.split())
                    seconds, peak = float(fields["seconds"]), int(fields["opened"])
                    extra: dict[str, object] = {"processes": procs}
                else:
                    out = run_group([sys.executable, "-m", "tcpmax", "load",
                                     f"127.0.0.1:{port}", "-n", str(n), "--hold", "5s",
                                     "--port-strategy", strategy, "--json", "--quiet"],
                                    timeout=900,
                                    env=py_env if client_kind == "tcpmax-py" else None)
                    r = json.loads(out)
                    seconds, peak = r["time_to_peak_seconds"], r["peak_established"]
                    extra = {"workers": r["workers"], "sources": r["sources"],
                             "strategy": r["strategy"],
                             "connect_p50_us": r["connect_latency_us"]["p50"]}
                u1, s1 = cpu_split()
                curve = sampler.stop()
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(120)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()
            times[label].append(seconds)
            emit({"bench": "pair", "pair": label, "connections": n, "peak": peak,
                  "seconds_to_peak": round(seconds, 2), "rate": round(peak / seconds),
                  "client_user_us_per_conn": round((u1 - u0) / n * 1e6, 2),
                  "client_sys_us_per_conn": round((s1 - s0) / n * 1e6, 2),
                  "rate_per_10s": per_second_rates(curve),
                  "cores_per_10s": sampler.cores_per_10s(seconds), **extra})
            time.sleep(5.0)
    med = {k: statistics.median(v) for k, v in times.items()}
    emit({"bench": "pair", "summary": True,
          "median_rate": {k: round(n / v) for k, v in med.items()},
          "vs_c_pair": ({k: round(med["C pair"] / v, 3) for k, v in med.items()
                         if k != "C pair"} if "C pair" in med else {})})


def bench_ehash(n: int, rounds: int, buckets: list[int], pairs: tuple[str, ...]) -> None:
    """Does the size of the established-connection hash shape the ramp? Each round runs
    `pair` once per size in a fresh namespace whose ehash has that many buckets. The size
    is fixed when a namespace is made, from its parent's tcp_child_ehash_entries, so each
    run nests two anonymous namespaces (`unshare -n`): the outer one takes the sysctl, the
    inner one is made with it and runs the pair on its own loopback. Both vanish when the
    run ends, whatever happens."""
    times: dict[tuple[str, int], list[float]] = {}
    for i in range(rounds):
        for size in (buckets if i % 2 == 0 else list(reversed(buckets))):
            inner = (f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} "
                     f"pair --connections {n} --rounds 1 --pairs '{','.join(pairs)}'")
            outer = (f"sysctl -qw net.ipv4.tcp_child_ehash_entries={size} && "
                     f"exec unshare -n -- sh -c \"{inner}\"")
            out = subprocess.run(["unshare", "-n", "--", "sh", "-c", outer], check=True,
                                 capture_output=True, text=True, timeout=3600).stdout
            for line in out.splitlines():
                rec = json.loads(line)
                if rec.get("summary"):
                    continue
                times.setdefault((rec["pair"], size), []).append(rec["seconds_to_peak"])
                emit({**rec, "bench": "ehash", "ehash_buckets": size})
    emit({"bench": "ehash", "summary": True,
          "median_seconds": {f"{pair} @ {size}": statistics.median(v)
                             for (pair, size), v in times.items()}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["ramp", "strategy", "million", "ws", "vs-c", "slab",
                                     "pair", "ehash"])
    p.add_argument("--at", default="100k,500k", metavar="N,N,...",
                   help="slab: the connection counts to hold, one after another")
    p.add_argument("--port-strategy", choices=["auto", "kernel", "explicit"], default="auto",
                   help="pair: tcpmax load's --port-strategy")
    p.add_argument("--pairs", default="C pair,tcpmax pair", metavar="PAIR,PAIR,...",
                   help=f"pair: which (client, server) pairs to time, of {', '.join(PAIRS)}")
    p.add_argument("--buckets", default="262144,2097152", metavar="N,N,...",
                   help="ehash: the hash sizes (buckets, powers of two) to compare")
    p.add_argument("--server", choices=["refserve", "tcpmax"], default="refserve",
                   help="vs-c: the server both clients connect to")
    p.add_argument("--connections", default="100k", type=parse_count)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--against", default=None, metavar="SRC",
                   help="ramp: also time tcpmax load from this source tree (its src/)")
    p.add_argument("--first", action="store_true",
                   help="ramp: also time --first-message/--expect against plain TCP, both "
                        "into serve --mode echo")
    a = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if a.which == "ramp":
        bench_ramp(a.connections, a.rounds, a.against, a.first)
    elif a.which == "strategy":
        bench_strategy(a.connections, a.sources, a.rounds)
    elif a.which == "ws":
        bench_ws(a.connections, a.rounds)
    elif a.which == "pair":
        pairs = tuple(x.strip() for x in a.pairs.split(","))
        unknown = [x for x in pairs if x not in PAIRS]
        if unknown:
            p.error(f"--pairs: unknown {', '.join(unknown)}; known: {', '.join(PAIRS)}")
        bench_pair(a.connections, a.rounds, a.port_strategy, pairs)
    elif a.which == "ehash":
        pairs = tuple(x.strip() for x in a.pairs.split(","))
        bench_ehash(a.connections, a.rounds, [parse_count(t) for t in a.buckets.split(",")],
                    pairs)
    elif a.which == "slab":
        bench_slab([parse_count(t) for t in a.at.split(",")])
    elif a.which == "vs-c":
        bench_vs_c(a.connections, a.rounds, a.server)
    else:
        bench_million(a.connections)


if __name__ == "__main__":
    main()
