"""Shared fixtures: a fake /proc tree, network namespaces a test owns, and the `root` marker.

A test that counts sockets, TIME_WAIT or kernel counters does it where only its own sockets
live: inside a network namespace it created (`in_own_netns`, `netns`), or, without root,
filtered to its own ports (tests/kernel.py). Nothing here reads a host-wide counter.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The Ctrl-C tests send SIGINT to the programs they start. A suite launched in the background
# by a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, and an ignored signal
# stays ignored across exec: every such test would then fail for the launcher's reason.
# Restoring Python's handler here makes the children start with the default disposition.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FAKE_PROC_FILES: dict[str, str] = {
    "self/limits": (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        "Max open files            1024                 20000                files     \n"
    ),
    "self/status": (
        "Name:\tpython\nUid:\t1000\t1000\t1000\t1000\n"
        "CapEff:\t0000000000001000\nCpus_allowed_list:\t0-3\n"
    ),
    "sys/fs/nr_open": "1048576",
    "sys/fs/file-max": "2000000",
    "sys/fs/file-nr": "1000\t0\t2000000",
    "sys/fs/epoll/max_user_watches": "5000000",
    "sys/net/ipv4/ip_local_port_range": "32768\t60999",
    "sys/net/ipv4/ip_local_reserved_ports": "",
    "sys/net/core/somaxconn": "4096",
    "sys/net/ipv4/tcp_max_syn_backlog": "2048",
    "sys/net/ipv4/tcp_mem": "100\t200\t300",
    "sys/net/ipv4/tcp_rmem": "4096\t131072\t6291456",
    "sys/net/ipv4/tcp_wmem": "4096\t16384\t4194304",
    "sys/net/ipv4/tcp_max_tw_buckets": "131072",
    "sys/net/ipv4/tcp_tw_reuse": "2",
    "sys/net/ipv4/tcp_fin_timeout": "60",
    "sys/net/core/netdev_max_backlog": "1000",
    "sys/kernel/osrelease": "6.1.0-test",
    "meminfo": "MemTotal:       16000000 kB\nMemAvailable:   12000000 kB\nSlab:  50000 kB\n",
    "net/sockstat": (
        "sockets: used 100\nTCP: inuse 10 orphan 0 tw 3 alloc 12 mem 5\n"
        "UDP: inuse 1 mem 0\n"
    ),
}


@pytest.fixture
def fake_proc(tmp_path: Path) -> Callable[..., Path]:
    """Build a /proc tree: `fake_proc(**{"sys/fs/file-max": "5000"})`; None removes a file."""

    def build(**overrides: str | None) -> Path:
        root = tmp_path / "proc"
        files = {**FAKE_PROC_FILES, **overrides}
        for rel, text in files.items():
            if text is None:
                continue
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + ("" if text.endswith("\n") else "\n"))
        return root

    return build


def _can_make_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


CAN_MAKE_NETNS = _can_make_netns()

# `@pytest.mark.root` marks the tests that need root and iproute2 (namespaces, their
# sysctls, cgroups); pytest_runtest_setup skips them otherwise.


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and not CAN_MAKE_NETNS:
        pytest.skip("needs root and iproute2 to create network namespaces")


def in_own_netns(fn: Callable[[], Any], sysctls: dict[str, str] | None = None) -> Any:
    """Run `fn` in a fresh network namespace with `sysctls` set there; return its result.

    tcpmax's own sandbox does the work (the one `prove` uses): the namespace is named with
    this pid, entered by a forked child with setns(2), and deleted on every path. `fn` must
    return something JSON can carry; assert on it in the test, outside.
    """
    from tcpmax.lab.sandbox import in_namespace

    return in_namespace(fn, sysctls)


_netns_counter = itertools.count()


@pytest.fixture
def netns() -> Iterator[Callable[..., str]]:
    """Make named namespaces for `ip netns exec`: `name = netns({"net.core.somaxconn": "8"})`.

    Names carry this pid (tcpmax-test-PID-N); loopback is up; every one is deleted when the
    test ends, whatever happened.
    """
    made: list[str] = []

    def make(sysctls: dict[str, str] | None = None) -> str:
        name = f"tcpmax-test-{os.getpid()}-{next(_netns_counter)}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        made.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        for key, value in (sysctls or {}).items():
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", f"{key}={value}"],
                           check=True, capture_output=True)
        return name

    try:
        yield make
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture(params=["c", "python"])
def hot_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on both paths of the plain connect and accept loops: the C module's and
    pure Python's (engine/native.py). Workers fork from the test, so they see the choice."""
    from tcpmax.engine import native

    if request.param == "python":
        monkeypatch.setattr(native, "fast", None)
    else:
        assert native.fast is not None, "the C module is not built (pip install -e . builds it)"
    return str(request.param)
