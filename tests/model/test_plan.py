"""Fleet sizing on paper, checked against hand arithmetic."""

import pytest

from tcpmax.model.capacity import Costs, Protocol
from tcpmax.model.facts import PortRange
from tcpmax.model.plan import (
    SCHEDULER_HOST,
    Bound,
    Deployment,
    MachineSpec,
    PlanRequest,
    deployment,
    plan_fleet,
)

GIB = 2**30
COSTS = Costs(3400, 100)


def request(connections, memory=64 * GIB, nofile=1_048_576, **kw):
    spec = MachineSpec(memory, 16, nofile, 0.2)
    return PlanRequest(connections, spec, spec, COSTS, **kw)


def test_a_64_gib_server_holds_what_80_percent_of_its_memory_allows():
    p = plan_fleet(request(10_000_000))
    # 64 GiB x 0.8 = 54,975,581,388 B / 3,500 B = 15,707,308
    assert p.servers.capacity == 15_707_308
    assert p.servers.machines == 1
    assert p.servers.bound_by is Bound.MEMORY


def test_servers_are_added_when_one_machine_is_not_enough():
    p = plan_fleet(request(10_000_000, memory=16 * GIB))
    # 16 GiB x 0.8 / 3,500 = 3,926,827 per machine -> 3 machines of 3,333,334
    assert p.servers.machines == 3
    assert p.servers.per_machine == 3_333_334


def test_processes_per_machine_follow_the_open_file_limit_but_at_least_the_cores():
    p = plan_fleet(request(10_000_000, nofile=100_064))
    assert p.servers.processes == 100              # 10M / 100,000
    p = plan_fleet(request(1_000, nofile=100_064))
    assert p.servers.processes == 16               # one per core


def test_a_low_open_file_limit_can_bind_before_memory():
    p = plan_fleet(request(10_000_000, nofile=1_064))
    assert p.servers.capacity == 1_000 * 512
    assert p.servers.bound_by is Bound.OPEN_FILES


def test_source_ips_follow_ports_times_endpoints():
    p = plan_fleet(request(10_000_000, listen_ports=2, port_range=PortRange(1024, 65535)))
    # one server, 2 ports: 64,512 x 2 = 129,024 per source IP -> ceil(10M / 129,024) = 78
    assert p.endpoints == 2
    assert p.source_ips_per_client == 78


def test_one_vip_in_front_of_many_servers_needs_more_source_ips():
    direct = plan_fleet(request(10_000_000, memory=16 * GIB))
    via_vip = plan_fleet(request(10_000_000, memory=16 * GIB, vips=1))
    assert direct.endpoints == 3 and via_vip.endpoints == 1
    assert via_vip.source_ips > direct.source_ips


def test_settings_include_the_port_range_on_clients_and_backlog_on_servers():
    p = plan_fleet(request(1_000_000))
    assert "net.ipv4.ip_local_port_range" in {s.name for s in p.clients.settings}
    assert "net.core.somaxconn" in {s.name for s in p.servers.settings}


@pytest.mark.parametrize("bad", [dict(memory=0), dict(nofile=0)])
def test_impossible_machines_are_refused(bad):
    with pytest.raises(ValueError):
        request(1, **bad)


def test_zero_connections_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        request(0)


# ---------------------------------------------------------------- the fleet on Dask

def commands(d: Deployment) -> dict[str, tuple[str, ...]]:
    return {step.where: step.commands for step in d.steps}


def test_the_deployment_starts_a_scheduler_a_worker_per_client_and_serve_per_server():
    p = plan_fleet(request(10_000_000, memory=16 * GIB, vips=1))
    d = deployment(p, "10.0.0.2", ("10.0.1.1:9000",))
    steps = {step.where: step for step in d.steps}
    assert d.scheduler == "tcp://10.0.0.2:8786"
    assert steps["one machine, the scheduler"].commands == ("dask scheduler --port 8786",)
    assert steps["each server machine"].machines == p.servers.machines
    assert steps["each server machine"].commands == (
        f"sudo tcpmax tune --target {p.servers.per_machine} --role server --apply",
        f"ulimit -n {p.servers.nofile}",
        f"tcpmax serve --host 0.0.0.0 --port 9000 --max-connections {p.servers.per_machine}")
    assert steps["each client machine"].machines == p.clients.machines
    assert steps["each client machine"].commands == (
        f"sudo tcpmax tune --target {p.clients.per_machine} --role client --sources "
        f"{p.source_ips_per_client} --endpoints 1 --apply",
        f"ulimit -n {p.clients.nofile}",
        "dask worker tcp://10.0.0.2:8786 --nworkers 1 --nthreads 1")
    assert d.steps[-1].commands == (
        "tcpmax load 10.0.1.1:9000 -n 10000000 --cluster tcp://10.0.0.2:8786",)


def test_without_targets_the_load_names_a_placeholder_per_server_or_vip():
    direct = plan_fleet(request(10_000_000, memory=16 * GIB))
    load = commands(deployment(direct))["any machine with tcpmax, once every worker is up"][0]
    servers = " ".join(f"SERVER_{i}:9000" for i in range(1, direct.servers.machines + 1))
    assert load == (f"tcpmax load {servers} -n 10000000 "
                    f"--cluster tcp://{SCHEDULER_HOST}:8786")
    two_vips = deployment(plan_fleet(request(10_000_000, vips=2)))
    assert "VIP_1:9000 VIP_2:9000 -n" in two_vips.steps[-1].commands[0]


def test_several_listen_ports_are_served_and_targeted_as_one_range():
    p = plan_fleet(request(10_000_000, vips=1, listen_ports=10))
    d = commands(deployment(p, port=9100))
    assert d["each server machine"][-1].startswith("tcpmax serve --host 0.0.0.0 --ports "
                                                   "9100-9109 ")
    assert "VIP_1:9100-9109 -n" in d["any machine with tcpmax, once every worker is up"][0]


@pytest.mark.parametrize(("kw", "word"), [
    ({"scheduler_host": "tcp://x:1"}, "host name"),
    ({"scheduler_host": "a b"}, "host name"),
    ({"targets": ("SERVER:9000",)}, "not an IP address"),
    ({"port": 65530}, "port 65530"),             # 10 listen ports would pass 65535
])
def test_a_deployment_refuses_what_cannot_be_typed(kw, word):
    with pytest.raises(ValueError, match=word):
        deployment(plan_fleet(request(10_000_000, listen_ports=10)), **kw)


def test_an_ipv6_scheduler_goes_in_brackets():
    d = deployment(plan_fleet(request(10_000_000)), "[fd00::2]")
    assert d.scheduler == "tcp://[fd00::2]:8786"


@pytest.mark.parametrize(("protocol", "serve_flags", "target", "load_flags"), [
    (Protocol.TLS, " --tls CERT.pem --tls-key KEY.pem", "tls://10.0.1.1:9000", " --ca CA.pem"),
    (Protocol.WS, " --mode ws", "ws://10.0.1.1:9000/", ""),
    (Protocol.WSS, " --mode ws --tls CERT.pem --tls-key KEY.pem", "wss://10.0.1.1:9000/",
     " --ca CA.pem"),
])
def test_the_deployment_serves_and_loads_the_planned_protocol(protocol, serve_flags, target,
                                                               load_flags):
    costs = Costs(3400, 24_000, protocol=protocol)
    spec = MachineSpec(64 * GIB, 16, 1_048_576, 0.2)
    fleet = plan_fleet(PlanRequest(1_000_000, spec, spec, costs))
    steps = deployment(fleet, "10.0.0.2", ("10.0.1.1:9000",)).steps
    serve = steps[2].commands[-1]
    assert serve.endswith(f"--max-connections {fleet.servers.per_machine}{serve_flags}")
    assert steps[-1].commands == (
        f"tcpmax load {target} -n 1000000{load_flags} --cluster tcp://10.0.0.2:8786",)
