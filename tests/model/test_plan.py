"""Fleet sizing on paper, checked against hand arithmetic."""

import pytest

from tcpmax.model.capacity import Costs
from tcpmax.model.facts import PortRange
from tcpmax.model.plan import Bound, MachineSpec, PlanRequest, plan_fleet

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
