"""`tcpmax load` as a library: choose sources, plan ports, run the workers, measure.

`LoadRun(config).run()` blocks until the load is done (ramp, hold, teardown) or stopped by
SIGINT/SIGTERM, and returns a `LoadResult` with everything measured. The supervisor samples
the shared counters every 0.1 s for the ramp curve and the peak; when every worker has
finished its ramp it sets one release time, so all of them hold together for --hold and then
tear down.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hdrh.histogram import HdrHistogram

from tcpmax.engine import native
from tcpmax.engine.counters import LOAD_ERRNOS, Col, CounterTable
from tcpmax.engine.load_worker import (
    CONTROL_RELEASE_MS,
    CONTROL_STOP_OPENING,
    new_histogram,
    run_load_worker,
)
from tcpmax.engine.sockopts import IP_BIND_ADDRESS_NO_PORT
from tcpmax.engine.supervisor import Supervisor
from tcpmax.engine.tls import client_context
from tcpmax.host.inspect import (
    LIVE_PROC,
    read_host,
    read_listening_ports,
    read_meminfo,
    read_route,
    read_sockstat,
)
from tcpmax.host.process import process_memory, raise_nofile
from tcpmax.model.errors import classify_name
from tcpmax.model.facts import PortRange, Sockstat
from tcpmax.model.limits import default_min_free
from tcpmax.model.load import (
    Endpoint,
    LoadConfig,
    LoadPlan,
    PortStrategy,
    loopback_sources,
    plan_load,
    sources_needed,
    usable_port_list,
)
from tcpmax.model.worker_result import WorkerResult, decode_worker_result

__all__ = ["ErrorCount", "LoadError", "LoadProgress", "LoadResult", "LoadRun", "merge_histograms",
           "percentiles", "route_sources"]


class LoadError(RuntimeError):
    """The load cannot start as asked (no route, no source address); nothing was started."""


@dataclass(frozen=True)
class LoadProgress:
    """A live view of a run, passed to `LoadRun.run`'s `on_progress` about once a second."""

    elapsed: float
    established: int
    target: int
    attempted: int
    in_flight: int
    errors: dict[str, int]
    rate: float                      # established per second over the last sample window


@dataclass(frozen=True)
class ErrorCount:
    """Connects that failed with one errno in a run, with what it means and what to do."""

    name: str            # "EADDRNOTAVAIL", or the number as text when it has no name
    count: int
    meaning: str
    advice: str
    # What the server sent, for failures named by it (UNEXPECTED_REPLY, WS_NOT_HTTP): the
    # first bytes of one such reply, escaped as --expect reads them (model.first_message).
    sample: str | None = None

    @classmethod
    def of(cls, name: str, count: int, sample: str | None = None) -> ErrorCount:
        known = classify_name(name)
        return cls(name, count, known.meaning, known.advice, sample)


@dataclass
class LoadResult:
    """Everything one `LoadRun.run` measured; `tcpmax load --json` writes it as the
    `tcpmax.load/1` document (docs/json.md).

    `reached` says whether `peak_established` got to `requested`; `stopped_by` is
    "completed", "memory floor" (MemAvailable fell below `min_free_bytes`: no new
    connections were opened after that, the ones open were held and closed as usual), or the
    signal that ended the run early. Latencies are percentiles in
    microseconds (`p50`, `p90`, `p99`, `p999`, `max`, `count`); `errors` lists failed
    connects by errno name, most frequent first, each with its meaning and advice.
    """

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
    errors: list[ErrorCount]          # most frequent first
    per_source: dict[str, int]
    client_rss_bytes: int
    client_private_bytes: int
    kernel_memory_delta_bytes: int | None  # Slab growth from start to the end of the ramp
    tcp_memory_delta_bytes: int | None
    time_wait_before: int | None
    time_wait_after: int | None
    warnings: list[str]
    # TLS runs: handshake time after the TCP connect (percentiles, microseconds), how many
    # completed, and how many per second over the ramp.
    tls_handshake_latency_us: dict[str, int] | None = None
    tls_handshakes: int = 0
    tls_handshake_rate: float = 0.0
    # WebSocket runs: upgrade time (request sent to 101 checked, after TCP and TLS), how
    # many completed, and how many per second over the ramp.
    ws_handshake_latency_us: dict[str, int] | None = None
    ws_handshakes: int = 0
    ws_handshake_rate: float = 0.0
    # --expect runs: time to the expected reply (from --first-message sent, or from the
    # connection ready when the server speaks first), and how many matched.
    reply_latency_us: dict[str, int] | None = None
    replies: int = 0
    min_free_bytes: int = 0                 # the MemAvailable floor this run kept
    # MemAvailable when the floor stopped new connections; None if it never did.
    mem_available_at_floor_bytes: int | None = None
    curve: list[tuple[float, int]] = field(default_factory=list)
    # The merged HdrHistograms themselves (HdrHistogram's own base64 text, by "connect",
    # "message", "tls", "ws", "reply"), so a run split over machines can merge exact percentiles
    # (engine/cluster.py). Added in tcpmax.load/1 without a bump: readers ignore new fields.
    histograms: dict[str, str] = field(default_factory=dict)
    # "c" when the optional C module ran the connects (engine/native.py), else "python";
    # a cluster run lists each machine's, joined by commas.
    connect_path: str = "python"

    @property
    def error_counts(self) -> dict[str, int]:
        """Failed connects by errno name."""
        return {e.name: e.count for e in self.errors}


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


# RFC 2544 / RFC 5180 benchmarking ranges: lab addresses that must never leave the machine.
_BENCHMARKING = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:2::/48"))


def _benchmarking(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in _BENCHMARKING)


def check_lab_routes(endpoints: tuple[Endpoint, ...]) -> None:
    """Refuse a benchmarking-range target the kernel would send through a gateway outside
    that range: such an address belongs to a lab (a `tcpmax fleet`, a namespace), and a route
    out of it means the lab is not up and the load would leave the machine."""
    for host in dict.fromkeys(e.host for e in endpoints):
        if not _benchmarking(host):
            continue
        try:
            route = read_route(host)
        except LookupError:
            continue                   # no route at all: connects fail locally, and are named
        if route.gateway is not None and not _benchmarking(route.gateway):
            raise LoadError(
                f"{host} is in the benchmarking range (RFC 2544), but this host would send "
                f"it out through the gateway {route.gateway}: refused, nothing sent. Bring "
                "the lab up first (tcpmax fleet up) or run from inside its namespaces.")


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
            # No port is taken: the question is the address, and a port range full of
            # TIME_WAIT (EADDRINUSE) must not read as "not local".
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            try:
                s.bind((address, 0))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise LoadError(f"--source {address} is not an address of this host: "
                                    "add it first (ip addr add ADDR/32 dev IFACE) or use "
                                    "--source auto") from None
                # Anything else is the run's to meet and name, connection by connection.


def merge_histograms(encoded: list[bytes]) -> HdrHistogram:
    """One histogram holding every value of the encoded ones (workers', or machines')."""
    h = new_histogram()
    for blob in encoded:
        h.decode_and_add(blob)
    return h


def percentiles(h: HdrHistogram) -> dict[str, int] | None:
    """The percentiles a result shows (microseconds); None for an empty histogram."""
    if h.get_total_count() == 0:
        return None
    return {"p50": h.get_value_at_percentile(50), "p90": h.get_value_at_percentile(90),
            "p99": h.get_value_at_percentile(99), "p999": h.get_value_at_percentile(99.9),
            "max": h.get_max_value(), "count": h.get_total_count()}


@dataclass
class _RunState:
    """What the supervisor's tick learns while a run goes on, and `_result` reads after."""

    started: float                        # time.monotonic() at the start
    slab_before: int | None               # /proc/meminfo Slab at the start
    sockstat_before: Sockstat
    last: tuple[float, int]               # (when, connected) at the last progress report
    next_progress: float = 0.0
    peak: int = 0                         # most connections open at one sample
    peak_at: float = 0.0                  # seconds from the start to that sample
    released: bool = False                # every worker finished its ramp; the hold began
    ramp_done: float | None = None        # seconds from the start to the release
    rss: int = 0                          # workers' resident bytes at the release
    private: int = 0                      # and their private bytes
    slab_after: int | None = None         # Slab at the release
    sockstat_after: Sockstat | None = None
    curve: list[tuple[float, int]] = field(default_factory=list)   # (seconds, open)
    floor_hit: int | None = None          # MemAvailable when the memory floor stopped opening


class LoadRun:
    """One bounded load: opens `cfg.connections` toward `cfg.endpoints`, holds, tears down.

    Building one reads the host (port range, open-file limit, cores), picks source IPs
    (loopback 127.0.0.0/8 addresses for loopback targets, else the addresses of the
    interface that routes to the first endpoint) and plans workers and ports, so
    `plan` can be shown before anything starts. `run()` then forks the workers.

    Args:
        cfg: what to open, from where, how fast, for how long (`tcpmax.model.load`).
        proc_root: where to read /proc (tests point it at a copy).

    Raises:
        LoadError: no route to the endpoint, or no usable source address.
        ValueError: no usable ephemeral port in this host's range (from `plan_load`).

    Example:
        >>> from tcpmax import LoadConfig, LoadRun
        >>> from tcpmax.model.load import Endpoint
        >>> cfg = LoadConfig(connections=10_000, endpoints=(Endpoint("127.0.0.1", 8000),))
        >>> result = LoadRun(cfg).run()                  # doctest: +SKIP
        >>> result.reached, result.connect_latency_us["p99"]  # doctest: +SKIP
        (True, 412)
    """

    def __init__(self, cfg: LoadConfig, proc_root: Path = LIVE_PROC) -> None:
        self.cfg = cfg
        check_lab_routes(cfg.endpoints)
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
        # A listener on a port of the range takes that port from explicit binding (and from
        # the kernel's own search) for its address, or for every address when it listens on
        # all of them: such a port is no source port here.
        if proc_root == LIVE_PROC:
            wildcard = {"0.0.0.0", "::"}
            ours = set(sources)
            taken = {port for address, port in read_listening_ports()
                     if address in wildcard or address in ours}
            if taken:
                ports = [p for p in ports if p not in taken]
                self.ports = ports
        self.plan: LoadPlan = plan_load(cfg, sources, len(ports), nofile, cores)
        if cfg.tls is not None:
            try:        # the workers build their own; this one only proves it can be built
                client_context(cfg.tls)
            except (OSError, ssl.SSLError) as exc:
                raise LoadError(f"--ca {cfg.tls.ca_file}: cannot load certificates from it "
                                f"({getattr(exc, 'reason', None) or exc})") from exc
        self.min_free = (cfg.min_free if cfg.min_free is not None
                         else default_min_free(facts.mem_total))
        # One row per worker plus a control row (the release time).
        self.table = CounterTable(self.plan.workers + 1)
        self.control = self.plan.workers

    # -- live view ---------------------------------------------------------------------
    def progress(self, started: float, last: tuple[float, int] | None = None) -> LoadProgress:
        """Counters now: established, attempted, in flight, errors; the rate since `last`."""
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
            log: Callable[[str], None] | None = None,
            release_at: Callable[[float], float | None] | None = None) -> LoadResult:
        """Fork the workers, ramp, hold for `cfg.hold`, tear down; block until done.

        Args:
            on_progress: called with a `LoadProgress` every `progress_every` seconds.
            progress_every: seconds between progress calls.
            log: receives the supervisor's messages (a worker that died, escalation).
            release_at: once every worker has finished its ramp, called at each tick with
                the time (monotonic) that happened; returns the monotonic time the hold
                starts, or None to keep holding without a release (a shard of a cluster run
                waits for the other machines). Default: release at once.

        Returns:
            The `LoadResult`. SIGINT or SIGTERM end the run early (`stopped_by` names it);
            every worker is reaped before this returns.
        """
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
        meminfo = read_meminfo()
        before_mem = meminfo.get("Slab")
        before_sock = read_sockstat()
        started = time.monotonic()
        state = _RunState(started, before_mem, before_sock, last=(started, 0))
        floor = self.min_free

        def check_floor(available: int | None) -> None:
            # Checked before the first fork and at every tick: a run never brings in the
            # OOM killer; it stops opening and reports where it stood.
            if state.floor_hit is None and available is not None and available < floor:
                state.floor_hit = available
                self.table.set(self.control, Col(CONTROL_STOP_OPENING), 1)
                if log is not None:
                    log(f"memory floor: MemAvailable {available:,} B < --min-free {floor:,} B; "
                        "no new connections")

        check_floor(meminfo.get("MemAvailable"))

        def tick() -> None:
            now = time.monotonic()
            rows = self.table.snapshot()[: plan.workers]
            est = CounterTable.total(rows, Col.OPEN)
            state.curve.append((round(now - started, 2), est))
            if est > state.peak:
                state.peak, state.peak_at = est, now - started
            if not state.released:
                check_floor(read_meminfo().get("MemAvailable"))
            live = [i for i, s in enumerate(sup.slots) if s.pid]
            if not state.released and all(rows[i][Col.RAMP_DONE_MS] for i in live):
                if state.ramp_done is None:
                    state.ramp_done = now - started
                    memory = process_memory(sup.alive())
                    state.rss, state.private = memory.rss, memory.private
                    state.slab_after = read_meminfo().get("Slab")
                    state.sockstat_after = read_sockstat()
                hold_from = now if release_at is None else release_at(started + state.ramp_done)
                if hold_from is not None:
                    state.released = True
                    self.table.set(self.control, Col(CONTROL_RELEASE_MS),
                                   int((hold_from + cfg.hold) * 1000))
            if on_progress is not None and now >= state.next_progress:
                state.next_progress = now + progress_every
                on_progress(self.progress(started, state.last))
                state.last = (now, CounterTable.total(rows, Col.CONNECTED))

        try:
            stopped_by = sup.run(tick=tick, tick_every=0.1,
                                 extra={r: reader(r) for r, _w in pipes})
        finally:
            for _r, w in pipes:
                os.close(w)
        results: list[WorkerResult] = []
        for r, _w in pipes:
            with contextlib.suppress(OSError):
                os.set_blocking(r, True)
                while chunk := os.read(r, 1 << 20):
                    buffers[r].extend(chunk)
            os.close(r)
            record = decode_worker_result(bytes(buffers[r]))
            if record is not None:      # None: the worker died before it could report
                results.append(record)
        return self._result(stopped_by, results, state)

    def _result(self, stopped_by: str, results: list[WorkerResult],
                state: _RunState) -> LoadResult:
        cfg, plan = self.cfg, self.plan
        rows = self.table.snapshot()[: plan.workers]
        total = CounterTable.total
        errors: dict[str, int] = {}
        samples: dict[str, str] = {}
        per_source: dict[str, int] = {}
        for res in results:
            for name, count in res.errors.items():
                errors[name] = errors.get(name, 0) + count
            for name, sample in res.samples.items():
                samples.setdefault(name, sample)
            for src, count in res.per_source.items():
                per_source[src] = per_source.get(src, 0) + count
        final = sum(r.final_open for r in results)     # all held at the release time
        peak = max(state.peak, final)
        kernel_delta = None
        if state.slab_before is not None and state.slab_after is not None:
            # Slab growth: see engine/memprobe.py
            kernel_delta = state.slab_after - state.slab_before
        sock_after, before_sock = state.sockstat_after, state.sockstat_before
        page = os.sysconf("SC_PAGE_SIZE")
        tcp_mem_delta = (None if sock_after is None else
                         (sock_after.tcp_mem_pages - before_sock.tcp_mem_pages) * page)
        time_to_peak = max(1e-6, state.peak_at)
        try:
            tw_after: int | None = read_sockstat().tcp_time_wait
        except (OSError, KeyError, ValueError):
            tw_after = None
        hists = {"connect": merge_histograms([r.connect_hist for r in results]),
                 "message": merge_histograms([r.msg_hist for r in results
                                              if r.msg_hist is not None]),
                 "tls": merge_histograms([r.tls_hist for r in results
                                          if r.tls_hist is not None]),
                 "ws": merge_histograms([r.ws_hist for r in results
                                         if r.ws_hist is not None]),
                 "reply": merge_histograms([r.reply_hist for r in results
                                            if r.reply_hist is not None])}
        tls_latency = percentiles(hists["tls"])
        ws_latency = percentiles(hists["ws"])
        reply_latency = percentiles(hists["reply"])
        if stopped_by == "finished":
            stopped_by = "completed" if state.floor_hit is None else "memory floor"
        # Exact ramp: the workers stamp CLOCK_MONOTONIC (system-wide) at their last attempt.
        done_ms = [r[Col.RAMP_DONE_MS] for r in rows if r[Col.RAMP_DONE_MS]]
        if done_ms and len(done_ms) == plan.workers:
            state.ramp_done = max(done_ms) / 1000 - state.started
        return LoadResult(
            requested=cfg.connections, reached=peak >= cfg.connections,
            stopped_by=stopped_by, strategy=plan.strategy.value, workers=plan.workers,
            sources=len(plan.sources), endpoints=[str(e) for e in cfg.endpoints],
            peak_established=peak, final_established=final,
            ramp_seconds=round(state.ramp_done or 0.0, 3),
            time_to_peak_seconds=round(time_to_peak, 3),
            ramp_rate=round(peak / time_to_peak, 1),
            connect_latency_us=percentiles(hists["connect"]) or {},
            message_latency_us=percentiles(hists["message"]),
            messages_sent=total(rows, Col.MSG_SENT), messages_received=total(rows, Col.MSG_RECV),
            bytes_sent=total(rows, Col.BYTES_OUT), bytes_received=total(rows, Col.BYTES_IN),
            peer_closed=total(rows, Col.PEER_CLOSED),
            errors=[ErrorCount.of(name, count, samples.get(name))
                    for name, count in sorted(errors.items(), key=lambda kv: -kv[1])],
            per_source=per_source, client_rss_bytes=state.rss,
            client_private_bytes=state.private,
            kernel_memory_delta_bytes=kernel_delta, tcp_memory_delta_bytes=tcp_mem_delta,
            time_wait_before=before_sock.tcp_time_wait, time_wait_after=tw_after,
            warnings=list(plan.warnings), min_free_bytes=self.min_free,
            tls_handshake_latency_us=tls_latency,
            tls_handshakes=tls_latency["count"] if tls_latency else 0,
            tls_handshake_rate=round((tls_latency["count"] if tls_latency else 0)
                                     / max(1e-6, state.ramp_done or time_to_peak), 1),
            ws_handshake_latency_us=ws_latency,
            ws_handshakes=ws_latency["count"] if ws_latency else 0,
            ws_handshake_rate=round((ws_latency["count"] if ws_latency else 0)
                                    / max(1e-6, state.ramp_done or time_to_peak), 1),
            reply_latency_us=reply_latency,
            replies=reply_latency["count"] if reply_latency else 0,
            mem_available_at_floor_bytes=state.floor_hit, curve=_thin(state.curve, 600),
            histograms={name: h.encode().decode("ascii")
                        for name, h in hists.items() if h.get_total_count()},
            connect_path=native.connect_path(
                cfg.tls is None and cfg.ws is None and cfg.first_message is None
                and cfg.expect is None,
                socket.AF_INET6 if ":" in cfg.endpoints[0].host else socket.AF_INET,
                [*plan.sources, *(e.host for e in cfg.endpoints)]))


def _thin(curve: list[tuple[float, int]], most: int) -> list[tuple[float, int]]:
    if len(curve) <= most:
        return curve
    step = len(curve) / most
    return [curve[int(i * step)] for i in range(most)] + [curve[-1]]
