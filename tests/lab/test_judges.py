"""Verdicts are computed from measurements: each claim's judge, on hand-made numbers."""

import pytest

from tcpmax.lab import (
    c01_four_tuple,
    c02_one_port,
    c03_port_range,
    c04_port_reuse,
    c05_more_ips,
    c06_fd_limits,
    c07_memory,
    c08_tcp_udp,
    c09_backlog,
    c10_epoll,
    c11_time_wait,
)
from tcpmax.lab.common import Verdict

C, R, INC = Verdict.CONFIRMED, Verdict.REFUTED, Verdict.INCONCLUSIVE


@pytest.mark.parametrize(("m", "verdict"), [
    (dict(first="a:1 -> b:2", second="a:1 -> b:3", both_established=True,
          duplicate_errno="EADDRNOTAVAIL"), C),
    (dict(first="a:1 -> b:2", second="", both_established=True, duplicate_errno=None), R),
    (dict(first="a:1 -> b:2", second="", both_established=False, duplicate_errno="EINVAL"), INC),
])
def test_c1_needs_coexisting_tuples_and_a_refused_duplicate(m, verdict):
    assert c01_four_tuple.judge(m)[0] is verdict


def c2(held, errors=None, requested=100_000):
    return dict(requested=requested, port=9000, ss_established_on_port=held,
                errors=errors or {})


@pytest.mark.parametrize(("m", "verdict"), [
    (c2(100_000), C), (c2(70_000), C), (c2(65_535), R), (c2(30_000, {"EMFILE": 5}), INC),
])
def test_c2_counts_what_the_kernel_saw_on_the_port(m, verdict):
    assert c02_one_port.judge(m)[0] is verdict


def c3(peak, expected=1_000, requested=1_500, refused=500, usable=1_000):
    return dict(peak=peak, expected=expected, requested=requested, usable_ports=usable,
                port_range="40000-40999", sources=["127.0.0.2"],
                errors={"EADDRNOTAVAIL": refused} if refused else {})


@pytest.mark.parametrize(("m", "verdict"), [
    (c3(1_000), C), (c3(1_200, refused=300), R), (c3(900, refused=600), INC),
])
def test_c3_wants_the_exact_port_range_then_eaddrnotavail(m, verdict):
    assert c03_port_range.judge(m)[0] is verdict


def c4(both, peak, errors=None, usable=1_000):
    return dict(same_port=dict(local="127.0.0.2:40000",
                               endpoints=["127.0.0.1:9000", "127.0.0.1:9001"], both=both),
                usable_ports=usable, port_range="40000-40999", requested=usable + 500,
                peak=peak, endpoints=3, errors=errors or {})


@pytest.mark.parametrize(("m", "verdict"), [
    (c4(True, 1_500), C),                                    # one port, two endpoints; > range
    (c4(True, 1_001), C),                                    # one more than the range is enough
    (c4(False, 1_500), R),                                   # a port could not serve two
    (c4(False, 1_000, {"EADDRNOTAVAIL": 500}), R),
    (c4(True, 1_000, {"EADDRNOTAVAIL": 500}), INC),          # stuck at the range: not shown
    (c4(True, 1_500, {"ETIMEDOUT": 3}), INC),                # past the range, but with errors
])
def test_c4_wants_one_port_on_two_endpoints_and_more_than_the_range(m, verdict):
    got, reason = c04_port_reuse.judge(m)
    assert got is verdict
    if verdict is C:
        assert f"{m['peak']:,}" in reason and f"{m['usable_ports']:,}" in reason


@pytest.mark.parametrize(("one", "many", "verdict"), [(1_000, 3_000, C), (1_000, 1_000, R),
                                                      (1_000, 2_500, INC)])
def test_c5_wants_exactly_k_times(one, many, verdict):
    m = dict(k=3, one_source=one, k_sources=many)
    assert c05_more_ips.judge(m)[0] is verdict


@pytest.mark.parametrize(("count", "name", "peak", "verdict"), [
    (19_993, "EMFILE", 40_000, C), (5_000, "EMFILE", 40_000, INC), (19_993, "ENFILE", 40_000, INC),
    (19_993, "EMFILE", 30_000, INC),
])
def test_c6_wants_emfile_at_the_limit_and_more_with_processes(count, name, peak, verdict):
    m = dict(nofile_hard=20_000, single_process_count=count, single_process_errno=name,
             multi_requested=40_000, multi_peak=peak, multi_workers=3)
    assert c06_fd_limits.judge(m)[0] is verdict


@pytest.mark.parametrize(("kernel", "verdict"), [(3_900, C), (200, R), (200_000, R)])
def test_c7_wants_several_to_tens_of_kb_per_socket(kernel, verdict):
    m = dict(kernel_bytes_per_socket=kernel, serve_user_bytes_per_connection=10)
    assert c07_memory.judge(m)[0] is verdict


@pytest.mark.parametrize(("samples", "verdict"), [
    ([3_800, 3_900, 4_000], C), ([3_900, 210, -4_000], INC), ([250, 200, 180], R)])
def test_c7_calls_rounds_moved_by_other_programs_inconclusive_not_refuted(samples, verdict):
    kernel = sorted(samples)[1]
    m = dict(kernel_bytes_per_socket=kernel, kernel_samples=samples,
             serve_user_bytes_per_connection=10)
    assert c07_memory.judge(m)[0] is verdict


@pytest.mark.parametrize(("udp", "control", "verdict"), [(True, "EADDRINUSE", C),
                                                         (False, "EADDRINUSE", R),
                                                         (True, None, INC)])
def test_c8_wants_udp_bound_and_a_failing_tcp_control(udp, control, verdict):
    m = dict(port=1, udp_bound=udp, udp_error=None if udp else "EADDRINUSE",
             second_tcp_error=control)
    assert c08_tcp_udp.judge(m)[0] is verdict


def c9(small_est, small_over, large_est, large_over):
    runs = [dict(backlog=8, burst=1024, established=small_est, overflows=small_over, drops=0),
            dict(backlog=4096, burst=1024, established=large_est, overflows=large_over,
                 drops=0)]
    return dict(runs=runs)


@pytest.mark.parametrize(("m", "verdict"), [
    (c9(9, 1_015, 1_024, 0), C), (c9(1_024, 0, 1_024, 0), R), (c9(9, 0, 1_024, 0), INC),
])
def test_c9_wants_overflows_with_a_small_backlog_only(m, verdict):
    assert c09_backlog.judge(m)[0] is verdict


@pytest.mark.parametrize(("threads", "t_bytes", "e_bytes", "verdict"), [
    (10_001, 22_000, 10, C), (8_000, 22_000, 10, INC), (10_001, 10, 22_000, R),
])
def test_c10_compares_threads_and_memory(threads, t_bytes, e_bytes, verdict):
    m = dict(connections=10_000,
             threads_server=dict(threads=threads, bytes_per_connection=t_bytes),
             epoll_server=dict(threads=2, processes=2, bytes_per_connection=e_bytes))
    assert c10_epoll.judge(m)[0] is verdict


def run(peak, tw, errors=None):
    return dict(peak=peak, time_wait=tw, errors=errors or {})


@pytest.mark.parametrize(("m", "verdict"), [
    (dict(connections=1_000, graceful=run(1_000, 986), graceful_again=run(
        14, 0, {"EADDRNOTAVAIL": 986}), reset=run(1_000, 0), reset_again=run(1_000, 0)), C),
    (dict(connections=1_000, graceful=run(1_000, 986), graceful_again=run(1_000, 0),
          reset=run(1_000, 0), reset_again=run(1_000, 0)), INC),
    (dict(connections=2_000, graceful=run(2_000, 1_990), reset=run(2_000, 0)), C),
    (dict(connections=2_000, graceful=run(2_000, 10), reset=run(2_000, 0)), INC),
])
def test_c11_wants_time_wait_after_fin_and_none_after_rst(m, verdict):
    assert c11_time_wait.judge(m)[0] is verdict
