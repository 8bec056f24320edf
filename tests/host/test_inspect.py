"""Reading host facts, from fake /proc trees and from the live host."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tcpmax.host.inspect import read_host
from tcpmax.model.facts import PortRange


def test_reads_every_limit_from_a_proc_tree(fake_proc):
    f = read_host(fake_proc())
    assert (f.nofile_soft, f.nofile_hard) == (1024, 20_000)
    assert f.port_range == PortRange(32768, 60999)
    assert f.reserved_ports == ()
    assert f.somaxconn == 4096 and f.tcp_max_syn_backlog == 2048
    assert f.file_max == 2_000_000 and f.files_allocated == 1000
    assert f.nr_open == 1_048_576
    assert f.epoll_max_user_watches == 5_000_000
    assert f.tcp_mem_pages == (100, 200, 300)
    assert f.mem_total == 16_000_000 * 1024 and f.mem_available == 12_000_000 * 1024
    assert f.kernel == "6.1.0-test"
    assert f.cores == 4
    assert f.euid == 1000
    assert f.sockstat.tcp_inuse == 10 and f.sockstat.tcp_time_wait == 3


def test_capabilities_are_decoded_from_capeff(fake_proc):
    f = read_host(fake_proc())
    assert f.capabilities == frozenset({"CAP_NET_ADMIN"})     # bit 12 = 0x1000


def test_reserved_ports_accept_lists_and_ranges(fake_proc):
    f = read_host(fake_proc(**{"sys/net/ipv4/ip_local_reserved_ports": "8080,40000-40009"}))
    assert f.reserved_ports == (PortRange(8080, 8080), PortRange(40000, 40009))
    assert f.usable_ports == 28_232 - 10


def test_missing_conntrack_is_none_with_a_reason_and_nothing_else_is_lost(fake_proc):
    f = read_host(fake_proc())
    assert f.conntrack_max is None
    assert "net.netfilter.nf_conntrack_max" in f.unknown
    assert f.somaxconn == 4096


def test_present_conntrack_is_read_with_its_count(fake_proc):
    f = read_host(fake_proc(**{"sys/net/netfilter/nf_conntrack_max": "262144",
                               "sys/net/netfilter/nf_conntrack_count": "17"}))
    assert (f.conntrack_max, f.conntrack_count) == (262_144, 17)
    assert f.conntrack_tracking


def test_garbage_in_a_file_marks_only_that_fact_unknown(fake_proc):
    f = read_host(fake_proc(**{"sys/net/core/somaxconn": "lots"}))
    assert f.somaxconn is None
    assert f.unknown["net.core.somaxconn"].startswith("unreadable")
    assert f.file_max == 2_000_000


def test_an_unreadable_entry_is_reported_not_raised(fake_proc):
    root = fake_proc(**{"sys/fs/file-max": None})
    (root / "sys/fs/file-max").mkdir()           # reading a directory fails even as root
    f = read_host(root)
    assert f.file_max is None and "fs.file-max" in f.unknown


def test_a_snapshot_has_no_addresses_and_says_why(fake_proc):
    f = read_host(fake_proc())
    assert f.addresses is None
    assert "addresses" in f.unknown


def test_live_host_agrees_with_getrlimit_and_proc_sys():
    f = read_host()
    assert (f.nofile_soft, f.nofile_hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    assert f.port_range == PortRange(int(low), int(high))
    assert f.somaxconn == int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert f.file_max == int(Path("/proc/sys/fs/file-max").read_text())
    assert f.euid == os.geteuid()
    assert f.cores == len(os.sched_getaffinity(0))


def test_live_host_lists_loopback_among_its_addresses():
    f = read_host()
    assert any(a.address == "127.0.0.1" for a in f.addresses)
    assert f.loopback_sources == 2**24 - 2


@pytest.mark.root
def test_inside_a_network_namespace_doctor_reports_that_namespaces_port_range(netns):
    ns = netns({"net.ipv4.ip_local_port_range": "40000 40999"})
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "tcpmax",
                          "doctor", "--json"], check=True, capture_output=True, text=True)
    reported = json.loads(out.stdout)["host"]["port_range"]
    assert (reported["low"], reported["high"], reported["size"]) == (40000, 40999, 1000)
