"""`tcpmax tune` from the command line: printing, refusals.

Every call reads a fake /proc tree (--proc-root) and keeps its backup in a temporary
--state-dir: no test reads or writes this host's /proc/sys.
"""

import importlib
import json

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tests.cli.conftest import error_line

SOMAXCONN = "sys/net/core/somaxconn"


@pytest.fixture
def proc(fake_proc):
    return fake_proc()


def run(proc, state_dir, *args):
    return CliRunner().invoke(cli, ["tune", "--proc-root", str(proc), "--state-dir",
                                    str(state_dir), *args], catch_exceptions=False)


def test_default_prints_a_sysctl_file_and_open_file_limits_without_changing_anything(
        proc, tmp_path):
    before = (proc / SOMAXCONN).read_text()
    result = run(proc, tmp_path / "state", "--target", "10M", "--role", "server")
    assert result.exit_code == 0
    assert "net.core.somaxconn = 65535" in result.output
    assert "LimitNOFILE=10000064" in result.output
    assert "nofile    10000064" in result.output
    assert (proc / SOMAXCONN).read_text() == before
    assert not (tmp_path / "state").exists()


def test_json_lists_changes_with_current_values_and_namespacing(proc, tmp_path):
    data = json.loads(run(proc, tmp_path, "--target", "10M", "--role", "server",
                          "--json").output)
    by_name = {c["name"]: c for c in data["sysctls"]}
    assert by_name["net.core.somaxconn"]["namespaced"] is True
    assert by_name["net.core.somaxconn"]["current"] == (proc / SOMAXCONN).read_text().strip()


def test_namespaced_only_leaves_out_host_wide_sysctls(proc, tmp_path):
    data = json.loads(run(proc, tmp_path, "--target", "10M", "--namespaced-only",
                          "--json").output)
    assert data["sysctls"] and all(c["namespaced"] for c in data["sysctls"])


@pytest.mark.parametrize(("args", "option"), [
    (["--target", "1M", "--apply"], "--apply"), (["--revert"], "--revert"),
])
def test_not_root_is_refused_with_exit_2_and_nothing_written(monkeypatch, proc, tmp_path,
                                                             started, args, option):
    monkeypatch.setattr(importlib.import_module("tcpmax.cli.tune").os, "geteuid", lambda: 1000)
    before = (proc / SOMAXCONN).read_text()
    result = run(proc, tmp_path / "state", *args)
    assert result.exit_code == 2
    assert option in error_line(result.output) and "needs root" in result.output
    assert (proc / SOMAXCONN).read_text() == before
    assert not (tmp_path / "state").exists()
    assert started.nothing() == []


@pytest.mark.parametrize(("args", "option"), [
    ([], "--target"), (["--target", "1Q"], "--target"),
    (["--target", "1M", "--persist"], "--persist"), (["--revert", "--target", "1M"], "--revert"),
    (["--target", "1M", "--role", "router"], "--role"),
])
def test_bad_combinations_exit_2_naming_the_option_and_change_nothing(proc, tmp_path, started,
                                                                      args, option):
    before = (proc / SOMAXCONN).read_text()
    result = run(proc, tmp_path / "state", *args)
    assert result.exit_code == 2
    assert option in error_line(result.output)
    assert (proc / SOMAXCONN).read_text() == before
    assert not (tmp_path / "state").exists()
    assert started.nothing() == []


def test_revert_with_no_backup_exits_2_and_says_so(proc, tmp_path):
    result = run(proc, tmp_path, "--revert")
    assert result.exit_code == 2
    assert "nothing to revert" in result.output


def test_apply_then_revert_on_a_proc_tree_round_trips(monkeypatch, proc, tmp_path):
    # The tree is a fake: writing it needs no root, so any user runs this test.
    monkeypatch.setattr(importlib.import_module("tcpmax.cli.tune").os, "geteuid", lambda: 0)
    applied = json.loads(run(proc, tmp_path, "--target", "10M", "--apply", "--json").output)
    values = {a["name"]: a["value"] for a in applied["applied"]}
    assert (proc / SOMAXCONN).read_text().strip() == values["net.core.somaxconn"] == "65535"
    run(proc, tmp_path, "--revert")
    assert (proc / SOMAXCONN).read_text().strip() == "4096"
    assert not (tmp_path / "tune-backup.json").exists()


def test_the_undo_hint_repeats_the_state_dir_and_proc_root_it_was_given(monkeypatch, proc,
                                                                       tmp_path):
    monkeypatch.setattr(importlib.import_module("tcpmax.cli.tune").os, "geteuid", lambda: 0)
    out = run(proc, tmp_path, "--target", "10M", "--apply").output
    assert (f"undo with: tcpmax tune --revert --state-dir {tmp_path} --proc-root {proc}\n"
            in out)
