"""The capacity arithmetic: how many TCP connections a host can hold, and what stops it first.

A connection is a 4-tuple (local IP, local port, remote IP, remote port). Nothing in it caps a
server at 65,535: a listening port accepts one connection per distinct (remote IP, remote
port). What does cap a host is, per role:

- per process: the open-file limit (EMFILE). tcpmax spreads connections over processes, so
  this decides how many processes it needs, not how many connections the host holds;
- per host: system file descriptors (fs.file-max, ENFILE), memory (kernel socket buffers plus
  the program's own bytes per connection), epoll watches (per user), conntrack entries when
  the firewall tracks connections;
- as a client only: ephemeral ports per (source IP, endpoint) pair (EADDRNOTAVAIL), times the
  source IPs, times the endpoints.

Invariants:
- Every `Constraint` carries its own arithmetic as text with the numbers in it, so a report
  never shows a figure the reader cannot recompute.
- A constraint whose input is unknown has ``limit=None`` and never binds.
- The binding constraint is the smallest host-wide limit that applies; per-process and
  per-pair limits only decide how many processes and source IPs a run needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from tcpmax.model.facts import HostFacts
from tcpmax.model.units import format_bytes, format_count

__all__ = [
    "DEFAULT_KERNEL_BYTES_PER_SOCKET",
    "DEFAULT_USER_BYTES_PER_CONNECTION",
    "FD_RESERVE_PER_PROCESS",
    "MAX_PROCESSES",
    "PROTOCOL_USER_BYTES",
    "Capacity",
    "Constraint",
    "ConstraintKey",
    "Costs",
    "KernelMemoryMeasurement",
    "Protocol",
    "ProtocolMemoryMeasurement",
    "Role",
    "Scope",
    "TheoryCeiling",
    "host_capacity",
    "per_process_connections",
    "processes_needed",
    "theory_ceilings",
]

# Kernel bytes per idle established TCP socket held in epoll, at scale: slab growth by cache
# while tcpmax serve and load held 100k, 500k and 1M loopback connections (docs/benchmarks.md,
# "Kernel memory per socket at scale"): 5,054-5,103 B, of which ~915 B were proc inodes and
# dentries made by a monitoring agent that lists every process's /proc/PID/fd on that
# machine, not by the socket. The socket's own share (TCP, sockfs inode, file, its dentry,
# epoll entry, slab packing) is this figure; a host with such an agent pays ~0.9 KB more.
# MemAvailable deltas are too noisy to rely on. `doctor --measure` replaces the default
# with this kernel's own figure.
DEFAULT_KERNEL_BYTES_PER_SOCKET = 4180
# What one held connection costs tcpmax's own workers in user space: a slot in flat arrays
# keyed by fd plus the epoll registration, budgeted above the figure measured in
# docs/benchmarks.md ("User-space bytes per held connection").
DEFAULT_USER_BYTES_PER_CONNECTION = 100


class Protocol(StrEnum):
    """What the held connections speak; decides the user-space bytes each one costs."""

    TCP = "tcp"
    WS = "ws"      # WebSocket after its upgrade
    TLS = "tls"
    WSS = "wss"    # WebSocket inside TLS

    @classmethod
    def of(cls, tls: bool, ws: bool) -> Protocol:
        return {(False, False): cls.TCP, (False, True): cls.WS,
                (True, False): cls.TLS, (True, True): cls.WSS}[(tls, ws)]

    @property
    def label(self) -> str:
        return {"tcp": "plain TCP", "ws": "WebSocket", "tls": "TLS",
                "wss": "WebSocket over TLS"}[self.value]


# User-space bytes per held idle connection, per side, by protocol, when nothing was
# measured (docs/benchmarks.md). WebSocket: tcpmax serve keeps no object per connection
# after the upgrade (1-37 B measured, 160 B with the one-off per worker at 50,000): the
# issue's 200 B budget. TLS: OpenSSL's state per connection through Python's ssl (one
# SSLSocket per fd), the largest side measured: tcpmax load keeps 35.6 KB into a server that
# sends two TLS 1.3 session tickets (23.8 KB through nginx, which sends none); tcpmax serve
# 15.9 KB at 20,000, nginx 36.0 KB. TLS dominates WSS.
# `doctor --measure --tls` replaces these with this host's own figures.
PROTOCOL_USER_BYTES = {Protocol.TCP: DEFAULT_USER_BYTES_PER_CONNECTION, Protocol.WS: 200,
                       Protocol.TLS: 36_000, Protocol.WSS: 36_000}
# File descriptors a worker keeps for itself: stdio, epoll, listeners, pipes, shared memory.
FD_RESERVE_PER_PROCESS = 64
# tcpmax never forks more workers than this for one side of a run.
MAX_PROCESSES = 512


class Role(StrEnum):
    """Which end(s) of the connections this host holds; decides sockets per connection."""

    SERVER = "server"      # accepts connections; one socket per connection on this host
    CLIENT = "client"      # opens connections to another host; one socket per connection
    LOOPBACK = "loopback"  # both ends on this host (tcpmax load -> tcpmax serve): two sockets


class ConstraintKey(StrEnum):
    """Every limit `host_capacity` knows. The value is the key in ``--json`` output, and
    `tcpmax.model.target.FIXES` has exactly one fix for each member."""

    PROCESS_FDS = "process_fds"          # RLIMIT_NOFILE of one process
    PROCESS_BUDGET = "process_budget"    # that limit x tcpmax's most processes per side
    NR_OPEN = "nr_open"                  # fs.nr_open: ceiling for any one process's limit
    SYSTEM_FDS = "system_fds"            # fs.file-max
    MEMORY = "memory"                    # MemAvailable / bytes per connection
    EPOLL_WATCHES = "epoll_watches"      # fs.epoll.max_user_watches
    CONNTRACK = "conntrack"              # nf_conntrack_max
    PAIR_PORTS = "pair_ports"            # ephemeral ports of one (source IP, endpoint)
    PORTS = "ports"                      # ephemeral ports x source IPs x endpoints
    TCP_MEM = "tcp_mem"                  # net.ipv4.tcp_mem (context: idle sockets queue none)


class Scope(StrEnum):
    """What a constraint's limit counts. Only HOST limits bind the host; the others decide
    how many processes and source IPs a run needs."""

    HOST = "host"        # connections on the whole host
    PROCESS = "process"  # connections one process holds
    PAIR = "pair"        # connections from one source IP toward one endpoint


@dataclass(frozen=True)
class Costs:
    """Memory one connection costs, per socket in the kernel and per side in user space, and
    how tcpmax spreads connections over processes.

    Args:
        kernel_bytes_per_socket: kernel memory one idle established socket takes (`tcpmax
            doctor --measure` finds this kernel's figure; docs/benchmarks.md has measured
            ones).
        user_bytes_per_connection: what the program holding the connections spends on each.
        kernel_source: where `kernel_bytes_per_socket` came from, shown in reports.
        fd_reserve: open files each process keeps for itself (stdio, epoll, pipes).
        max_processes: the most worker processes tcpmax forks for one side of a run.
        protocol: what the connections speak; `user_bytes_per_connection` is for it.
        user_source: where `user_bytes_per_connection` came from, shown in reports.
    """

    kernel_bytes_per_socket: int = DEFAULT_KERNEL_BYTES_PER_SOCKET
    user_bytes_per_connection: int = DEFAULT_USER_BYTES_PER_CONNECTION
    kernel_source: str = ("default: slab growth per socket at 100k-1M connections on a kernel "
                          "6.18 machine, without a /proc fd scanner's share")
    fd_reserve: int = FD_RESERVE_PER_PROCESS
    max_processes: int = MAX_PROCESSES
    protocol: Protocol = Protocol.TCP
    user_source: str = "default: tcpmax serve's flat per-fd state, budgeted"


@dataclass(frozen=True)
class Constraint:
    """One limit on connections, with the arithmetic that produced it.

    Attributes:
        key: which limit; `tcpmax.model.target.FIXES[key]` is how to lift it.
        title: what a person calls it.
        errno: what the kernel answers when it is hit (``"EMFILE"``), if anything.
        limit: connections it allows; None when an input is unknown (then it never binds).
        arithmetic: how `limit` follows from the facts, numbers included.
        scope: what `limit` counts: the host, one process, or one (source IP, endpoint).
        applies: False when shown for context only (never binding).
        note: a caveat for the reader, or "".
    """

    key: ConstraintKey
    title: str
    errno: str | None
    limit: int | None
    arithmetic: str
    scope: Scope = Scope.HOST
    applies: bool = True
    note: str = ""


@dataclass(frozen=True)
class Capacity:
    """Every limit on one role's connections for one host, from `host_capacity`.

    `connections` is what the host holds (the smallest applicable host-wide limit) and
    `binding` the constraint that sets it; `get(key)` finds any constraint by its key.
    """

    # JSON readers get the answer without recomputing it (see tcpmax.model.schema).
    __json_extra__: ClassVar[tuple[str, ...]] = ("connections", "binding_key")

    role: Role
    sources: int
    endpoints: int
    constraints: tuple[Constraint, ...]

    def get(self, key: ConstraintKey) -> Constraint | None:
        """The constraint with this key, or None when it does not apply to this host/role."""
        return next((c for c in self.constraints if c.key == key), None)

    @property
    def host_constraints(self) -> tuple[Constraint, ...]:
        """The limits that can bind the host: host-wide, applicable and known."""
        return tuple(c for c in self.constraints
                     if c.applies and c.scope is Scope.HOST and c.limit is not None)

    @property
    def binding(self) -> Constraint | None:
        """The host-wide limit reached first, or None when nothing could be computed."""
        return min(self.host_constraints, key=lambda c: c.limit or 0, default=None)

    @property
    def connections(self) -> int | None:
        """The most connections the host holds in this role; None when nothing is known."""
        binding = self.binding
        return None if binding is None else binding.limit

    @property
    def binding_key(self) -> ConstraintKey | None:
        """Which limit binds first (see `binding`)."""
        binding = self.binding
        return None if binding is None else binding.key

    @property
    def next_limit(self) -> int | None:
        """The second host-wide limit: how far raising the binding one would get."""
        limits = sorted({c.limit for c in self.host_constraints if c.limit is not None})
        return limits[1] if len(limits) > 1 else None

    @property
    def per_process(self) -> int | None:
        """Connections one tcpmax process can hold; None when RLIMIT_NOFILE is unknown."""
        c = self.get(ConstraintKey.PROCESS_FDS)
        return None if c is None else c.limit


@dataclass(frozen=True)
class KernelMemoryMeasurement:
    """What `doctor --measure` found: kernel bytes per idle established socket here."""

    sockets: int                     # sockets per round
    rounds: int
    bytes_per_socket: int            # median over rounds of Slab growth per socket
    memavailable_bytes_per_socket: int  # the same from MemAvailable: noisy, for reference
    samples: tuple[int, ...]         # Slab-based figure of each round
    method: str


@dataclass(frozen=True)
class ProtocolMemoryMeasurement:
    """What `doctor --measure --tls/--ws` found: user-space bytes per held idle connection
    of that protocol, in tcpmax serve's workers and in tcpmax load's, on this host."""

    protocol: Protocol
    connections: tuple[int, int]     # the two loads whose difference gives the slope
    server_bytes_per_connection: int
    client_bytes_per_connection: int
    method: str

    @property
    def per_side(self) -> int:
        """The figure the arithmetic uses for every side: the larger of the two."""
        return max(self.server_bytes_per_connection, self.client_bytes_per_connection)


@dataclass(frozen=True)
class TheoryCeiling:
    title: str
    value: int
    arithmetic: str


def per_process_connections(nofile_hard: int, fd_reserve: int = FD_RESERVE_PER_PROCESS) -> int:
    """Connections one process can hold when its soft limit is raised to the hard limit."""
    return max(0, nofile_hard - fd_reserve)


def processes_needed(connections: int, per_process: int, at_least: int = 1) -> int:
    """Processes to hold `connections` at `per_process` each, and at least `at_least`.

    Raises:
        ValueError: `per_process` is not positive.
    """
    if per_process <= 0:
        raise ValueError("a process that can hold no connection cannot be scaled out")
    return max(at_least, math.ceil(connections / per_process))


def _sides(role: Role) -> int:
    return 2 if role is Role.LOOPBACK else 1


def host_capacity(facts: HostFacts, role: Role, costs: Costs | None = None, *,
                  sources: int | None = None, endpoints: int = 1) -> Capacity:
    """Every limit on `role` connections for this host, each with its arithmetic.

    Args:
        facts: the host, from `tcpmax.read_host()` or built by hand.
        role: SERVER, CLIENT, or LOOPBACK (both ends here: two sockets per connection).
        costs: bytes per connection and process limits; the defaults when None.
        sources: local source IPs a client uses (default: every loopback address for
            LOOPBACK, the host's non-loopback IPv4 addresses for CLIENT).
        endpoints: distinct (server IP, port) targets a client connects to.

    Returns:
        A `Capacity`: `connections` is the most the host holds, `binding` what stops it;
        unknown inputs give constraints with ``limit=None`` that never bind.

    Raises:
        ValueError: `sources` or `endpoints` below 1.

    Example:
        >>> from tcpmax import HostFacts, Role, host_capacity
        >>> facts = HostFacts(nofile_hard=20_000, file_max=100_000, mem_available=2**30)
        >>> cap = host_capacity(facts, Role.SERVER)
        >>> cap.connections, cap.binding_key
        (100000, <ConstraintKey.SYSTEM_FDS: 'system_fds'>)
    """
    costs = costs or Costs()
    if endpoints < 1:
        raise ValueError("a client needs at least one endpoint")
    if sources is None:
        sources = (facts.loopback_sources if role is Role.LOOPBACK
                   else max(1, len(facts.external_sources(4))))
    if sources < 1:
        raise ValueError("a client needs at least one source address")
    sides = _sides(role)
    out: list[Constraint] = []

    # Per process: the open-file limit.
    if facts.nofile_hard is not None:
        per = per_process_connections(facts.nofile_hard, costs.fd_reserve)
        soft = "unknown" if facts.nofile_soft is None else format_count(facts.nofile_soft)
        out.append(Constraint(
            ConstraintKey.PROCESS_FDS, "open files per process (RLIMIT_NOFILE)", "EMFILE", per,
            f"hard limit {format_count(facts.nofile_hard)} - {costs.fd_reserve} kept for "
            f"the process itself = {format_count(per)} per process",
            scope=Scope.PROCESS,
            note=f"soft limit {soft}: tcpmax raises it to the hard limit; other programs "
                 "stop at the soft limit"))
        budget = per * costs.max_processes
        out.append(Constraint(
            ConstraintKey.PROCESS_BUDGET, "tcpmax's processes x open files each", "EMFILE", budget,
            f"{format_count(per)} per process x at most {costs.max_processes} processes "
            f"per side = {format_count(budget)}"))
    else:
        out.append(Constraint(ConstraintKey.PROCESS_FDS, "open files per process (RLIMIT_NOFILE)",
                              "EMFILE", None, "RLIMIT_NOFILE unknown", scope=Scope.PROCESS))
    if facts.nr_open is not None:
        out.append(Constraint(
            ConstraintKey.NR_OPEN, "fs.nr_open (ceiling for any one process)", "EMFILE",
            max(0, facts.nr_open - costs.fd_reserve),
            f"no process can raise its open-file limit above fs.nr_open = "
            f"{format_count(facts.nr_open)}", scope=Scope.PROCESS))

    # Host-wide file descriptors.
    if facts.file_max is not None:
        in_use = facts.files_allocated or 0
        free = max(0, facts.file_max - in_use)
        limit = free // sides
        per_conn = " / 2 sockets per connection" if sides == 2 else ""
        # The kernel lets CAP_SYS_ADMIN go past fs.file-max (alloc_empty_file): root held more
        # files than fs.file-max in docs/benchmarks.md ("The stretch").
        privileged = facts.has_capability("CAP_SYS_ADMIN") is True
        out.append(Constraint(
            ConstraintKey.SYSTEM_FDS, "system open files (fs.file-max)", "ENFILE", limit,
            f"fs.file-max {format_count(facts.file_max)} - {format_count(in_use)} in use"
            f"{per_conn} = {format_count(limit)}",
            applies=not privileged,
            note="not enforced here: this process has CAP_SYS_ADMIN, which the kernel lets "
                 "open files past fs.file-max; unprivileged processes stop with ENFILE"
            if privileged else ""))
    else:
        out.append(Constraint(ConstraintKey.SYSTEM_FDS, "system open files (fs.file-max)", "ENFILE",
                              None, "fs.file-max unknown"))

    # Memory.
    per_conn_bytes = sides * (costs.kernel_bytes_per_socket + costs.user_bytes_per_connection)
    if facts.mem_available is not None:
        limit = facts.mem_available // per_conn_bytes
        user = (f"{costs.user_bytes_per_connection} B user"
                + ("" if costs.protocol is Protocol.TCP else f" for {costs.protocol.label}"))
        shape = (f"2 x ({costs.kernel_bytes_per_socket} B kernel + {user})" if sides == 2
                 else f"({costs.kernel_bytes_per_socket} B kernel + {user})")
        note = f"kernel bytes per socket: {costs.kernel_source}"
        if costs.protocol is not Protocol.TCP:
            note += f"; user bytes per connection: {costs.user_source}"
        out.append(Constraint(
            ConstraintKey.MEMORY, "memory (MemAvailable)", "ENOMEM", limit,
            f"{format_bytes(facts.mem_available)} available / {shape} per connection "
            f"= {format_count(limit)}",
            note=note))
    else:
        out.append(Constraint(ConstraintKey.MEMORY, "memory (MemAvailable)", "ENOMEM", None,
                              "MemAvailable unknown"))

    # epoll registrations, counted per user across all processes.
    if facts.epoll_max_user_watches is not None:
        limit = facts.epoll_max_user_watches // sides
        out.append(Constraint(
            ConstraintKey.EPOLL_WATCHES,
            "epoll watches per user (fs.epoll.max_user_watches)", "ENOSPC",
            limit,
            f"{format_count(facts.epoll_max_user_watches)} watches"
            f"{' / 2 (both ends watch)' if sides == 2 else ''} = {format_count(limit)}"))

    # conntrack: one entry per connection, only if the firewall tracks them.
    if facts.conntrack_max is not None:
        count = facts.conntrack_count or 0
        limit = max(0, facts.conntrack_max - count)
        tracking = facts.conntrack_tracking
        out.append(Constraint(
            ConstraintKey.CONNTRACK, "connection tracking (nf_conntrack_max)", "ETIMEDOUT", limit,
            f"nf_conntrack_max {format_count(facts.conntrack_max)} - {format_count(count)} "
            f"tracked = {format_count(limit)}",
            applies=tracking,
            note="tracking now: a full table drops SYNs ('table full' in dmesg)" if tracking
            else "loaded but tracking nothing (count 0): a limit only if a firewall rule "
                 "starts tracking"))

    # Ephemeral ports: a client's 4-tuples toward its endpoints.
    if role is not Role.SERVER:
        usable = facts.usable_ports
        if usable is not None and facts.port_range is not None:
            limit = usable * sources * endpoints
            reserved = facts.port_range.size - usable
            res = f" - {format_count(reserved)} reserved" if reserved else ""
            out.append(Constraint(
                ConstraintKey.PAIR_PORTS,
                "one source IP toward one endpoint", "EADDRNOTAVAIL", usable,
                f"ip_local_port_range {facts.port_range} = "
                f"{format_count(facts.port_range.size)} ports{res} = {format_count(usable)}",
                scope=Scope.PAIR,
                note="the kernel's port search slows past half the range per pair; tcpmax "
                     "load keeps pairs under half or picks ports itself"))
            out.append(Constraint(
                ConstraintKey.PORTS,
                "ephemeral ports x source IPs x endpoints", "EADDRNOTAVAIL", limit,
                f"{format_count(usable)} per pair x {format_count(sources)} "
                f"source IP(s) x {format_count(endpoints)} endpoint(s) = {format_count(limit)}"))
        else:
            out.append(Constraint(ConstraintKey.PORTS, "ephemeral ports per (source IP, endpoint)",
                                  "EADDRNOTAVAIL", None, "ip_local_port_range unknown"))

    # tcp_mem: context only. Idle sockets charge almost nothing; queued bytes do.
    if facts.tcp_mem_pages is not None:
        limit = facts.tcp_mem_pages[2]
        max_bytes = limit * facts.page_size
        out.append(Constraint(
            ConstraintKey.TCP_MEM, "TCP buffer memory (net.ipv4.tcp_mem max)", "ENOBUFS", limit,
            f"{format_count(facts.tcp_mem_pages[2])} pages x {facts.page_size} B = "
            f"{format_bytes(max_bytes)}: {format_count(limit)} connections with one page "
            "queued each", applies=False,
            note="idle connections queue nothing; this binds only when data waits in buffers"))
    return Capacity(role, sources, endpoints, tuple(out))


def theory_ceilings(facts: HostFacts) -> tuple[TheoryCeiling, ...]:
    """The ceilings the 4-tuple allows in principle: what the '65,535' figure confuses."""
    usable = facts.usable_ports
    this_host = (f"; this host's range gives {format_count(usable)}"
                 if usable is not None else "")
    return (
        TheoryCeiling(
            "one IPv4 listening address:port (theory)", 2**48,
            "remote IPs 2^32 x remote ports 2^16 = 2^48 distinct (remote IP, remote port)"),
        TheoryCeiling(
            "one IPv6 listening address:port (theory)", 2**144,
            "remote IPs 2^128 x remote ports 2^16 = 2^144"),
        TheoryCeiling(
            "one client IP toward one endpoint (theory)", 65535,
            f"the source port is 16 bits: ports 1-65535{this_host}"),
        TheoryCeiling(
            "all IPv4 4-tuples (theory)", 2**96,
            "2^32 x 2^16 x 2^32 x 2^16 = 2^96"),
    )
