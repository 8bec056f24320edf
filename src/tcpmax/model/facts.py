"""The facts about a host that bound its TCP connection count, as plain frozen values.

The host layer fills a `HostFacts`; everything else only reads one. A field is None when
it could not be read (restricted container, other kernel, missing module); the reason is in
`HostFacts.unknown`. The model treats None as "cannot judge", never as zero or infinity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = ["HostFacts", "LocalAddress", "PortRange", "Sockstat"]


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of ports, as in ip_local_port_range ("32768 60999")."""

    __json_extra__: ClassVar[tuple[str, ...]] = ("size",)

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high <= 65535:
            raise ValueError(f"not a port range: {self.low}-{self.high}")

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def overlap(self, other: PortRange) -> int:
        """How many ports the two ranges share."""
        return max(0, min(self.high, other.high) - max(self.low, other.low) + 1)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class Sockstat:
    """The kernel's sockstat counters: socket use right now, in this network namespace."""

    sockets_used: int
    tcp_inuse: int
    tcp_orphan: int
    tcp_time_wait: int
    tcp_alloc: int
    tcp_mem_pages: int


@dataclass(frozen=True)
class LocalAddress:
    interface: str | None
    address: str
    prefixlen: int

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback

    @property
    def source_count(self) -> int:
        """How many source addresses this entry gives a client without configuration.

        Linux answers for every address of a local route, so 127.0.0.1/8 on lo gives all of
        127.0.0.0/8 (minus network and broadcast); any other address gives itself.
        """
        if self.is_loopback and ipaddress.ip_address(self.address).version == 4:
            return ipaddress.ip_network(f"{self.address}/{self.prefixlen}",
                                        strict=False).num_addresses - 2
        return 1


@dataclass(frozen=True)
class HostFacts:
    """Everything tcpmax knows about one host. Counts are plain numbers, memory in bytes.

    `tcpmax.read_host()` fills one from /proc; tests and `tcpmax plan` build them by hand.
    """

    # Derived figures JSON readers should not have to recompute (see tcpmax.model.schema).
    __json_extra__: ClassVar[tuple[str, ...]] = ("usable_ports", "loopback_sources")

    nofile_soft: int | None = None
    nofile_hard: int | None = None
    nr_open: int | None = None
    file_max: int | None = None
    files_allocated: int | None = None
    port_range: PortRange | None = None
    reserved_ports: tuple[PortRange, ...] | None = None
    somaxconn: int | None = None
    tcp_max_syn_backlog: int | None = None
    tcp_mem_pages: tuple[int, int, int] | None = None
    tcp_rmem: tuple[int, int, int] | None = None
    tcp_wmem: tuple[int, int, int] | None = None
    tcp_max_tw_buckets: int | None = None
    tcp_tw_reuse: int | None = None
    tcp_fin_timeout: int | None = None
    netdev_max_backlog: int | None = None
    conntrack_max: int | None = None
    conntrack_count: int | None = None
    epoll_max_user_watches: int | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    page_size: int = 4096
    cores: int | None = None
    kernel: str | None = None
    euid: int | None = None
    capabilities: frozenset[str] | None = None
    addresses: tuple[LocalAddress, ...] | None = None
    sockstat: Sockstat | None = None
    # name of an unreadable fact -> why (e.g. "nf_conntrack not loaded", "permission denied")
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def usable_ports(self) -> int | None:
        """Ephemeral ports one (source IP, endpoint) pair can use: the range minus reserved."""
        if self.port_range is None:
            return None
        reserved = sum(self.port_range.overlap(r) for r in (self.reserved_ports or ()))
        return self.port_range.size - reserved

    @property
    def is_root(self) -> bool:
        return self.euid == 0

    def has_capability(self, name: str) -> bool | None:
        return None if self.capabilities is None else name in self.capabilities

    @property
    def conntrack_tracking(self) -> bool:
        """True when nf_conntrack is loaded and holds entries, so it will track connections."""
        return self.conntrack_max is not None and bool(self.conntrack_count)

    @property
    def loopback_sources(self) -> int:
        """Source IPv4 addresses usable toward a loopback target without configuration."""
        return max((a.source_count for a in self.addresses or () if a.is_loopback), default=1)

    def external_sources(self, version: int = 4) -> tuple[LocalAddress, ...]:
        """Non-loopback, non-link-local addresses of one IP version: sources toward another
        machine (an IPv4 endpoint needs IPv4 sources)."""
        out = []
        for a in self.addresses or ():
            ip = ipaddress.ip_address(a.address)
            if ip.version == version and not (ip.is_loopback or ip.is_link_local):
                out.append(a)
        return tuple(out)
