"""CPU per connection, where tcpmax's Python pays it: single calls, and whole worker processes.

    python bench/bench_cpu.py calls
        the per-connection operations issue 11 looked at, each timed alone (user and system
        CPU from getrusage over many calls): an accept() on an empty queue against reading the
        queue's length from TCP_INFO, HdrHistogram.record_value against the flat inline index,
        socket.socket against the C type.

    python bench/bench_cpu.py worker --side load|serve --against SRC|python [--rounds 5]
        one tcpmax worker's user and kernel CPU per connection under `perf record` (10 kHz
        samples, the worker processes only: the parent's start-up and monitoring are left out),
        this tree against another source tree SRC (its src/), or against itself without the C
        module (`--against python`: TCPMAX_NATIVE=0, engine/native.py), alternating. load: one load
        worker opening N connections into refserve; serve: serve workers accepting N from
        refconnect (both built from ../shared/bench, as in bench_load.py).

Needs `perf` (linux-perf) for `worker`. Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SRC))

from bench_load import build_reference  # noqa: E402


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _per_call(label: str, n: int, u0: float, s0: float) -> None:
    u1, s1 = _cpu()
    emit({"bench": "calls", "call": label, "calls": n,
          "user_us": round((u1 - u0) / n * 1e6, 3), "sys_us": round((s1 - s0) / n * 1e6, 3)})


def bench_calls(n: int) -> None:
    from hdrh.histogram import HdrHistogram

    from tcpmax.model.flathist import SUB_BITS, SUB_MASK, flat_counts

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    accept = listener._accept  # type: ignore[attr-defined]
    u0, s0 = _cpu()
    for _ in range(n):
        try:  # noqa: SIM105 - the try is what the worker paid, kept as it was written there
            accept()
        except BlockingIOError:
            pass
    _per_call("accept() on an empty queue (EAGAIN)", n, u0, s0)
    queue_len = struct.Struct("=I").unpack_from
    getsockopt = listener.getsockopt
    u0, s0 = _cpu()
    for _ in range(n):
        queue_len(getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32), 24)
    _per_call("the accept queue's length from TCP_INFO", n, u0, s0)
    listener.close()

    values = [1000 + (i * 7919) % 2_000_000 for i in range(n)]
    hist = HdrHistogram(1, 3_600_000_000, 3)
    u0, s0 = _cpu()
    for v in values:
        hist.record_value(v)
    _per_call("HdrHistogram.record_value", n, u0, s0)
    counts = flat_counts()
    u0, s0 = _cpu()
    for v in values:
        b = v.bit_length()
        counts[v if b <= SUB_BITS else ((b - SUB_BITS) << SUB_BITS)
               | ((v >> (b - SUB_BITS - 1)) & SUB_MASK)] += 1
    _per_call("flat histogram, inline index", n, u0, s0)

    import _socket
    for label, new in (("socket.socket + detach + close", socket.socket),
                       ("_socket.socket + detach + close", _socket.socket)):
        u0, s0 = _cpu()
        for _ in range(n // 4):
            os.close(new(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK).detach())
        _per_call(label, n // 4, u0, s0)

    ep = select.epoll()
    socks = [socket.socket() for _ in range(1000)]
    fds = [s.fileno() for s in socks]
    rounds = max(1, n // 1000)
    u0, s0 = _cpu()
    for _ in range(rounds):
        for fd in fds:
            ep.register(fd, select.EPOLLOUT)
        for fd in fds:
            ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
        for fd in fds:
            ep.unregister(fd)
    _per_call("epoll register + modify + unregister", rounds * 1000, u0, s0)
    for s in socks:
        s.close()


def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def _worker_samples(data: Path) -> tuple[int, int]:
    """(user, kernel) samples of every process but the first (the parent) in a perf file."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--sort", "pid,dso", "-n",
                          "--stdio"], capture_output=True, text=True, check=True).stdout
    rows = [r for r in (line.split() for line in out.splitlines())
            if len(r) > 3 and r[0].endswith("%") and r[2].split(":")[0].isdigit()]
    pids = sorted({int(r[2].split(":")[0]) for r in rows})
    user = kernel = 0
    for r in rows:
        if int(r[2].split(":")[0]) == pids[0]:
            continue
        if "kernel" in " ".join(r[3:]):
            kernel += int(r[1])
        else:
            user += int(r[1])
    return user, kernel


def _perf(argv: list[str], src: Path, data: Path, hz: int,
          extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(src), **extra_env}
    return subprocess.Popen(["perf", "record", "-q", "-o", str(data), "-F", str(hz), "-e",
                             "cpu-clock", "--", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def bench_worker(side: str, against: str, n: int, rounds: int) -> None:
    refconnect, refserve = build_reference(Path("/tmp/tcpmax-bench-ref"))
    trees: dict[str, tuple[Path, dict[str, str]]] = {"this tree": (SRC, {})}
    if against == "python":
        trees["this tree, pure Python"] = (SRC, {"TCPMAX_NATIVE": "0"})
    else:
        trees[against] = (Path(against) / "src", {})
    hz = 10_000
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        for i in range(rounds):
            for label in (list(trees) if i % 2 == 0 else list(reversed(trees))):
                port = _free_port()
                if side == "load":
                    server = subprocess.Popen([str(refserve), str(port), "4", "19900"],
                                              start_new_session=True)
                    time.sleep(0.5)
                    try:
                        _perf([sys.executable, "-m", "tcpmax", "load", f"127.0.0.1:{port}",
                               "-n", str(n), "--workers", "1", "--hold", "0.3s", "--quiet"],
                              trees[label][0], data, hz, trees[label][1]).wait(300)
                    finally:
                        os.killpg(server.pid, signal.SIGKILL)
                        server.wait()
                else:
                    proc = _perf([sys.executable, "-m", "tcpmax", "serve", "--port", str(port),
                                  "--max-connections", str(n), "--workers", "6", "--quiet",
                                  "--duration", "12s"], trees[label][0], data, hz,
                                 trees[label][1])
                    time.sleep(3.0)
                    subprocess.run([str(refconnect), "127.0.0.1", str(port), str(n), "6", "1"],
                                   capture_output=True, check=True, timeout=120)
                    proc.wait(60)
                user, kernel = _worker_samples(data)
                per = (user / hz / n * 1e6, kernel / hz / n * 1e6)
                got[label].append(per)
                emit({"bench": "worker", "side": side, "tree": label, "connections": n,
                      "user_us_per_conn": round(per[0], 2),
                      "kernel_us_per_conn": round(per[1], 2)})
                time.sleep(1.0)
    emit({"bench": "worker", "side": side, "summary": True,
          "median_user_us": {k: round(statistics.median(u for u, _ in v), 2)
                             for k, v in got.items()},
          "median_kernel_us": {k: round(statistics.median(s for _, s in v), 2)
                               for k, v in got.items()}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["calls", "worker"])
    p.add_argument("--side", choices=["load", "serve"], default="load")
    p.add_argument("--against", help="worker: the other source tree, or `python` for this "
                   "tree without its C module")
    p.add_argument("--connections", type=int, default=0,
                   help="calls: 200,000; worker: 15,000 (load) or 100,000 (serve)")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    if a.which == "calls":
        bench_calls(a.connections or 200_000)
    else:
        if a.against is None:
            p.error("worker needs --against SRC")
        n = a.connections or (15_000 if a.side == "load" else 100_000)
        bench_worker(a.side, a.against, n, a.rounds)


if __name__ == "__main__":
    main()
