"""The fleet lab, built for real (root): load through the VIP is spread over the servers by
the balancer's nftables DNAT, nothing routes out of the fleet, and `down` or a sweep after a
killed `up` leaves nothing behind, the host's nftables and sysctls untouched."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcpmax.host.process import running
from tcpmax.lab.fleet import (
    FleetSpec,
    balancer_conntrack,
    can_fleet,
    fleet_down,
    fleet_status,
    fleet_up,
    server_stats,
    sweep,
)
from tcpmax.lab.sandbox import run_in

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not can_fleet()[0], reason=can_fleet()[1] or "no fleet")]

HOST_SYSCTLS = ["net/ipv4/ip_forward", "net/netfilter/nf_conntrack_max",
                "net/bridge/bridge-nf-call-iptables", "net/ipv4/conf/all/forwarding"]


def host_view() -> dict[str, str]:
    """What a fleet must leave as it found: the host namespace's nftables and sysctls."""
    view = {"nft": subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                                  check=True).stdout}
    for name in HOST_SYSCTLS:
        path = Path("/proc/sys") / name
        view[name] = path.read_text() if path.exists() else "absent"
    return view


def leftovers(name: str, creator_pid: int, slot: int, pids: list[int]) -> list[str]:
    """Every trace of fleet `name` made by `creator_pid` in address block `slot`:
    namespaces, host links, processes."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    left = [line.split()[0] for line in netns.splitlines()
            if line.startswith(f"tcpmax-fleet-{name}-{creator_pid}-")]
    links = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True,
                           check=True).stdout
    left += [link["ifname"] for link in json.loads(links)
             if link["ifname"].startswith(f"tmf{slot}-")]
    return left + [f"pid {p}" for p in pids if running(p)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("fleet-state")
    before = host_view()
    state = fleet_up(FleetSpec(name=f"t{os.getpid()}", clients=2, servers=2, ttl=120,
                               server_connections=5000, state_dir=state_dir))
    try:
        yield state_dir, fleet_status(state_dir, state["name"], with_stats=False)[0], before
    finally:
        fleet_down(state["name"], state_dir)


def load(netns: str, target: str, n: int, hold: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "tcpmax",
                             "load", target, "-n", str(n), "--hold", hold, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def test_connections_to_the_vip_are_spread_evenly_over_the_servers(lab):
    _, status, _ = lab
    servers = [h for h in status["hosts"] if h["role"] == "server"]
    client = next(h for h in status["hosts"] if h["role"] == "client")
    before = [server_stats(s["netns"], s["addresses"][0])["accepted"] for s in servers]
    run = load(client["netns"], status["target"], 2000, "1s")
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 0 and json.loads(out)["peak_established"] == 2000
    accepted = [server_stats(s["netns"], s["addresses"][0])["accepted"] - b
                for s, b in zip(servers, before, strict=True)]
    assert sum(accepted) == 2000
    assert all(0.4 * 2000 <= a <= 0.6 * 2000 for a in accepted), accepted


def test_the_balancer_tracks_each_connection_through_the_vip(lab):
    _, status, _ = lab
    lb = next(h for h in status["hosts"] if h["role"] == "balancer")
    client = next(h for h in status["hosts"] if h["role"] == "client")
    # The fixture's earlier loads leave entries closing (RST: 10 s in CLOSE), and the count
    # keeps expired entries until the kernel's conntrack GC visits them (up to a minute
    # later): ones reaped during this load would hide its own. Listing the table reaps the
    # expired entries it walks past, so list it until the count has drained.
    deadline = time.monotonic() + 30
    start = balancer_conntrack(lb["netns"])
    while start is not None and start[0] > 50 and time.monotonic() < deadline:
        time.sleep(0.5)
        subprocess.run(["ip", "netns", "exec", lb["netns"], "cat", "/proc/net/nf_conntrack"],
                       capture_output=True, check=False)
        start = balancer_conntrack(lb["netns"])
    assert start is not None
    run = load(client["netns"], status["target"], 1000, "2s")
    peak = start[0]
    while run.poll() is None:
        peak = max(peak, balancer_conntrack(lb["netns"])[0])
        time.sleep(0.1)
    run.communicate()
    assert run.returncode == 0
    assert peak >= start[0] + 1000
    assert start[1] == int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())


def test_status_json_shows_the_vip_the_serving_servers_and_the_balancer_conntrack(lab):
    state_dir, status, _ = lab
    out = subprocess.run([sys.executable, "-m", "tcpmax", "fleet", "status", "--name",
                          status["name"], "--state-dir", str(state_dir), "--json"],
                         capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert doc["schema"] == "tcpmax.fleet/1"
    (fleet,) = doc["fleets"]
    assert fleet["target"] == status["target"]
    assert fleet["conntrack"]["max"] == int(
        Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    servers = [h for h in fleet["hosts"] if h["role"] == "server"]
    assert len(servers) == 2 and all(h["serving"] and h["accepted"] is not None
                                     for h in servers)


def test_no_route_in_any_fleet_namespace_leaves_the_fleet(lab):
    _, status, _ = lab
    for host in status["hosts"]:
        links = json.loads(subprocess.run(["ip", "-n", host["netns"], "-j", "link"],
                                          capture_output=True, text=True, check=True).stdout)
        names = {link["ifname"] for link in links}
        assert names <= {"lo", "eth0", "front", "back"}, (host["host"], names)
        routes = json.loads(subprocess.run(
            ["ip", "-n", host["netns"], "-j", "route", "show", "table", "all"],
            capture_output=True, text=True, check=True).stdout)
        assert all(r["dst"] != "default" for r in routes), (host["host"], routes)
        assert {r["dev"] for r in routes} <= names


def _route_dev(address: str) -> str:
    out = json.loads(subprocess.run(["ip", "-j", "route", "get", address],
                                    capture_output=True, text=True, check=True).stdout)
    return str(out[0]["dev"])


def test_from_the_host_namespace_every_fleet_address_routes_onto_the_fleet_bridge(lab):
    # Without these routes the VIP followed the host's default route out of the machine.
    _, status, _ = lab
    vip = status["vip"]
    block = ipaddress.ip_network(f"{vip}/21", strict=False)
    front = next(dev for dev in (_route_dev(vip),) if dev.endswith("-front"))
    unused = str(block.network_address + block.num_addresses - 2)
    assert {_route_dev(vip), _route_dev(unused), _route_dev(str(block.network_address + 1600))} \
        == {front}


def test_a_load_from_the_host_namespace_goes_through_the_balancer(lab):
    _, status, _ = lab
    servers = [h for h in status["hosts"] if h["role"] == "server"]
    assert _route_dev(status["vip"]).endswith("-front")      # never sent out otherwise
    before = [server_stats(s["netns"], s["addresses"][0])["accepted"] for s in servers]
    run = subprocess.run([sys.executable, "-m", "tcpmax", "load", status["target"], "-n", "400",
                          "--hold", "0", "--json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and json.loads(run.stdout)["peak_established"] == 400
    accepted = [server_stats(s["netns"], s["addresses"][0])["accepted"] - b
                for s, b in zip(servers, before, strict=True)]
    assert sum(accepted) == 400


def _connect(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=5):
        return True


def test_a_client_host_reaches_a_listener_in_the_host_namespace(lab):
    """Where a Dask scheduler will listen for the client hosts' workers."""
    _, status, _ = lab
    client = next(h for h in status["hosts"] if h["role"] == "client")
    host_ip = status["host_address"].partition("/")[0]
    with socket.create_server((host_ip, 0)) as listener:
        port = listener.getsockname()[1]
        assert run_in(client["netns"], lambda: _connect(host_ip, port)) is True


def test_the_bridges_have_no_uplink_only_the_fleet_hosts(lab):
    _, status, _ = lab
    for bridge in status["bridges"]:
        ports = json.loads(subprocess.run(["ip", "-j", "link", "show", "master", bridge],
                                          capture_output=True, text=True, check=True).stdout)
        slot = status["slot"]
        assert ports and all(p["ifname"].startswith(f"tmf{slot}-") for p in ports)
        assert all(p.get("link_netnsid") is not None for p in ports)   # each a veth to a host


def test_the_host_namespace_keeps_its_nftables_ruleset_and_sysctls_while_up(lab):
    _, _, before = lab
    assert host_view() == before


def test_a_sweep_from_another_state_directory_leaves_a_live_fleet_alone(lab, tmp_path):
    _, status, _ = lab
    assert sweep(tmp_path) == []
    seen = fleet_status(tmp_path, status["name"], with_stats=False)
    assert [h["present"] for h in seen[0]["hosts"]] == [True] * len(status["hosts"])


def test_a_sweep_removes_a_fleet_bridge_whose_state_file_is_gone(tmp_path):
    taken = {p.name for p in Path("/sys/class/net").iterdir()}
    slot = next(s for s in range(63, -1, -1) if f"tmf{s}-front" not in taken)
    bridge = f"tmf{slot}-front"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", bridge, "alias", str(tmp_path / "fleet-gone.json")],
                   check=True)
    try:
        assert bridge in sweep(tmp_path)
        assert not Path(f"/sys/class/net/{bridge}").exists()
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)


def test_fleet_down_leaves_nothing_and_a_second_down_finds_nothing(tmp_path):
    before = host_view()
    name = f"d{os.getpid()}"
    state = fleet_up(FleetSpec(name=name, clients=1, servers=1, ttl=60,
                               server_connections=100, state_dir=tmp_path))
    pids = list(state["server_pids"].values())
    assert pids and all(running(p) for p in pids)
    assert fleet_down(name, tmp_path) is True
    assert leftovers(name, os.getpid(), state["slot"], pids) == []
    assert fleet_down(name, tmp_path) is False
    assert not (tmp_path / f"fleet-{name}.json").exists()
    assert host_view() == before


def test_a_fleet_up_killed_mid_way_is_removed_whole_by_the_next_sweep(tmp_path):
    before = host_view()
    name = f"k{os.getpid()}"
    up = subprocess.Popen([sys.executable, "-m", "tcpmax", "fleet", "up", "--name", name,
                           "--clients", "2", "--servers", "2", "--ttl", "60s",
                           "--server-connections", "100", "--state-dir", str(tmp_path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = tmp_path / f"fleet-{name}.json"
    state: dict = {}
    deadline = time.monotonic() + 30
    # Mid-way: the servers are started (their pids recorded), the fleet not yet complete.
    while not state.get("server_pids") and time.monotonic() < deadline:
        if record.exists():
            with contextlib.suppress(ValueError, OSError):
                state = json.loads(record.read_text())
        time.sleep(0.005)
    up.send_signal(signal.SIGKILL)
    up.wait()
    assert state.get("server_pids") and not state["complete"]
    pids = list(state["server_pids"].values())
    assert name in sweep(tmp_path)
    assert leftovers(name, up.pid, state["slot"], pids) == []
    assert not record.exists()
    assert host_view() == before


def test_a_forgotten_fleet_stops_serving_at_its_ttl_and_the_next_sweep_removes_it(tmp_path):
    name = f"e{os.getpid()}"
    state = fleet_up(FleetSpec(name=name, clients=1, servers=1, ttl=2,
                               server_connections=100, state_dir=tmp_path))
    pids = list(state["server_pids"].values())
    deadline = time.monotonic() + 15
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(p) for p in pids)          # stopped by itself: serve --duration
    while time.time() < state["expires_at"]:
        time.sleep(0.1)
    assert name in sweep(tmp_path)
    assert leftovers(name, os.getpid(), state["slot"], pids) == []
