"""C3: one source IP toward one endpoint is limited by the ephemeral port range."""

from __future__ import annotations

from typing import Any

from tcpmax.host.inspect import read_reserved_ports
from tcpmax.lab.common import Context, Outcome, Verdict, isolated
from tcpmax.lab.drive import drive, port_range, server_port
from tcpmax.model.load import PortStrategy

CLAIM = ("A client talking to ONE server endpoint from ONE source IP is limited by its "
         "ephemeral port range (default 32768-60999, about 28,000), not by 65,535.")
METHOD = ("Connect from 127.0.0.2 to one endpoint, more times than the range holds, letting "
          "the kernel pick ports, until it refuses. As root, in a private network namespace "
          "whose ip_local_port_range is narrowed to 40000-40999 so it takes a second.")
NARROW = "40000 40999"
LABEL = "network namespace (ip_local_port_range 40000-40999)"


def reserved_in_range() -> int:
    low, high = port_range()
    return sum(max(0, min(high, r.high) - max(low, r.low) + 1) for r in read_reserved_ports())


def measure(extra: int, sources: tuple[str, ...] = ("127.0.0.2",)) -> dict[str, Any]:
    low, high = port_range()
    usable = high - low + 1 - reserved_in_range()
    taken = 1 if server_port() == 0 else 0          # our listener took a port from the range
    expected = len(sources) * usable - taken * len(sources)
    n = len(sources) * usable + extra
    d = drive(n, sources=sources, strategy=PortStrategy.KERNEL)
    r = d.result
    return {"port_range": f"{low}-{high}", "usable_ports": usable, "sources": list(sources),
            "requested": n, "expected": expected, "peak": r.peak_established,
            "errors": r.error_counts,
            "advice": {e.name: e.advice for e in r.errors},
            "per_source": r.per_source, "seconds": r.ramp_seconds}


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    refused = m["errors"].get("EADDRNOTAVAIL", 0)
    if m["peak"] == m["expected"] and refused == m["requested"] - m["peak"]:
        return Verdict.CONFIRMED, (
            f"one source IP toward one endpoint stopped at {m['peak']:,} = the port range "
            f"{m['port_range']} ({m['usable_ports']:,} usable); the next {refused:,} got "
            "EADDRNOTAVAIL")
    if m["peak"] > m["usable_ports"] * len(m["sources"]):
        return Verdict.REFUTED, f"{m['peak']:,} connections exceeded the port range"
    return Verdict.INCONCLUSIVE, (f"stopped at {m['peak']:,} (expected {m['expected']:,}), "
                                  f"errors {m['errors']}")


def run(ctx: Context) -> Outcome:
    m, isolation = isolated(ctx, lambda: measure(500), lambda: measure(2_000),
                            sysctls={"net.ipv4.ip_local_port_range": NARROW}, label=LABEL)
    verdict, reason = judge(m)
    return Outcome("C3", CLAIM, METHOD, verdict, reason, isolation, 0.0, m, [
        f"ip_local_port_range {m['port_range']}: {m['usable_ports']:,} usable ports",
        f"asked {m['requested']:,} from {m['sources'][0]}, established {m['peak']:,}",
        *(f"{name} x {count:,}: {m['advice'][name]}" for name, count in m["errors"].items())],
        {"per_source": {"counts": m["per_source"], "range": m["usable_ports"]}})
