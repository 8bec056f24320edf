"""C5: every extra source IP adds another full port range."""

from __future__ import annotations

from typing import Any

from tcpmax.lab import c03_port_range as c03
from tcpmax.lab.common import Context, Outcome, Verdict, isolated

CLAIM = ("More IP addresses multiply the limit: each extra source IP (or destination IP/port) "
         "adds another full port range.")
METHOD = ("Repeat C3 from k = 1 and k = 3 source IPs (127.0.0.2-4) toward one endpoint, past "
          "what the ports allow, and compare the counts.")
K = 3


def measure(extra: int) -> dict[str, Any]:
    one = c03.measure(extra, ("127.0.0.2",))
    many = c03.measure(extra, tuple(f"127.0.0.{2 + i}" for i in range(K)))
    return {"k": K, "one_source": one["peak"], "k_sources": many["peak"],
            "usable_ports": one["usable_ports"], "port_range": one["port_range"],
            "per_source": many["per_source"], "errors_k": many["errors"]}


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    if m["one_source"] and m["k_sources"] == m["k"] * m["one_source"]:
        return Verdict.CONFIRMED, (f"1 source IP: {m['one_source']:,}; {m['k']} source IPs: "
                                   f"{m['k_sources']:,} = exactly {m['k']}x")
    if m["k_sources"] <= m["one_source"]:
        return Verdict.REFUTED, "more source IPs did not raise the count"
    ratio = m["k_sources"] / max(1, m["one_source"])
    return Verdict.INCONCLUSIVE, f"{m['k']} source IPs gave {ratio:.2f}x, not {m['k']}x"


def run(ctx: Context) -> Outcome:
    m, isolation = isolated(ctx, lambda: measure(200), lambda: measure(1_000),
                            sysctls={"net.ipv4.ip_local_port_range": c03.NARROW},
                            label=c03.LABEL)
    verdict, reason = judge(m)
    return Outcome("C5", CLAIM, METHOD, verdict, reason, isolation, 0.0, m, [
        f"port range {m['port_range']} ({m['usable_ports']:,} usable)",
        f"from 1 source IP: {m['one_source']:,}; from {m['k']}: {m['k_sources']:,}",
        "per source: " + ", ".join(f"{s} {c:,}" for s, c in m["per_source"].items())],
        {"per_source": {"counts": m["per_source"], "range": m["usable_ports"]}})
