"""The largest values Linux and tcpmax accept for what a user types or tcpmax recommends.

Invariants:
- Every count, size, duration and rate an option takes has a maximum here, and each maximum is
  one Linux can honour (a sysctl the kernel accepts, an argument a syscall takes) or one the
  program can honour (a run that ends, a plan that fits in memory).
- `kernel_max(name)` is the largest value the kernel accepts for a sysctl tcpmax recommends;
  doctor, tune and plan clamp to it, so they never print a value that `sysctl -w` refuses.

Kernel sources for the sysctl ceilings (v6.x):
- fs.nr_open: fs/file.c, sysctl_nr_open_max = min(INT_MAX, SIZE_MAX / sizeof(void *))
  rounded down to a multiple of BITS_PER_LONG: 2,147,483,584 on 64-bit.
- net.core.somaxconn, net.ipv4.tcp_max_syn_backlog, nf_conntrack_max: ints (INT_MAX).
- fs.file-max, fs.epoll.max_user_watches: longs (LONG_MAX).
"""

from __future__ import annotations

__all__ = [
    "INT_MAX",
    "MAX_BACKLOG",
    "MAX_BYTES_PER_CONNECTION",
    "MAX_CONNECT_TIMEOUT",
    "MAX_CPUS",
    "MAX_ENDPOINTS",
    "MAX_FLEET_CONNECTIONS",
    "MAX_HOLD",
    "MAX_HOST_CONNECTIONS",
    "MAX_INTERVAL",
    "MAX_RATE",
    "MAX_RUN",
    "MAX_SOURCES",
    "MAX_VIPS",
    "NR_OPEN_MAX",
    "default_min_free",
    "kernel_max",
]

INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1
NR_OPEN_MAX = INT_MAX & -64

# One host: a billion connections is ~4 TB of kernel memory at ~4 KB per socket, beyond any
# machine sold today; a fleet plan may go to a trillion (internet scale).
MAX_HOST_CONNECTIONS = 10**9
MAX_FLEET_CONNECTIONS = 10**12
# listen(2) takes an int; the kernel then clamps it to net.core.somaxconn.
MAX_BACKLOG = INT_MAX
# Linux builds for at most 8,192 CPUs (CONFIG_NR_CPUS on x86-64 with MAXSMP).
MAX_CPUS = 8192
# Source IPs and server endpoints in a plan: all of IPv4 and more than any balancer serves.
MAX_SOURCES = 2**32
MAX_ENDPOINTS = 2**32
MAX_VIPS = 2**20
# Bytes per connection (kernel or application): a megabyte is already an absurd idle cost.
MAX_BYTES_PER_CONNECTION = 2**30
# New connections or messages per second: far above what one host's kernel can do.
MAX_RATE = 10**9

# Durations, in seconds. A connect is abandoned by the kernel after tcp_syn_retries
# (about 2 minutes by default), so a longer timeout than 10 minutes would change nothing.
MAX_CONNECT_TIMEOUT = 600.0
MAX_HOLD = 7 * 86400.0
MAX_RUN = 366 * 86400.0
MAX_INTERVAL = 3600.0

_SYSCTL_MAX = {
    "fs.nr_open": NR_OPEN_MAX,
    "fs.file-max": LONG_MAX,
    "fs.epoll.max_user_watches": LONG_MAX,
    "net.core.somaxconn": INT_MAX,
    "net.ipv4.tcp_max_syn_backlog": INT_MAX,
    "net.netfilter.nf_conntrack_max": INT_MAX,
}


def kernel_max(name: str) -> int | None:
    """The largest value the kernel accepts for sysctl `name`, None if tcpmax has no bound."""
    return _SYSCTL_MAX.get(name)


def default_min_free(mem_total: int | None) -> int:
    """The MemAvailable floor below which load and serve stop taking new connections.

    A thirty-second of RAM, at least 256 MiB: above the kernel's own reserves
    (vm.min_free_kbytes is tens of MiB on such hosts), so the run stops itself long before the
    OOM killer would choose a victim, and it costs a 24 GiB host under a gigabyte of reach.
    """
    return max(256 * 2**20, (mem_total or 0) // 32)
