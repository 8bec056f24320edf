"""`tcpmax plan`: servers, client machines, source IPs and settings for a target, on paper."""

from __future__ import annotations

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tcpmax.cli.output import emit_json, stdout_console
from tcpmax.cli.params import (
    BYTES_PER_CONNECTION,
    CPUS,
    FLEET_COUNT,
    LISTEN_PORTS,
    NOFILE,
    PORT_RANGE,
    RESERVE,
    SIZE,
    VIPS,
    given,
)
from tcpmax.host.inspect import read_host
from tcpmax.model.capacity import (
    DEFAULT_KERNEL_BYTES_PER_SOCKET,
    DEFAULT_USER_BYTES_PER_CONNECTION,
    PROTOCOL_USER_BYTES,
    Costs,
    Protocol,
)
from tcpmax.model.facts import PortRange
from tcpmax.model.load import parse_target
from tcpmax.model.plan import (
    SCHEDULER_HOST,
    Deployment,
    FleetPlan,
    MachineSpec,
    PlanRequest,
    SidePlan,
    check_scheduler_host,
    deployment,
    plan_fleet,
)
from tcpmax.model.schema import Schema
from tcpmax.model.units import format_bytes, format_count

__all__ = ["plan", "render_deployment", "render_plan"]


def _side_table(side: SidePlan) -> Table:
    t = Table(title=f"{side.role.capitalize()} machines: {side.machines}", box=box.SIMPLE_HEAD,
              title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("connections per machine", format_count(side.per_machine))
    t.add_row("most one machine holds", f"{format_count(side.capacity)} (bound by "
                                        f"{side.bound_by})")
    t.add_row("processes per machine", str(side.processes))
    t.add_row("memory used per machine", format_bytes(side.memory_used))
    for line in side.arithmetic:
        t.add_row("arithmetic", line)
    t.add_row("open files per process", f"LimitNOFILE={side.nofile}")
    for s in side.settings:
        t.add_row("sysctl", f"{s.line.replace(chr(9), ' ')}    # {s.reason}")
    return t


def render_plan(p: FleetPlan, console: Console) -> None:
    r = p.request
    console.print(Text(f"Plan for {format_count(r.connections)} concurrent connections",
                       style="bold"))
    speaks = "" if r.costs.protocol is Protocol.TCP else f" ({r.costs.protocol.label})"
    console.print(Text(f"per connection: {r.costs.kernel_bytes_per_socket} B kernel + "
                       f"{r.costs.user_bytes_per_connection} B user{speaks} per side; "
                       "memory reserve "
                       f"{r.server.reserve:.0%}", style="dim"))
    console.print(_side_table(p.servers))
    console.print(_side_table(p.clients))
    console.print(Text("Source IPs", style="bold"))
    console.print(f"  {p.port_arithmetic}")
    console.print(f"  in all: {format_count(p.source_ips)} source IPs over "
                  f"{p.clients.machines} client machine(s)")
    if r.vips is None:
        console.print(Text(
            "  Clients connect to every server directly (DNS or client-side balancing). "
            "Behind a load balancer (LVS, F5) pass --vips N: the clients then see only the "
            "VIPs, so each source IP spreads over fewer endpoints and more source IPs are "
            "needed.", style="dim"))


def render_deployment(d: Deployment, console: Console) -> None:
    """The commands as plain lines (never wrapped, so they paste as typed)."""
    console.print(Text("Start it on Dask distributed", style="bold"))
    for i, step in enumerate(d.steps, 1):
        count = f" ({step.machines})" if step.machines > 1 else ""
        console.print(f"  {i}. on {step.where}{count}:")
        for command in step.commands:
            console.print(Text(f"       {command}"), soft_wrap=True)
        if step.note:
            console.print(Text(f"       # {step.note}", style="dim"), soft_wrap=True)


@click.command()
@click.option("--connections", type=FLEET_COUNT, required=True, metavar="N",
              help="Concurrent connections to hold (e.g. 10M).")
@click.option("--memory", type=SIZE, metavar="SIZE",
              help="RAM per server machine (64GiB) [default: this host's].")
@click.option("--cores", type=CPUS, metavar="N",
              help="Cores per server machine [default: this host's].")
@click.option("--nofile", type=NOFILE, default=1048576, show_default=True, metavar="N",
              help="Open-file limit per process you will configure on the fleet.")
@click.option("--client-memory", type=SIZE, metavar="SIZE",
              help="RAM per client machine [default: as --memory].")
@click.option("--client-cores", type=CPUS, metavar="N",
              help="Cores per client machine [default: as --cores].")
@click.option("--reserve", type=RESERVE, default=0.2, show_default=True,
              help="Fraction of memory kept for the OS and the application itself.")
@click.option("--port-range", type=PORT_RANGE, default="1024-65535", show_default=True,
              help="ip_local_port_range the clients will use.")
@click.option("--listen-ports", type=LISTEN_PORTS, default=1, show_default=True, metavar="N",
              help="Ports each server listens on.")
@click.option("--vips", type=VIPS, metavar="N",
              help="Clients go through N load-balancer VIPs instead of to servers directly.")
@click.option("--kernel-bytes", type=BYTES_PER_CONNECTION, default=DEFAULT_KERNEL_BYTES_PER_SOCKET,
              show_default=True, metavar="B",
              help="Kernel bytes per socket (tcpmax doctor --measure tells this kernel's).")
@click.option("--user-bytes", type=BYTES_PER_CONNECTION, default=DEFAULT_USER_BYTES_PER_CONNECTION,
              show_default=True, metavar="B",
              help="Application bytes per connection (asyncio ~2,600, tcpmax serve ~100) "
                   "[default with --tls: 36,000; with --ws: 200].")
@click.option("--tls", is_flag=True,
              help="Connections carry TLS: up to 36 KB of OpenSSL state per connection in user "
                   "space on each side (measured: docs/benchmarks.md; `tcpmax doctor --tls "
                   "--measure` for this host's). The printed commands use tls:// and --tls.")
@click.option("--ws", is_flag=True,
              help="WebSocket connections (with --tls: wss): a 200 B budget per connection; "
                   "the printed commands use ws:// and serve --mode ws.")
@click.option("--scheduler-host", default=SCHEDULER_HOST, show_default=True, metavar="HOST",
              help="The machine that will run `dask scheduler`, for the printed commands.")
@click.option("--target", "targets", multiple=True, metavar="IP:PORT",
              help="What the clients connect to, for the printed load command (repeatable; "
                   "IP:FIRST-LAST for a port range) [default: a placeholder per VIP or "
                   "server].")
@click.option("--port", type=click.IntRange(1, 65535), default=9000, show_default=True,
              help="The port the servers listen on (the first of --listen-ports).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(connections: int, memory: int | None, cores: int | None, nofile: int,
         client_memory: int | None, client_cores: int | None, reserve: float,
         port_range: PortRange, listen_ports: int, vips: int | None, kernel_bytes: int,
         user_bytes: int, tls: bool, ws: bool, scheduler_host: str,
         targets: tuple[str, ...], port: int, as_json: bool) -> None:
    """Size a fleet for N connections: server and client machines, source IPs, settings.

    Each server holds what its memory allows after the reserve, in as many processes as the
    open-file limit requires. Each client is limited the same way, and by the ports of each
    (source IP, endpoint) pair. Computed on paper, nothing is opened. Then it prints the
    commands that start that fleet on Dask distributed: the scheduler, a worker per client
    machine, tune and serve on each server, and the one `tcpmax load --cluster`.

    \b
    Examples:
      tcpmax plan --connections 10M
      tcpmax plan --connections 10M --memory 64GiB --cores 16
      tcpmax plan --connections 10M --vips 2 --json
      tcpmax plan --connections 1M --tls --ws
      tcpmax plan --connections 10M --vips 1 --scheduler-host 10.0.0.2 --target 10.0.1.1:9000
    """
    if memory is None or cores is None:
        facts = read_host()
        memory = memory or facts.mem_total
        cores = cores or facts.cores
        if memory is None or cores is None:
            raise click.UsageError("cannot read this host's memory or cores: pass --memory "
                                   "and --cores")
    try:
        server = MachineSpec(memory, cores, nofile, reserve)
        client = MachineSpec(client_memory or memory, client_cores or cores, nofile, reserve)
        protocol = Protocol.of(tls, ws)
        if protocol is not Protocol.TCP and not given("user_bytes"):
            user_bytes = PROTOCOL_USER_BYTES[protocol]
        costs = Costs(kernel_bytes, user_bytes, "given", protocol=protocol,
                      user_source="given" if given("user_bytes") else
                      f"default for {protocol.label} (docs/benchmarks.md)")
        request = PlanRequest(connections, server, client, costs, port_range,
                              listen_ports, vips)
        result = plan_fleet(request)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    # Each value checked on its own, so the error names the option that holds it.
    try:
        check_scheduler_host(scheduler_host)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scheduler-host") from exc
    for t in targets:
        try:
            parse_target(t)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--target") from exc
    try:
        deploy = deployment(result, scheduler_host, targets, port)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--port") from exc
    if as_json:
        emit_json(Schema.PLAN, result, deployment=deploy)
    else:
        console = stdout_console()
        render_plan(result, console)
        render_deployment(deploy, console)
