"""`tcpmax doctor`: this host's real connection limits, the arithmetic, what binds, the fix."""

from __future__ import annotations

from pathlib import Path

import click
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tcpmax.cli.output import emit_json, stderr_console, stdout_console
from tcpmax.cli.params import BYTES_PER_CONNECTION, COUNT, ENDPOINTS, SOURCES, given
from tcpmax.host.inspect import LIVE_PROC, proc_tree_problem, read_host
from tcpmax.model.capacity import (
    DEFAULT_KERNEL_BYTES_PER_SOCKET,
    DEFAULT_USER_BYTES_PER_CONNECTION,
    PROTOCOL_USER_BYTES,
    Constraint,
    ConstraintKey,
    Costs,
    Protocol,
    ProtocolMemoryMeasurement,
    Role,
    Scope,
)
from tcpmax.model.doctor import DoctorReport, build_doctor_report
from tcpmax.model.facts import HostFacts
from tcpmax.model.schema import Schema
from tcpmax.model.target import TargetAssessment
from tcpmax.model.units import format_bytes, format_count

__all__ = ["doctor", "render_doctor"]

_ROLE_TITLES = {
    Role.SERVER: "as a server",
    Role.CLIENT: "as a client",
    Role.LOOPBACK: "loopback (both ends here)",
}
_PER = {Scope.HOST: "", Scope.PROCESS: " / process", Scope.PAIR: " / pair"}
# Limits counted per socket: loopback holds two per connection, so its figure differs.
_PER_SOCKET = (ConstraintKey.SYSTEM_FDS, ConstraintKey.MEMORY, ConstraintKey.EPOLL_WATCHES)


def _fmt(value: object) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, int):
        return format_count(value)
    if isinstance(value, tuple):
        return " ".join(format_count(v) if isinstance(v, int) else str(v) for v in value)
    return str(value)


def _limits_table(h: HostFacts) -> Table:
    t = Table(title="Limits read from this host", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("setting")
    t.add_column("value", justify="right")
    t.add_column("what it bounds")
    ports = ("unknown" if h.port_range is None else
             f"{h.port_range} ({format_count(h.port_range.size)} ports)")
    reserved = ("unknown" if h.reserved_ports is None else
                ", ".join(str(r) for r in h.reserved_ports) or "none")
    tcp_mem = ("unknown" if h.tcp_mem_pages is None else
               f"{_fmt(h.tcp_mem_pages)} pages "
               f"(max {format_bytes(h.tcp_mem_pages[2] * h.page_size)})")
    conntrack = ("not loaded" if h.conntrack_max is None else
                 f"{_fmt(h.conntrack_max)} ({_fmt(h.conntrack_count)} tracked)")
    sock = h.sockstat
    sockstat = ("unknown" if sock is None else
                f"TCP {format_count(sock.tcp_inuse)} in use, {format_count(sock.tcp_time_wait)} "
                f"TIME_WAIT, {format_bytes(sock.tcp_mem_pages * h.page_size)} buffers")
    caps = ("unknown" if h.capabilities is None else
            ", ".join(sorted(h.capabilities)) or "none")
    rows = [
        ("RLIMIT_NOFILE soft / hard", f"{_fmt(h.nofile_soft)} / {_fmt(h.nofile_hard)}",
         "open files per process (EMFILE)"),
        ("fs.nr_open", _fmt(h.nr_open), "highest per-process open-file limit"),
        ("fs.file-max (in use)", f"{_fmt(h.file_max)} ({_fmt(h.files_allocated)})",
         "open files on the host (ENFILE)"),
        ("net.ipv4.ip_local_port_range", ports,
         "client ports per (source IP, endpoint) (EADDRNOTAVAIL)"),
        ("net.ipv4.ip_local_reserved_ports", reserved, "ports taken out of that range"),
        ("net.core.somaxconn", _fmt(h.somaxconn), "accept queue per listener"),
        ("net.ipv4.tcp_max_syn_backlog", _fmt(h.tcp_max_syn_backlog),
         "half-open connections per listener"),
        ("net.core.netdev_max_backlog", _fmt(h.netdev_max_backlog),
         "packets queued per CPU on receive"),
        ("net.ipv4.tcp_mem", tcp_mem, "all TCP buffers on the host (ENOBUFS)"),
        ("net.ipv4.tcp_rmem / tcp_wmem", f"{_fmt(h.tcp_rmem)} / {_fmt(h.tcp_wmem)}",
         "buffer bytes per socket (min default max)"),
        ("net.ipv4.tcp_max_tw_buckets", _fmt(h.tcp_max_tw_buckets), "TIME_WAIT sockets kept"),
        ("net.ipv4.tcp_tw_reuse / tcp_fin_timeout",
         f"{_fmt(h.tcp_tw_reuse)} / {_fmt(h.tcp_fin_timeout)} s", "port reuse after close"),
        ("nf_conntrack_max", conntrack, "tracked connections, if a firewall tracks"),
        ("fs.epoll.max_user_watches", _fmt(h.epoll_max_user_watches),
         "sockets one user can watch with epoll"),
        ("MemTotal / MemAvailable",
         f"{format_bytes(h.mem_total)} / {format_bytes(h.mem_available)}",
         "kernel socket memory plus the program's own"),
        ("sockets now (the kernel's sockstat)", sockstat, ""),
        ("user / capabilities",
         f"uid {_fmt(h.euid)}; {caps}", "what may be changed from here"),
    ]
    for row in rows:
        t.add_row(*row)
    if h.addresses is not None:
        v4 = [a for a in h.addresses if ":" not in a.address]
        listing = ", ".join(f"{a.address}/{a.prefixlen} ({a.interface})" for a in v4)
        t.add_row("local IPv4 addresses", listing,
                  f"source IPs: {format_count(h.loopback_sources)} on loopback, "
                  f"{len(h.external_sources(4))} toward other hosts")
    for name, why in sorted(h.unknown.items()):
        t.add_row(Text(name, style="yellow"), Text("unknown", style="yellow"), why)
    return t


def _cell(c: Constraint | None, binding: Constraint | None) -> Text:
    if c is None:
        return Text("-", style="dim")
    if c.limit is None:
        return Text("unknown", style="yellow")
    value = format_count(c.limit)
    if c.scope is not Scope.HOST:
        return Text(f"{value}{_PER[c.scope]}")
    if not c.applies:
        return Text(f"({value})", style="dim")
    if binding is not None and c.key is binding.key:
        return Text(f"{value} ◀ binds", style="bold red")
    return Text(value)


def _capacity_table(report: DoctorReport) -> Table:
    t = Table(title="How many connections, and what stops them", box=box.SIMPLE_HEAD,
              title_justify="left")
    t.add_column("limit")
    t.add_column("when hit")
    caps = report.capacity
    for role in caps:
        t.add_column(_ROLE_TITLES[role], justify="right")
    rows: dict[ConstraintKey, Constraint] = {}
    for cap in caps.values():
        for c in cap.constraints:
            rows.setdefault(c.key, c)
    for key, c in rows.items():
        t.add_row(c.title, c.errno or "",
                  *(_cell(cap.get(key), cap.binding) for cap in caps.values()))
    t.add_section()
    t.add_row(Text("holds at most", style="bold"), "",
              *(Text(format_count(cap.connections), style="bold") for cap in caps.values()))
    return t


def _arithmetic(report: DoctorReport) -> RenderableType:
    lines = Text()
    seen: set[str] = set()
    for role, cap in report.capacity.items():
        for c in cap.constraints:
            text = f"{c.title}: {c.arithmetic}"
            if text in seen:
                continue
            seen.add(text)
            scope = ("" if role is Role.SERVER or c.key not in _PER_SOCKET
                     else f" [{role}]")
            lines.append(f"  {text}{scope}\n")
            if c.note:
                lines.append(f"      {c.note}\n", style="dim")
    return Group(Text("The arithmetic", style="bold"), lines)


def _myth(report: DoctorReport) -> RenderableType:
    text = Text()
    for ceiling in report.theory:
        value = (format_count(ceiling.value) if ceiling.value < 10**15
                 else f"{ceiling.value:.3g}".replace("e+", " x 10^"))
        text.append(f"  {ceiling.title}: {value}  ({ceiling.arithmetic})\n")
    text.append("  What happens at connection 65,536: nothing. A server keeps accepting until it "
                "runs out of open files (EMFILE/ENFILE) or memory; a client runs out of ports "
                "only per (source IP, endpoint) pair (EADDRNOTAVAIL).\n")
    return Group(Text("The 65,535 myth, against the 4-tuple", style="bold"), text)


def _walls_table(a: TargetAssessment, title: str) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("stops at", justify="right")
    t.add_column("wall")
    t.add_column("when hit")
    t.add_column("fix")
    for w in a.walls:
        c = w.constraint
        scope = _PER[c.scope]
        style = "" if w.fix.possible else "red"
        auto = " [automatic]" if w.fix.automatic else ""
        t.add_row(f"{format_count(c.limit)}{scope}", c.title, c.errno or "",
                  Text(w.fix.summary + auto, style=style))
    return t


def _verdict(a: TargetAssessment) -> str:
    parts = []
    if a.processes is not None:
        side = " per side" if a.role is Role.LOOPBACK else ""
        parts.append(f"{a.processes} process(es){side}")
    if a.source_ips is not None:
        parts.append(f"{format_count(a.source_ips)} source IP(s) toward one endpoint")
    if a.sysctls:
        parts.append(f"{len(a.sysctls)} sysctl change(s)")
    with_ = ", ".join(parts)
    if a.unknown:
        return (f"cannot judge whether {format_count(a.target)} is reachable "
                f"{_ROLE_TITLES[a.role]}: unknown {'; '.join(a.unknown)}.")
    if a.reachable:
        return f"{format_count(a.target)} is reachable {_ROLE_TITLES[a.role]} with {with_}."
    return (f"{format_count(a.target)} is NOT reachable {_ROLE_TITLES[a.role]} on this "
            f"host: see the red fix (tcpmax plan sizes a fleet).")


def _target_section(report: DoctorReport) -> RenderableType:
    parts: list[RenderableType] = []
    for role, a in report.assessments.items():
        cap = report.capacity[role]
        if report.target is None:
            binding = cap.binding
            if binding is None:
                continue
            head = (f"{_ROLE_TITLES[role].capitalize()}: {binding.title} binds first at "
                    f"{format_count(binding.limit)}; fixing it reaches the next limit, "
                    f"{format_count(a.target)}")
            walls = [w for w in a.walls if w.constraint.scope is Scope.HOST]
            a = TargetAssessment(a.target, a.role, a.capacity, tuple(walls), a.processes,
                                 a.source_ips, a.nofile_single_process, a.sysctls)
        else:
            head = f"Reaching {format_count(a.target)} connections {_ROLE_TITLES[role]}"
        if a.walls:
            parts.append(_walls_table(a, head))
        else:
            parts.append(Text(f"{head}: no wall below it.", style="bold"))
        if report.target is not None:
            parts.append(Text(_verdict(a), style="bold green" if a.reachable else "bold red"))
        if a.sysctls:
            lines = "\n".join(f"    {s.line}    # {s.reason}" +
                              (f" (now {s.current})" if s.current is not None else "")
                              for s in a.sysctls)
            parts.append(Text(f"  sysctl settings (tcpmax tune --target {a.target} --role "
                              f"{role} writes them):\n{lines}\n"))
    return Group(*parts)


def render_doctor(report: DoctorReport, console: Console) -> None:
    h = report.host
    root = "root" if h.is_root else f"uid {_fmt(h.euid)} (not root: tune cannot apply)"
    console.print(Text(
        f"tcpmax doctor: kernel {h.kernel or 'unknown'}, {_fmt(h.cores)} cores, "
        f"{format_bytes(h.mem_total)} RAM ({format_bytes(h.mem_available)} available), {root}",
        style="bold"))
    costs = report.costs
    console.print(Text(f"Kernel bytes per socket: {costs.kernel_bytes_per_socket} "
                       f"({costs.kernel_source}); tcpmax's own bytes per connection: "
                       f"{costs.user_bytes_per_connection}", style="dim"))
    if costs.protocol is not Protocol.TCP:
        console.print(Text(f"Connections speak {costs.protocol.label}: "
                           f"{costs.user_bytes_per_connection:,} B in user space per side "
                           f"({costs.user_source})", style="dim"))
    pm = report.protocol_measurement
    if pm is not None:
        console.print(Text(f"Measured {pm.protocol.label}: tcpmax serve "
                           f"{pm.server_bytes_per_connection:,} B, tcpmax load "
                           f"{pm.client_bytes_per_connection:,} B per held connection; the "
                           "arithmetic uses the larger for every side", style="dim"))
    console.print(_limits_table(h))
    console.print(_capacity_table(report))
    console.print(_arithmetic(report))
    console.print(_myth(report))
    console.print(_target_section(report))


def _measure_protocol(protocol: Protocol, err: Console) -> ProtocolMemoryMeasurement:
    from tcpmax.engine.protoprobe import measure_protocol_bytes

    with err.status(f"measuring {protocol.label} bytes per connection...") as status:
        try:
            return measure_protocol_bytes(
                protocol, on_step=lambda text: status.update(f"measuring {text}..."))
        except (OSError, RuntimeError) as exc:
            raise click.ClickException(f"the {protocol.label} measurement failed: {exc}") \
                from exc


@click.command()
@click.option("--target", type=COUNT, metavar="N",
              help="Connections you want to hold (100k, 1M, 2.5M): list every limit below it "
                   "and the exact fix for each.")
@click.option("--sources", type=SOURCES, metavar="N",
              help="Source IPs a client uses [default: loopback 127.0.0.0/8 for loopback, "
                   "this host's IPv4 addresses for client].")
@click.option("--endpoints", type=ENDPOINTS, default=1, show_default=True, metavar="N",
              help="Distinct server (IP, port) endpoints a client connects to.")
@click.option("--measure", is_flag=True,
              help="Measure kernel bytes per socket on this kernel first (opens a few "
                   "thousand loopback connections for ~5 s, then closes them). With --tls or "
                   "--ws, also measure that protocol's user-space bytes per connection with "
                   "tcpmax serve and tcpmax load on loopback (~5-15 s more).")
@click.option("--tls", is_flag=True,
              help="Size connections that carry TLS: OpenSSL keeps 11-36 KB per connection in "
                   "user space, which moves the memory wall (measured with --measure).")
@click.option("--ws", is_flag=True,
              help="Size WebSocket connections (with --tls: wss). tcpmax keeps no object "
                   "per upgraded connection: a 200 B budget, or measured with --measure.")
@click.option("--kernel-bytes", type=BYTES_PER_CONNECTION, default=DEFAULT_KERNEL_BYTES_PER_SOCKET,
              show_default=True, metavar="B",
              help="Kernel bytes per idle socket to assume (ignored with --measure).")
@click.option("--user-bytes", type=BYTES_PER_CONNECTION, default=DEFAULT_USER_BYTES_PER_CONNECTION,
              show_default=True, metavar="B",
              help="User-space bytes per connection of the program holding them "
                   "(tcpmax serve ~100, asyncio ~2,600) [default with --tls: 36,000; "
                   "with --ws: 200].")
@click.option("--proc-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=LIVE_PROC, show_default=True,
              help=f"Read a copy of {LIVE_PROC} (from another machine) instead of this one's.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (schema tcpmax.doctor/1, see docs/json.md).")
def doctor(target: int | None, sources: int | None, endpoints: int, measure: bool,
           tls: bool, ws: bool, kernel_bytes: int, user_bytes: int, proc_root: Path,
           as_json: bool) -> None:
    """Explain how many TCP connections this machine can hold, and what stops it first.

    Reads the limits (open files, ports, memory, queues), computes the capacity as a server,
    as a client and for a loopback test with both ends here, names the binding limit and the
    exact change that lifts it. Reads only; changes nothing.

    \b
    Examples:
      tcpmax doctor
      tcpmax doctor --target 1M
      tcpmax doctor --target 200k --sources 4 --endpoints 2 --json
      tcpmax doctor --target 1M --tls --measure
    """
    err = stderr_console()
    problem = proc_tree_problem(proc_root)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--proc-root")
    protocol = Protocol.of(tls, ws)
    if measure and given("user_bytes") and protocol is not Protocol.TCP:
        raise click.UsageError("--user-bytes and --measure both set the bytes per "
                               f"{protocol.label} connection: give one")
    costs = Costs(kernel_bytes, user_bytes, protocol=protocol)
    if protocol is not Protocol.TCP and not given("user_bytes"):
        costs = Costs(kernel_bytes, PROTOCOL_USER_BYTES[protocol], protocol=protocol,
                      user_source=f"default for {protocol.label}, measured on the reference "
                                  "machine (docs/benchmarks.md); --measure for this one's")
    measurement = protocol_measurement = None
    if measure:
        if proc_root.resolve() != LIVE_PROC:
            raise click.UsageError("--measure measures this host; it cannot be combined "
                                   "with --proc-root")
        from tcpmax.engine.memprobe import measure_kernel_bytes_per_socket

        with err.status("measuring kernel bytes per socket (loopback connections)..."):
            measurement = measure_kernel_bytes_per_socket()
        if protocol is not Protocol.TCP:
            protocol_measurement = _measure_protocol(protocol, err)
    facts = read_host(proc_root)
    report = build_doctor_report(facts, costs, target=target,
                                 sources=sources, endpoints=endpoints,
                                 measurement=measurement,
                                 protocol_measurement=protocol_measurement)
    if as_json:
        emit_json(Schema.DOCTOR, report)
    else:
        render_doctor(report, stdout_console())

