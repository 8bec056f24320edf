"""`tcpmax load` from the command line: bad input is refused before anything starts."""

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tcpmax.cli.load import parse_sources


@pytest.mark.parametrize("args", [
    [],                                                    # no target, no -n
    ["127.0.0.1:9000"],                                    # no -n
    ["127.0.0.1:9000", "-n", "0"],
    ["127.0.0.1:9000", "-n", "1Q"],
    ["127.0.0.1", "-n", "10"],                             # no port
    ["127.0.0.1:70000", "-n", "10"],
    ["127.0.0.1:9000", "-n", "10", "--source", "nope"],
    ["127.0.0.1:9000", "-n", "10", "--source", "::1"],     # family mismatch
    ["127.0.0.1:9000", "[::1]:9000", "-n", "10"],          # mixed families
    ["127.0.0.1:9000", "-n", "10", "--message-size", "8"],
    ["127.0.0.1:9000", "-n", "10", "--close", "slam"],
    ["127.0.0.1:9000", "-n", "10", "--hold", "forever"],
    ["127.0.0.1:9000", "-n", "10", "--source", "10.0.0.0/8"],   # too many addresses
])
def test_bad_input_exits_2_and_starts_nothing(args):
    result = CliRunner().invoke(cli, ["load", *args])
    assert result.exit_code == 2, result.output


def test_sources_accept_lists_and_cidrs():
    assert parse_sources("127.0.0.2,127.1.0.0/30") == ("127.0.0.2", "127.1.0.1", "127.1.0.2")
    assert parse_sources("auto") is None


def test_help_teaches_targets_and_strategies():
    out = CliRunner().invoke(cli, ["load", "--help"]).output
    assert "HOST:FIRST-LAST" in out and "--port-strategy" in out and "Examples:" in out
