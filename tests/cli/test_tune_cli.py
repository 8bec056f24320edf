"""`tcpmax tune` from the command line: printing, refusals."""

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli


def run(*args):
    return CliRunner().invoke(cli, ["tune", *args], catch_exceptions=False)


def test_default_prints_a_sysctl_file_and_open_file_limits_without_changing_anything():
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text()
    result = run("--target", "10M", "--role", "server")
    assert result.exit_code == 0
    assert "net.core.somaxconn = 65535" in result.output
    assert "LimitNOFILE=10000064" in result.output
    assert "nofile    10000064" in result.output
    assert Path("/proc/sys/net/core/somaxconn").read_text() == somaxconn


def test_json_lists_changes_with_current_values_and_namespacing():
    data = json.loads(run("--target", "10M", "--role", "server", "--json").output)
    by_name = {c["name"]: c for c in data["sysctls"]}
    assert by_name["net.core.somaxconn"]["namespaced"] is True
    assert by_name["net.core.somaxconn"]["current"] == \
        Path("/proc/sys/net/core/somaxconn").read_text().strip()


def test_namespaced_only_leaves_out_host_wide_sysctls():
    data = json.loads(run("--target", "10M", "--namespaced-only", "--json").output)
    assert data["sysctls"] and all(c["namespaced"] for c in data["sysctls"])


@pytest.mark.parametrize("args", [["--target", "1M", "--apply"], ["--revert"]])
def test_not_root_is_refused_with_exit_2(monkeypatch, args):
    monkeypatch.setattr(importlib.import_module("tcpmax.cli.tune").os, "geteuid", lambda: 1000)
    result = run(*args)
    assert result.exit_code == 2
    assert "needs root" in result.output


@pytest.mark.parametrize("args", [
    [], ["--target", "1Q"], ["--target", "1M", "--persist"], ["--revert", "--target", "1M"],
    ["--target", "1M", "--role", "router"],
])
def test_bad_combinations_exit_2(args):
    assert run(*args).exit_code == 2


def test_revert_with_no_backup_exits_2_and_says_so(tmp_path):
    result = run("--revert", "--state-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "nothing to revert" in result.output
