"""C12: beyond one machine, capacity comes from more servers and more client IPs."""

from __future__ import annotations

from typing import Any

from tcpmax.lab.common import Context, Outcome, Skip, Verdict
from tcpmax.model.capacity import DEFAULT_KERNEL_BYTES_PER_SOCKET, Costs
from tcpmax.model.facts import PortRange
from tcpmax.model.plan import MachineSpec, PlanRequest, plan_fleet

CLAIM = ("Beyond one machine, capacity comes from load balancing across many servers (LVS, "
         "F5) and from many client machines and IPs.")
METHOD = ("tcpmax plan for 10,000,000 connections on machines like this one, with the kernel "
          "bytes per socket measured by C7 (or the default), directly and behind one VIP.")
TARGET = 10_000_000


def measure(memory: int, cores: int, kernel_bytes: int, port_range: PortRange) -> dict[str, Any]:
    spec = MachineSpec(memory, cores, 1_048_576)
    direct = plan_fleet(PlanRequest(TARGET, spec, spec, Costs(kernel_bytes, 100),
                                    port_range))
    vip = plan_fleet(PlanRequest(TARGET, spec, spec, Costs(kernel_bytes, 100), port_range,
                                 vips=1))
    return {"target": TARGET, "memory": memory, "kernel_bytes_per_socket": kernel_bytes,
            "per_server": direct.servers.capacity, "servers": direct.servers.machines,
            "clients": direct.clients.machines, "source_ips_direct": direct.source_ips,
            "source_ips_one_vip": vip.source_ips, "port_arithmetic": direct.port_arithmetic}


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    if m["servers"] > 1 and m["source_ips_one_vip"] > 1:
        return Verdict.CONFIRMED, (
            f"one machine like this holds {m['per_server']:,}: {m['target']:,} needs "
            f"{m['servers']} servers behind a balancer and {m['source_ips_one_vip']} client "
            "source IPs toward one VIP")
    if m["servers"] == 1:
        return Verdict.REFUTED, (f"one machine like this holds {m['per_server']:,}, enough "
                                 f"for {m['target']:,}")
    return Verdict.INCONCLUSIVE, "the plan needs one source IP only"


def run(ctx: Context) -> Outcome:
    f = ctx.facts
    if f.mem_total is None or f.cores is None:
        raise Skip("this host's memory or core count is unknown")
    kernel = ctx.kernel_bytes or DEFAULT_KERNEL_BYTES_PER_SOCKET
    m = measure(f.mem_total, f.cores, kernel, PortRange(1024, 65535))
    verdict, reason = judge(m)
    return Outcome("C12", CLAIM, METHOD, verdict, reason, "on paper", 0.0, m, [
        f"per server (80% of memory / {kernel + 100} B per connection): {m['per_server']:,}",
        f"servers for {m['target']:,}: {m['servers']}; client machines: {m['clients']}",
        f"source IPs, clients straight to the servers: {m['source_ips_direct']}; through one "
        f"VIP: {m['source_ips_one_vip']}", m["port_arithmetic"]])
