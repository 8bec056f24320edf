"""`tcpmax load --cluster` against a real Dask scheduler and workers on loopback.

Each test starts its own scheduler and `dask worker` processes (one per "machine", no nanny so
that killing one is killing the machine) and stops them at the end; the load goes into the
plain test server. Every run is bounded (small counts, short holds, subprocess timeouts).
"""

from __future__ import annotations

import base64
import json
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest

from tcpmax.model.load import Endpoint, LoadConfig
from tests.servers import plain_server

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Cluster:
    def __init__(self, tmp: Path, host: str = "127.0.0.1") -> None:
        self.tmp = tmp
        self.host = host
        self.address = f"tcp://{host}:{_free_port()}"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def start(self, workers: int, preload: list[str | None] | None = None,
              netns: list[str] | None = None) -> None:
        """`workers` Dask workers, each in netns[i] when given (`ip netns exec` execs, so
        the pid is the worker's)."""
        port = self.address.rpartition(":")[2]
        log = open(self.tmp / "scheduler.log", "wb")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        self.scheduler = subprocess.Popen(
            [BIN / "dask", "scheduler", "--host", self.host, "--port", port,
             "--no-dashboard"], stdout=log, stderr=log)
        for i in range(workers):
            extra = []
            if preload and preload[i]:
                extra = ["--preload", str(preload[i])]
            wlog = open(self.tmp / f"worker{i}.log", "wb")  # noqa: SIM115
            self.logs.append(wlog)
            inside = ["ip", "netns", "exec", netns[i]] if netns else []
            self.workers.append(subprocess.Popen(
                [*inside, BIN / "dask", "worker", self.address, "--nworkers", "1",
                 "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"machine{i}",
                 *extra],
                stdout=wlog, stderr=wlog))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all("Registered to" in (self.tmp / f"worker{i}.log").read_text()
                   for i in range(workers)):
                return
            time.sleep(0.2)
        raise RuntimeError("the Dask workers did not register within 60 s")

    def shards(self) -> list[psutil.Process]:
        """Every process the workers started (the shards and their load workers)."""
        out = []
        for w in self.workers:
            try:
                out += psutil.Process(w.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
        alive = []
        for p in out:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                continue
        return alive

    def stop(self) -> None:
        for w in self.workers:
            _stop(w)
        if self.scheduler is not None:
            _stop(self.scheduler)
        for log in self.logs:
            log.close()


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(workers: int = 3, preload: list[str | None] | None = None) -> Cluster:
        c = Cluster(tmp_path)
        made.append(c)
        c.start(workers, preload)
        return c

    yield make
    for c in made:
        c.stop()


def tcpmax_load(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpmax", "load", *args], capture_output=True,
                          text=True, timeout=timeout)


def start_load(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tcpmax", "load", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_unreachable_scheduler_exits_2_within_seconds_with_a_clear_error():
    started = time.monotonic()
    out = tcpmax_load("127.0.0.1:9000", "-n", "10", "--cluster", "tcp://127.0.0.1:1")
    assert out.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in out.stderr
    assert time.monotonic() - started < 10


def test_a_distributed_load_holds_n_in_all_and_each_machine_its_share(dask_cluster):
    cluster = dask_cluster(3)
    with plain_server() as (host, port):
        out = tcpmax_load(f"{host}:{port}", "-n", "3000", "--hold", "1s", "--cluster",
                          cluster.address, "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "tcpmax.load/1"
    assert doc["reached"] and doc["final_established"] == 3000
    assert doc["connect_latency_us"]["count"] == 3000      # merged from every machine
    machines = doc["machines"]
    assert len(machines) == 3 and doc["cluster"]["lost"] == []
    assert sum(m["share"] for m in machines) == 3000
    for m in machines:
        assert m["status"] == "completed"
        assert m["final_established"] == m["share"] > 0
    assert cluster.shards() == []


def test_a_worker_killed_mid_run_is_named_and_the_others_connections_counted(dask_cluster):
    cluster = dask_cluster(3)
    with plain_server() as (host, port):
        run = start_load(f"{host}:{port}", "-n", "3000", "--hold", "6s", "--cluster",
                         cluster.address, "--json")
        time.sleep(1)
        deadline = time.monotonic() + 60     # killed once its shard holds connections
        while not cluster.shards() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        victim = cluster.workers[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        stdout, stderr = run.communicate(timeout=90)
    assert run.returncode == 1, stderr
    doc = json.loads(stdout)
    lost = [m for m in doc["machines"] if m["status"] == "lost"]
    kept = [m for m in doc["machines"] if m["status"] != "lost"]
    assert len(lost) == 1 and doc["cluster"]["lost"] == [lost[0]["machine"]]
    assert "left the cluster" in lost[0]["lost_reason"]
    assert len(kept) == 2
    assert doc["final_established"] == sum(m["share"] for m in kept)
    assert not doc["reached"]
    assert lost[0]["machine"] in stderr


def test_ctrl_c_of_the_client_stops_every_shard(dask_cluster):
    cluster = dask_cluster(2)
    with plain_server() as (host, port):
        run = start_load(f"{host}:{port}", "-n", "2000", "--hold", "60s", "--cluster",
                         cluster.address, "--json")
        deadline = time.monotonic() + 60
        while not cluster.shards() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)                                   # ramped, holding
        started = time.monotonic()
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=40)
        stopped_in = time.monotonic() - started
    assert stopped_in < 30                              # not the 60 s hold
    doc = json.loads(stdout)
    assert doc["stopped_by"] == "SIGINT"
    # As on one machine: the exit code says whether N were held at once, here they were.
    assert doc["reached"] and run.returncode == 0, stderr
    time.sleep(1)
    assert cluster.shards() == []
    assert all(w.poll() is None for w in cluster.workers)   # the machines stay up


def test_a_worker_with_another_tcpmax_version_is_named_and_nothing_starts(dask_cluster,
                                                                          tmp_path):
    other = tmp_path / "other_version.py"
    other.write_text("import tcpmax\ntcpmax.__version__ = '0.0.0-other'\n")
    cluster = dask_cluster(2, preload=[None, str(other)])
    out = tcpmax_load("127.0.0.1:9", "-n", "10", "--cluster", cluster.address)
    assert out.returncode == 2
    assert "0.0.0-other" in out.stderr and "same version" in out.stderr
    assert cluster.shards() == []


def test_a_shard_whose_task_is_gone_stops_at_once():
    # End of file on stdin (the task or its Dask worker died) stops the shard; without it the
    # shard would wait SYNC_TIMEOUT (60 s) for a start.
    cfg = LoadConfig(endpoints=(Endpoint("127.0.0.1", 9),), connections=1)
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax.engine.shard"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(base64.b64encode(pickle.dumps(cfg)) + b"\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["event"] == "ready"
    started = time.monotonic()
    proc.stdin.close()
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode != 0
    assert time.monotonic() - started < 10
