"""Applying and reverting sysctls: on fake trees, and for real inside a throwaway netns."""

import json
import subprocess
import sys

import pytest

from tcpmax.host.tune import TuneError, TunePaths, apply_changes, revert_changes
from tcpmax.model.target import SysctlChange

SOMAXCONN = "sys/net/core/somaxconn"
FILE_MAX = "sys/fs/file-max"


def change(name, value):
    return SysctlChange(name, None, value, "test")


@pytest.fixture
def paths(fake_proc, tmp_path):
    return TunePaths(proc_root=fake_proc(), etc_root=tmp_path / "root",
                     state_dir=tmp_path / "state")


def read(paths, rel):
    return (paths.proc_root / rel).read_text().strip()


def test_apply_writes_the_values_and_reports_previous_ones(paths):
    done = apply_changes([change("net.core.somaxconn", "32768")], paths)
    assert done == [("net.core.somaxconn", "4096", "32768")]
    assert read(paths, SOMAXCONN) == "32768"


def test_revert_restores_the_values_from_before_apply(paths):
    apply_changes([change("net.core.somaxconn", "32768"), change("fs.file-max", "9000000")],
                  paths)
    restored = revert_changes(paths)
    assert dict(restored) == {"net.core.somaxconn": "4096", "fs.file-max": "2000000"}
    assert read(paths, SOMAXCONN) == "4096" and read(paths, FILE_MAX) == "2000000"
    assert not paths.backup.exists()


def test_applying_twice_keeps_the_original_value_for_revert(paths):
    apply_changes([change("net.core.somaxconn", "8192")], paths)
    apply_changes([change("net.core.somaxconn", "32768")], paths)
    revert_changes(paths)
    assert read(paths, SOMAXCONN) == "4096"


def test_a_failed_write_rolls_back_what_this_call_wrote(paths):
    (paths.proc_root / "sys/fs/nr_open").unlink()
    (paths.proc_root / "sys/fs/nr_open").mkdir()
    with pytest.raises(TuneError, match=r"fs\.nr_open"):
        apply_changes([change("net.core.somaxconn", "32768"), change("fs.nr_open", "2000000")],
                      paths)
    assert read(paths, SOMAXCONN) == "4096"
    assert not paths.backup.exists()


def test_persist_writes_config_files_and_revert_removes_them(paths):
    apply_changes([change("net.core.somaxconn", "32768")], paths, persist=True, nofile=1000064)
    sysctl_file = paths.etc_root / "etc/sysctl.d/90-tcpmax.conf"
    limits_file = paths.etc_root / "etc/security/limits.d/90-tcpmax.conf"
    assert "net.core.somaxconn = 32768" in sysctl_file.read_text()
    assert "nofile    1000064" in limits_file.read_text()
    revert_changes(paths)
    assert not sysctl_file.exists() and not limits_file.exists()


def test_revert_without_a_backup_says_there_is_nothing_to_revert(paths):
    with pytest.raises(TuneError, match="nothing to revert"):
        revert_changes(paths)


def test_a_backup_from_another_network_namespace_is_refused(paths):
    apply_changes([change("net.core.somaxconn", "32768")], paths)
    data = json.loads(paths.backup.read_text())
    data["netns"] = -1
    paths.backup.write_text(json.dumps(data))
    with pytest.raises(TuneError, match="another network namespace"):
        revert_changes(paths)


def _sysctl(ns, name):
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", name], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.root
def test_tune_apply_then_revert_round_trips_in_a_netns_and_leaves_its_neighbour_alone(
        netns, tmp_path):
    # A second namespace of this test stands in for the host: tune must change only the
    # namespace it runs in (reading the host's own /proc/sys would race other agents).
    ns, neighbour = netns(), netns()
    names = ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"]
    neighbour_before = {n: _sysctl(neighbour, n) for n in names}
    ns_before = {n: _sysctl(ns, n) for n in names}
    tcpmax = ["ip", "netns", "exec", ns, sys.executable, "-m", "tcpmax", "tune",
              "--state-dir", str(tmp_path)]
    out = subprocess.run([*tcpmax, "--target", "10M", "--apply", "--namespaced-only",
                          "--json"], check=True, capture_output=True, text=True)
    applied = {a["name"]: a["value"] for a in json.loads(out.stdout)["applied"]}
    assert set(applied) == set(names)
    assert {n: _sysctl(ns, n) for n in names} == applied
    assert {n: _sysctl(neighbour, n) for n in names} == neighbour_before

    subprocess.run([*tcpmax, "--revert"], check=True, capture_output=True)
    assert {n: _sysctl(ns, n) for n in names} == ns_before
    assert {n: _sysctl(neighbour, n) for n in names} == neighbour_before
    assert not (tmp_path / "tune-backup.json").exists()
