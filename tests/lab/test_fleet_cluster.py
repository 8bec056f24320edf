"""`tcpmax load --cluster` across the fleet lab (root): Dask workers in the client host
namespaces, the scheduler on the host namespace's bridge address, the load through the VIP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tcpmax.host.process import running
from tcpmax.lab.fleet import FleetSpec, fleet_down, fleet_status, fleet_up, server_stats
from tests.engine.test_cluster import Cluster

pytestmark = pytest.mark.root


@pytest.fixture
def fleet(tmp_path):
    state_dir = tmp_path / "fleet-state"
    state = fleet_up(FleetSpec(name=f"k{os.getpid()}", clients=2, servers=2, ttl=120,
                               server_connections=5000, state_dir=state_dir))
    try:
        yield fleet_status(state_dir, state["name"], with_stats=False)[0]
    finally:
        fleet_down(state["name"], state_dir)


def test_workers_in_client_hosts_split_a_load_through_the_vip(fleet, tmp_path):
    clients = [h["netns"] for h in fleet["hosts"] if h["role"] == "client"]
    servers = [h for h in fleet["hosts"] if h["role"] == "server"]
    cluster = Cluster(tmp_path, host=fleet["host_address"].partition("/")[0])
    try:
        cluster.start(len(clients), netns=clients)
        before = sum(server_stats(s["netns"], s["addresses"][0])["accepted"] for s in servers)
        out = subprocess.run([sys.executable, "-m", "tcpmax", "load", fleet["target"], "-n",
                              "4000", "--hold", "1s", "--cluster", cluster.address, "--json",
                              "--quiet"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["final_established"] == 4000
        assert sorted(m["share"] for m in doc["machines"]) == [2000, 2000]
        # Each worker reported its own namespace's source address, not the host's.
        assert all(not src.startswith("127.") for src in doc["per_source"])
        after = sum(server_stats(s["netns"], s["addresses"][0])["accepted"] for s in servers)
        assert after - before == 4000
    finally:
        cluster.stop()


def test_fleet_up_with_dask_starts_a_cluster_of_its_clients_and_down_stops_it(tmp_path):
    state_dir = tmp_path / "fleet-state"
    state = fleet_up(FleetSpec(name=f"d{os.getpid()}", clients=2, servers=2, ttl=120,
                               server_connections=5000, state_dir=state_dir, dask=True))
    try:
        fleet = fleet_status(state_dir, state["name"], with_stats=False)[0]
        assert fleet["scheduler_running"]
        clients = [h for h in fleet["hosts"] if h["role"] == "client"]
        assert all(h["working"] for h in clients)
        out = subprocess.run([sys.executable, "-m", "tcpmax", "load", fleet["target"], "-n",
                              "2000", "--hold", "1s", "--cluster", fleet["scheduler"],
                              "--json", "--quiet"], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["final_established"] == 2000
        assert sorted(m["share"] for m in doc["machines"]) == [1000, 1000]
    finally:
        fleet_down(state["name"], state_dir)
    pids = [state["scheduler_pid"], *state["worker_pids"].values()]
    assert not any(running(p) for p in pids)
