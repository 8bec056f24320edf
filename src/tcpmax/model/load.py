"""What `tcpmax load` is asked to do and how its connections are spread: pure planning.

A connection needs a free 4-tuple. For a given (source IP, endpoint) pair the only free
element is the source port, so each pair gives at most the usable ephemeral ports. This
module splits N connections over pairs and pairs over worker processes.

Port strategies (one source IP toward one endpoint; docs/benchmarks.md, "Kernel against
explicit source-port allocation", has the measurements):
- `kernel`: bind (IP, 0) with IP_BIND_ADDRESS_NO_PORT and let connect() pick the port.
  Cheap while the pair uses under half its range; past half, the kernel's port search slows
  by an order of magnitude, then ends in EADDRNOTAVAIL.
- `explicit`: tcpmax picks each source port and binds it with SO_REUSEADDR: linear to the end
  of the range. The ports stay pinned in the kernel's bind table while their sockets live,
  including TIME_WAIT, where the kernel allocator will not reuse them: tear down with RST.
- `auto`: `kernel` while every pair stays at or under half its range, else `explicit`; with
  too little port space for N it falls back to `kernel`, so the kernel itself names the wall.

Invariants: shares given to different workers never overlap in (source IP, source port)
under `explicit`; the shares add up to exactly N; no worker gets more than its budget.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from enum import StrEnum

from tcpmax.model.facts import PortRange
from tcpmax.model.first_message import MAX_FIRST_MESSAGE
from tcpmax.model.serve import plan_workers

__all__ = [
    "CloseMode",
    "Endpoint",
    "LoadConfig",
    "LoadPlan",
    "PortStrategy",
    "Share",
    "TlsOptions",
    "TokenBucket",
    "WsOptions",
    "loopback_sources",
    "parse_target",
    "plan_load",
    "usable_port_list",
]


class PortStrategy(StrEnum):
    AUTO = "auto"
    KERNEL = "kernel"
    EXPLICIT = "explicit"


class CloseMode(StrEnum):
    RESET = "reset"          # SO_LINGER 0: RST, no TIME_WAIT left on this host
    GRACEFUL = "graceful"    # FIN: the closer (this host) keeps TIME_WAIT for 60 s


@dataclass(frozen=True, order=True)
class Endpoint:
    """A server address a load connects to: an IP (v4 or v6, no brackets) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback


def parse_target(text: str) -> tuple[Endpoint, ...]:
    """``127.0.0.1:9000``, ``127.0.0.1:9000-9009`` or ``[::1]:9000``; the host must be an IP."""
    host, sep, ports = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT or HOST:FIRST-LAST")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} in {text!r} is not an IP address") from None
    if address.is_multicast or address.is_unspecified or host == "255.255.255.255":
        raise ValueError(f"{host} in {text!r} is not a unicast address: TCP connects to one "
                         "host (give its address, e.g. 127.0.0.1)")
    first, dash, last = ports.partition("-")
    try:
        low, high = int(first), int(last if dash else first)
    except ValueError:
        raise ValueError(f"{ports!r} in {text!r} is not a port or FIRST-LAST") from None
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text!r}: ports are 1-65535, first before last")
    return tuple(Endpoint(host, p) for p in range(low, high + 1))


def loopback_sources(count: int) -> tuple[str, ...]:
    """`count` distinct addresses from 127.0.0.0/8, starting at 127.1.0.1 (all local)."""
    if not 1 <= count <= 250 * 250 * 126:
        raise ValueError("loopback sources: 1 to 7,875,000")
    out = []
    for i in range(count):
        out.append(f"127.{1 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}")
    return tuple(out)


def usable_port_list(port_range: PortRange, reserved: tuple[PortRange, ...] = ()) -> list[int]:
    return [p for p in range(port_range.low, port_range.high + 1)
            if not any(r.low <= p <= r.high for r in reserved)]


@dataclass(frozen=True)
class TlsOptions:
    """TLS on every connection of a load (`tls://HOST:PORT`).

    `server_name` is sent as SNI and checked against the certificate (None: no SNI, and the
    certificate is checked against the target address); `alpn` is offered in order;
    `ca_file` replaces the system's trusted roots; `insecure` skips every certificate check.
    """

    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    ca_file: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if any(not p or len(p) > 255 for p in self.alpn):
            raise ValueError("--alpn: each protocol name is 1-255 bytes (e.g. h2,http/1.1)")
        if self.insecure and self.ca_file is not None:
            raise ValueError("--insecure checks no certificate: it cannot go with --ca")


@dataclass(frozen=True)
class WsOptions:
    """The WebSocket upgrade on every connection of a load (`ws://`, `wss://`).

    `host` is the Host header (the HOST:PORT typed), `path` the request target; `headers`
    are added as given; `subprotocol` is offered in Sec-WebSocket-Protocol; messages go as
    binary frames when `binary`, else as text frames.
    """

    host: str
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    subprotocol: str | None = None
    binary: bool = False

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise ValueError(f"the WebSocket path {self.path!r} must start with / and hold no "
                             "spaces or line breaks")
        for name, value in self.headers:
            if not name or any(c in name for c in " :\r\n\t") or any(c in value
                                                                  for c in "\r\n"):
                raise ValueError(f"--header {name!r}: give 'Name: value' on one line")
        if self.subprotocol is not None and (not self.subprotocol
                                             or any(c in self.subprotocol for c in " ,\r\n")):
            raise ValueError("--subprotocol: one token, such as chat or mqtt")


@dataclass(frozen=True)
class LoadConfig:
    """What `tcpmax load` (or `tcpmax.LoadRun`) is asked to do; checked when built.

    Every load is bounded: `connections` in count and `hold` in time; `rate` 0 opens as fast
    as the kernel answers. `sources` None lets the engine choose (loopback addresses for a
    loopback target, else the routing interface's).

    Raises:
        ValueError: no endpoint, fewer than one connection, a negative rate or hold, a
            message size outside 16-65536, an empty or oversized first message or expected
            reply (or either with WebSocket), or IPv4 mixed with IPv6.
    """

    endpoints: tuple[Endpoint, ...]
    connections: int
    sources: tuple[str, ...] | None = None   # None: chosen by the engine ("auto")
    rate: float = 0.0                        # connects per second in all; 0 = unlimited
    connect_timeout: float = 5.0
    hold: float = 10.0
    message: bytes | None = None             # a fixed payload to send
    message_rate: float = 0.0                # messages per second in all
    message_size: int = 16                   # probe size (>= 16: timestamp + sequence)
    close: CloseMode = CloseMode.RESET
    port_strategy: PortStrategy = PortStrategy.AUTO
    workers: int | None = None
    window: int = 512                        # connects in flight per worker
    min_free: int | None = None              # MemAvailable floor in bytes; None: the default
    tls: TlsOptions | None = None            # TLS on every connection (tls:// targets)
    ws: WsOptions | None = None              # the WebSocket upgrade (ws://, wss:// targets)
    # Sent once when a connection is ready (after TLS); the connection counts as established
    # only when the server's reply starts with `expect` (which may come alone: a banner).
    first_message: bytes | None = None
    expect: bytes | None = None

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("load needs at least one target")
        if self.connections < 1:
            raise ValueError("--connections must be at least 1")
        if self.rate < 0 or self.message_rate < 0:
            raise ValueError("rates cannot be negative")
        if self.connect_timeout <= 0 or self.hold < 0:
            raise ValueError("--connect-timeout must be positive and --hold not negative")
        if not 16 <= self.message_size <= 65536:
            raise ValueError("--message-size must be 16-65536 bytes")
        if self.window < 1:
            raise ValueError("the connect window must be at least 1")
        if self.message is not None and not self.message:
            raise ValueError("--message is empty: give the text to send, or leave it out to "
                             "send timestamped probes")
        if self.message is not None and self.message_rate <= 0:
            raise ValueError("--message is only sent at --message-rate R (messages per second "
                             "in all): add --message-rate, or leave --message out")
        if self.message is not None and len(self.message) > 65536:
            raise ValueError("--message is longer than 65,536 bytes")
        for name, value in (("--first-message", self.first_message), ("--expect", self.expect)):
            if value is not None and not value:
                raise ValueError(f"{name} is empty: give the bytes, or leave it out")
            if value is not None and len(value) > MAX_FIRST_MESSAGE:
                raise ValueError(f"{name} is longer than {MAX_FIRST_MESSAGE:,} bytes")
        if self.ws is not None and (self.first_message is not None or self.expect is not None):
            raise ValueError("--first-message and --expect do not go with ws:// or wss://: the "
                             "upgrade request is the first message and its 101 the expected "
                             "reply; send frames after it with --message")
        families = {ipaddress.ip_address(e.host).version for e in self.endpoints}
        if len(families) > 1:
            raise ValueError("targets mix IPv4 and IPv6; run one load per family")
        if self.sources is not None:
            if not self.sources:
                raise ValueError("--source gave no address")
            family = next(iter(families))
            other = next((s for s in self.sources
                          if ipaddress.ip_address(s).version != family), None)
            if other is not None:
                raise ValueError(f"--source {other} is not IPv{family} like the targets: "
                                 f"give IPv{family} source addresses")


@dataclass(frozen=True)
class Share:
    """One worker's part of one (source IP, endpoint) pair."""

    source: str
    endpoint: Endpoint
    count: int
    first_port: int | None = None   # explicit: index into the usable port list


@dataclass(frozen=True)
class LoadPlan:
    strategy: PortStrategy           # kernel or explicit, never auto
    workers: int
    budget: int                      # connections per worker
    sources: tuple[str, ...]
    usable_ports: int                # per (source IP, endpoint) pair
    per_pair: int                    # most connections planned on one pair
    capacity: int                    # pairs x usable ports: beyond it, EADDRNOTAVAIL
    shares: tuple[tuple[Share, ...], ...]
    warnings: tuple[str, ...] = field(default=())


def sources_needed(connections: int, endpoints: int, usable_ports: int) -> int:
    """Source IPs that keep every pair at or under half its range (the kernel's fast zone)."""
    half = max(1, usable_ports // 2)
    return max(1, math.ceil(connections / (endpoints * half)))


def plan_load(cfg: LoadConfig, sources: tuple[str, ...], usable_ports: int, nofile_hard: int,
              cores: int) -> LoadPlan:
    if usable_ports < 1:
        raise ValueError("no usable ephemeral ports: check net.ipv4.ip_local_port_range")
    n = cfg.connections
    pairs = [(s, e) for s in sources for e in cfg.endpoints]
    capacity = len(pairs) * usable_ports
    per_pair = math.ceil(n / len(pairs))
    warnings = []
    strategy = cfg.port_strategy
    if strategy is PortStrategy.AUTO:
        if per_pair <= usable_ports // 2 or per_pair > usable_ports:
            strategy = PortStrategy.KERNEL
        else:
            strategy = PortStrategy.EXPLICIT
    if n > capacity:
        warnings.append(
            f"{n:,} connections exceed what {len(sources):,} source IP(s) x "
            f"{len(cfg.endpoints):,} endpoint(s) x {usable_ports:,} ports can address "
            f"({capacity:,}): expect EADDRNOTAVAIL after about {capacity:,}")
        if strategy is PortStrategy.EXPLICIT:
            strategy = PortStrategy.KERNEL
            warnings.append("using the kernel's port allocation so the kernel reports the wall")
    elif strategy is PortStrategy.KERNEL and per_pair > usable_ports // 2:
        warnings.append(f"{per_pair:,} connections per (source IP, endpoint) is over half the "
                        f"port range ({usable_ports:,}): the kernel's port search slows down; "
                        "--port-strategy explicit or more sources keep it fast")
    workers = plan_workers(n, nofile_hard, cores, cfg.workers)

    # Counts per pair: as even as possible, in pair order.
    base, extra = divmod(n, len(pairs))
    counts = [base + (1 if i < extra else 0) for i in range(len(pairs))]
    per_worker: list[list[Share]] = [[] for _ in range(workers.workers)]
    quotas = [workers.budget] * workers.workers
    w = 0
    for (source, endpoint), count in zip(pairs, counts, strict=True):
        offset = 0
        while count > 0:
            while quotas[w] == 0:
                w += 1
            take = min(count, quotas[w])
            first = offset if strategy is PortStrategy.EXPLICIT else None
            per_worker[w].append(Share(source, endpoint, take, first))
            quotas[w] -= take
            count -= take
            offset += take
    return LoadPlan(strategy, workers.workers, workers.budget, sources, usable_ports,
                    max(counts), capacity, tuple(tuple(s) for s in per_worker),
                    tuple(warnings))


class TokenBucket:
    """At most `rate` tokens per second with a burst of `burst`; rate 0 means unlimited."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst if rate else math.inf
        self.last = now

    def take(self, want: int, now: float) -> int:
        if not self.rate:
            return want
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        got = min(want, int(self.tokens))
        self.tokens -= got
        return got
