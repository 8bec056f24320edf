"""C9: under a burst, the listen backlog caps pending connections and overflows are counted."""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from tcpmax.engine.sockopts import set_linger_reset
from tcpmax.lab.common import Context, Outcome, Verdict, isolated, listener, netstat_counters

CLAIM = ("Kernel queues matter under bursts: the listen backlog (somaxconn, tcp_max_syn_backlog) "
         "caps pending connections; overflows are counted (ListenOverflows/ListenDrops).")
METHOD = ("Bursts of non-blocking connects against a listener that never accepts, with backlog "
          "8 and with backlog 4096; count connections established within 0.5 s and the "
          "kernel's ListenOverflows and ListenDrops.")
SMALL, LARGE = 8, 4096
BURSTS = (16, 64, 256, 1024)


def burst(backlog: int, size: int, wait: float = 0.5) -> dict[str, int]:
    lsock = listener(backlog=backlog)
    address = lsock.getsockname()
    before = netstat_counters("ListenOverflows", "ListenDrops")
    ep = select.epoll()
    socks = {}
    try:
        for _ in range(size):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            set_linger_reset(s)
            s.connect_ex(address)
            socks[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLOUT)
        established = 0
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and established < size:
            for fd, ev in ep.poll(max(0.0, deadline - time.monotonic())):
                ep.unregister(fd)
                if not ev & (select.EPOLLERR | select.EPOLLHUP):
                    established += 1
        after = netstat_counters("ListenOverflows", "ListenDrops")
        return {"backlog": backlog, "burst": size, "established": established,
                "overflows": after["ListenOverflows"] - before["ListenOverflows"],
                "drops": after["ListenDrops"] - before["ListenDrops"]}
    finally:
        ep.close()
        for s in socks.values():
            s.close()
        lsock.close()


def measure() -> dict[str, Any]:
    runs = [burst(b, n) for b in (SMALL, LARGE) for n in BURSTS]
    return {"runs": runs}


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    big = max(BURSTS)
    small = next(r for r in m["runs"] if r["backlog"] == SMALL and r["burst"] == big)
    large = next(r for r in m["runs"] if r["backlog"] == LARGE and r["burst"] == big)
    if (small["overflows"] > 0 and small["established"] < big
            and large["established"] == big and large["overflows"] == 0):
        return Verdict.CONFIRMED, (
            f"a burst of {big:,}: backlog {SMALL} let {small['established']} through within "
            f"0.5 s and the kernel counted {small['overflows']:,} ListenOverflows; backlog "
            f"{LARGE} absorbed all {big:,} with none")
    if small["established"] == big:
        return Verdict.REFUTED, f"a backlog of {SMALL} absorbed a burst of {big:,}"
    return Verdict.INCONCLUSIVE, f"small backlog: {small}; large backlog: {large}"


def run(ctx: Context) -> Outcome:
    m, isolation = isolated(ctx, measure, host_label="host loopback (counters are host-wide)")
    verdict, reason = judge(m)
    return Outcome("C9", CLAIM, METHOD, verdict, reason, isolation, 0.0, m, [
        f"backlog {r['backlog']:>4}, burst {r['burst']:>4}: {r['established']:>4} established, "
        f"{r['overflows']} overflows, {r['drops']} drops" for r in m["runs"]],
        {"backlog": m["runs"]})
