"""Running experiments in order, turning failures into verdicts, and the report as data."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tcpmax.host.inspect import read_host
from tcpmax.lab import (
    c01_four_tuple,
    c02_one_port,
    c03_port_range,
    c04_port_reuse,
    c05_more_ips,
    c06_fd_limits,
    c07_memory,
    c08_tcp_udp,
    c09_backlog,
    c10_epoll,
    c11_time_wait,
    c12_fleet,
)
from tcpmax.lab.common import Context, Outcome, Skip, Verdict
from tcpmax.lab.sandbox import can_sandbox, sweep_stale

__all__ = ["EXPERIMENTS", "ProveReport", "normalize_ids", "prove"]

EXPERIMENTS: dict[str, ModuleType] = {
    "C1": c01_four_tuple, "C2": c02_one_port, "C3": c03_port_range, "C4": c04_port_reuse,
    "C5": c05_more_ips, "C6": c06_fd_limits, "C7": c07_memory, "C8": c08_tcp_udp,
    "C9": c09_backlog, "C10": c10_epoll, "C11": c11_time_wait, "C12": c12_fleet,
}


def normalize_ids(ids: tuple[str, ...] | list[str]) -> list[str]:
    """``c3`` -> ``C3``; unknown ids raise ValueError; order follows CLAIMS.md."""
    wanted = {i.strip().upper() for i in ids}
    unknown = sorted(wanted - EXPERIMENTS.keys())
    if unknown:
        raise ValueError(f"unknown claim(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(EXPERIMENTS)}")
    return [i for i in EXPERIMENTS if i in wanted] if wanted else list(EXPERIMENTS)


@dataclass
class ProveReport:
    """What `prove` found: one `Outcome` per claim, with where and when it ran.

    `tcpmax prove --json` writes it as the `tcpmax.prove/1` document (docs/json.md).
    """

    started: str
    seconds: float
    host: dict[str, Any]
    isolation: str
    outcomes: list[Outcome]

    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for o in self.outcomes:
            out[o.verdict.value] += 1
        return out


def _failed(mod: ModuleType, cid: str, why: str, verdict: Verdict, seconds: float) -> Outcome:
    return Outcome(cid, mod.CLAIM, mod.METHOD, verdict, why, "-", round(seconds, 2))


def prove(ids: list[str], *, connections: int = 100_000,
          on_start: Callable[[str], None] | None = None,
          on_done: Callable[[Outcome], None] | None = None) -> ProveReport:
    facts = read_host()
    sandbox, why = can_sandbox()
    if sandbox:
        sweep_stale()
    ctx = Context(facts, sandbox, why, connections)
    started = time.time()
    outcomes: list[Outcome] = []
    for cid in ids:
        mod = EXPERIMENTS[cid]
        if on_start is not None:
            on_start(cid)
        t0 = time.monotonic()
        try:
            outcome: Outcome = mod.run(ctx)
            outcome.seconds = round(time.monotonic() - t0, 2)
        except Skip as exc:
            outcome = _failed(mod, cid, f"skipped: {exc}", Verdict.SKIPPED,
                              time.monotonic() - t0)
        except Exception as exc:   # one failing experiment must not sink the others
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            outcome = _failed(mod, cid, f"the experiment could not complete: {detail}",
                              Verdict.INCONCLUSIVE, time.monotonic() - t0)
        # C12 sizes machines with C7's figure only when C7 judged it plausible: a Slab delta
        # disturbed by other programs (a busy host) must not turn into a wrong fleet plan.
        if (cid == "C7" and outcome.verdict is Verdict.CONFIRMED
                and "kernel_bytes_per_socket" in outcome.measurements):
            ctx = dataclasses.replace(ctx, kernel_bytes=outcome.measurements[
                "kernel_bytes_per_socket"])
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)
    host = {"kernel": facts.kernel, "cores": facts.cores, "mem_total": facts.mem_total,
            "nofile_hard": facts.nofile_hard, "port_range": str(facts.port_range),
            "root": os.geteuid() == 0, "python": platform.python_version()}
    isolation = ("private network namespaces (root)" if sandbox else
                 f"host loopback only ({why})")
    return ProveReport(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                       round(time.time() - started, 1), host, isolation, outcomes)
