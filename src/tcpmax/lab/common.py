"""What every experiment shares: the outcome record, the run context, and small probes.

An experiment module (one per claim, `cNN_*.py`) has `CLAIM`, `METHOD`, a pure
`judge(measurements) -> (Verdict, reason)` and `run(ctx) -> Outcome`. The verdict is always
computed by `judge` from the numbers the run produced, never written by hand, so the unit
tests can feed `judge` measurements and check the verdict logic alone.

Probes here count sockets independently of tcpmax's own counters: `ss` (sock_diag netlink)
and the kernel's sockstat and netstat counters of the current network namespace (read through
host/inspect.py).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tcpmax.host.inspect import read_netstat
from tcpmax.lab.sandbox import in_namespace
from tcpmax.model.facts import HostFacts

__all__ = [
    "Context",
    "Outcome",
    "Skip",
    "Verdict",
    "count_sockets",
    "isolated",
    "listener",
    "netstat_counters",
]


class Verdict(StrEnum):
    CONFIRMED = "CONFIRMED"
    REFUTED = "REFUTED"
    INCONCLUSIVE = "INCONCLUSIVE"
    SKIPPED = "SKIPPED"


class Skip(Exception):
    """Raised by `run` when the experiment cannot run here; the message says why."""


@dataclass(frozen=True)
class Context:
    facts: HostFacts
    sandbox: bool              # experiments may use private network namespaces
    sandbox_why: str           # why not, when they may not
    connections: int = 100_000   # C2's scale
    kernel_bytes: int | None = None   # filled by C7 when it ran first, for C12


@dataclass
class Outcome:
    id: str
    claim: str
    method: str
    verdict: Verdict
    reason: str                 # why this verdict, from the numbers
    isolation: str              # "network namespace", "host loopback", "on paper"
    seconds: float
    measurements: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    plots: dict[str, Any] = field(default_factory=dict)


def isolated(ctx: Context, inside: Callable[[], dict[str, Any]],
             outside: Callable[[], dict[str, Any]] | None = None, *,
             sysctls: dict[str, str] | None = None, label: str = "network namespace",
             host_label: str = "host loopback") -> tuple[dict[str, Any], str]:
    """Measure in a private namespace (with `sysctls`) when allowed, else on the host with
    `outside` (safe parameters; `inside` when none are needed). Returns (measurements, where)."""
    if ctx.sandbox:
        return in_namespace(inside, sysctls), label
    return (outside or inside)(), host_label


def listener(host: str = "127.0.0.1", port: int = 0, backlog: int = 4096) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    return s


def count_sockets(state: str, filter_expr: str) -> int:
    """Sockets in `state` matching an `ss` filter, counted by the kernel's sock_diag."""
    out = subprocess.run(["ss", "-Htn", "state", state, filter_expr], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def netstat_counters(*names: str) -> dict[str, int]:
    """TcpExt counters of this network namespace (0 for a name this kernel lacks)."""
    table = read_netstat().get("TcpExt", {})
    return {n: table.get(n, 0) for n in names}
