"""C11: the side that closes first keeps TIME_WAIT and its port; a reset close keeps nothing."""

from __future__ import annotations

from typing import Any

from tcpmax.host.inspect import read_sysctl
from tcpmax.lab.c03_port_range import NARROW
from tcpmax.lab.common import Context, Outcome, Verdict, count_sockets, isolated
from tcpmax.lab.drive import drive, port_range
from tcpmax.model.load import CloseMode, PortStrategy

CLAIM = ("Closing first leaves the closer in TIME_WAIT holding its port; repeated client runs "
         "can exhaust ports; long-lived connections (reuse) avoid the churn.")
METHOD = ("From one source IP, open and close (FIN) as many connections as the port range "
          "holds, count TIME_WAIT, and run again at once; then the same with a reset close "
          "(SO_LINGER 0) from another source IP. As root in a namespace with the range "
          "narrowed to 1,000 ports, tcp_tw_reuse 0 (the default for non-loopback traffic) and "
          "tcp_rfc1337 1, so no stray RST ends a TIME_WAIT early.")


def _run(source: str, n: int, close: CloseMode) -> dict[str, Any]:
    d = drive(n, sources=(source,), close=close, strategy=PortStrategy.KERNEL)
    tw = count_sockets("time-wait", f"( src {source} )")
    return {"peak": d.result.peak_established, "time_wait": tw,
            "errors": d.result.error_counts}


def measure(n: int, repeat: bool) -> dict[str, Any]:
    low, high = port_range()
    reuse = int(read_sysctl("net.ipv4.tcp_tw_reuse"))
    out: dict[str, Any] = {"connections": n, "port_range": f"{low}-{high}",
                           "tcp_tw_reuse": reuse}
    out["graceful"] = _run("127.0.0.2", n, CloseMode.GRACEFUL)
    if repeat:
        out["graceful_again"] = _run("127.0.0.2", n, CloseMode.GRACEFUL)
    out["reset"] = _run("127.0.0.3", n, CloseMode.RESET)
    if repeat:
        out["reset_again"] = _run("127.0.0.3", n, CloseMode.RESET)
    return out


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    n = m["connections"]
    g, r = m["graceful"], m["reset"]
    left = g["time_wait"] >= 0.9 * n and r["time_wait"] == 0
    if "graceful_again" not in m:
        if left:
            return Verdict.CONFIRMED, (
                f"{g['time_wait']:,} of {n:,} gracefully closed connections sat in TIME_WAIT; "
                "a reset close left none (the port-exhaustion half needs root)")
        return Verdict.INCONCLUSIVE, f"TIME_WAIT after FIN {g['time_wait']:,}, after RST " \
                                     f"{r['time_wait']:,}"
    again, reset_again = m["graceful_again"], m["reset_again"]
    blocked = again["peak"] < 0.5 * n and again["errors"].get("EADDRNOTAVAIL", 0) > 0
    if left and blocked and reset_again["peak"] == n:
        return Verdict.CONFIRMED, (
            f"after {n:,} FIN closes, {g['time_wait']:,} ports sat in TIME_WAIT and the next run "
            f"got only {again['peak']:,} (EADDRNOTAVAIL x {again['errors']['EADDRNOTAVAIL']:,}); "
            f"after RST closes none did and the next run got all {n:,}")
    return Verdict.INCONCLUSIVE, f"graceful {g}, again {again}; reset {r}, again {reset_again}"


def run(ctx: Context) -> Outcome:
    m, isolation = isolated(
        ctx, lambda: measure(1_000, True), lambda: measure(2_000, False),
        # Loopback can reorder the server's last ACK and FIN across CPUs; the client's
        # duplicate ACK then draws an RST from the listener, and with tcp_rfc1337 0 that RST
        # kills the TIME_WAIT socket (RFC 1337 "assassination"): a few percent vanish.
        sysctls={"net.ipv4.ip_local_port_range": NARROW, "net.ipv4.tcp_tw_reuse": "0",
                 "net.ipv4.tcp_rfc1337": "1"},
        label="network namespace (1,000 ports, tcp_tw_reuse 0, tcp_rfc1337 1)")
    verdict, reason = judge(m)
    evidence = [f"port range {m['port_range']}, tcp_tw_reuse {m['tcp_tw_reuse']}"]
    for key, label in (("graceful", "FIN close"), ("graceful_again", "FIN close, run again"),
                       ("reset", "RST close"), ("reset_again", "RST close, run again")):
        if key in m:
            v = m[key]
            evidence.append(f"{label}: {v['peak']:,} established, {v['time_wait']:,} left in "
                            f"TIME_WAIT" + (f", errors {v['errors']}" if v["errors"] else ""))
    return Outcome("C11", CLAIM, METHOD, verdict, reason, isolation, 0.0, m, evidence)
