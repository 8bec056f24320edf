"""The memory guard: below the MemAvailable floor, load opens and serve accepts nothing more,
and both say so."""

import json
import socket
import subprocess
import sys
import time

from tcpmax.engine.counters import Col
from tcpmax.engine.loader import LoadRun
from tcpmax.engine.server import Server
from tcpmax.host.inspect import read_meminfo
from tcpmax.model.limits import default_min_free
from tcpmax.model.load import Endpoint, LoadConfig
from tcpmax.model.serve import ServeConfig
from tests.servers import plain_server


def test_a_floor_above_what_is_available_stops_the_load_before_it_opens_anything():
    floor = read_meminfo()["MemTotal"]          # never available: triggers on any machine
    with plain_server() as (host, port):
        result = LoadRun(LoadConfig(endpoints=(Endpoint(host, port),), connections=500,
                                    hold=0.0, min_free=floor)).run()
    assert result.stopped_by == "memory floor"
    assert result.peak_established == 0 and not result.reached
    assert result.min_free_bytes == floor
    assert result.mem_available_at_floor_bytes is not None
    assert result.mem_available_at_floor_bytes < floor


def test_a_floor_far_below_what_is_available_lets_the_load_complete():
    with plain_server() as (host, port):
        result = LoadRun(LoadConfig(endpoints=(Endpoint(host, port),), connections=500,
                                    hold=0.0, min_free=1)).run()
    assert result.stopped_by == "completed" and result.peak_established == 500
    assert result.mem_available_at_floor_bytes is None


def test_the_default_floor_is_a_thirty_second_of_ram_and_at_least_256_mib():
    assert default_min_free(24 * 2**30) == 768 * 2**20
    assert default_min_free(2 * 2**30) == 256 * 2**20
    assert default_min_free(None) == 256 * 2**20


def test_serve_accepts_nothing_under_its_floor_while_the_kernel_queues_the_connects():
    floor = read_meminfo()["MemTotal"]
    with Server(ServeConfig(ports=(0,), max_connections=1_000, min_free=floor)) as srv:
        clients = [socket.create_connection(srv.addresses[0], timeout=5) for _ in range(20)]
        try:
            time.sleep(1.0)                   # many chances to accept, none taken
            assert srv.stats().accepted == 0
            run = srv._run
            assert run is not None
            assert all(run.table.get(i, Col.MEM_FLOOR) for i in range(run.plan.workers))
        finally:
            for c in clients:
                c.close()


def test_serve_reports_its_floor_in_the_final_json():
    floor = read_meminfo()["MemTotal"]
    out = subprocess.run([sys.executable, "-c", "from tcpmax.cli import main; main()", "serve",
                          "--port", "0", "--duration", "500ms", "--quiet", "--json",
                          "--min-free", f"{floor}"], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["memory_floor"]
    assert data["active"] is True and data["times_reached"] == 1
    assert data["min_free_bytes"] == floor and data["mem_available_bytes"] < floor
