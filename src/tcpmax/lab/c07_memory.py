"""C7: each connection costs memory, in the kernel and in the application."""

from __future__ import annotations

from typing import Any

from tcpmax.engine.loader import LoadProgress
from tcpmax.engine.memprobe import measure_kernel_bytes_per_socket
from tcpmax.engine.server import Server
from tcpmax.host.process import process_memory
from tcpmax.lab.common import Context, Outcome, Verdict
from tcpmax.lab.drive import drive

CLAIM = ("Each connection costs memory: 'several KB to tens of KB' in the kernel and "
         "application.")
METHOD = ("Kernel: open 8,000 idle loopback connection pairs, watch them with epoll as a server "
          "does, and divide the slab growth by the sockets (doctor --measure). Application: "
          "tcpmax serve's private memory before and while holding 20,000 connections.")
N = 20_000
LOW, HIGH = 1_000, 64 * 1024          # "several KB to tens of KB"


def measure() -> dict[str, Any]:
    kernel = measure_kernel_bytes_per_socket(pairs=8_000, rounds=3, settle=0.3)
    seen: dict[str, int] = {}

    def ready(server: Server) -> None:
        seen["before"] = process_memory(server.worker_pids()).private

    def watch(p: LoadProgress, server: Server) -> None:
        if p.established >= N and "held" not in seen:
            seen["held"] = process_memory(server.worker_pids()).private

    drive(N, hold=1.5, on_progress=watch, progress_every=0.25, on_ready=ready)
    user = (seen.get("held", 0) - seen.get("before", 0)) / N
    return {"kernel_bytes_per_socket": kernel.bytes_per_socket,
            "kernel_samples": list(kernel.samples),
            "kernel_bytes_per_loopback_connection": 2 * kernel.bytes_per_socket,
            "serve_user_bytes_per_connection": round(user, 1), "connections": N}


# Slab is one counter for the whole machine: another program opening or closing sockets
# during a round moves it by more than the probe's 16,000 sockets do. Rounds that disagree
# by more than this (around their median) measured the neighbours, not the claim.
SPREAD = 0.3


def _consistent(samples: list[int]) -> bool:
    if not samples:
        return True          # older measurements carry no rounds: judged on the median
    mid = sorted(samples)[len(samples) // 2]
    return mid > 0 and all(abs(s - mid) <= SPREAD * mid for s in samples)


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    k = m["kernel_bytes_per_socket"]
    samples = list(m.get("kernel_samples", []))
    if not _consistent(samples):
        return Verdict.INCONCLUSIVE, (
            f"the rounds disagree ({', '.join(f'{s:,}' for s in samples)} B per socket): "
            "the machine's slab moved with other programs' sockets during the measurement; "
            "run it again on a quieter machine")
    if LOW <= k <= HIGH:
        return Verdict.CONFIRMED, (
            f"the kernel spends {k:,} B per idle socket (several KB, as claimed); the "
            f"application part depends on its design: tcpmax serve adds "
            f"{m['serve_user_bytes_per_connection']:,} B (asyncio's, for comparison: "
            "docs/benchmarks.md, section \"User-space bytes per held connection\")")
    if k < LOW:
        return Verdict.REFUTED, f"only {k:,} B of kernel memory per socket"
    return Verdict.REFUTED, f"{k:,} B per socket: more than tens of KB"


def run(ctx: Context) -> Outcome:
    m = measure()
    verdict, reason = judge(m)
    return Outcome("C7", CLAIM, METHOD, verdict, reason, "host loopback", 0.0, m, [
        f"kernel: {m['kernel_bytes_per_socket']:,} B per idle socket (rounds: "
        f"{', '.join(f'{s:,}' for s in m['kernel_samples'])}); a loopback connection is two "
        f"sockets: {m['kernel_bytes_per_loopback_connection']:,} B",
        f"tcpmax serve, user space: {m['serve_user_bytes_per_connection']:,} B per held "
        f"connection at {m['connections']:,}"])
