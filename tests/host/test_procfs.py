"""Sysctl names are the only way into the sysctl tree: nothing else can be read or written."""

import os

import pytest

from tcpmax.host.procfs import read_sysctl, sysctl_path, write_sysctl


def test_a_sysctl_name_maps_to_its_file_under_sys(tmp_path):
    assert sysctl_path("net.core.somaxconn", tmp_path) == tmp_path / "sys/net/core/somaxconn"
    assert sysctl_path("fs.file-max", tmp_path) == tmp_path / "sys/fs/file-max"


@pytest.mark.parametrize("name", [
    "../../etc/passwd", "net/core/somaxconn", "net..core", "net.core.", ".net.core",
    "somaxconn", "net.core.somaxconn/../../x", "Net.Core.Somaxconn", "net.core.some maxconn",
    "net.core.somaxconn\0", "", "-net.core",
])
def test_strings_that_are_not_sysctl_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="not a sysctl name"):
        sysctl_path(name, tmp_path)


def test_a_name_whose_file_is_a_link_out_of_the_tree_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "proc" / "sys").mkdir(parents=True)
    os.symlink(outside, tmp_path / "proc" / "sys" / "net")
    with pytest.raises(ValueError, match="outside"):
        write_sysctl("net.core.somaxconn", "1", tmp_path / "proc")
    assert list(outside.iterdir()) == []


def test_a_written_value_reads_back(tmp_path):
    (tmp_path / "sys" / "net" / "core").mkdir(parents=True)
    write_sysctl("net.core.somaxconn", "8192", tmp_path)
    assert read_sysctl("net.core.somaxconn", tmp_path) == "8192"
    assert (tmp_path / "sys/net/core/somaxconn").read_text() == "8192\n"
