"""C12, beyond one machine: the judge on measured fleets and on paper, the route check that
keeps every load inside the fleet, and (root) the experiment run for real, leaving nothing."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from tcpmax.lab import c12_fleet
from tcpmax.lab.common import Context, Verdict
from tcpmax.lab.fleet import can_fleet
from tcpmax.lab.report import plots_for
from tcpmax.lab.runner import ProveReport
from tcpmax.model.facts import HostFacts, PortRange
from tests.lab.test_fleet import host_view

C, R, INC, SKIP = (Verdict.CONFIRMED, Verdict.REFUTED, Verdict.INCONCLUSIVE,
                   Verdict.SKIPPED)
SMALL = c12_fleet.measure_plan(24 * 2**30, 2, 3_840, PortRange(1024, 65535))


def fleet_lab(ports: int = 1_000, cap: int = 1_500, alone: int = 1_000,
              eaddrnotavail: int = 500, server_held: int = 1_500,
              per_server: tuple[int, ...] = (1_000, 1_000, 1_000),
              conntrack: int | None = 3_200, host_unchanged: bool = True) -> dict[str, Any]:
    """A fleet-lab measurement shaped as `measure_fleet` returns it."""
    servers = {f"s{i}": n for i, n in enumerate(per_server)}
    held = sum(per_server)
    return {
        "topology": {"vip": "198.18.6.1", "port": 9000, "host_address": "198.18.0.1/22",
                     "balancer": ["198.18.0.2", "198.18.4.1", "198.18.6.1"],
                     "clients": {"c0": "198.18.1.1", "c1": "198.18.1.2", "c2": "198.18.1.3"},
                     "servers": {k: f"198.18.4.{10 + i}" for i, k in enumerate(servers)}},
        "routes": [{"from": "tcpmax-fleet-c12-1-1-c0", "to": "198.18.6.1", "dev": "eth0",
                    "via": "198.18.0.2"},
                   {"from": "host", "to": "198.18.4.10", "dev": "tmf0-front",
                    "via": "198.18.0.2"}],
        "client_port_ranges": {"c0": "40000\t40999"},
        "client_wall": {"host": "c0", "ports": ports, "asked": 1_500, "held": alone,
                        "servers_held": alone,
                        "errors": {"EADDRNOTAVAIL": eaddrnotavail} if eaddrnotavail else {},
                        "per_server": {"s0": alone // 3}},
        "server_wall": {"host": "s0", "cap": cap, "asked": 2_000, "held": server_held,
                        "connected": 2_000, "errors": {}},
        "fleet": {"clients": 3, "held": held, "per_server": servers,
                  "per_client": {"c0": held // 3, "c1": held // 3, "c2": held - 2 * held // 3},
                  "errors": {}},
        "conntrack": {"count": conntrack, "max": 262_144 if conntrack is not None else None},
        "fleet_up_seconds": 0.7, "fleet_down_seconds": 0.3,
        "host_sysctls_unchanged": host_unchanged,
    }


def measured(**kw: Any) -> dict[str, Any]:
    return {**SMALL, "fleet_lab": fleet_lab(**kw)}


# ---------------------------------------------------------------- the judge

def test_on_paper_a_small_machine_needs_several_servers_and_source_ips():
    assert SMALL["servers"] == 2 and SMALL["source_ips_one_vip"] > 1


@pytest.mark.parametrize(("m", "verdict"), [
    (measured(), C),
    (measured(per_server=(967, 967, 966)), C),                   # 2.90x: the target
    (measured(alone=700), INC),                                  # short of the port wall
    (measured(eaddrnotavail=0), INC),                            # stopped, but not by ports
    (measured(server_held=1_200), INC),                          # the server's cap unseen
    (measured(per_server=(850, 850, 800)), INC),                 # 2.5x
    (measured(per_server=(1_400, 800, 800)), INC),               # not a third each
    (measured(conntrack=2_000), INC),                            # the balancer missed some
    (measured(conntrack=None), INC),                             # conntrack unreadable
    (measured(host_unchanged=False), INC),
    (measured(per_server=(340, 330, 330)), R),                   # three clients added nothing
    ({**SMALL, "fleet_lab": None, "fleet_skipped": "not root"}, SKIP),
    ({**c12_fleet.measure_plan(2**40, 64, 3_840, PortRange(1024, 65535)),
      "fleet_lab": fleet_lab()}, R),                             # one machine is enough
])
def test_c12_is_confirmed_only_by_walls_a_tripled_fleet_and_the_balancers_count(m, verdict):
    assert c12_fleet.judge(m)[0] is verdict


def test_a_confirmed_verdict_names_the_walls_the_ratio_and_the_plan():
    reason = c12_fleet.judge(measured())[1]
    for part in ("1,000 of 1,500", "1,500 of 2,000", "3,000 = 3.00x", "262,144",
                 "2 servers"):
        assert part in reason


def test_a_failed_measurement_says_what_it_did_not_show():
    reason = c12_fleet.judge(measured(server_held=1_200))[1]
    assert "s0 held 1,200" in reason and "cap of 1,500" in reason


def test_not_root_the_paper_half_is_kept_and_the_reason_given():
    ctx = Context(HostFacts(mem_total=24 * 2**30, cores=2), sandbox=False,
                  sandbox_why="not root: network namespaces and their sysctls need root")
    outcome = c12_fleet.run(ctx)
    assert outcome.verdict is SKIP and "not root" in outcome.reason
    assert outcome.measurements["servers"] > 1 and outcome.isolation == "on paper"
    assert any("source IPs" in line for line in outcome.evidence)


# ---------------------------------------------------------------- routes

LB, GATEWAY = "198.18.0.2", "192.0.2.1"


@pytest.mark.parametrize(("route", "contained"), [
    ({"dst": "198.18.6.1", "gateway": LB, "dev": "eth0"}, True),
    ({"dst": "198.18.6.1", "dev": "eth0"}, True),                     # on-link
    ({"dst": "198.18.6.1", "gateway": GATEWAY, "dev": "eth0"}, False),
    ({"dst": "198.18.6.1", "gateway": LB, "dev": "wlan0"}, False),    # not the fleet's link
    ({"dst": "198.18.6.1", "type": "unreachable", "dev": "eth0"}, False),
])
def test_a_load_is_only_routed_over_the_fleets_links_never_the_default_gateway(route,
                                                                                contained):
    assert c12_fleet.route_is_contained(route, {"eth0"}, {GATEWAY}) is contained


# ---------------------------------------------------------------- the report

def test_the_report_draws_the_topology_and_a_bar_per_host():
    from tcpmax.lab.common import Outcome

    outcome = Outcome("C12", "claim", "method", C, "why", "fleet lab", 1.0,
                      plots={"fleet": fleet_lab()})
    plots = plots_for(ProveReport("now", 1.0, {}, "netns", [outcome]))
    titles = [p["title"] for p in plots]
    assert any("topology" in t for t in titles) and any("per host" in t for t in titles)
    topology = next(p["svg"] for p in plots if "topology" in p["title"])
    for label in ("198.18.6.1:9000", "s2 198.18.4.12", "conntrack 3,200 / 262,144"):
        assert label in topology


# ---------------------------------------------------------------- for real (root)

def _fleet_processes(f: dict[str, Any]) -> list[str]:
    """Processes still naming one of the run's fleet addresses (servers, loads)."""
    ips = {f["topology"]["vip"], *f["topology"]["servers"].values()}
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["status"] != psutil.STATUS_ZOMBIE and any(ip in cmd for ip in ips):
            left.append(cmd)
    return left


@pytest.mark.root
@pytest.mark.skipif(not can_fleet()[0], reason=can_fleet()[1] or "no fleet")
def test_measured_in_the_fleet_lab_it_is_confirmed_and_leaves_nothing(tmp_path: Path):
    before = host_view()
    f = c12_fleet.measure_fleet(tmp_path)
    assert c12_fleet.judge({**SMALL, "fleet_lab": copy.deepcopy(f)})[0] is C, json.dumps(f)
    assert f["client_wall"]["held"] == f["client_wall"]["ports"] == c12_fleet.PORTS.size
    assert f["server_wall"]["held"] == c12_fleet.SERVER_CAP
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    assert f"tcpmax-fleet-c12-{os.getpid()}-" not in netns
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True,
                                      check=True).stdout)
    assert [link["ifname"] for link in links if str(tmp_path) in link.get("ifalias", "")] == []
    assert _fleet_processes(f) == []
    assert host_view() == before


@pytest.mark.root
@pytest.mark.skipif(not can_fleet()[0], reason=can_fleet()[1] or "no fleet")
def test_ctrl_c_during_the_fleet_phases_removes_the_fleet_and_every_load():
    import signal
    import sys
    import time

    before = host_view()
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax", "prove", "C12"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    prefix = f"tcpmax-fleet-c12-{proc.pid}-"

    def loads_in_fleet() -> list[int]:
        """Load processes inside the run's client hosts (`ip netns exec` execs, so only
        their namespace tells them apart)."""
        inodes = {e.stat().st_ino for e in Path("/var/run/netns").glob(f"{prefix}*-c*")}
        pids = []
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(OSError):
                if ("load" in (p.info["cmdline"] or [])
                        and os.stat(f"/proc/{p.pid}/ns/net").st_ino in inodes):
                    pids.append(p.pid)
        return pids

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (loads := loads_in_fleet()):
        time.sleep(0.05)
    assert loads, "C12 never started a load in a client host"
    os.killpg(proc.pid, signal.SIGINT)          # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"stdout: {out[-2000:]}\nstderr: {err[-4000:]}"
    assert [pid for pid in loads if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE] == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    assert prefix not in netns
    assert host_view() == before
