"""C4: one local port serves connections to different endpoints; a client exceeds the range."""

from __future__ import annotations

import socket
from typing import Any

from tcpmax.engine.sockopts import set_linger_reset
from tcpmax.lab.c03_port_range import LABEL, NARROW
from tcpmax.lab.common import Context, Outcome, Verdict, isolated, listener
from tcpmax.lab.drive import drive, port_range
from tcpmax.model.load import PortStrategy

CLAIM = ("The same local port can be reused for connections to different remote endpoints; a "
         "client can therefore exceed the port count.")
METHOD = ("(a) Two sockets bound to the same local IP:port (SO_REUSEADDR) connect to two "
          "different endpoints at once. (b) From one source IP, more connections than the port "
          "range holds, spread over 3 destination ports.")
PORTS = 3


def same_port_two_endpoints() -> dict[str, Any]:
    l1, l2 = listener(), listener()
    socks = [l1, l2]
    try:
        first = socket.socket()
        socks.append(first)
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_linger_reset(first)
        first.bind(("127.0.0.2", 0))
        first.connect(l1.getsockname())
        second = socket.socket()
        socks.append(second)
        second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_linger_reset(second)
        second.bind(first.getsockname())
        second.connect(l2.getsockname())
        def name(address: tuple[str, int]) -> str:
            return f"{address[0]}:{address[1]}"

        return {"local": name(first.getsockname()),
                "endpoints": [name(l1.getsockname()), name(l2.getsockname())],
                "both": first.getsockname() == second.getsockname()}
    finally:
        for s in socks:
            s.close()


def measure(extra: int) -> dict[str, Any]:
    a = same_port_two_endpoints()
    low, high = port_range()
    usable = high - low + 1
    n = usable + extra
    d = drive(n, sources=("127.0.0.2",), ports=PORTS, strategy=PortStrategy.EXPLICIT)
    r = d.result
    return {"same_port": a, "usable_ports": usable, "port_range": f"{low}-{high}",
            "requested": n, "peak": r.peak_established, "endpoints": PORTS,
            "errors": r.error_counts}


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    a_ok = m["same_port"]["both"]
    if a_ok and m["peak"] > m["usable_ports"] and not m["errors"]:
        return Verdict.CONFIRMED, (
            f"local {m['same_port']['local']} was connected to two endpoints at once, and one "
            f"source IP held {m['peak']:,} connections over {m['endpoints']} ports: more than "
            f"its {m['usable_ports']:,}-port range")
    if not a_ok:
        return Verdict.REFUTED, "a local port could not serve two endpoints at once"
    return Verdict.INCONCLUSIVE, f"held {m['peak']:,} with errors {m['errors']}"


def run(ctx: Context) -> Outcome:
    m, isolation = isolated(ctx, lambda: measure(1_500), lambda: measure(10_000),
                            sysctls={"net.ipv4.ip_local_port_range": NARROW}, label=LABEL)
    verdict, reason = judge(m)
    return Outcome("C4", CLAIM, METHOD, verdict, reason, isolation, 0.0, m, [
        f"(a) {m['same_port']['local']} -> {' and '.join(m['same_port']['endpoints'])}: both "
        f"{'established' if m['same_port']['both'] else 'NOT established'}",
        f"(b) from 127.0.0.2 over {m['endpoints']} ports: {m['peak']:,} held, range "
        f"{m['port_range']} has {m['usable_ports']:,}"])
