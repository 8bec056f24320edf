"""Shared fixtures: a fake /proc tree builder and the root/netns guard."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

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


needs_netns = pytest.mark.skipif(not _can_make_netns(),
                                 reason="needs root and iproute2 to create network namespaces")
