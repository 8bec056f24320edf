"""The capacity arithmetic, checked against figures computed by hand."""

import dataclasses

import pytest

from tcpmax.model.capacity import (
    ConstraintKey,
    Costs,
    Protocol,
    ProtocolMemoryMeasurement,
    Role,
    Scope,
    host_capacity,
    processes_needed,
    theory_ceilings,
)
from tcpmax.model.doctor import build_doctor_report
from tcpmax.model.facts import HostFacts, LocalAddress, PortRange

COSTS = Costs(kernel_bytes_per_socket=3400, user_bytes_per_connection=100, fd_reserve=64,
              max_processes=512)

# A host where nothing but the named fact is tight.
ROOMY = HostFacts(
    nofile_soft=1024, nofile_hard=20_000, nr_open=1_048_576,
    file_max=10_000_000, files_allocated=1_000,
    port_range=PortRange(32768, 60999), reserved_ports=(),
    epoll_max_user_watches=50_000_000,
    mem_available=35_000_000_000,   # 10,000,000 connections at 3,500 B
    addresses=(LocalAddress("lo", "127.0.0.1", 8), LocalAddress("eth0", "192.0.2.7", 24)),
)


def test_one_process_holds_its_hard_limit_minus_its_own_files():
    cap = host_capacity(ROOMY, Role.SERVER, COSTS)
    assert cap.per_process == 20_000 - 64


def test_per_process_limit_never_binds_the_host():
    cap = host_capacity(ROOMY, Role.SERVER, COSTS)
    assert cap.binding is not None
    assert cap.binding.scope is Scope.HOST
    assert cap.connections > cap.per_process


def test_server_memory_limit_is_available_bytes_over_cost_per_connection():
    facts = dataclasses.replace(ROOMY, mem_available=35_000_000)
    cap = host_capacity(facts, Role.SERVER, COSTS)
    assert cap.binding_key == ConstraintKey.MEMORY
    assert cap.connections == 10_000


def test_system_fds_limit_is_file_max_minus_files_in_use():
    facts = dataclasses.replace(ROOMY, file_max=5_000, files_allocated=1_000)
    cap = host_capacity(facts, Role.SERVER, COSTS)
    assert cap.binding_key == ConstraintKey.SYSTEM_FDS
    assert cap.connections == 4_000


def test_loopback_counts_two_sockets_per_connection():
    facts = dataclasses.replace(ROOMY, mem_available=35_000_000, file_max=101_000)
    loop = host_capacity(facts, Role.LOOPBACK, COSTS)
    assert loop.get(ConstraintKey.MEMORY).limit == 5_000          # 35e6 / (2 x 3,500)
    assert loop.get(ConstraintKey.SYSTEM_FDS).limit == 50_000     # (101,000 - 1,000) / 2


def test_client_ports_are_usable_range_times_sources_times_endpoints():
    facts = dataclasses.replace(ROOMY, reserved_ports=(PortRange(40000, 40009),))
    cap = host_capacity(facts, Role.CLIENT, COSTS, sources=3, endpoints=2)
    assert cap.get(ConstraintKey.PAIR_PORTS).limit == 28_232 - 10
    assert cap.get(ConstraintKey.PORTS).limit == 28_222 * 3 * 2
    assert cap.binding_key == ConstraintKey.PORTS


def test_reserved_ports_outside_the_range_cost_nothing():
    facts = dataclasses.replace(ROOMY, reserved_ports=(PortRange(80, 80),
                                                       PortRange(60990, 61010)))
    assert facts.usable_ports == 28_232 - 10      # only 60990-60999 overlap


def test_client_defaults_to_the_hosts_own_ipv4_addresses():
    cap = host_capacity(ROOMY, Role.CLIENT, COSTS)
    assert cap.sources == 1                      # 192.0.2.7; loopback does not count


def test_loopback_client_may_use_all_of_127_slash_8():
    cap = host_capacity(ROOMY, Role.LOOPBACK, COSTS)
    assert cap.sources == 2**24 - 2


def test_server_has_no_port_limit():
    cap = host_capacity(ROOMY, Role.SERVER, COSTS)
    assert cap.get(ConstraintKey.PORTS) is None and cap.get(ConstraintKey.PAIR_PORTS) is None


def test_unknown_memory_is_shown_but_never_binds():
    facts = dataclasses.replace(ROOMY, mem_available=None, file_max=5_000)
    cap = host_capacity(facts, Role.SERVER, COSTS)
    assert cap.get(ConstraintKey.MEMORY).limit is None
    assert cap.binding_key == ConstraintKey.SYSTEM_FDS


def test_idle_conntrack_table_does_not_bind():
    facts = dataclasses.replace(ROOMY, conntrack_max=1_000, conntrack_count=0)
    cap = host_capacity(facts, Role.SERVER, COSTS)
    assert cap.get(ConstraintKey.CONNTRACK).applies is False
    assert cap.binding_key != ConstraintKey.CONNTRACK


def test_tracking_conntrack_table_binds_at_its_free_entries():
    facts = dataclasses.replace(ROOMY, conntrack_max=1_000, conntrack_count=200)
    cap = host_capacity(facts, Role.SERVER, COSTS)
    assert cap.binding_key == ConstraintKey.CONNTRACK
    assert cap.connections == 800


def test_every_constraint_shows_its_arithmetic_with_its_result():
    cap = host_capacity(ROOMY, Role.LOOPBACK, COSTS)
    for c in cap.constraints:
        if c.limit is not None:
            assert f"{c.limit:,}" in c.arithmetic or c.key == ConstraintKey.NR_OPEN, c


def test_next_limit_is_the_second_host_limit():
    facts = dataclasses.replace(ROOMY, file_max=5_000, files_allocated=1_000)
    cap = host_capacity(facts, Role.SERVER, COSTS)
    assert cap.next_limit == 10_000_000          # memory, behind file-max


@pytest.mark.parametrize(("connections", "per", "expected"), [
    (1_000_000, 19_936, 51), (19_936, 19_936, 1), (19_937, 19_936, 2), (10, 19_936, 1),
])
def test_processes_needed_rounds_up(connections, per, expected):
    assert processes_needed(connections, per) == expected


def test_processes_needed_respects_a_floor_such_as_the_core_count():
    assert processes_needed(10, 19_936, at_least=4) == 4


def test_theory_ceiling_of_one_ipv4_listening_port_is_2_to_the_48():
    ceilings = {c.title: c.value for c in theory_ceilings(ROOMY)}
    assert ceilings["one IPv4 listening address:port (theory)"] == 281_474_976_710_656


def test_file_max_does_not_bind_a_process_with_cap_sys_admin():
    facts = dataclasses.replace(ROOMY, file_max=5_000, files_allocated=1_000,
                                capabilities=frozenset({"CAP_SYS_ADMIN"}))
    cap = host_capacity(facts, Role.SERVER, COSTS)
    assert cap.get(ConstraintKey.SYSTEM_FDS).applies is False
    assert "CAP_SYS_ADMIN" in cap.get(ConstraintKey.SYSTEM_FDS).note
    assert cap.binding_key != ConstraintKey.SYSTEM_FDS


@pytest.mark.parametrize(("tls", "ws", "protocol"), [
    (False, False, Protocol.TCP), (False, True, Protocol.WS),
    (True, False, Protocol.TLS), (True, True, Protocol.WSS)])
def test_protocol_follows_the_tls_and_ws_flags(tls, ws, protocol):
    assert Protocol.of(tls, ws) is protocol


def test_tls_user_bytes_move_the_memory_wall_and_the_arithmetic_names_tls():
    facts = dataclasses.replace(ROOMY, mem_available=35_000_000)
    tls = dataclasses.replace(COSTS, user_bytes_per_connection=31_600, protocol=Protocol.TLS)
    cap = host_capacity(facts, Role.SERVER, tls)
    assert cap.binding_key == ConstraintKey.MEMORY
    assert cap.connections == 35_000_000 // (3400 + 31_600)
    memory = cap.get(ConstraintKey.MEMORY)
    assert memory is not None and "31600 B user for TLS" in memory.arithmetic


def test_a_protocol_measurement_sizes_every_side_by_its_larger_figure():
    m = ProtocolMemoryMeasurement(Protocol.TLS, (500, 2000), server_bytes_per_connection=30_000,
                                  client_bytes_per_connection=22_000, method="probe")
    report = build_doctor_report(ROOMY, COSTS, protocol_measurement=m)
    assert report.costs.user_bytes_per_connection == 30_000
    assert report.costs.protocol is Protocol.TLS
    assert report.costs.user_source == "measured here: probe"
