"""A tune backup is a file on disk: a damaged or hostile one restores nothing and escapes
nothing."""

import json

import pytest

from tcpmax.host.inspect import sysctl_path
from tcpmax.host.tune import TuneError, TunePaths, apply_changes, revert_changes
from tcpmax.model.target import SysctlChange


@pytest.fixture
def paths(fake_proc, tmp_path):
    return TunePaths(proc_root=fake_proc(), etc_root=tmp_path / "root",
                     state_dir=tmp_path / "state")


def _tamper(paths, **entries):
    data = json.loads(paths.backup.read_text())
    for key, value in entries.items():
        data[key] = value
    paths.backup.write_text(json.dumps(data))


@pytest.mark.parametrize("name", ["../../etc/passwd", "net/core/somaxconn", "fs..file-max",
                                  "net.core.somaxconn/../../x", "", "FS.FILE-MAX", "a"])
def test_a_name_that_is_not_a_sysctl_name_has_no_path(name):
    with pytest.raises(ValueError, match="not a sysctl name"):
        sysctl_path(name)


def test_a_backup_naming_a_path_outside_proc_sys_restores_nothing(paths, tmp_path):
    apply_changes([SysctlChange("net.core.somaxconn", None, "32768", "test")], paths)
    _tamper(paths, sysctls={"net.core.somaxconn": "4096", "../../../outside": "x"})
    with pytest.raises(TuneError, match=r"damaged.*not a sysctl name"):
        revert_changes(paths)
    assert (paths.proc_root / "sys/net/core/somaxconn").read_text().strip() == "32768"
    assert not (tmp_path / "outside").exists()


def test_a_backup_naming_a_file_tune_never_writes_restores_nothing(paths, tmp_path):
    apply_changes([SysctlChange("net.core.somaxconn", None, "32768", "test")], paths)
    _tamper(paths, files={"../../evil": "x"})
    with pytest.raises(TuneError, match="never writes"):
        revert_changes(paths)
    assert not (tmp_path / "evil").exists()


def test_a_backup_that_is_not_an_object_is_reported_damaged(paths):
    paths.state_dir.mkdir(parents=True)
    paths.backup.write_text("[1, 2]")
    with pytest.raises(TuneError, match="damaged"):
        revert_changes(paths)
