"""A sandbox's sysctls are names, checked before anything is created."""

import subprocess

import pytest

from tcpmax.lab.sandbox import PREFIX, in_namespace


def _namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)}


def test_a_path_given_as_a_sysctl_is_refused_before_a_namespace_exists():
    before = _namespaces()
    with pytest.raises(ValueError, match="not a sysctl name"):
        in_namespace(lambda: None, {"../../../etc/hostname": "x"})
    assert _namespaces() == before
