"""Walls below a target and the fixes for them, on hand-built hosts."""

import dataclasses

import pytest

from tcpmax.model.capacity import ConstraintKey, Costs, Role
from tcpmax.model.facts import HostFacts, LocalAddress, PortRange
from tcpmax.model.target import FIXES, SysctlChange, assess_target, backlog_for, headroom

COSTS = Costs(3400, 100)
# Shaped like the reference machine: 20,000 open files per process, 24 GB.
HOST = HostFacts(
    nofile_soft=20_000, nofile_hard=20_000, nr_open=1_048_576,
    file_max=2_466_170, files_allocated=300,
    port_range=PortRange(32768, 60999), reserved_ports=(),
    somaxconn=4096, tcp_max_syn_backlog=2048,
    epoll_max_user_watches=5_491_511,
    mem_available=24_000_000_000,
    addresses=(LocalAddress("lo", "127.0.0.1", 8), LocalAddress("eth0", "192.0.2.7", 24)),
    capabilities=frozenset({"CAP_NET_ADMIN"}),        # unprivileged: fs.file-max binds
)


def test_a_million_on_loopback_hits_the_per_process_fd_limit_first():
    a = assess_target(HOST, 1_000_000, Role.LOOPBACK, COSTS)
    assert a.first_wall.constraint.key == ConstraintKey.PROCESS_FDS
    assert a.first_wall.constraint.errno == "EMFILE"
    assert a.processes == 51                      # ceil(1,000,000 / 19,936)


def test_a_million_on_loopback_needs_36_source_ips_given_automatically():
    a = assess_target(HOST, 1_000_000, Role.LOOPBACK, COSTS)
    port_wall = next(w for w in a.walls if w.constraint.key == ConstraintKey.PAIR_PORTS)
    assert a.source_ips == 36                     # ceil(1,000,000 / 28,232)
    assert port_wall.fix.automatic and port_wall.fix.source_ips == 36
    assert a.reachable


def test_a_single_process_would_need_the_target_plus_its_reserve_as_nofile():
    a = assess_target(HOST, 1_000_000, Role.SERVER, COSTS)
    assert a.nofile_single_process == 1_000_064
    assert "LimitNOFILE=1000064" in a.first_wall.fix.summary


def test_missing_cap_sys_resource_is_named_in_the_fd_fix():
    a = assess_target(HOST, 1_000_000, Role.SERVER, COSTS)
    assert "CAP_SYS_RESOURCE" in a.first_wall.fix.summary


def test_file_max_shortfall_is_fixed_with_a_sysctl_with_headroom():
    a = assess_target(HOST, 2_000_000, Role.LOOPBACK, COSTS)
    wall = next(w for w in a.walls if w.constraint.key == ConstraintKey.SYSTEM_FDS)
    (change,) = wall.fix.sysctls
    assert change.name == "fs.file-max"
    assert change.value == str(headroom(2 * 2_000_000 + 300))
    assert change.current == "2466170"


def test_a_privileged_process_has_no_file_max_wall():
    root = dataclasses.replace(HOST, capabilities=frozenset({"CAP_SYS_ADMIN"}))
    a = assess_target(root, 2_000_000, Role.LOOPBACK, COSTS)
    assert ConstraintKey.SYSTEM_FDS not in {w.constraint.key for w in a.walls}


def test_memory_shortfall_is_not_reachable_and_points_to_plan():
    small = dataclasses.replace(HOST, mem_available=1_000_000_000)
    a = assess_target(small, 1_000_000, Role.SERVER, COSTS)
    wall = next(w for w in a.walls if w.constraint.key == ConstraintKey.MEMORY)
    assert not wall.fix.possible
    assert "tcpmax plan" in wall.fix.summary
    assert not a.reachable


def test_a_client_with_one_address_needs_more_source_ips_or_a_wider_range():
    a = assess_target(HOST, 100_000, Role.CLIENT, COSTS)
    assert a.source_ips == 4                      # ceil(100,000 / 28,232)
    names = {c.name for c in a.sysctls}
    assert "net.ipv4.ip_local_port_range" in names


def test_one_port_wall_is_listed_once_when_pair_and_total_are_equal():
    a = assess_target(HOST, 100_000, Role.CLIENT, COSTS, sources=1)
    port_walls = [w for w in a.walls if w.constraint.errno == "EADDRNOTAVAIL"]
    assert len(port_walls) == 1


def test_no_wall_below_a_small_target():
    a = assess_target(HOST, 10_000, Role.SERVER, COSTS)
    assert a.walls == ()
    assert a.processes == 1


def test_server_targets_get_a_listen_backlog_for_the_ramp():
    a = assess_target(HOST, 1_000_000, Role.SERVER, COSTS)
    changes = {c.name: c for c in a.sysctls}
    assert changes["net.core.somaxconn"].value == "32768"
    assert changes["net.core.somaxconn"].namespaced
    assert "fs.file-max" not in changes


def test_clients_get_no_listen_backlog_change():
    a = assess_target(HOST, 1_000_000, Role.CLIENT, COSTS)
    assert "net.core.somaxconn" not in {c.name for c in a.sysctls}


@pytest.mark.parametrize(("target", "backlog"), [
    (100, 4096), (1_000_000, 32768), (10_000_000, 65535),
])
def test_backlog_holds_one_second_of_a_minute_long_ramp(target, backlog):
    assert backlog_for(target) == backlog


@pytest.mark.parametrize(("value", "expected"), [(900, 1024), (1000, 2048), (1_000_000, 1_100_800)])
def test_headroom_adds_ten_percent_rounded_up_to_1024(value, expected):
    assert headroom(value) == expected


def test_only_network_namespace_sysctls_are_marked_namespaced():
    assert SysctlChange("net.ipv4.ip_local_port_range", None, "1 2", "").namespaced
    assert not SysctlChange("fs.file-max", None, "1", "").namespaced


def test_a_target_below_one_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        assess_target(HOST, 0, Role.SERVER, COSTS)


def test_the_fix_table_has_exactly_one_entry_per_constraint_key():
    assert set(FIXES) == set(ConstraintKey)


# A host where every limit that can be a wall is far below ten million, each at its own count.
TINY = HostFacts(
    nofile_soft=1_000, nofile_hard=1_000, nr_open=2_000,
    file_max=5_000, files_allocated=300,
    port_range=PortRange(40000, 40009), reserved_ports=(),
    epoll_max_user_watches=7_000, conntrack_max=9_000, conntrack_count=10,
    mem_available=50_000_000, tcp_mem_pages=(10, 20, 30), page_size=4096,
    addresses=(LocalAddress("eth0", "192.0.2.7", 24),),
    capabilities=frozenset(),
)
# What each constraint's fix must talk about: the setting or remedy that lifts that limit.
REMEDY = {
    ConstraintKey.PROCESS_FDS: "processes",
    ConstraintKey.PROCESS_BUDGET: "hard open-file limit",
    ConstraintKey.NR_OPEN: "fs.nr_open",
    ConstraintKey.SYSTEM_FDS: "fs.file-max",
    ConstraintKey.MEMORY: "add memory",
    ConstraintKey.EPOLL_WATCHES: "fs.epoll.max_user_watches",
    ConstraintKey.CONNTRACK: "nf_conntrack_max",
    ConstraintKey.PAIR_PORTS: "source IPs",
    ConstraintKey.PORTS: "source IPs",
}


def test_every_wall_gets_the_fix_for_its_own_constraint():
    a = assess_target(TINY, 10_000_000, Role.CLIENT, COSTS, sources=1, endpoints=2)
    keys = [w.constraint.key for w in a.walls]
    assert sorted(keys) == sorted(REMEDY)       # every applicable constraint is a wall here
    for w in a.walls:
        assert REMEDY[w.constraint.key] in w.fix.summary, w


def test_context_only_tcp_mem_is_never_a_wall():
    a = assess_target(TINY, 10_000_000, Role.CLIENT, COSTS, sources=1, endpoints=2)
    tcp_mem = a.capacity.get(ConstraintKey.TCP_MEM)
    assert tcp_mem is not None and not tcp_mem.applies
    assert ConstraintKey.TCP_MEM not in {w.constraint.key for w in a.walls}
