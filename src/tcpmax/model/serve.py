"""What `tcpmax serve` is asked to do, and how many workers that takes: pure data and arithmetic.

Invariants:
- Worker count = max(cores, ceil(max_connections / per-process budget)), never more than
  MAX_PROCESSES; each worker's budget = ceil(max_connections / workers) <= its fd budget.
- Every run is bounded in what it holds (`max_connections`); `duration` bounds it in time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from tcpmax.model.capacity import FD_RESERVE_PER_PROCESS, MAX_PROCESSES

__all__ = ["LOOPBACK_NAMES", "TLS_FAILURES", "Mode", "ServeConfig", "ServeTls", "WorkerPlan",
           "plan_workers", "tls_failure_kind"]


class Mode(StrEnum):
    HOLD = "hold"    # accept and keep; read and discard anything sent
    ECHO = "echo"    # write back every byte read, with backpressure
    PUSH = "push"    # send a timestamped line to every connection each interval
    WS = "ws"        # WebSocket: answer the upgrade, then hold, echo or push (`ws_then`)


# What a throwaway certificate is valid for unless told otherwise: the names a client on
# this host uses.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

# A server counts its failed TLS handshakes in these buckets (shared-memory columns are fixed):
# the names are model.errors.tls_error_name's where one fits, the rest fall in TLS_OTHER.
TLS_FAILURES = ("TLS_NOT_TLS", "TLS_CLOSED_IN_HANDSHAKE", "TLS_HANDSHAKE_TIMEOUT",
                "TLS_ALERT", "TLS_OTHER")


def tls_failure_kind(name: str) -> str:
    """The bucket of a handshake failure name: ``TLS_ALERT_UNKNOWN_CA`` -> ``TLS_ALERT`` (the
    client refused our certificate), ``TLS_NO_SHARED_CIPHER`` -> ``TLS_OTHER``."""
    if name in TLS_FAILURES:
        return name
    return "TLS_ALERT" if name.startswith("TLS_ALERT_") else "TLS_OTHER"


@dataclass(frozen=True)
class ServeTls:
    """Where the server's certificate comes from: PEM files, or made at start.

    `cert_file` holds the certificate chain (and the key when `key_file` is None, as in a
    combined PEM); `self_signed` names (DNS names or IP addresses) ask for a throwaway
    certificate made in memory instead. Exactly one of the two is given.
    """

    cert_file: str | None = None
    key_file: str | None = None
    self_signed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.cert_file is None) == (not self.self_signed):
            raise ValueError("TLS needs a certificate file or self-signed names, not both")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("a key file goes with a certificate file")


@dataclass(frozen=True)
class ServeConfig:
    """What `tcpmax serve` (or `tcpmax.Server`) is asked to do; checked when built.

    Every run is bounded by `max_connections`; `duration` also bounds it in time. Leaving
    `workers` None lets `plan_workers` size them from the open-file limit and the cores.

    Raises:
        ValueError: no port, a port outside 0-65535, a count below 1, a duration not
            positive, more workers than tcpmax forks, `ws_then` not hold/echo/push, or a
            `ws_max_frame` below 125 bytes.
    """

    host: str = "127.0.0.1"
    ports: tuple[int, ...] = (9000,)
    mode: Mode = Mode.HOLD
    max_connections: int = 1_000_000
    backlog: int | None = None            # None: as deep as the kernel allows (somaxconn)
    idle_timeout: float | None = None     # close connections silent for this long
    duration: float | None = None         # stop by itself after this long
    drain: bool = False                   # on stop: wait for clients to close (else RST)
    drain_timeout: float = 10.0
    push_interval: float = 1.0
    message_size: int = 0                 # push: pad each line to this many bytes
    workers: int | None = None            # None: derived by plan_workers
    ws_then: Mode = Mode.HOLD             # ws: what follows the upgrade (hold, echo, push)
    handshake_timeout: float = 10.0       # ws, tls: drop a client not through its handshakes
    ws_max_frame: int = 65536             # ws: larger frames are refused (close 1009)
    grace: float = 5.0                    # TERM -> KILL escalation for workers
    metrics: tuple[str, int] | None = None  # serve /metrics and /stats here
    min_free: int | None = None           # MemAvailable floor: accept nothing below it
    tls: ServeTls | None = None           # TLS on every connection (hold, echo, push, ws)

    def __post_init__(self) -> None:
        if not self.ports:
            raise ValueError("serve needs at least one port")
        if any(not 0 <= p <= 65535 for p in self.ports):
            raise ValueError("ports are 0-65535")
        if self.max_connections < 1:
            raise ValueError("--max-connections must be at least 1")
        if self.backlog is not None and self.backlog < 1:
            raise ValueError("--backlog must be at least 1")
        if self.workers is not None and not 1 <= self.workers <= MAX_PROCESSES:
            raise ValueError(f"--workers must be 1-{MAX_PROCESSES}")
        if self.ws_then is Mode.WS:
            raise ValueError("--ws-then is hold, echo or push")
        if self.ws_max_frame < 125:
            raise ValueError("--ws-max-frame must be at least 125 (a control frame's size)")
        for name in ("idle_timeout", "duration", "push_interval", "handshake_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive")


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    budget: int          # connections per worker
    fd_budget: int       # the most one worker could hold (open-file limit - reserve)


def plan_workers(max_connections: int, nofile_hard: int, cores: int,
                 workers: int | None = None, reserve: int = FD_RESERVE_PER_PROCESS) -> WorkerPlan:
    fd_budget = nofile_hard - reserve
    if fd_budget < 1:
        raise ValueError(f"an open-file limit of {nofile_hard} leaves no room for connections")
    needed = math.ceil(max_connections / fd_budget)
    if workers is None:
        workers = max(cores, needed)
    elif workers < needed:
        raise ValueError(f"{workers} workers cannot hold {max_connections:,} connections with "
                         f"{fd_budget:,} each: use at least {needed}")
    if workers > MAX_PROCESSES:
        raise ValueError(f"{max_connections:,} connections need {workers} workers of "
                         f"{fd_budget:,}; tcpmax stops at {MAX_PROCESSES}: raise the "
                         "open-file limit")
    budget = min(fd_budget, math.ceil(max_connections / workers))
    return WorkerPlan(workers, budget, fd_budget)
