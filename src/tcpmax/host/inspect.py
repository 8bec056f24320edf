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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tcpmax.model.facts import HostFacts, LocalAddress, PortRange, Sockstat

__all__ = ["CAPABILITY_BITS", "LIVE_PROC", "read_host", "read_meminfo", "read_sockstat",
           "read_sysctl", "sysctl_path"]

LIVE_PROC = Path("/proc")
CAPABILITY_BITS = {
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
}

T = TypeVar("T")


def sysctl_path(name: str, proc_root: Path = LIVE_PROC) -> Path:
    """``net.core.somaxconn`` -> ``/proc/sys/net/core/somaxconn``."""
    return proc_root / "sys" / name.replace(".", "/")


def read_sysctl(name: str, proc_root: Path = LIVE_PROC) -> str:
    return sysctl_path(name, proc_root).read_text().strip()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def _triple(text: str) -> tuple[int, int, int]:
    values = _ints(text)
    if len(values) != 3:
        raise ValueError(f"expected three numbers, got {text!r}")
    return values[0], values[1], values[2]


def _port_ranges(text: str) -> tuple[PortRange, ...]:
    out = []
    for part in filter(None, (p.strip() for p in text.replace("\n", ",").split(","))):
        low, _, high = part.partition("-")
        out.append(PortRange(int(low), int(high or low)))
    return tuple(out)


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


def _nofile(proc_root: Path) -> tuple[int, int]:
    for line in (proc_root / "self" / "limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line[len("Max open files"):].split()[:2]
            # "unlimited" is not possible for RLIMIT_NOFILE on Linux; fs.nr_open caps it.
            big = 2**31 - 1
            return (big if soft == "unlimited" else int(soft),
                    big if hard == "unlimited" else int(hard))
    raise ValueError("no 'Max open files' line")


def _status(proc_root: Path) -> dict[str, str]:
    out = {}
    for line in (proc_root / "self" / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "not present on this kernel (or its module is not loaded)"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"unreadable: {exc}"


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
        except (OSError, ValueError, KeyError, IndexError) as exc:
            unknown[name] = _reason(exc)
            return None

    def sysctl_int(name: str) -> int | None:
        return get(name, lambda: int(read_sysctl(name, root)))

    def sysctl_triple(name: str) -> tuple[int, int, int] | None:
        return get(name, lambda: _triple(read_sysctl(name, root)))

    nofile = get("RLIMIT_NOFILE", lambda: _nofile(root))
    file_nr = get("fs.file-nr", lambda: _ints(read_sysctl("fs.file-nr", root)))
    port_range = get("net.ipv4.ip_local_port_range",
                     lambda: PortRange(*_ints(read_sysctl("net.ipv4.ip_local_port_range",
                                                          root))))
    meminfo = get("meminfo", lambda: read_meminfo(root)) or {}
    status = get("self/status", lambda: _status(root)) or {}
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
        reserved_ports=get("net.ipv4.ip_local_reserved_ports", lambda: _port_ranges(
            read_sysctl("net.ipv4.ip_local_reserved_ports", root))),
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
