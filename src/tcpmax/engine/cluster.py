"""`tcpmax load --cluster`: one load over the machines of a Dask cluster, merged into one result.

One Dask worker is one load machine. The coordinator (this module, in the `tcpmax load`
process) connects to the scheduler, checks every worker's tcpmax version, asks each for its
host facts (`read_host`, the reader `doctor` uses) and splits N with `model.cluster`. Each
worker then runs one task that starts a shard process (engine/shard.py: the same `LoadRun`)
and relays between it and the coordinator through two kinds of Dask `Variable`:

- ``tcpmax-RUN-control`` (coordinator -> tasks): the start time, the release time, stop;
- ``tcpmax-RUN-I`` (task I -> coordinator): the shard's last state (ready, progress, ramp
  done).

Every shard starts at one wall-clock time, holds until every live shard finished its ramp,
and releases at one time, so they hold together and tear down together. Clocks are assumed
in sync (NTP), as any distributed load tool assumes. A worker that leaves the cluster is
named and its shard counted as lost; the others finish. Dask moves the tasks of a lost
worker to another one unless told not to: each task is pinned to its worker.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import pickle
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tcpmax.engine.loader import ErrorCount, LoadError, LoadResult, merge_histograms, percentiles
from tcpmax.model.capacity import (
    DEFAULT_KERNEL_BYTES_PER_SOCKET,
    DEFAULT_USER_BYTES_PER_CONNECTION,
    FD_RESERVE_PER_PROCESS,
    MAX_PROCESSES,
)
from tcpmax.model.cluster import (
    Capacity,
    ClusterSplit,
    MachineFacts,
    loopback_blocks,
    split_load,
)
from tcpmax.model.load import LoadConfig

__all__ = ["ClusterError", "ClusterProgress", "ClusterRun", "MachineResult", "MachineState"]

POLL = 0.5             # seconds between looks at the shards (coordinator and relays): little
                       # chatter, since the load machines' CPUs are the load's
READY_TIMEOUT = 60.0   # every shard planned and waiting, or the run does not start
STOP_GRACE = 20.0      # after a stop, how long shards get to report before they are lost


class ClusterError(RuntimeError):
    """The cluster run cannot start: scheduler unreachable, no worker, a version that differs,
    a split that cannot reach N. Nothing was started; the message says what to do."""


def _tcpmax_version() -> str:
    import tcpmax
    return tcpmax.__version__


def _machine_facts(cfg: LoadConfig) -> dict[str, Any]:
    """Run on each worker: what this machine can give the run (see `MachineFacts`)."""
    from tcpmax.engine.loader import check_sources, route_sources
    from tcpmax.host.inspect import read_host
    from tcpmax.model.facts import PortRange
    from tcpmax.model.limits import default_min_free
    from tcpmax.model.load import usable_port_list
    try:
        facts = read_host()
        port_range = facts.port_range or PortRange(32768, 60999)
        ports = len(usable_port_list(port_range, facts.reserved_ports or ()))
        if cfg.sources is not None:
            family = 6 if ":" in cfg.endpoints[0].host else 4
            check_sources(cfg.sources, family)
            sources = len(cfg.sources)
        elif all(e.is_loopback for e in cfg.endpoints) and ":" not in cfg.endpoints[0].host:
            sources = 250 * 250 * 126       # loopback_sources' reach in 127.0.0.0/8
        else:
            sources = len(route_sources(cfg.endpoints[0].host))
        nofile = facts.nofile_hard or 1024
        min_free = (cfg.min_free if cfg.min_free is not None
                    else default_min_free(facts.mem_total))
        return {"host": socket.gethostname(), "fd_budget": nofile - FD_RESERVE_PER_PROCESS,
                "processes": cfg.workers or MAX_PROCESSES, "usable_ports": ports,
                "sources": sources, "memory": max(0, (facts.mem_available or 0) - min_free),
                "bytes_per_connection": (DEFAULT_KERNEL_BYTES_PER_SOCKET
                                         + DEFAULT_USER_BYTES_PER_CONNECTION)}
    except (OSError, ValueError, LoadError) as exc:
        return {"error": str(exc)}


def _run_shard(run_id: str, index: int, blob: str) -> dict[str, Any]:
    """The Dask task: start the shard process, relay its state and the coordinator's
    commands, return its result document. The shard never outlives this function."""
    from distributed import Variable

    status = Variable(f"tcpmax-{run_id}-{index}")
    control = Variable(f"tcpmax-{run_id}-control")
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax.engine.shard"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream: Any) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    state: dict[str, Any] = {"ready": False, "ramp_done": False, "progress": None,
                             "failed": None}
    result: dict[str, Any] | None = None
    sent: set[str] = set()
    eof = False

    def tell(word: str) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(word + "\n")
            proc.stdin.flush()

    try:
        tell(blob)
        while not eof:
            changed = False
            deadline = time.monotonic() + POLL
            while (wait := deadline - time.monotonic()) > 0:
                try:
                    line = lines.get(timeout=wait)
                except queue.Empty:
                    break
                if line is None:
                    eof = True
                    break
                msg = _json(line)
                kind = msg.get("event")
                if kind == "result":
                    result = msg["doc"]
                elif kind == "progress":
                    state["progress"] = msg
                elif kind in ("ready", "ramp_done"):
                    state[kind] = True
                    state["plan"] = msg if kind == "ready" else state.get("plan")
                elif kind == "failed":
                    state["failed"] = msg.get("error")
                changed = True
            if changed:
                status.set(dict(state))
            try:
                ctl = control.get(timeout=5)
            except Exception:           # the scheduler or the coordinator is gone
                ctl = {"stop": True}
            if ctl.get("stop") and "stop" not in sent:
                sent.add("stop")
                tell("stop")        # the shard stops as on SIGTERM and still reports
            if ctl.get("start") and "start" not in sent:
                sent.add("start")
                tell(f"start {ctl['start']}")
            if ctl.get("release") and state["ramp_done"] and "release" not in sent:
                sent.add("release")
                tell(f"release {ctl['release']}")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if result is None:
        raise RuntimeError(state["failed"] or f"the shard exited with code {proc.returncode} "
                                              "without a result")
    return result


def _json(line: str) -> dict[str, Any]:
    import json
    try:
        data = json.loads(line)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class MachineState:
    """The coordinator's view of one machine during the run."""

    address: str
    host: str
    share: int
    capacity: Capacity
    ready: bool = False
    ramp_done: bool = False
    established: int = 0
    attempted: int = 0
    in_flight: int = 0
    rate: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    lost: str | None = None          # why the machine dropped out, when it did
    done: bool = False


@dataclass(frozen=True)
class ClusterProgress:
    """The fleet now, passed to `ClusterRun.run`'s `on_progress` about once a second."""

    elapsed: float
    established: int
    target: int
    in_flight: int
    rate: float
    errors: dict[str, int]
    machines: tuple[MachineState, ...]

    @property
    def alive(self) -> int:
        return sum(1 for m in self.machines if m.lost is None)


@dataclass
class MachineResult:
    """One machine's part of the merged result (`machines[]` in the JSON document)."""

    machine: str
    host: str
    share: int
    binding_limit: str
    capacity: int
    status: str                      # "completed", the signal that stopped it, or "lost"
    lost_reason: str | None
    peak_established: int
    final_established: int
    time_to_peak_seconds: float | None
    ramp_rate: float | None
    errors: dict[str, int]


class ClusterRun:
    """One load split over a Dask cluster. Building it connects, checks versions and splits
    (ClusterError on any problem, before anything starts); `run()` runs the shards.

    Args:
        cfg: the whole run (`connections` is the fleet's total).
        address: the scheduler, ``tcp://HOST:8786``.
        timeout: seconds to reach the scheduler.
    """

    def __init__(self, cfg: LoadConfig, address: str, timeout: float = 3.0) -> None:
        for name in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            from distributed import Client
        except ImportError as exc:
            raise ClusterError("--cluster needs Dask distributed: pip install "
                               "'tcpmax[cluster]'") from exc
        self.cfg = cfg
        self.address = address
        try:
            self.client = Client(address, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address} within "
                               f"{timeout:g} s ({exc.__class__.__name__}): start it with "
                               "`dask scheduler` and check the address and port") from None
        try:
            self._survey()
        except BaseException:
            self.close()
            raise

    def workers(self) -> set[str]:
        """The workers the scheduler knows now. Asked directly: `Client.scheduler_info()`
        returns a cache that the client's own periodic refresh replaces with one holding no
        workers, which read as every machine lost at once."""
        scheduler = self.client.scheduler
        if scheduler is None:          # the client lost its scheduler: no worker is known
            return set()
        identity: dict[str, Any] = self.client.sync(scheduler.identity, n_workers=-1)
        return set(identity.get("workers", {}))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=5)

    def _survey(self) -> None:
        from tcpmax import __version__
        workers = sorted(self.workers())
        if not workers:
            raise ClusterError(f"the scheduler at {self.address} has no workers: start `dask "
                               f"worker {self.address} --nworkers 1 --nthreads 1` on each "
                               "load machine")
        versions = self.client.run(_tcpmax_version, on_error="return")
        wrong = [f"{w} has {v if isinstance(v, str) else f'no usable tcpmax ({v!r})'}"
                 for w, v in sorted(versions.items()) if v != __version__]
        if wrong:
            raise ClusterError(f"this tcpmax is {__version__}, but " + "; ".join(wrong)
                               + ": install the same version on every load machine")
        # A task, not client.run: that runs on the worker's event loop, and the address
        # reader (pyroute2) runs a loop of its own.
        futures = {w: self.client.submit(_machine_facts, self.cfg, workers=[w], pure=False,
                                         allow_other_workers=False) for w in workers}
        raw: dict[str, Any] = {}
        for w, fut in futures.items():
            try:
                raw[w] = fut.result(timeout=30)
            except Exception as exc:
                raw[w] = {"error": repr(exc)}
        problems = [f"{w}: {f['error'] if isinstance(f, dict) else f!r}"
                    for w, f in sorted(raw.items())
                    if not isinstance(f, dict) or "error" in f]
        if problems:
            raise ClusterError("cannot read every load machine: " + "; ".join(problems))
        self.addresses = sorted(raw)
        self.hosts = {w: str(raw[w]["host"]) for w in self.addresses}
        self.machines = [MachineFacts(name=w, **{k: int(v) for k, v in raw[w].items()
                                                 if k != "host"}) for w in self.addresses]
        self.split: ClusterSplit = split_load(self.cfg.connections, self.machines,
                                              len(self.cfg.endpoints))
        if not self.split.feasible:
            raise ClusterError("; ".join(self.split.problems)
                               + ": add load machines, source addresses or memory, or ask "
                               "for fewer connections")

    def run(self, on_progress: Callable[[ClusterProgress], None] | None = None,
            log: Callable[[str], None] | None = None
            ) -> tuple[LoadResult, list[MachineResult]]:
        """Run every shard at one barrier; return the merged result and each machine's part.

        Ctrl-C (KeyboardInterrupt) stops every shard and still returns what they measured; a
        second one gives up waiting for them (their tasks still stop them: see `_run_shard`).
        """
        from distributed import Variable, wait

        say = log or (lambda _m: None)
        run_id = uuid.uuid4().hex[:12]
        control = Variable(f"tcpmax-{run_id}-control", client=self.client)
        ctl: dict[str, Any] = {"start": None, "release": None, "stop": False}
        control.set(dict(ctl))
        states = [MachineState(a, self.hosts[a], s, c) for a, s, c in
                  zip(self.addresses, self.split.shares, self.split.capacities, strict=True)]
        active = [i for i, m in enumerate(states) if m.share > 0]
        blocks = None
        if self.cfg.sources is None and all(e.is_loopback and ":" not in e.host
                                            for e in self.cfg.endpoints):
            blocks = loopback_blocks(self.split.shares, len(self.cfg.endpoints),
                                     [m.usable_ports for m in self.machines])
        status: dict[int, Any] = {}
        futures: dict[int, Any] = {}
        for i in active:
            status[i] = Variable(f"tcpmax-{run_id}-{i}", client=self.client)
            status[i].set({})
            shard_cfg = replace(self.cfg, connections=states[i].share)
            if blocks is not None:
                shard_cfg = replace(shard_cfg, sources=blocks[i])
            blob = base64.b64encode(pickle.dumps(shard_cfg)).decode("ascii")
            futures[i] = self.client.submit(_run_shard, run_id, i, blob,
                                            workers=[states[i].address],
                                            allow_other_workers=False, pure=False, retries=0,
                                            key=f"tcpmax-shard-{run_id}-{i}")
        started = time.monotonic()
        start_wall: float | None = None
        stop_at: float | None = None
        peak = 0
        curve: list[tuple[float, int]] = []
        results: dict[int, dict[str, Any]] = {}
        next_progress = 0.0
        interrupted = 0
        stopped_by: str | None = None

        missing: set[str] = set()

        def lose(i: int, why: str) -> None:
            if states[i].lost is None and not states[i].done:
                states[i].lost = why
                say(f"lost {states[i].address} ({states[i].host}): {why}")

        while True:
            try:
                live_workers = self.workers()
                for i in active:
                    m, fut = states[i], futures[i]
                    if m.done or m.lost:
                        continue
                    if fut.status == "finished":
                        results[i] = fut.result()
                        m.done = True
                    elif fut.status in ("error", "cancelled"):
                        lose(i, f"its shard failed: {fut.exception()!r}")
                    elif m.address not in live_workers:
                        # Twice in a row: one answer is not enough to declare a machine dead.
                        if m.address in missing:
                            lose(i, "the Dask worker left the cluster (killed or host gone)")
                            fut.cancel()
                        missing.add(m.address)
                    else:
                        missing.discard(m.address)
                        s = status[i].get(timeout=5) or {}
                        m.ready, m.ramp_done = bool(s.get("ready")), bool(s.get("ramp_done"))
                        if s.get("failed"):
                            lose(i, str(s["failed"]))
                        p = s.get("progress") or {}
                        m.established = int(p.get("established", m.established))
                        m.attempted = int(p.get("attempted", m.attempted))
                        m.in_flight = int(p.get("in_flight", 0))
                        m.rate = float(p.get("rate", 0.0))
                        m.errors = dict(p.get("errors", {}))
                live = [i for i in active if states[i].lost is None]
                pending = [i for i in live if not states[i].done]
                now = time.monotonic()
                if not pending:
                    break
                if not live:
                    break
                if ctl["start"] is None and not ctl["stop"]:
                    if all(states[i].ready for i in live):
                        # Half a second covers the relay's poll on every machine.
                        ctl["start"] = start_wall = time.time() + 2 * POLL + 0.25
                        control.set(dict(ctl))
                        say(f"all {len(live)} machines ready: start")
                    elif now - started > READY_TIMEOUT:
                        for i in live:
                            if not states[i].ready:
                                lose(i, f"not ready within {READY_TIMEOUT:g} s")
                if (ctl["start"] is not None and ctl["release"] is None
                        and all(states[i].ramp_done or states[i].done for i in live)):
                    ctl["release"] = time.time() + 2 * POLL + 0.25
                    control.set(dict(ctl))
                    say(f"every machine finished its ramp: hold {self.cfg.hold:g} s together")
                if stop_at is not None and now > stop_at:
                    for i in pending:
                        lose(i, "did not report within the stop grace")
                        futures[i].cancel()
                    break
                if start_wall is not None:
                    est = sum(states[i].established for i in live)
                    curve.append((round(time.time() - start_wall, 2), est))
                    peak = max(peak, est)
                if on_progress is not None and now >= next_progress:
                    next_progress = now + 1.0
                    on_progress(self._progress(states, active, start_wall))
                time.sleep(POLL)
            except KeyboardInterrupt:
                interrupted += 1
                stopped_by = "SIGINT"
                if interrupted > 1:
                    say("second Ctrl-C: not waiting for the shards (their tasks stop them)")
                    for f in futures.values():
                        f.cancel()
                    break
                say("Ctrl-C: stopping every shard")
                ctl["stop"] = True
                stop_at = time.monotonic() + STOP_GRACE
                with contextlib.suppress(Exception):
                    control.set(dict(ctl))
        with contextlib.suppress(Exception):
            wait([f for i, f in futures.items() if states[i].lost is None], timeout=5)
        for variable in (control, *status.values()):    # the scheduler keeps them otherwise
            with contextlib.suppress(Exception):
                variable.delete()
        return self._merge(states, active, results, peak, curve, stopped_by)

    def _progress(self, states: list[MachineState], active: list[int],
                  start_wall: float | None) -> ClusterProgress:
        live = [states[i] for i in active if states[i].lost is None]
        errors: dict[str, int] = {}
        for m in live:
            for k, v in m.errors.items():
                errors[k] = errors.get(k, 0) + v
        return ClusterProgress(
            elapsed=0.0 if start_wall is None else max(0.0, time.time() - start_wall),
            established=sum(m.established for m in live), target=self.cfg.connections,
            in_flight=sum(m.in_flight for m in live), rate=sum(m.rate for m in live),
            errors=errors, machines=tuple(states[i] for i in active))

    def _merge(self, states: list[MachineState], active: list[int],
               results: dict[int, dict[str, Any]], sampled_peak: int,
               curve: list[tuple[float, int]], stopped_by: str | None
               ) -> tuple[LoadResult, list[MachineResult]]:
        docs = [results[i] for i in active if i in results]
        machines: list[MachineResult] = []
        for i in active:
            m, doc = states[i], results.get(i)
            machines.append(MachineResult(
                machine=m.address, host=m.host, share=m.share,
                binding_limit=m.capacity.binding, capacity=m.capacity.connections,
                status="lost" if doc is None else str(doc["stopped_by"]),
                lost_reason=m.lost if doc is None else None,
                peak_established=m.established if doc is None else int(doc["peak_established"]),
                final_established=0 if doc is None else int(doc["final_established"]),
                time_to_peak_seconds=None if doc is None else doc["time_to_peak_seconds"],
                ramp_rate=None if doc is None else doc["ramp_rate"],
                errors=dict(m.errors) if doc is None else
                {e["name"]: int(e["count"]) for e in doc["errors"]}))
        lost = [m for m in machines if m.status == "lost"]

        def total(key: str) -> int:
            return sum(int(d.get(key) or 0) for d in docs)

        def hist(name: str) -> dict[str, int] | None:
            return percentiles(merge_histograms([d["histograms"][name].encode("ascii")
                                                 for d in docs
                                                 if name in d.get("histograms", {})]))

        errors: dict[str, int] = {}
        per_source: dict[str, int] = {}
        for d in docs:
            for e in d["errors"]:
                errors[e["name"]] = errors.get(e["name"], 0) + int(e["count"])
            for src, n in d["per_source"].items():
                per_source[src] = per_source.get(src, 0) + int(n)
        final = total("final_established")
        peak = max(total("peak_established") if not lost else sampled_peak, final)
        time_to_peak = max([float(d["time_to_peak_seconds"]) for d in docs] or [1e-6])
        ramp = max([float(d["ramp_seconds"]) for d in docs] or [0.0])
        if stopped_by is None:
            stopped = {str(d["stopped_by"]) for d in docs}
            stopped_by = ("machine lost: " + ", ".join(m.machine for m in lost) if lost
                          else stopped.pop() if len(stopped) == 1 else ", ".join(sorted(stopped)))
        floors = [d["mem_available_at_floor_bytes"] for d in docs
                  if d.get("mem_available_at_floor_bytes") is not None]
        tls = hist("tls")
        hists = {name: merge_histograms([d["histograms"][name].encode("ascii") for d in docs
                                         if name in d.get("histograms", {})])
                 for name in ("connect", "message", "tls")}

        def optional_sum(key: str) -> int | None:
            values = [d.get(key) for d in docs]
            return None if not values or None in values else sum(int(v) for v in values
                                                                     if v is not None)

        result = LoadResult(
            requested=self.cfg.connections, reached=peak >= self.cfg.connections and not lost,
            stopped_by=stopped_by,
            strategy=",".join(sorted({str(d["strategy"]) for d in docs})) or "-",
            workers=total("workers"), sources=total("sources"),
            endpoints=[str(e) for e in self.cfg.endpoints], peak_established=peak,
            final_established=final, ramp_seconds=round(ramp, 3),
            time_to_peak_seconds=round(time_to_peak, 3),
            ramp_rate=round(peak / max(1e-6, time_to_peak), 1),
            connect_latency_us=hist("connect") or {}, message_latency_us=hist("message"),
            messages_sent=total("messages_sent"), messages_received=total("messages_received"),
            bytes_sent=total("bytes_sent"), bytes_received=total("bytes_received"),
            peer_closed=total("peer_closed"),
            errors=[ErrorCount.of(n, c) for n, c in sorted(errors.items(), key=lambda kv: -kv[1])],
            per_source=per_source, client_rss_bytes=total("client_rss_bytes"),
            client_private_bytes=total("client_private_bytes"),
            kernel_memory_delta_bytes=optional_sum("kernel_memory_delta_bytes"),
            tcp_memory_delta_bytes=optional_sum("tcp_memory_delta_bytes"),
            time_wait_before=optional_sum("time_wait_before"),
            time_wait_after=optional_sum("time_wait_after"),
            warnings=[f"{m.machine}: {w}" for m, d in zip(machines, [results.get(i) for i in
                                                                      active], strict=True)
                      if d is not None for w in d["warnings"]]
            + [f"{m.machine} ({m.host}) was lost: {m.lost_reason}" for m in lost],
            tls_handshake_latency_us=tls, tls_handshakes=tls["count"] if tls else 0,
            tls_handshake_rate=round((tls["count"] if tls else 0) / max(1e-6, ramp), 1),
            min_free_bytes=min([int(d["min_free_bytes"]) for d in docs] or [0]),
            mem_available_at_floor_bytes=min(floors) if floors else None,
            curve=curve[:: max(1, len(curve) // 600)],
            histograms={n: h.encode().decode("ascii") for n, h in hists.items()
                        if h.get_total_count()},
            connect_path=",".join(sorted({str(d.get("connect_path", "python"))
                                          for d in docs})) or "python")
        return result, machines

