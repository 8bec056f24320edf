"""Splitting one load over a cluster's machines by each machine's own limits (no sockets)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpmax.model.cluster import MachineFacts, loopback_blocks, machine_capacity, split_load


def machine(name="m", fd_budget=19_936, processes=512, usable_ports=28_232, sources=1,
            memory=8 * 2**30, bytes_per_connection=4_190):
    return MachineFacts(name, fd_budget, processes, usable_ports, sources, memory,
                        bytes_per_connection)


@pytest.mark.parametrize(("facts", "endpoints", "binding", "connections"), [
    # open files: 2 processes of 1,000 fds
    (machine(fd_budget=1_000, processes=2), 1, "open files", 2_000),
    # ports: one source IP toward one endpoint has one port range
    (machine(sources=1, usable_ports=28_232), 1, "ports", 28_232),
    # ... and toward two endpoints, two
    (machine(sources=1, usable_ports=28_232, fd_budget=10**6), 2, "ports", 56_464),
    # memory: 1 GiB at 4,096 B per connection
    (machine(sources=100, memory=2**30, bytes_per_connection=4_096), 1, "memory", 262_144),
])
def test_each_machine_is_capped_by_its_lowest_limit(facts, endpoints, binding, connections):
    cap = machine_capacity(facts, endpoints)
    assert cap.binding == binding
    assert cap.connections == connections


@pytest.mark.parametrize(("n", "capacities", "shares"), [
    (300_000, [10**6] * 3, (100_000, 100_000, 100_000)),          # equal machines
    (10, [100, 100, 100], (4, 3, 3)),                             # remainder to the first
    (300, [100, 200, 300], (50, 100, 150)),                       # in proportion
    (7, [0, 100, 100], (0, 4, 3)),                                # no capacity, no share
    (1, [5, 10], (0, 1)),                                         # largest remainder wins
])
def test_shares_follow_capacity_and_sum_to_n(n, capacities, shares):
    machines = [machine(f"m{i}", fd_budget=c, processes=1, sources=10**6)
                for i, c in enumerate(capacities)]
    split = split_load(n, machines, 1)
    assert split.feasible
    assert split.shares == shares


def test_a_split_that_cannot_reach_n_names_each_machine_and_what_it_runs_out_of():
    machines = [machine("tcp://a:1", fd_budget=1_000, processes=1, sources=100),
                machine("tcp://b:1", sources=1, usable_ports=500)]
    split = split_load(10_000, machines, 1)
    assert not split.feasible
    text = "; ".join(split.problems)
    assert "at most 1,500 of 10,000" in text
    assert "tcp://a:1 runs out of open files at 1,000" in text
    assert "tcp://b:1 runs out of ports at 500" in text


def test_an_empty_cluster_says_how_to_add_a_worker():
    with pytest.raises(ValueError, match="dask worker"):
        split_load(10, [], 1)


@given(st.integers(1, 10**7), st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
def test_feasible_splits_sum_to_n_and_stay_within_each_capacity(n, capacities):
    machines = [machine(f"m{i}", fd_budget=c, processes=1, sources=10**6)
                for i, c in enumerate(capacities)]
    split = split_load(n, machines, 1)
    if sum(capacities) >= n:
        assert sum(split.shares) == n
        assert all(s <= c for s, c in zip(split.shares, capacities, strict=True))
    else:
        assert not split.feasible


def test_shards_of_a_loopback_run_get_disjoint_source_addresses():
    # 30k over three shards on one kernel: one 127.x address each would share one port range.
    blocks = loopback_blocks([10_000, 10_000, 10_000], 1, [28_232] * 3)
    assert [len(b) for b in blocks] == [1, 1, 1]
    assert len({a for b in blocks for a in b}) == 3


def test_a_big_loopback_share_gets_enough_addresses_to_stay_under_half_each_range():
    blocks = loopback_blocks([100_000, 0], 1, [28_232, 28_232])
    assert len(blocks[0]) * (28_232 // 2) >= 100_000
    assert blocks[1] == ()
