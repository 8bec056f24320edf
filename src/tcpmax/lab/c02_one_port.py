"""C2: one listening port holds far more than 65,535 connections."""

from __future__ import annotations

from typing import Any

from tcpmax.engine.loader import LoadProgress
from tcpmax.engine.server import Server
from tcpmax.host.inspect import read_meminfo, read_sockstat
from tcpmax.host.process import process_memory
from tcpmax.lab.common import Context, Outcome, Verdict, count_sockets, isolated
from tcpmax.lab.drive import drive

CLAIM = "A server listening on ONE port can hold far more than 65,535 concurrent connections."
METHOD = ("tcpmax serve on one port; tcpmax load opens N connections (100,000 by default, "
          "--scale for 1,000,000) from loopback source IPs and holds them; the established "
          "sockets on that port are counted by the kernel (sock_diag via ss, and "
          "its sockstat counters), not by tcpmax.")


def measure(n: int) -> dict[str, Any]:
    slab0 = read_meminfo().get("Slab", 0)
    inuse0 = read_sockstat().tcp_inuse
    seen: dict[str, Any] = {"memory": []}

    def watch(p: LoadProgress, server: Server) -> None:
        slab = read_meminfo().get("Slab", 0) - slab0
        seen["memory"].append((p.established, slab))
        if p.established >= n and "ss" not in seen:
            port = server.addresses[0][1]
            seen["sockstat"] = read_sockstat().tcp_inuse - inuse0     # instant: first
            seen["server_private"] = process_memory(server.worker_pids()).private
            seen["ss"] = count_sockets("established", f"( sport = :{port} )")

    # Dumping a million sockets through sock_diag takes seconds: hold long enough for it.
    d = drive(n, hold=2.0 + 1.5 * n / 100_000, on_progress=watch, progress_every=0.5)
    r = d.result
    return {"requested": n, "port": d.address[1], "tool_peak": r.peak_established,
            "ss_established_on_port": seen.get("ss", 0),
            "sockstat_tcp_inuse_delta": seen.get("sockstat", 0),
            "ramp_seconds": r.ramp_seconds, "workers": r.workers, "sources": r.sources,
            "errors": r.error_counts,
            "server_private_bytes": seen.get("server_private", 0),
            "client_private_bytes": r.client_private_bytes,
            "kernel_slab_bytes": r.kernel_memory_delta_bytes,
            "curve": r.curve, "memory_curve": seen["memory"]}


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    held = m["ss_established_on_port"]
    if held > 65_535 and held >= m["requested"]:
        return Verdict.CONFIRMED, (f"the kernel counted {held:,} established connections on "
                                   f"port {m['port']} at once: {held / 65_535:.1f}x 65,535")
    if held > 65_535:
        return Verdict.CONFIRMED, (f"{held:,} established on one port (short of the "
                                   f"{m['requested']:,} asked, but past 65,535)")
    if m["errors"]:
        return Verdict.INCONCLUSIVE, (f"only {held:,} established; failures: {m['errors']} "
                                      "(a host limit, not the port)")
    return Verdict.REFUTED, f"the port stopped at {held:,} connections with no other error"


def run(ctx: Context) -> Outcome:
    n = ctx.connections
    m, isolation = isolated(ctx, lambda: measure(n))
    verdict, reason = judge(m)
    curve, memory = m.pop("curve"), m.pop("memory_curve")
    return Outcome("C2", CLAIM, METHOD, verdict, reason, isolation, 0.0, m, [
        f"held on port {m['port']}: {m['ss_established_on_port']:,} (sock_diag), tcpmax "
        f"counted {m['tool_peak']:,}",
        f"TCP sockets in use rose by {m['sockstat_tcp_inuse_delta']:,} (both ends here)",
        f"ramp {m['ramp_seconds']} s with {m['workers']} load workers and {m['sources']} "
        "source IPs",
        f"memory: kernel slab +{m['kernel_slab_bytes'] or 0:,} B, tcpmax serve private "
        f"{m['server_private_bytes']:,} B, tcpmax load private {m['client_private_bytes']:,} B"],
        {"ramp": curve, "memory": memory,
         "user_memory": {"serve": m["server_private_bytes"],
                         "load": m["client_private_bytes"]}})
