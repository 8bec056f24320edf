"""Reading the host: every limit on TCP connections, from /proc, getrlimit-equivalents and netlink.

`read_host(proc_root)` returns a `HostFacts`. It reads only: nothing here changes the machine.
Everything comes from files under `proc_root` (default /proc), including this process's own
limits (/proc/self/limits) and capabilities (/proc/self/status), so a test or a user can point
it at a copied /proc tree from another machine. Only the local addresses need netlink, which
is asked only when `proc_root` is the live /proc.

/proc/sys/net is per network namespace: run inside a namespace, this reports that
namespace's port range and backlogs, which is what a process there gets.

A fact that cannot be read is left None with a reason in `HostFacts.unknown`; one unreadable
file never hides the others.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tcpmax.host.process import read_status
from tcpmax.host.procfs import LIVE_PROC, read_sysctl, sysctl_path
from tcpmax.model.facts import HostFacts, LocalAddress, PortRange, Sockstat

__all__ = [
    "CAPABILITY_BITS",
    "LIVE_PROC",
    "listening_ports",
    "proc_tree_problem",
    "read_conntrack",
    "read_host",
    "read_listening_ports",
    "read_meminfo",
    "read_netstat",
    "read_port_range",
    "read_reserved_ports",
    "read_route",
    "read_sockstat",
    "read_sysctl",
    "sysctl_path",
]

CAPABILITY_BITS = {
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
}

T = TypeVar("T")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"negative: {text.strip()!r}")
    return value


def _triple(text: str) -> tuple[int, int, int]:
    values = [_natural(x) for x in text.split()]
    if len(values) != 3:
        raise ValueError(f"expected three numbers, got {text!r}")
    return values[0], values[1], values[2]


def _port_ranges(text: str) -> tuple[PortRange, ...]:
    out = []
    for part in filter(None, (p.strip() for p in text.replace("\n", ",").split(","))):
        low, _, high = part.partition("-")
        out.append(PortRange(int(low), int(high or low)))
    return tuple(out)


def read_port_range(proc_root: Path = LIVE_PROC) -> PortRange:
    """net.ipv4.ip_local_port_range: the ports connect() picks from (this namespace's)."""
    return PortRange(*_ints(read_sysctl("net.ipv4.ip_local_port_range", proc_root)))


def read_reserved_ports(proc_root: Path = LIVE_PROC) -> tuple[PortRange, ...]:
    """net.ipv4.ip_local_reserved_ports: ports inside the range that connect() skips."""
    return _port_ranges(read_sysctl("net.ipv4.ip_local_reserved_ports", proc_root))


def read_meminfo(proc_root: Path = LIVE_PROC) -> dict[str, int]:
    """/proc/meminfo in bytes, by field name."""
    out = {}
    for line in (proc_root / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def read_sockstat(proc_root: Path = LIVE_PROC) -> Sockstat:
    fields: dict[str, dict[str, int]] = {}
    for line in (proc_root / "net" / "sockstat").read_text().splitlines():
        proto, _, rest = line.partition(":")
        words = rest.split()
        fields[proto] = {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}
    tcp = fields["TCP"]
    return Sockstat(fields["sockets"]["used"], tcp["inuse"], tcp["orphan"], tcp["tw"],
                    tcp["alloc"], tcp["mem"])


def read_listening_ports() -> frozenset[tuple[str, int]]:
    """(address, port) of every TCP listener in this network namespace, IPv4 and IPv6,
    asked of the kernel by sock_diag with a LISTEN-only filter: cheap even beside a million
    established sockets, where reading net/tcp would list them all."""
    from pyroute2 import DiagSocket  # imported here, as _addresses does: ~50 ms

    listen = 1 << 10                 # TCP_LISTEN's bit in sock_diag's state mask
    found: set[tuple[str, int]] = set()
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in diag.get_sock_stats(family=family, states=listen):
                found.add((str(msg["idiag_src"]), int(msg["idiag_sport"])))
    return frozenset(found)


def read_netstat(proc_root: Path = LIVE_PROC) -> dict[str, dict[str, int]]:
    """net/netstat counters (this network namespace's) by section, e.g.
    ``read_netstat()["TcpExt"]["ListenOverflows"]``."""
    lines = (proc_root / "net" / "netstat").read_text().splitlines()
    out = {}
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        section, _, names = head.partition(":")
        out[section] = dict(zip(names.split(), map(int, values.split()[1:]), strict=True))
    return out


def read_conntrack(proc_root: Path = LIVE_PROC) -> tuple[int, int] | None:
    """(entries, nf_conntrack_max) for connection tracking, or None without conntrack.

    The count is this network namespace's own; the maximum is one kernel-wide table size,
    which a namespace other than the host's can read but never change."""
    try:
        count = _natural(read_sysctl("net.netfilter.nf_conntrack_count", proc_root))
        limit = _natural(read_sysctl("net.netfilter.nf_conntrack_max", proc_root))
    except FileNotFoundError:
        return None
    return count, limit


def listening_ports(pid: int, proc_root: Path = LIVE_PROC) -> set[int]:
    """TCP ports listening in the network namespace of `pid` (its /proc/PID/net/tcp and
    tcp6), read without entering that namespace; empty once the process is gone."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc_root / str(pid) / "net" / table).read_text().splitlines()[1:]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":           # TCP_LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _nofile(proc_root: Path) -> tuple[int, int]:
    for line in (proc_root / "self" / "limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line[len("Max open files"):].split()[:2]
            # "unlimited" is not possible for RLIMIT_NOFILE on Linux; fs.nr_open caps it.
            big = 2**31 - 1
            return (big if soft == "unlimited" else int(soft),
                    big if hard == "unlimited" else int(hard))
    raise ValueError("no 'Max open files' line")


def _cpu_count(status: dict[str, str], proc_root: Path) -> int:
    allowed = status.get("Cpus_allowed_list")
    if allowed:
        count = 0
        for part in allowed.split(","):
            low, _, high = part.partition("-")
            count += int(high or low) - int(low) + 1
        return count
    text = (proc_root / "cpuinfo").read_text()
    return len(re.findall(r"^processor\s*:", text, re.M))


def _capabilities(status: dict[str, str]) -> frozenset[str]:
    effective = int(status["CapEff"], 16)
    return frozenset(name for name, bit in CAPABILITY_BITS.items() if effective >> bit & 1)


def _addresses() -> tuple[LocalAddress, ...]:
    from pyroute2 import IPRoute  # imported here: costs ~50 ms and only doctor needs it

    out = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            out.append(LocalAddress(names.get(msg["index"]), msg.get_attr("IFA_ADDRESS"),
                                    int(msg["prefixlen"])))
    return tuple(out)


@dataclass(frozen=True)
class Route:
    """How the kernel would reach one destination: its preferred source address (None when
    the route names none), every address of the outgoing interface, and the next hop (None
    when the destination is on a directly connected network)."""
    preferred: str | None
    addresses: tuple[str, ...]
    gateway: str | None = None


def read_route(destination: str) -> Route:
    """Ask the kernel (netlink, this network namespace) for its route to `destination`;
    LookupError when it has none."""
    from pyroute2 import IPRoute  # imported here, as in _addresses

    with IPRoute() as ipr:
        try:
            route = ipr.route("get", dst=destination)[0]
        except Exception as exc:       # pyroute2 raises NetlinkError subclasses
            raise LookupError(f"no route to {destination}: {exc}") from exc
        oif = route.get_attr("RTA_OIF")
        addrs = tuple(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=oif))
        return Route(route.get_attr("RTA_PREFSRC"), addrs, route.get_attr("RTA_GATEWAY"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "not present on this kernel (or its module is not loaded)"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"unreadable: {exc}"


def proc_tree_problem(proc_root: Path | str) -> str | None:
    """Why `proc_root` is not a /proc tree (or a snapshot of one), or None if it is one.

    A snapshot needs at least sys/ and one of the files doctor reads; anything else would make
    every fact unknown and the report say nothing.
    """
    root = Path(proc_root)
    if not root.is_dir():
        return f"{root} is not a directory"
    if not (root / "sys").is_dir():
        return f"{root} has no sys/ directory: it is not a /proc tree or a snapshot of one"
    if not any((root / rel).is_file() for rel in ("meminfo", "sys/fs/file-max", "self/limits",
                                                    "sys/net/ipv4/ip_local_port_range")):
        return (f"{root} has none of meminfo, sys/fs/file-max, self/limits, "
                "sys/net/ipv4/ip_local_port_range: it is not a /proc snapshot")
    return None


def read_host(proc_root: Path | str = LIVE_PROC) -> HostFacts:
    """Read every limit tcpmax reasons about from this host (or a copy of its /proc).

    Args:
        proc_root: the /proc to read; a copied tree reads another machine's facts (local
            addresses are then left unknown: they come from netlink, not files).

    Returns:
        A `HostFacts`. It never raises for an unreadable fact: the field is None and
        `unknown` says why.

    Example:
        >>> from tcpmax import read_host
        >>> facts = read_host()
        >>> facts.nofile_hard, facts.port_range  # doctest: +SKIP
        (20000, PortRange(low=32768, high=60999))
    """
    root = Path(proc_root)
    unknown: dict[str, str] = {}

    def get(name: str, reader: Callable[[], T]) -> T | None:
        try:
            return reader()
        # A malformed file (a snapshot from elsewhere, a truncated copy) makes that one fact
        # unknown with the reason; it never stops the report.
        except (OSError, ValueError, KeyError, IndexError, TypeError, ArithmeticError) as exc:
            unknown[name] = _reason(exc)
            return None

    def sysctl_int(name: str) -> int | None:
        return get(name, lambda: _natural(read_sysctl(name, root)))

    def sysctl_triple(name: str) -> tuple[int, int, int] | None:
        return get(name, lambda: _triple(read_sysctl(name, root)))

    nofile = get("RLIMIT_NOFILE", lambda: _nofile(root))
    file_nr = get("fs.file-nr", lambda: _ints(read_sysctl("fs.file-nr", root)))
    port_range = get("net.ipv4.ip_local_port_range", lambda: read_port_range(root))
    meminfo = get("meminfo", lambda: read_meminfo(root)) or {}
    status = get("self/status", lambda: read_status("self", root)) or {}
    conntrack_max = sysctl_int("net.netfilter.nf_conntrack_max")
    conntrack_count = (sysctl_int("net.netfilter.nf_conntrack_count")
                       if conntrack_max is not None else None)
    live = root.resolve() == LIVE_PROC
    addresses = get("addresses", _addresses) if live else None
    if not live:
        unknown["addresses"] = "not in a /proc snapshot (needs netlink on the live host)"

    return HostFacts(
        nofile_soft=nofile[0] if nofile else None,
        nofile_hard=nofile[1] if nofile else None,
        nr_open=sysctl_int("fs.nr_open"),
        file_max=sysctl_int("fs.file-max"),
        files_allocated=file_nr[0] if file_nr else None,
        port_range=port_range,
        reserved_ports=get("net.ipv4.ip_local_reserved_ports",
                           lambda: read_reserved_ports(root)),
        somaxconn=sysctl_int("net.core.somaxconn"),
        tcp_max_syn_backlog=sysctl_int("net.ipv4.tcp_max_syn_backlog"),
        tcp_mem_pages=sysctl_triple("net.ipv4.tcp_mem"),
        tcp_rmem=sysctl_triple("net.ipv4.tcp_rmem"),
        tcp_wmem=sysctl_triple("net.ipv4.tcp_wmem"),
        tcp_max_tw_buckets=sysctl_int("net.ipv4.tcp_max_tw_buckets"),
        tcp_tw_reuse=sysctl_int("net.ipv4.tcp_tw_reuse"),
        tcp_fin_timeout=sysctl_int("net.ipv4.tcp_fin_timeout"),
        netdev_max_backlog=sysctl_int("net.core.netdev_max_backlog"),
        conntrack_max=conntrack_max,
        conntrack_count=conntrack_count,
        epoll_max_user_watches=sysctl_int("fs.epoll.max_user_watches"),
        mem_total=meminfo.get("MemTotal"),
        mem_available=meminfo.get("MemAvailable"),
        page_size=os.sysconf("SC_PAGE_SIZE"),
        cores=get("cores", lambda: _cpu_count(status, root)),
        kernel=get("kernel.osrelease", lambda: read_sysctl("kernel.osrelease", root)),
        euid=get("euid", lambda: int(status["Uid"].split()[1])),
        capabilities=get("capabilities", lambda: _capabilities(status)),
        addresses=addresses,
        sockstat=get("net/sockstat", lambda: read_sockstat(root)),
        unknown=unknown,
    )
