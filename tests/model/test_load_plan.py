"""Planning a load: targets, sources, port strategy and shares, on paper."""

import pytest

from tcpmax.model.facts import PortRange
from tcpmax.model.load import (
    Endpoint,
    LoadConfig,
    PortStrategy,
    TokenBucket,
    loopback_sources,
    parse_target,
    plan_load,
    sources_needed,
    usable_port_list,
)

EP = (Endpoint("127.0.0.1", 9000),)


def plan(n, sources=("127.0.0.2",), endpoints=EP, usable=28_232, nofile=20_000, cores=2,
         **kw):
    return plan_load(LoadConfig(endpoints, n, **kw), sources, usable, nofile, cores)


def test_targets_accept_a_port_a_range_and_ipv6():
    assert parse_target("127.0.0.1:9000") == (Endpoint("127.0.0.1", 9000),)
    assert [e.port for e in parse_target("127.0.0.1:9000-9002")] == [9000, 9001, 9002]
    assert parse_target("[::1]:80") == (Endpoint("::1", 80),)


@pytest.mark.parametrize("text", ["localhost", "127.0.0.1", "1.2.3.4:0", "1.2.3.4:70000",
                                  "1.2.3.4:9-8", "nohost:80", ":80", "1.2.3.4:x"])
def test_bad_targets_are_refused(text):
    with pytest.raises(ValueError):
        parse_target(text)


def test_loopback_sources_are_distinct_local_addresses():
    sources = loopback_sources(600)
    assert len(set(sources)) == 600
    assert all(s.startswith("127.") and not s.endswith(".0") for s in sources)


def test_sources_needed_keep_each_pair_under_half_the_range():
    assert sources_needed(1_000_000, 1, 28_232) == 71      # ceil(1M / 14,116)
    assert sources_needed(10_000, 1, 28_232) == 1
    assert sources_needed(1_000_000, 10, 28_232) == 8


def test_shares_add_up_to_exactly_n_and_respect_worker_budgets():
    p = plan(100_000, sources=loopback_sources(8))
    assert sum(s.count for shares in p.shares for s in shares) == 100_000
    for shares in p.shares:
        assert sum(s.count for s in shares) <= p.budget


def test_auto_uses_the_kernel_below_half_the_range():
    assert plan(10_000).strategy is PortStrategy.KERNEL


def test_auto_binds_ports_itself_above_half_the_range():
    assert plan(20_000).strategy is PortStrategy.EXPLICIT


def test_explicit_shares_never_overlap_in_source_port():
    p = plan(28_000, port_strategy=PortStrategy.EXPLICIT, workers=3)
    used = []
    for shares in p.shares:
        for s in shares:
            used.extend(range(s.first_port, s.first_port + s.count))
    assert len(used) == len(set(used)) == 28_000


def test_more_than_the_port_space_warns_and_lets_the_kernel_name_the_wall():
    p = plan(40_000, port_strategy=PortStrategy.EXPLICIT)
    assert p.capacity == 28_232
    assert p.strategy is PortStrategy.KERNEL
    assert any("EADDRNOTAVAIL" in w for w in p.warnings)


def test_each_endpoint_adds_a_full_port_range():
    eps = parse_target("127.0.0.1:9000-9003")
    p = plan(100_000, endpoints=eps)
    assert p.capacity == 4 * 28_232 and not p.warnings


def test_usable_ports_exclude_reserved_ones():
    ports = usable_port_list(PortRange(100, 110), (PortRange(105, 106),))
    assert ports == [100, 101, 102, 103, 104, 107, 108, 109, 110]


@pytest.mark.parametrize("kw", [dict(connections=0), dict(rate=-1), dict(message_size=8),
                                dict(connect_timeout=0), dict(sources=("::1",))])
def test_impossible_configs_are_refused(kw):
    args = dict(endpoints=EP, connections=10) | kw
    with pytest.raises(ValueError):
        LoadConfig(**args)


def test_token_bucket_gives_rate_times_elapsed():
    b = TokenBucket(rate=1000, burst=10, now=0.0)
    assert b.take(100, 0.0) == 10              # the burst
    assert b.take(100, 0.005) == 5             # 5 ms at 1000/s
    assert b.take(100, 1.0) == 10              # capped by the burst


def test_token_bucket_with_rate_zero_is_unlimited():
    assert TokenBucket(0, 1, 0.0).take(10_000, 0.0) == 10_000
