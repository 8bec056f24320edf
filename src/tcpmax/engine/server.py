"""`tcpmax serve` as a library: bind the listeners, fork the workers, report what they hold.

Two ways to run it:
- `ServeRun(config).run(...)` supervises in the calling process until SIGTERM/SIGINT or the
  duration ends (the CLI does this);
- `Server(config)` starts that same run in a forked supervisor process and returns at once, so
  a test or `tcpmax prove` can connect to it, read `stats()` from shared memory, and `stop()`.

Listeners are bound in the caller before any fork, so an address in use or a bad host fails
there and then, and port 0 resolves to a real port the caller can read from `addresses`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tcpmax.engine.counters import ACCEPT_ERRNOS, Col, CounterTable, WorkerState
from tcpmax.engine.metrics import MetricsServer
from tcpmax.engine.serve_tls import ServerTls, load_server_tls
from tcpmax.engine.serve_worker import run_worker
from tcpmax.engine.supervisor import Supervisor, fork_child
from tcpmax.host.inspect import read_meminfo, read_sockstat, read_sysctl
from tcpmax.host.process import raise_nofile, rss_bytes
from tcpmax.model.limits import default_min_free
from tcpmax.model.schema import Schema, document
from tcpmax.model.serve import TLS_FAILURES, Mode, ServeConfig, WorkerPlan, plan_workers
from tcpmax.model.ws import HandshakeFailure

__all__ = ["ListenInfo", "ServeRun", "ServeStats", "Server", "WorkerStats", "open_listeners"]


@dataclass(frozen=True)
class ListenInfo:
    host: str
    port: int
    backlog_requested: int
    backlog_effective: int     # what the kernel will use: min(requested, somaxconn)

    @property
    def clamped(self) -> bool:
        return self.backlog_effective < self.backlog_requested


@dataclass(frozen=True)
class WorkerStats:
    slot: int
    pid: int
    state: str
    open: int
    accepted: int
    closed: int
    restarts: int


@dataclass(frozen=True)
class ServeStats:
    workers: int
    workers_alive: int
    open: int
    accepted: int
    closed: int
    bytes_in: int
    bytes_out: int
    pushed: int
    push_skipped: int
    backpressure: int
    idle_closed: int
    accept_errors: dict[str, int]
    accept_pauses: int
    restarts: int
    ws_upgraded: int = 0
    ws_frames_in: int = 0
    ws_frames_out: int = 0
    ws_protocol_errors: int = 0
    ws_handshake_failures: dict[str, int] = field(default_factory=dict)  # by cause
    tls_handshakes: int = 0
    tls_handshake_mean_us: float | None = None  # accept to handshake done
    tls_handshake_failures: dict[str, int] = field(default_factory=dict)  # TLS_* names
    per_worker: tuple[WorkerStats, ...] = field(default=())

    @classmethod
    def from_table(cls, table: CounterTable, n: int) -> ServeStats:
        rows = table.snapshot()[:n]

        def total(col: Col) -> int:
            return CounterTable.total(rows, col)

        errors = {name: total(Col[f"ACCEPT_{name}"]) for name in ACCEPT_ERRNOS}
        errors["other"] = total(Col.ACCEPT_OTHER)
        alive = [r for r in rows if r[Col.STATE] not in (WorkerState.EMPTY, WorkerState.DEAD)]
        tls_done = total(Col.TLS_HANDSHAKES)
        return cls(
            workers=n, workers_alive=len(alive), open=total(Col.OPEN),
            accepted=total(Col.ACCEPTED), closed=total(Col.CLOSED),
            bytes_in=total(Col.BYTES_IN), bytes_out=total(Col.BYTES_OUT),
            pushed=total(Col.PUSHED), push_skipped=total(Col.PUSH_SKIPPED),
            backpressure=total(Col.BACKPRESSURE), idle_closed=total(Col.IDLE_CLOSED),
            accept_errors=errors, accept_pauses=total(Col.ACCEPT_PAUSES),
            restarts=total(Col.RESTARTS),
            ws_upgraded=total(Col.WS_UPGRADED), ws_frames_in=total(Col.WS_FRAMES_IN),
            ws_frames_out=total(Col.WS_FRAMES_OUT),
            ws_protocol_errors=total(Col.WS_PROTOCOL_ERRORS),
            ws_handshake_failures={c.value: total(Col[f"WS_FAIL_{c.name}"])
                                   for c in HandshakeFailure},
            tls_handshakes=tls_done,
            tls_handshake_mean_us=(round(total(Col.TLS_HANDSHAKE_US) / tls_done, 1)
                                   if tls_done else None),
            tls_handshake_failures={name: total(Col[f"TLS_FAIL_{name[4:]}"])
                                    for name in TLS_FAILURES},
            per_worker=tuple(WorkerStats(i, r[Col.PID], WorkerState(r[Col.STATE]).name.lower(),
                                         r[Col.OPEN], r[Col.ACCEPTED], r[Col.CLOSED],
                                         r[Col.RESTARTS]) for i, r in enumerate(rows)))


def _somaxconn() -> int | None:
    try:
        return int(read_sysctl("net.core.somaxconn"))
    except (OSError, ValueError):
        return None


# ws without TLS: TCP_DEFER_ACCEPT (1 s) on the listeners, so a connection reaches accept()
# with its upgrade request already in, and the worker reads it at once (serve_worker's
# EARLY_READ): one epoll wake-up less per upgrade, ~8 us less server CPU, measured
# (docs/benchmarks.md). A client that never speaks waits in the kernel as a request sock
# (no fd, no accept) until the kernel's retry a second later, then --handshake-timeout runs.
# A module switch so bench/bench_serve.py can compare both ways in one run.
DEFER_WS = True


class ListenError(OSError):
    """Binding or listening on one port failed (EADDRINUSE, EADDRNOTAVAIL, EACCES...);
    `port` names the one, so a busy port in a range of ten can be told apart."""

    def __init__(self, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.port = port


def open_listeners(cfg: ServeConfig) -> tuple[list[socket.socket], list[ListenInfo]]:
    """Bind and listen on every port; raises `ListenError` naming the port that failed."""
    somaxconn = _somaxconn()
    requested = cfg.backlog if cfg.backlog is not None else (somaxconn or 4096)
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    socks: list[socket.socket] = []
    infos: list[ListenInfo] = []
    try:
        for port in cfg.ports:
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if DEFER_WS and cfg.mode is Mode.WS and cfg.tls is None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
            try:
                s.bind((cfg.host, port))
                s.listen(requested)
            except OSError as exc:
                raise ListenError(port, exc) from exc
            s.setblocking(False)
            effective = min(requested, somaxconn) if somaxconn else requested
            infos.append(ListenInfo(cfg.host, s.getsockname()[1], requested, effective))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks, infos


# How often serve compares MemAvailable with its floor: reading meminfo costs ~20 us.
FLOOR_CHECK_EVERY = 0.25


class ServeRun:
    """One supervised serve run in the calling process."""

    def __init__(self, cfg: ServeConfig, listeners: list[socket.socket] | None = None,
                 infos: list[ListenInfo] | None = None, tls: ServerTls | None = None) -> None:
        """`tls`: the context `load_server_tls(cfg.tls)` built, when the caller needed it
        before binding (the CLI writes a self-signed certificate out first)."""
        self.cfg = cfg
        nofile = raise_nofile()
        self.plan: WorkerPlan = plan_workers(cfg.max_connections, nofile,
                                             len(os.sched_getaffinity(0)), cfg.workers)
        # Built once here, before any fork (and before binding): the workers share the
        # certificate and its context, and a self-signed one is the same in every worker.
        self.tls: ServerTls | None = tls
        if cfg.tls is not None and tls is None:
            try:
                self.tls = load_server_tls(cfg.tls)
            except BaseException:
                for sock in listeners or ():
                    sock.close()
                raise
        if listeners is None:
            listeners, infos = open_listeners(cfg)
        self.listeners = listeners
        self.infos = infos or []
        self.table = CounterTable(self.plan.workers)
        self.min_free = (cfg.min_free if cfg.min_free is not None
                         else default_min_free(read_meminfo().get("MemTotal")))
        self.floor_active = False
        self.floor_reached = 0                  # times MemAvailable went under the floor
        self.mem_available: int | None = None
        self.metrics: MetricsServer | None = None
        if cfg.metrics is not None:
            try:
                self.metrics = MetricsServer(*cfg.metrics, self.snapshot)
            except BaseException:
                for sock in self.listeners:
                    sock.close()
                raise

    def stats(self) -> ServeStats:
        return ServeStats.from_table(self.table, self.plan.workers)

    def rss_bytes(self) -> int:
        """Resident memory of the live workers (shared pages count in each)."""
        return rss_bytes(pid for pid in self.worker_pids() if pid)

    def snapshot(self) -> dict[str, Any]:
        """Everything /stats reports: worker counters, listeners, memory, kernel sockets."""
        data = document(Schema.SERVE_STATS, self.stats(), listeners=self.infos)
        data["rss_bytes"] = self.rss_bytes()
        data["tls"] = None if self.tls is None else {
            "sha256": self.tls.sha256, "self_signed": bool(self.tls.names),
            "names": list(self.tls.names)}
        data["memory_floor"] = {"min_free_bytes": self.min_free, "active": self.floor_active,
                                "times_reached": self.floor_reached,
                                "mem_available_bytes": self.mem_available}
        try:
            sock = read_sockstat()
            data["kernel"] = {"tcp_inuse": sock.tcp_inuse, "tcp_time_wait": sock.tcp_time_wait,
                              "tcp_mem_bytes": sock.tcp_mem_pages * os.sysconf("SC_PAGE_SIZE"),
                              "sockets_used": sock.sockets_used}
        except (OSError, KeyError, ValueError):
            data["kernel"] = None
        return data

    def check_memory_floor(self, log: Callable[[str], None] | None = None) -> None:
        """Stop every worker accepting while MemAvailable is under the floor, and let them
        go on once it is a tenth above it (no flapping). Written into every row at each
        check, so a replaced worker learns it too."""
        available = read_meminfo().get("MemAvailable")
        self.mem_available = available
        if available is None:
            return
        if not self.floor_active and available < self.min_free:
            self.floor_active = True
            self.floor_reached += 1
            if log is not None:
                log(f"memory floor: MemAvailable {available:,} B < --min-free "
                    f"{self.min_free:,} B; accepting nothing until it recovers")
        elif self.floor_active and available > self.min_free * 1.1:
            self.floor_active = False
            if log is not None:
                log(f"memory floor cleared: MemAvailable {available:,} B; accepting again")
        for slot in range(self.plan.workers):
            self.table.set(slot, Col.MEM_FLOOR, int(self.floor_active))

    def worker_pids(self) -> list[int]:
        return [self.table.get(i, Col.PID) for i in range(self.plan.workers)]

    def run(self, *, tick: Callable[[], None] | None = None,
            extra: dict[int, Callable[[], None]] | None = None,
            ready: Callable[[], None] | None = None,
            log: Callable[[str], None] | None = None) -> str:
        budget = self.plan.budget
        tls_context = None if self.tls is None else self.tls.context

        def worker(slot: int) -> None:
            run_worker(self.cfg, self.listeners, self.table, slot, budget, tls_context)

        self.supervisor = Supervisor(self.plan.workers, worker, self.table,
                                     grace=self.cfg.grace + (self.cfg.drain_timeout
                                                             if self.cfg.drain else 0),
                                     log=log)
        extra = dict(extra or {})
        if self.metrics is not None:
            extra[self.metrics.fileno()] = self.metrics.handle
        next_check = 0.0

        def guarded_tick() -> None:
            nonlocal next_check
            now = time.monotonic()
            if now >= next_check:
                next_check = now + FLOOR_CHECK_EVERY
                self.check_memory_floor(log)
            if tick is not None:
                tick()

        self.check_memory_floor(log)          # before the first fork: never accept under it
        try:
            return self.supervisor.run(duration=self.cfg.duration, tick=guarded_tick,
                                       extra=extra, ready=ready)
        finally:
            for s in self.listeners:
                s.close()
            if self.metrics is not None:
                self.metrics.close()


class Server:
    """`tcpmax serve` in a background supervisor process, for tests and experiments.

    Building one binds nothing. `start()` binds the listeners, forks the supervisor (which
    forks the workers and dies with this process), waits until every worker runs and
    returns the server; `stop()` sends SIGTERM, escalates to SIGKILL after `timeout` and
    reaps it. As a context manager it starts on entry and stops on exit. While it runs,
    `addresses` are the bound (host, port) pairs (port 0 resolved), `stats()` the counters
    read from shared memory, `plan` the worker count and budgets.

    Args:
        cfg: what to serve: address, ports, mode, bounds (`tcpmax.ServeConfig`).

    Raises (from `start`):
        OSError: a listener could not be bound (EADDRINUSE, EADDRNOTAVAIL, ...).
        TlsServerError: `cfg.tls` names a certificate or key that cannot serve.
        TimeoutError: the workers did not start in time (everything started is stopped).

    Example:
        >>> from tcpmax import ServeConfig, Server
        >>> with Server(ServeConfig(ports=(0,), max_connections=1000)) as srv:
        ...     host, port = srv.addresses[0]
        ...     open_now = srv.stats().open
    """

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self._run: ServeRun | None = None
        self.pid = 0

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self._run is not None, "start() first"
        return [(i.host, i.port) for i in self._run.infos]

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        assert self._run is not None, "start() first"
        return None if self._run.metrics is None else self._run.metrics.address

    @property
    def tls(self) -> ServerTls | None:
        """The certificate served (PEM, SHA-256) when the config asks for TLS."""
        assert self._run is not None, "start() first"
        return self._run.tls

    @property
    def plan(self) -> WorkerPlan:
        assert self._run is not None, "start() first"
        return self._run.plan

    def start(self, timeout: float = 10.0) -> Server:
        run = ServeRun(self.cfg)

        def supervise() -> None:
            run.run(log=lambda msg: None)

        self.pid = fork_child(supervise)
        self._run = run
        for s in run.listeners:
            s.close()     # the supervisor and workers hold their own copies
        if run.metrics is not None:
            run.metrics.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = run.table.snapshot()
            if all(r[Col.STATE] == WorkerState.RUNNING for r in rows):
                return self
            time.sleep(0.01)
        self.stop()
        raise TimeoutError(f"serve workers did not start within {timeout} s")

    def stats(self) -> ServeStats:
        assert self._run is not None, "start() first"
        return self._run.stats()

    def worker_pids(self) -> list[int]:
        assert self._run is not None, "start() first"
        return self._run.worker_pids()

    def stop(self, timeout: float = 15.0) -> None:
        if not self.pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, _status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.pid = 0

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
