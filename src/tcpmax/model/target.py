"""What stands between a host and a target connection count, and the exact change for each.

`assess_target` walks the constraints of `host_capacity` in the order they would be hit and
pairs each one below the target with a `Fix`: sysctl lines, an open-file limit, a process or
source-IP count, or the admission that this host cannot get there (memory) and `tcpmax plan`
must spread the load.

Invariants:
- `FIXES` is the one table from a constraint to what lifts it: every `ConstraintKey` has
  exactly one entry, and nothing else decides a fix.
- Walls are ordered by the count at which they stop a run; per-process walls count from one
  process, because that is where a naive program stops.
- A sysctl change is only proposed when the current value is known and too small, or unknown
  (then it is proposed and marked so). Values get 10% headroom rounded up to 1024.
- `namespaced` marks sysctls that belong to a network namespace, so `tune` can apply just
  those inside one without touching the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from tcpmax.model.capacity import (
    Capacity,
    Constraint,
    ConstraintKey,
    Costs,
    Role,
    host_capacity,
    processes_needed,
)
from tcpmax.model.facts import HostFacts
from tcpmax.model.units import format_bytes, format_count

__all__ = [
    "FIXES",
    "NAMESPACED_SYSCTLS",
    "Fix",
    "SysctlChange",
    "TargetAssessment",
    "Wall",
    "assess_target",
    "backlog_for",
    "headroom",
]

# Sysctls that each network namespace has its own copy of (the rest are host-wide).
NAMESPACED_SYSCTLS = frozenset({
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_max_tw_buckets",
})

# A ramp to N connections is planned to take this long; the listen queue should hold one
# second of it so a burst is queued rather than dropped.
RAMP_SECONDS = 60
MAX_BACKLOG = 65535


@dataclass(frozen=True)
class SysctlChange:
    """One sysctl a target needs: its current value, the value to set, and why.

    `line` is the sysctl.conf form; `namespaced` tells whether each network namespace has its
    own copy (so `tcpmax tune --namespaced-only` may set it inside one).
    """

    name: str            # dotted, as in sysctl.conf: "fs.file-max"
    current: str | None  # None when it could not be read
    value: str
    reason: str

    @property
    def namespaced(self) -> bool:
        return self.name in NAMESPACED_SYSCTLS

    @property
    def line(self) -> str:
        return f"{self.name} = {self.value}"


@dataclass(frozen=True)
class Fix:
    """How to get past one wall: advice in `summary`, plus the settings and counts it takes."""

    summary: str
    automatic: bool = False     # tcpmax does this by itself (processes, loopback sources)
    possible: bool = True       # False: no setting on this host gets there
    sysctls: tuple[SysctlChange, ...] = ()
    nofile: int | None = None   # LimitNOFILE a single process would need
    processes: int | None = None
    source_ips: int | None = None


@dataclass(frozen=True)
class Wall:
    """A limit below the target, and the fix for it (from `FIXES`)."""

    constraint: Constraint
    fix: Fix


@dataclass(frozen=True)
class TargetAssessment:
    """What stands between a host and `target` connections in one role, from `assess_target`.

    `walls` are in the order a run would hit them; `reachable` is False when one of them has
    no fix on this host (memory), and `sysctls` gathers every setting the fixes ask for plus
    the listen queues a ramp to the target needs.
    """

    # JSON readers get the verdict without recomputing it (see tcpmax.model.schema).
    __json_extra__: ClassVar[tuple[str, ...]] = ("reachable", "first_wall")

    target: int
    role: Role
    capacity: Capacity = field(metadata={"json": False})
    walls: tuple[Wall, ...]
    processes: int | None          # per side
    source_ips: int | None         # client and loopback roles
    nofile_single_process: int     # open-file limit for one process to hold the target alone
    sysctls: tuple[SysctlChange, ...]
    # Limits that bind this role but could not be read: no verdict can rest on them.
    unknown: tuple[str, ...] = ()

    @property
    def first_wall(self) -> Wall | None:
        return self.walls[0] if self.walls else None

    @property
    def reachable(self) -> bool:
        """True only when every limit that binds was read and each wall has a fix: a limit
        that is unknown never counts as no limit."""
        return not self.unknown and all(w.fix.possible for w in self.walls)


def headroom(value: int) -> int:
    """`value` plus 10%, rounded up to a multiple of 1024."""
    return int(math.ceil(value * 1.1 / 1024) * 1024)


def backlog_for(target: int) -> int:
    """A listen backlog holding one second of a RAMP_SECONDS ramp, as a power of two."""
    per_second = max(1, math.ceil(target / RAMP_SECONDS))
    return min(MAX_BACKLOG, max(4096, 1 << (per_second - 1).bit_length()))


def _current(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return "\t".join(str(v) for v in value)
    return str(value)


def _needs(current: int | None, wanted: int) -> bool:
    return current is None or current < wanted


def assess_target(facts: HostFacts, target: int, role: Role, costs: Costs | None = None, *,
                  sources: int | None = None, endpoints: int = 1) -> TargetAssessment:
    """List every limit below `target` connections in `role` on this host, with its fix.

    Args:
        facts: the host, from `tcpmax.read_host()` (or built by hand for another machine).
        target: connections wanted, at least 1.
        role: SERVER, CLIENT or LOOPBACK (both ends here: two sockets per connection).
        costs: bytes per connection and process limits; the defaults when None.
        sources: source IPs a client uses (default: see `host_capacity`).
        endpoints: distinct (server IP, port) pairs a client connects to.

    Returns:
        A `TargetAssessment`: the walls in the order they would stop a run, the processes
        and source IPs needed, and the sysctl changes (what `tcpmax tune` applies).

    Raises:
        ValueError: `target`, `sources` or `endpoints` below 1.

    Example:
        >>> from tcpmax import Role, assess_target, read_host
        >>> a = assess_target(read_host(), 1_000_000, Role.LOOPBACK)
        >>> a.reachable, [w.constraint.key for w in a.walls]  # doctest: +SKIP
        (True, [<ConstraintKey.PROCESS_FDS: 'process_fds'>])
    """
    if target < 1:
        raise ValueError("the target must be at least one connection")
    costs = costs or Costs()
    cap = host_capacity(facts, role, costs, sources=sources, endpoints=endpoints)
    sides = 2 if role is Role.LOOPBACK else 1
    per = cap.per_process
    processes = processes_needed(target, per) if per else None
    nofile_one = target + costs.fd_reserve
    walls: list[Wall] = []
    sysctls: dict[str, SysctlChange] = {}

    def want(name: str, current: object, value: int | str, reason: str) -> SysctlChange:
        change = SysctlChange(name, _current(current), str(value), reason)
        sysctls[name] = change
        return change

    usable = facts.usable_ports
    source_ips = None
    if role is not Role.SERVER and usable:
        source_ips = math.ceil(target / (usable * endpoints))

    situation = _Situation(facts, target, role, costs, processes, sides, source_ips,
                           cap.endpoints, want)
    seen: set[tuple[int, str | None]] = set()
    for c in sorted(cap.constraints, key=lambda c: c.limit if c.limit is not None else -1):
        if not c.applies or c.limit is None or c.limit >= target:
            continue
        if (c.limit, c.errno) in seen:
            continue  # e.g. total ports equal to one pair's ports: the same wall, once
        seen.add((c.limit, c.errno))
        walls.append(Wall(c, FIXES[c.key](c, situation)))

    if role is not Role.CLIENT:
        backlog = backlog_for(target)
        if _needs(facts.somaxconn, backlog):
            want("net.core.somaxconn", facts.somaxconn, backlog,
                 "listen queue for one second of a 60 s ramp (C9)")
        if _needs(facts.tcp_max_syn_backlog, backlog):
            want("net.ipv4.tcp_max_syn_backlog", facts.tcp_max_syn_backlog, backlog,
                 "half-open queue for the same burst")
    unknown = tuple(dict.fromkeys(c.title for c in cap.constraints
                                  if c.applies and c.limit is None))
    return TargetAssessment(target, role, cap, tuple(walls), processes, source_ips,
                            nofile_one, tuple(sysctls.values()), unknown)


_Want = Callable[[str, object, int | str, str], SysctlChange]


@dataclass(frozen=True)
class _Situation:
    """What a fix needs to size itself: the host, the target and what the run will use."""

    facts: HostFacts
    target: int
    role: Role
    costs: Costs
    processes: int | None      # per side, from the per-process limit
    sides: int                 # sockets per connection on this host
    source_ips: int | None     # toward the endpoints, client and loopback roles
    endpoints: int
    want: _Want                # records a sysctl change in the assessment and returns it

    @property
    def nofile(self) -> int:
        return self.target + self.costs.fd_reserve

    @property
    def raise_nr_open(self) -> bool:
        return self.nofile > (self.facts.nr_open or 0)

    @property
    def cap_note(self) -> str:
        if self.facts.has_capability("CAP_SYS_RESOURCE") is not False:
            return ""
        return (" (this process lacks CAP_SYS_RESOURCE: only a service manager or "
                "limits.conf at login can raise the hard limit here)")


def _more_processes(c: Constraint, s: _Situation) -> Fix:
    if s.processes is None:
        return _raise_nr_open(c, s)
    side = " per side" if s.sides == 2 else ""
    nr = f" and fs.nr_open >= {s.nofile}" if s.raise_nr_open else ""
    return Fix(f"tcpmax uses {s.processes} processes{side} of at most "
               f"{format_count(c.limit)} connections; a single-process program needs "
               f"LimitNOFILE={s.nofile} (systemd) or 'nofile {s.nofile}' in "
               f"/etc/security/limits.d/{nr}{s.cap_note}",
               automatic=True, nofile=s.nofile, processes=s.processes)


def _raise_hard_nofile(c: Constraint, s: _Situation) -> Fix:
    nr_open = ((s.want("fs.nr_open", s.facts.nr_open, headroom(s.nofile),
                       "lets one process raise its open-file limit to the target"),)
               if s.raise_nr_open else ())
    return Fix(f"more than {s.costs.max_processes} processes would be needed: raise "
               f"the hard open-file limit (LimitNOFILE={s.nofile}){s.cap_note}",
               sysctls=nr_open, nofile=s.nofile)


def _raise_nr_open(c: Constraint, s: _Situation) -> Fix:
    return Fix(f"tcpmax spreads over processes; a single process holding "
               f"{format_count(s.target)} connections needs fs.nr_open >= {s.nofile} "
               f"(sysctl fs.nr_open={headroom(s.nofile)}) and LimitNOFILE={s.nofile}",
               automatic=True)


def _raise_file_max(c: Constraint, s: _Situation) -> Fix:
    need = headroom(s.target * s.sides + (s.facts.files_allocated or 0))
    change = s.want("fs.file-max", s.facts.file_max, need,
                    f"{format_count(s.target * s.sides)} sockets plus the files already open")
    return Fix(f"raise fs.file-max to {format_count(need)}", sysctls=(change,))


def _raise_epoll_watches(c: Constraint, s: _Situation) -> Fix:
    need = headroom(s.target * s.sides)
    change = s.want("fs.epoll.max_user_watches", s.facts.epoll_max_user_watches, need,
                    "one epoll watch per socket")
    return Fix(f"raise fs.epoll.max_user_watches to {format_count(need)}", sysctls=(change,))


def _raise_conntrack(c: Constraint, s: _Situation) -> Fix:
    need = headroom(s.target + (s.facts.conntrack_count or 0))
    change = s.want("net.netfilter.nf_conntrack_max", s.facts.conntrack_max, need,
                    "one conntrack entry per connection")
    return Fix(f"raise nf_conntrack_max to {format_count(need)}, or exempt the port "
               "from tracking (nft 'notrack')", sysctls=(change,))


def _more_memory(c: Constraint, s: _Situation) -> Fix:
    per_conn = s.sides * (s.costs.kernel_bytes_per_socket + s.costs.user_bytes_per_connection)
    need = s.target * per_conn
    machines = math.ceil(s.target / c.limit) if c.limit else None
    spread = f"; or spread over {machines} machines (tcpmax plan)" if machines else ""
    return Fix(f"needs {format_bytes(need)} for {format_count(s.target)} connections; "
               f"{format_bytes(s.facts.mem_available)} is available: add memory{spread}",
               possible=False)


def _more_source_ips(c: Constraint, s: _Situation) -> Fix:
    if s.source_ips is None:        # the whole port range is reserved
        return Fix("no ephemeral port is usable: widen net.ipv4.ip_local_port_range or "
                   "shrink net.ipv4.ip_local_reserved_ports", possible=False)
    if s.role is Role.LOOPBACK:
        return Fix(f"{s.source_ips} source IPs from 127.0.0.0/8 (tcpmax load --source auto "
                   "does this; loopback needs no configuration)",
                   automatic=True, source_ips=s.source_ips)
    facts = s.facts
    have = max(1, len(facts.external_sources(4)))
    wide = s.want("net.ipv4.ip_local_port_range", facts.port_range and
                  (facts.port_range.low, facts.port_range.high), "1024\t65535",
                  "64,512 ports per (source IP, endpoint) instead of "
                  f"{format_count(facts.usable_ports)}")
    wide_ips = math.ceil(s.target / (64512 * s.endpoints))
    return Fix(f"use {s.source_ips} source IPs (this host has {have}: add with "
               f"'ip addr add ADDR/32 dev IFACE') or more server endpoints; with "
               f"ip_local_port_range 1024-65535, {wide_ips} source IPs suffice",
               sysctls=(wide,), source_ips=s.source_ips)


def _less_queued(c: Constraint, s: _Situation) -> Fix:
    # Advice only: tcp_mem never binds idle connections, so it is never a wall by itself.
    return Fix("keep data from waiting in socket buffers (read promptly, send less), or "
               f"raise the third value of net.ipv4.tcp_mem above {format_count(c.limit)} "
               "pages")


_Fixer = Callable[[Constraint, _Situation], Fix]

# The one table from a constraint to what lifts it. Every ConstraintKey has an entry (a test
# checks), so a new limit cannot reach a report without its fix.
FIXES: Mapping[ConstraintKey, _Fixer] = MappingProxyType({
    ConstraintKey.PROCESS_FDS: _more_processes,
    ConstraintKey.PROCESS_BUDGET: _raise_hard_nofile,
    ConstraintKey.NR_OPEN: _raise_nr_open,
    ConstraintKey.SYSTEM_FDS: _raise_file_max,
    ConstraintKey.MEMORY: _more_memory,
    ConstraintKey.EPOLL_WATCHES: _raise_epoll_watches,
    ConstraintKey.CONNTRACK: _raise_conntrack,
    ConstraintKey.PAIR_PORTS: _more_source_ips,
    ConstraintKey.PORTS: _more_source_ips,
    ConstraintKey.TCP_MEM: _less_queued,
})
