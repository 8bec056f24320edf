"""`tcpmax fleet` from the command line: bad input exits 2 before anything is created."""

import json

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tests.cli.conftest import error_line


@pytest.mark.parametrize(("args", "option"), [
    (["--clients", "0"], "--clients"),
    (["--servers", "300"], "--servers"),
    (["--ips", "0"], "--ips"),
    (["--name", "a/b"], "--name"),
    (["--name", "../etc"], "--name"),
    (["--ttl", "0s"], "--ttl"),
    (["--port", "70000"], "--port"),
])
def test_bad_input_exits_2_naming_the_option_and_creates_nothing(args, option, started,
                                                                  tmp_path):
    state = tmp_path / "state"
    result = CliRunner().invoke(cli, ["fleet", "up", "--state-dir", str(state), *args])
    assert result.exit_code == 2, result.output
    assert option in error_line(result.output)
    assert started.nothing() == []
    assert not state.exists()


def test_a_fleet_name_already_up_exits_2_and_creates_nothing(started, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    record = {"version": 1, "name": "taken", "slot": 0, "creator_pid": 1, "clients": 1,
              "servers": 1, "ips_per_client": 1, "port": 9000, "ttl_s": 60,
              "server_connections": 10, "created_at": 0, "expires_at": 2e9,
              "complete": True, "server_pids": {}}
    (state / "fleet-taken.json").write_text(json.dumps(record))
    result = CliRunner().invoke(cli, ["fleet", "up", "--name", "taken", "--state-dir",
                                      str(state)])
    assert result.exit_code == 2, result.output
    assert "--name" in error_line(result.output) and "already up" in result.output
    assert started.nothing() == []
    assert sorted(p.name for p in state.iterdir()) == ["fleet-taken.json"]


def test_down_and_status_refuse_a_bad_name_with_exit_2(started, tmp_path):
    for command in ("down", "status"):
        result = CliRunner().invoke(cli, ["fleet", command, "--name", "a/b",
                                          "--state-dir", str(tmp_path / "state")])
        assert result.exit_code == 2, result.output
        assert "--name" in error_line(result.output)
    assert started.nothing() == []
