"""Network namespaces for experiments: isolated, and always removed."""

import os
import subprocess
from pathlib import Path

import pytest

from tcpmax.lab.sandbox import PREFIX, SandboxError, in_namespace, sweep_stale


def ours():
    """Sandboxes this process made (other agents' `prove` runs make theirs meanwhile)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    mine = f"{PREFIX}{os.getpid()}-"
    return [line.split()[0] for line in out.splitlines() if line.startswith(mine)]


def port_range_here():
    return Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()


@pytest.mark.root
def test_a_sysctl_set_in_the_namespace_is_seen_there_and_not_on_the_host():
    host = port_range_here()
    inside = in_namespace(port_range_here, {"net.ipv4.ip_local_port_range": "40000 40999"})
    assert inside == ["40000", "40999"]
    assert port_range_here() == host
    assert ours() == []


@pytest.mark.root
def test_a_failing_experiment_raises_and_still_removes_its_namespace():
    def boom():
        raise RuntimeError("measured nothing")

    with pytest.raises(SandboxError, match="measured nothing"):
        in_namespace(boom)
    assert ours() == []


@pytest.mark.root
def test_loopback_is_up_inside():
    import socket

    def connect_to_self():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        c = socket.create_connection(s.getsockname(), timeout=2)
        c.close()
        s.close()
        return True

    assert in_namespace(connect_to_self) is True


@pytest.mark.root
def test_namespaces_left_by_a_dead_run_are_swept():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)                     # a pid that no longer exists
    name = f"{PREFIX}{pid}-0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in sweep_stale()
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.split()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
