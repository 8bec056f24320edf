"""Capacity planning on paper: the servers, client machines and source IPs a target needs.

This is the "beyond one machine" answer made concrete. A server machine holds what its memory
allows after a reserve, in as many processes as its open-file limit requires. Clients are
limited the same way, plus the port arithmetic: each (source IP, endpoint) pair gives one
ephemeral port range, so the source IPs a client machine needs follow from how many
endpoints (server IP:ports, or load-balancer VIP:ports) it spreads over.

`deployment` turns a plan into the commands that start that fleet on Dask distributed: the
scheduler on one machine, one `dask worker` per client machine, `tcpmax tune` and `tcpmax
serve` on each server, and the one `tcpmax load --cluster` that drives them all.

Invariants: pure arithmetic on the inputs; every figure in a `SidePlan` has its arithmetic
as text; settings are expressed as the same `SysctlChange` objects `tune` applies; every
number in a deployment command comes from the plan it was made from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum

from tcpmax.model.capacity import (
    Costs,
    Protocol,
    Role,
    per_process_connections,
    processes_needed,
)
from tcpmax.model.facts import PortRange
from tcpmax.model.load import parse_target
from tcpmax.model.target import SysctlChange, backlog_for, headroom
from tcpmax.model.units import format_bytes, format_count

__all__ = ["DASK_PORT", "SCHEDULER_HOST", "Bound", "DeployStep", "Deployment", "FleetPlan",
           "MachineSpec", "PlanRequest", "SidePlan", "check_scheduler_host", "deployment",
           "plan_fleet"]

DASK_PORT = 8786
SCHEDULER_HOST = "SCHEDULER_HOST"      # a placeholder the reader replaces
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]+\]")


class Bound(StrEnum):
    """What limits one machine of a plan."""

    MEMORY = "memory"
    OPEN_FILES = "open files"     # per-process limit x the most processes per side


@dataclass(frozen=True)
class MachineSpec:
    """One kind of machine in the fleet.

    Raises:
        ValueError: a size that is not positive, or a reserve outside [0, 1).
    """

    memory: int               # bytes of RAM
    cores: int
    nofile: int               # the per-process open-file limit the fleet will be given
    reserve: float = 0.2      # fraction of memory kept for the OS, page cache and the app

    def __post_init__(self) -> None:
        if self.memory <= 0 or self.cores <= 0 or self.nofile <= 0:
            raise ValueError("memory, cores and nofile must be positive")
        if not 0 <= self.reserve < 1:
            raise ValueError("the memory reserve is a fraction from 0 to below 1")


@dataclass(frozen=True)
class PlanRequest:
    """What to plan for: the connections, the machines, and how clients reach servers.

    Raises:
        ValueError: fewer than one connection, listen port or VIP.
    """

    connections: int
    server: MachineSpec
    client: MachineSpec
    costs: Costs = field(default_factory=Costs)
    port_range: PortRange = field(default_factory=lambda: PortRange(1024, 65535))
    listen_ports: int = 1            # ports each server listens on
    vips: int | None = None          # clients connect through this many load-balancer VIPs

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("plan for at least one connection")
        if self.listen_ports < 1 or (self.vips is not None and self.vips < 1):
            raise ValueError("listen ports and VIPs must be at least 1")


@dataclass(frozen=True)
class SidePlan:
    """The servers or the clients of a plan: how many machines, and what each one holds."""

    role: Role                     # SERVER or CLIENT
    machines: int
    per_machine: int               # connections each machine holds
    capacity: int                  # the most one machine could hold
    bound_by: Bound
    processes: int                 # per machine
    memory_used: int               # bytes per machine at `per_machine`
    arithmetic: tuple[str, ...]
    settings: tuple[SysctlChange, ...]
    nofile: int


@dataclass(frozen=True)
class FleetPlan:
    """A fleet for `request.connections`, from `plan_fleet`; every figure with arithmetic."""

    request: PlanRequest
    servers: SidePlan
    clients: SidePlan
    endpoints: int                 # distinct (IP, port) targets clients spread over
    source_ips_per_client: int
    source_ips: int
    port_arithmetic: str


def _side(role: Role, target: int, spec: MachineSpec, costs: Costs,
          extra: tuple[SysctlChange, ...]) -> SidePlan:
    per_conn = costs.kernel_bytes_per_socket + costs.user_bytes_per_connection
    usable = int(spec.memory * (1 - spec.reserve))
    by_memory = usable // per_conn
    per_proc = per_process_connections(spec.nofile, costs.fd_reserve)
    by_fds = per_proc * costs.max_processes
    capacity = min(by_memory, by_fds)
    if capacity < 1:
        raise ValueError(f"a {role} machine of this size cannot hold one connection")
    bound_by = Bound.MEMORY if by_memory <= by_fds else Bound.OPEN_FILES
    machines = math.ceil(target / capacity)
    per_machine = math.ceil(target / machines)
    processes = processes_needed(per_machine, per_proc, at_least=spec.cores)
    arithmetic = (
        f"memory: {format_bytes(spec.memory)} x {1 - spec.reserve:.0%} usable / "
        f"({costs.kernel_bytes_per_socket} B kernel + {costs.user_bytes_per_connection} B user)"
        f" = {format_count(by_memory)} connections",
        f"open files: ({format_count(spec.nofile)} - {costs.fd_reserve}) x "
        f"{costs.max_processes} processes = {format_count(by_fds)} connections",
        f"{format_count(target)} / {format_count(capacity)} per machine = {machines} "
        f"machines of {format_count(per_machine)}, {processes} processes each",
    )
    settings = (
        SysctlChange("fs.file-max", None, str(headroom(per_machine)),
                     "one file per socket, plus headroom"),
        SysctlChange("fs.nr_open", None, str(max(1048576, spec.nofile)),
                     "lets the per-process limit be set"),
        SysctlChange("fs.epoll.max_user_watches", None, str(headroom(per_machine)),
                     "one epoll watch per socket"),
        *extra,
    )
    return SidePlan(role, machines, per_machine, capacity, bound_by, processes,
                    per_machine * per_conn, arithmetic, settings, spec.nofile)


def plan_fleet(req: PlanRequest) -> FleetPlan:
    """Size servers, client machines and source IPs for `req.connections`, on paper.

    Each server holds what its memory allows after the reserve, spread over as many
    processes as its open-file limit requires; clients likewise, and each (source IP,
    endpoint) pair gives them one port range.

    Raises:
        ValueError: a machine that cannot hold one connection.

    Example:
        >>> from tcpmax import MachineSpec, PlanRequest, plan_fleet
        >>> spec = MachineSpec(memory=64 * 2**30, cores=16, nofile=1_048_576)
        >>> plan = plan_fleet(PlanRequest(10_000_000, spec, spec))
        >>> plan.servers.machines, plan.clients.machines
        (1, 1)
    """
    backlog = str(backlog_for(req.connections))
    servers = _side(Role.SERVER, req.connections, req.server, req.costs, (
        SysctlChange("net.core.somaxconn", None, backlog, "listen queue for ramp bursts"),
        SysctlChange("net.ipv4.tcp_max_syn_backlog", None, backlog, "half-open queue"),
    ))
    clients = _side(Role.CLIENT, req.connections, req.client, req.costs, (
        SysctlChange("net.ipv4.ip_local_port_range", None,
                     f"{req.port_range.low}\t{req.port_range.high}",
                     "ephemeral ports per (source IP, endpoint)"),
    ))
    endpoints = (req.vips if req.vips is not None else servers.machines) * req.listen_ports
    per_ip = req.port_range.size * endpoints
    per_client = math.ceil(clients.per_machine / per_ip)
    where = (f"{req.vips} VIP(s)" if req.vips is not None
             else f"{servers.machines} server(s)") + f" x {req.listen_ports} port(s)"
    arithmetic = (
        f"{format_count(req.port_range.size)} ports ({req.port_range}) x {endpoints} "
        f"endpoints ({where}) = {format_count(per_ip)} connections per source IP; "
        f"{format_count(clients.per_machine)} per client machine / {format_count(per_ip)} = "
        f"{per_client} source IP(s) per client machine")
    return FleetPlan(req, servers, clients, endpoints, per_client,
                     per_client * clients.machines, arithmetic)


@dataclass(frozen=True)
class DeployStep:
    """Commands to type on `machines` machines of one kind (`where` says which)."""

    where: str
    machines: int
    commands: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class Deployment:
    """The commands that start a plan's fleet on Dask distributed, in the order to run them."""

    scheduler: str                  # tcp://HOST:8786
    steps: tuple[DeployStep, ...]


def check_scheduler_host(host: str) -> str:
    """`host` if it can stand in `tcp://HOST:8786` (a name, an IPv4 address or a bracketed
    IPv6 one), else ValueError."""
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or address (an IPv6 address goes in "
                         "brackets: [fd00::1])")
    return host


def _placeholder_targets(plan: FleetPlan, port: int) -> tuple[str, ...]:
    req = plan.request
    ports = str(port) if req.listen_ports == 1 else f"{port}-{port + req.listen_ports - 1}"
    name, count = (("VIP", req.vips) if req.vips is not None
                   else ("SERVER", plan.servers.machines))
    return tuple(f"{name}_{i}:{ports}" for i in range(1, count + 1))


def deployment(plan: FleetPlan, scheduler_host: str = SCHEDULER_HOST,
               targets: tuple[str, ...] = (), port: int = 9000) -> Deployment:
    """The commands that start `plan`'s fleet on Dask: `dask scheduler` on one machine, one
    `dask worker` per client machine (one worker is one load machine), `tcpmax tune` and
    `tcpmax serve` on every server, then `tcpmax load --cluster` from anywhere.

    `targets` are what the clients connect to (HOST:PORT or HOST:FIRST-LAST, an IP); without
    them, placeholders name each VIP (with `--vips`) or each server, on `port` and the
    plan's listen ports.

    Raises:
        ValueError: a scheduler host or target that is not an address, or a port outside
            1-65535 (or one whose listen-port range would pass 65535).

    Example:
        >>> spec = MachineSpec(memory=16 * 2**30, cores=8, nofile=1_048_576)
        >>> fleet = plan_fleet(PlanRequest(10_000_000, spec, spec, vips=1))
        >>> deployment(fleet, "10.0.0.2").steps[-1].commands[0]
        'tcpmax load VIP_1:9000 -n 10000000 --cluster tcp://10.0.0.2:8786'
    """
    req = plan.request
    check_scheduler_host(scheduler_host)
    if not 1 <= port <= 65535 - (req.listen_ports - 1):
        raise ValueError(f"port {port}: with {req.listen_ports} listen port(s) the first "
                         f"must be 1-{65535 - (req.listen_ports - 1)}")
    for t in targets:
        parse_target(t)
    scheduler = f"tcp://{scheduler_host}:{DASK_PORT}"
    servers, clients = plan.servers, plan.clients
    listen = (f"--port {port}" if req.listen_ports == 1
              else f"--ports {port}-{port + req.listen_ports - 1}")
    protocol = req.costs.protocol
    scheme = {Protocol.TCP: "", Protocol.TLS: "tls://", Protocol.WS: "ws://",
              Protocol.WSS: "wss://"}[protocol]
    path = "/" if protocol in (Protocol.WS, Protocol.WSS) else ""
    tls = protocol in (Protocol.TLS, Protocol.WSS)
    load_targets = " ".join(f"{scheme}{t}{path}"
                            for t in targets or _placeholder_targets(plan, port))
    serve_protocol = (" --mode ws" if path else "") + (" --tls CERT.pem --tls-key KEY.pem"
                                                       if tls else "")
    load_protocol = " --ca CA.pem" if tls else ""
    return Deployment(scheduler, (
        DeployStep("every machine", servers.machines + clients.machines + 1,
                   ("pip install 'tcpmax[cluster]'",)),
        DeployStep("one machine, the scheduler", 1, (f"dask scheduler --port {DASK_PORT}",)),
        DeployStep("each server machine", servers.machines, (
            f"sudo tcpmax tune --target {servers.per_machine} --role server --apply",
            f"ulimit -n {servers.nofile}",
            f"tcpmax serve --host 0.0.0.0 {listen} --max-connections {servers.per_machine}"
            f"{serve_protocol}",
        ), "ulimit needs fs.nr_open raised first (tune does) and a root shell, or "
           f"LimitNOFILE={servers.nofile} in a systemd unit"
           + ("; CERT.pem and KEY.pem are the servers' certificate and key, CA.pem what "
              "signed it" if tls else "")),
        DeployStep("each client machine", clients.machines, (
            f"sudo tcpmax tune --target {clients.per_machine} --role client --sources "
            f"{plan.source_ips_per_client} --endpoints {plan.endpoints} --apply",
            f"ulimit -n {clients.nofile}",
            f"dask worker {scheduler} --nworkers 1 --nthreads 1",
        ), f"each client machine needs {plan.source_ips_per_client} source address(es) on the "
           "interface toward the servers (the worker's load uses them all) and the worker "
           "started in that shell, so its loads inherit the open-file limit"),
        DeployStep("any machine with tcpmax, once every worker is up", 1, (
            f"tcpmax load {load_targets} -n {req.connections}{load_protocol} "
            f"--cluster {scheduler}",)),
    ))
