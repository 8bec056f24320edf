"""What stands between a host and a target connection count, and the exact change for each.

`assess_target` walks the constraints of `host_capacity` in the order they would be hit and
pairs each one below the target with a `Fix`: sysctl lines, an open-file limit, a process or
source-IP count, or the admission that this host cannot get there (memory) and `tcpmax plan`
must spread the load.

Invariants:
- Walls are ordered by the count at which they stop a run; per-process walls count from one
  process, because that is where a naive program stops.
- A sysctl change is only proposed when the current value is known and too small, or unknown
  (then it is proposed and marked so). Values get 10% headroom rounded up to 1024.
- `namespaced` marks sysctls that belong to a network namespace, so `tune` can apply just
  those inside one without touching the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpmax.model.capacity import (
    Capacity,
    Constraint,
    Costs,
    Role,
    host_capacity,
    processes_needed,
)
from tcpmax.model.facts import HostFacts
from tcpmax.model.units import format_bytes, format_count

__all__ = [
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
    summary: str
    automatic: bool = False     # tcpmax does this by itself (processes, loopback sources)
    possible: bool = True       # False: no setting on this host gets there
    sysctls: tuple[SysctlChange, ...] = ()
    nofile: int | None = None   # LimitNOFILE a single process would need
    processes: int | None = None
    source_ips: int | None = None


@dataclass(frozen=True)
class Wall:
    constraint: Constraint
    fix: Fix


@dataclass(frozen=True)
class TargetAssessment:
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

    seen: set[tuple[int, str | None]] = set()
    for c in sorted(cap.constraints, key=lambda c: c.limit if c.limit is not None else -1):
        if not c.applies or c.limit is None or c.limit >= target:
            continue
        if (c.limit, c.errno) in seen:
            continue  # e.g. total ports equal to one pair's ports: the same wall, once
        seen.add((c.limit, c.errno))
        walls.append(Wall(c, _fix_for(c, facts, target, role, costs, processes, sides,
                                      source_ips, cap, want)))

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


def _fix_for(c: Constraint, facts: HostFacts, target: int, role: Role, costs: Costs,
             processes: int | None, sides: int, source_ips: int | None, cap: Capacity,
             want: _Want) -> Fix:
    nofile = target + costs.fd_reserve
    if c.key in ("process_fds", "process_budget", "nr_open"):
        raised = nofile > (facts.nr_open or 0)
        nr_open = [want("fs.nr_open", facts.nr_open, headroom(nofile),
                        "lets one process raise its open-file limit to the target")] \
            if raised and c.key == "process_budget" else []
        cap_note = ("" if facts.has_capability("CAP_SYS_RESOURCE") is not False else
                    " (this process lacks CAP_SYS_RESOURCE: only a service manager or "
                    "limits.conf at login can raise the hard limit here)")
        if c.key == "process_fds" and processes is not None:
            side = " per side" if sides == 2 else ""
            nr = f" and fs.nr_open >= {nofile}" if raised else ""
            return Fix(f"tcpmax uses {processes} processes{side} of at most "
                       f"{format_count(c.limit)} connections; a single-process program needs "
                       f"LimitNOFILE={nofile} (systemd) or 'nofile {nofile}' in "
                       f"/etc/security/limits.d/{nr}{cap_note}",
                       automatic=True, nofile=nofile, processes=processes)
        if c.key == "process_budget":
            return Fix(f"more than {costs.max_processes} processes would be needed: raise "
                       f"the hard open-file limit (LimitNOFILE={nofile}){cap_note}",
                       sysctls=tuple(nr_open), nofile=nofile)
        return Fix(f"tcpmax spreads over processes; a single process holding "
                   f"{format_count(target)} connections needs fs.nr_open >= {nofile} "
                   f"(sysctl fs.nr_open={headroom(nofile)}) and LimitNOFILE={nofile}",
                   automatic=True)
    if c.key == "system_fds":
        need = headroom(target * sides + (facts.files_allocated or 0))
        s = want("fs.file-max", facts.file_max, need,
                 f"{format_count(target * sides)} sockets plus the files already open")
        return Fix(f"raise fs.file-max to {format_count(need)}", sysctls=(s,))
    if c.key == "epoll_watches":
        need = headroom(target * sides)
        s = want("fs.epoll.max_user_watches", facts.epoll_max_user_watches, need,
                 "one epoll watch per socket")
        return Fix(f"raise fs.epoll.max_user_watches to {format_count(need)}", sysctls=(s,))
    if c.key == "conntrack":
        need = headroom(target + (facts.conntrack_count or 0))
        s = want("net.netfilter.nf_conntrack_max", facts.conntrack_max, need,
                 "one conntrack entry per connection")
        return Fix(f"raise nf_conntrack_max to {format_count(need)}, or exempt the port "
                   "from tracking (nft 'notrack')", sysctls=(s,))
    if c.key == "memory":
        per_conn = sides * (costs.kernel_bytes_per_socket + costs.user_bytes_per_connection)
        need = target * per_conn
        machines = math.ceil(target / c.limit) if c.limit else None
        spread = f"; or spread over {machines} machines (tcpmax plan)" if machines else ""
        return Fix(f"needs {format_bytes(need)} for {format_count(target)} connections; "
                   f"{format_bytes(facts.mem_available)} is available: add memory{spread}",
                   possible=False)
    if c.key in ("ports", "pair_ports") and source_ips is not None:
        if role is Role.LOOPBACK:
            return Fix(f"{source_ips} source IPs from 127.0.0.0/8 (tcpmax load --source auto "
                       "does this; loopback needs no configuration)",
                       automatic=True, source_ips=source_ips)
        have = max(1, len(facts.external_sources(4)))
        wide = want("net.ipv4.ip_local_port_range", facts.port_range and
                    (facts.port_range.low, facts.port_range.high), "1024\t65535",
                    "64,512 ports per (source IP, endpoint) instead of "
                    f"{format_count(facts.usable_ports)}")
        wide_ips = math.ceil(target / (64512 * cap.endpoints))
        return Fix(f"use {source_ips} source IPs (this host has {have}: add with "
                   f"'ip addr add ADDR/32 dev IFACE') or more server endpoints; with "
                   f"ip_local_port_range 1024-65535, {wide_ips} source IPs suffice",
                   sysctls=(wide,), source_ips=source_ips)
    return Fix("no automatic fix known", possible=False)
