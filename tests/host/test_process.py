"""Per-process readings (open-file limit, status, smaps_rollup), netstat and routes."""

import os
import resource
import subprocess
import sys

from tcpmax.host.inspect import read_netstat, read_route
from tcpmax.host.process import (
    parse_smaps_rollup,
    process_memory,
    raise_nofile,
    rss_bytes,
    running,
    thread_count,
)

SMAPS = """55d0e1e00000-7ffd3b5f6000 ---p 00000000 00:00 0                          [rollup]
Rss:                2048 kB
Pss:                 300 kB
Shared_Clean:       1000 kB
Private_Clean:        16 kB
Private_Dirty:       100 kB
"""


def _pid_tree(tmp_path, pid, *, status=None, smaps=None):
    d = tmp_path / str(pid)
    d.mkdir(parents=True)
    if status is not None:
        (d / "status").write_text(status)
    if smaps is not None:
        (d / "smaps_rollup").write_text(smaps)
    return tmp_path


def test_smaps_rollup_fields_are_bytes_by_name():
    fields = parse_smaps_rollup(SMAPS)
    assert fields["Rss"] == 2048 * 1024
    assert fields["Private_Dirty"] == 100 * 1024
    assert set(fields) == {"Rss", "Pss", "Shared_Clean", "Private_Clean", "Private_Dirty"}


def test_memory_sums_over_pids_and_private_is_clean_plus_dirty(tmp_path):
    _pid_tree(tmp_path, 10, smaps=SMAPS)
    _pid_tree(tmp_path, 11, smaps=SMAPS)
    m = process_memory([10, 11], tmp_path)
    assert m.rss == 2 * 2048 * 1024
    assert m.private == 2 * 116 * 1024


def test_a_vanished_pid_counts_as_nothing(tmp_path):
    _pid_tree(tmp_path, 10, smaps=SMAPS, status="VmRSS:\t  64 kB\nThreads:\t3\n")
    assert process_memory([10, 99], tmp_path).rss == 2048 * 1024
    assert rss_bytes([10, 99], tmp_path) == 64 * 1024
    assert thread_count(99, tmp_path) == 0


def test_threads_are_read_from_status(tmp_path):
    _pid_tree(tmp_path, 10, status="Name:\tx\nThreads:\t7\n")
    assert thread_count(10, tmp_path) == 7


def test_live_memory_of_this_process_is_resident_and_partly_private():
    m = process_memory([os.getpid()])
    assert 0 < m.private < m.rss
    assert rss_bytes(["self"]) > 0


def test_raise_nofile_lifts_the_soft_limit_to_the_hard_one():
    code = ("import resource; from tcpmax.host.process import raise_nofile\n"
            "_s, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "new = raise_nofile()\n"
            "print(new, hard, resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    new, hard, soft_now = map(int, out)
    assert new == hard == soft_now
    assert raise_nofile() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_netstat_sections_pair_header_and_value_lines(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "netstat").write_text(
        "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 5 7\n"
        "IpExt: InNoRoutes\nIpExt: 2\n")
    sections = read_netstat(tmp_path)
    assert sections["TcpExt"]["ListenOverflows"] == 5
    assert sections["TcpExt"]["ListenDrops"] == 7
    assert sections["IpExt"] == {"InNoRoutes": 2}


def test_the_route_to_loopback_leaves_through_an_interface_holding_127_0_0_1():
    route = read_route("127.0.0.1")
    assert "127.0.0.1" in route.addresses


def test_running_reads_the_state_after_a_command_name_with_spaces_and_parentheses(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text("7 (a (b) c) S 1 7 7 0 -1\n")
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "stat").write_text("8 (a (Z) c) Z 1 8 8 0 -1\n")
    assert running(7, tmp_path) and not running(8, tmp_path)


def test_a_pid_that_is_gone_is_not_running(tmp_path):
    assert not running(9, tmp_path)


def test_this_process_is_running():
    assert running(os.getpid())
