"""`tcpmax load` as a library: choose sources, plan ports, run the workers, measure.

`LoadRun(config).run()` blocks until the load is done (ramp, hold, teardown) or stopped by
SIGINT/SIGTERM, and returns a `LoadResult` with everything measured. The supervisor samples
the shared counters every 0.1 s for the ramp curve and the peak; when every worker has
finished its ramp it sets one release time, so all of them hold together for --hold and then
tear down.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import ipaddress
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcpmax.engine.counters import LOAD_ERRNOS, Col, CounterTable
from tcpmax.engine.load_worker import CONTROL_RELEASE_MS, new_histogram, run_load_worker
from tcpmax.engine.supervisor import Supervisor
from tcpmax.host.inspect import LIVE_PROC, read_host, read_meminfo, read_route, read_sockstat
from tcpmax.host.process import process_memory, raise_nofile
from tcpmax.model.errors import classify
from tcpmax.model.facts import PortRange
from tcpmax.model.load import (
    LoadConfig,
    LoadPlan,
    PortStrategy,
    loopback_sources,
    plan_load,
    sources_needed,
    usable_port_list,
)

__all__ = ["LoadError", "LoadProgress", "LoadResult", "LoadRun", "route_sources"]

RESULT_SCHEMA = "tcpmax.load/1"


class LoadError(RuntimeError):
    """The load cannot start as asked (no route, no source address); nothing was started."""


@dataclass(frozen=True)
class LoadProgress:
    elapsed: float
    established: int
    target: int
    attempted: int
    in_flight: int
    errors: dict[str, int]
    rate: float                      # established per second over the last sample window


@dataclass
class LoadResult:
    schema: str
    requested: int
    reached: bool
    stopped_by: str
    strategy: str
    workers: int
    sources: int
    endpoints: list[str]
    peak_established: int
    final_established: int
    ramp_seconds: float               # start until every worker made its last attempt
    time_to_peak_seconds: float
    ramp_rate: float                  # peak / time to peak
    connect_latency_us: dict[str, int]
    message_latency_us: dict[str, int] | None
    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int
    peer_closed: int
    errors: list[dict[str, Any]]
    per_source: dict[str, int]
    client_rss_bytes: int
    client_private_bytes: int
    kernel_memory_delta_bytes: int | None  # Slab growth from start to the end of the ramp
    tcp_memory_delta_bytes: int | None
    time_wait_before: int | None
    time_wait_after: int | None
    warnings: list[str]
    curve: list[tuple[float, int]] = field(default_factory=list)


def route_sources(destination: str) -> tuple[str, ...]:
    """The addresses of the interface that routes to `destination` (same IP version), the
    kernel's preferred source first; LoadError when there is none."""
    try:
        route = read_route(destination)
    except LookupError as exc:
        raise LoadError(str(exc)) from exc
    version = ipaddress.ip_address(destination).version
    usable = [a for a in route.addresses if ipaddress.ip_address(a).version == version
              and not ipaddress.ip_address(a).is_link_local]
    if route.preferred in usable:
        usable.remove(route.preferred)
        usable.insert(0, route.preferred)
    if not usable:
        raise LoadError(f"the interface routing to {destination} has no IPv{version} address")
    return tuple(usable)


# Binding each address once is exact but costs a socket each: past this many, a spread sample
# is checked (a CIDR is local or not as a whole in every setup we know of).
_CHECK_ALL_SOURCES = 65_536


def check_sources(sources: tuple[str, ...], family: int) -> None:
    """Refuse, before anything connects, a --source that is not an address of this host: the
    kernel would answer every connect with EADDRNOTAVAIL, which reads as port exhaustion."""
    step = max(1, len(sources) // _CHECK_ALL_SOURCES)
    sample = [*sources[::step], sources[-1]]
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    for address in dict.fromkeys(sample):
        with socket.socket(af, socket.SOCK_STREAM) as s:
            try:
                s.bind((address, 0))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise LoadError(f"--source {address} is not an address of this host: "
                                    "add it first (ip addr add ADDR/32 dev IFACE) or use "
                                    "--source auto") from None
                raise LoadError(f"--source {address}: {exc.strerror}") from None


def _percentiles(encoded: list[str]) -> dict[str, int] | None:
    h = new_histogram()
    for blob in encoded:
        h.decode_and_add(base64.b64decode(blob))
    if h.get_total_count() == 0:
        return None
    return {"p50": h.get_value_at_percentile(50), "p90": h.get_value_at_percentile(90),
            "p99": h.get_value_at_percentile(99), "p999": h.get_value_at_percentile(99.9),
            "max": h.get_max_value(), "count": h.get_total_count()}


class LoadRun:
    def __init__(self, cfg: LoadConfig, proc_root: Path = LIVE_PROC) -> None:
        self.cfg = cfg
        facts = read_host(proc_root)
        port_range = facts.port_range or PortRange(32768, 60999)
        ports = usable_port_list(port_range, facts.reserved_ports or ())
        self.ports = ports
        nofile = raise_nofile()
        cores = len(os.sched_getaffinity(0))
        family = ipaddress.ip_address(cfg.endpoints[0].host).version   # one, by LoadConfig
        sources = cfg.sources
        if sources is None:
            if family == 4 and all(e.is_loopback for e in cfg.endpoints):
                sources = loopback_sources(sources_needed(cfg.connections, len(cfg.endpoints),
                                                          len(ports)))
            else:
                # IPv6 loopback is ::1 alone unless more were added to lo: ask the route.
                sources = route_sources(cfg.endpoints[0].host)
        else:
            check_sources(sources, family)
        self.plan: LoadPlan = plan_load(cfg, sources, len(ports), nofile, cores)
        # One row per worker plus a control row (the release time).
        self.table = CounterTable(self.plan.workers + 1)
        self.control = self.plan.workers

    # -- live view ---------------------------------------------------------------------
    def progress(self, started: float, last: tuple[float, int] | None = None) -> LoadProgress:
        rows = self.table.snapshot()[: self.plan.workers]
        total = CounterTable.total
        errors = {name: total(rows, Col[f"ERR_{name}"]) for name in LOAD_ERRNOS}
        errors["other"] = total(rows, Col.ERR_OTHER)
        now = time.monotonic()
        est = total(rows, Col.OPEN)
        rate = 0.0
        if last is not None and now > last[0]:
            rate = (total(rows, Col.CONNECTED) - last[1]) / (now - last[0])
        return LoadProgress(now - started, est, self.cfg.connections,
                            total(rows, Col.ATTEMPTED), total(rows, Col.IN_FLIGHT),
                            {k: v for k, v in errors.items() if v}, rate)

    def run(self, on_progress: Callable[[LoadProgress], None] | None = None,
            progress_every: float = 1.0,
            log: Callable[[str], None] | None = None) -> LoadResult:
        cfg, plan = self.cfg, self.plan
        pipes = [os.pipe() for _ in range(plan.workers)]
        buffers: dict[int, bytearray] = {r: bytearray() for r, _w in pipes}
        ports = self.ports if plan.strategy is PortStrategy.EXPLICIT else None

        def worker(slot: int) -> None:
            for i, (r, w) in enumerate(pipes):
                os.close(r)
                if i != slot:
                    os.close(w)
            run_load_worker(cfg, plan.strategy, plan.shares[slot], self.table, slot,
                            self.control, plan.workers, ports, pipes[slot][1])

        def reader(fd: int) -> Callable[[], None]:
            def read() -> None:
                with contextlib.suppress(BlockingIOError):
                    buffers[fd].extend(os.read(fd, 1 << 20))
            return read

        sup = Supervisor(plan.workers, worker, self.table, restart=False, grace=5.0, log=log)
        before_mem = read_meminfo().get("Slab")
        before_sock = read_sockstat()
        started = time.monotonic()
        state: dict[str, Any] = {"started": started, "peak": 0, "peak_at": 0.0,
                                 "released": False,
                                 "ramp_done": None, "mem": (0, 0), "mem_avail": None,
                                 "sock": None, "last": (started, 0), "next_progress": 0.0}
        curve: list[tuple[float, int]] = []

        def tick() -> None:
            now = time.monotonic()
            rows = self.table.snapshot()[: plan.workers]
            est = CounterTable.total(rows, Col.OPEN)
            curve.append((round(now - started, 2), est))
            if est > state["peak"]:
                state["peak"], state["peak_at"] = est, now - started
            live = [i for i, s in enumerate(sup.slots) if s.pid]
            if not state["released"] and all(rows[i][Col.RAMP_DONE_MS] for i in live):
                state["released"] = True
                state["ramp_done"] = now - started
                memory = process_memory(sup.alive())
                state["mem"] = (memory.rss, memory.private)
                state["mem_avail"] = read_meminfo().get("Slab")
                state["sock"] = read_sockstat()
                self.table.set(self.control, Col(CONTROL_RELEASE_MS),
                               int((now + cfg.hold) * 1000))
            if on_progress is not None and now >= state["next_progress"]:
                state["next_progress"] = now + progress_every
                on_progress(self.progress(started, state["last"]))
                state["last"] = (now, CounterTable.total(rows, Col.CONNECTED))

        try:
            stopped_by = sup.run(tick=tick, tick_every=0.1,
                                 extra={r: reader(r) for r, _w in pipes})
        finally:
            for _r, w in pipes:
                os.close(w)
        results = []
        for r, _w in pipes:
            with contextlib.suppress(OSError):
                os.set_blocking(r, True)
                while chunk := os.read(r, 1 << 20):
                    buffers[r].extend(chunk)
            os.close(r)
            data = bytes(buffers[r])
            if len(data) >= 4:
                (size,) = struct.unpack_from("I", data)
                results.append(json.loads(data[4:4 + size]))
        return self._result(stopped_by, results, state, curve, before_mem, before_sock)

    def _result(self, stopped_by: str, results: list[dict[str, Any]], state: dict[str, Any],
                curve: list[tuple[float, int]], before_mem: int | None,
                before_sock: Any) -> LoadResult:
        cfg, plan = self.cfg, self.plan
        rows = self.table.snapshot()[: plan.workers]
        total = CounterTable.total
        errors: dict[str, int] = {}
        per_source: dict[str, int] = {}
        for res in results:
            for name, count in res["errors"].items():
                errors[name] = errors.get(name, 0) + count
            for src, count in res["per_source"].items():
                per_source[src] = per_source.get(src, 0) + count
        final = sum(r["final_open"] for r in results)     # all held at the release time
        peak = max(state["peak"], final)
        kernel_delta = None
        after_mem = state["mem_avail"]
        rss, private = state["mem"]
        if before_mem is not None and after_mem is not None:
            kernel_delta = after_mem - before_mem      # Slab growth: see engine/memprobe.py
        sock_after = state["sock"]
        page = os.sysconf("SC_PAGE_SIZE")
        tcp_mem_delta = (None if sock_after is None else
                         (sock_after.tcp_mem_pages - before_sock.tcp_mem_pages) * page)
        time_to_peak = max(1e-6, state["peak_at"])
        try:
            tw_after: int | None = read_sockstat().tcp_time_wait
        except (OSError, KeyError, ValueError):
            tw_after = None
        if stopped_by == "finished":
            stopped_by = "completed"
        # Exact ramp: the workers stamp CLOCK_MONOTONIC (system-wide) at their last attempt.
        done_ms = [r[Col.RAMP_DONE_MS] for r in rows if r[Col.RAMP_DONE_MS]]
        if done_ms and len(done_ms) == plan.workers:
            state["ramp_done"] = max(done_ms) / 1000 - state["started"]
        return LoadResult(
            schema=RESULT_SCHEMA, requested=cfg.connections, reached=peak >= cfg.connections,
            stopped_by=stopped_by, strategy=plan.strategy.value, workers=plan.workers,
            sources=len(plan.sources), endpoints=[str(e) for e in cfg.endpoints],
            peak_established=peak, final_established=final,
            ramp_seconds=round(state["ramp_done"] or 0.0, 3),
            time_to_peak_seconds=round(time_to_peak, 3),
            ramp_rate=round(peak / time_to_peak, 1),
            connect_latency_us=_percentiles([r["connect_hist"] for r in results]) or {},
            message_latency_us=_percentiles([r["msg_hist"] for r in results
                                             if r["msg_hist"]]),
            messages_sent=total(rows, Col.MSG_SENT), messages_received=total(rows, Col.MSG_RECV),
            bytes_sent=total(rows, Col.BYTES_OUT), bytes_received=total(rows, Col.BYTES_IN),
            peer_closed=total(rows, Col.PEER_CLOSED),
            errors=[{"name": name, "count": count, "meaning": classify_name(name).meaning,
                     "advice": classify_name(name).advice}
                    for name, count in sorted(errors.items(), key=lambda kv: -kv[1])],
            per_source=per_source, client_rss_bytes=rss, client_private_bytes=private,
            kernel_memory_delta_bytes=kernel_delta, tcp_memory_delta_bytes=tcp_mem_delta,
            time_wait_before=before_sock.tcp_time_wait, time_wait_after=tw_after,
            warnings=list(plan.warnings), curve=_thin(curve, 600))


def classify_name(name: str) -> Any:
    import errno as _errno

    code = getattr(_errno, name, None)
    return classify(code) if isinstance(code, int) else classify(-1)


def _thin(curve: list[tuple[float, int]], most: int) -> list[tuple[float, int]]:
    if len(curve) <= most:
        return curve
    step = len(curve) / most
    return [curve[int(i * step)] for i in range(most)] + [curve[-1]]
