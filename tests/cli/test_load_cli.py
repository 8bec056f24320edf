"""`tcpmax load` from the command line: bad input is refused before anything starts."""

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tcpmax.cli.load import parse_sources
from tests.cli.conftest import error_line


@pytest.mark.parametrize(("args", "option"), [
    ([], "TARGET"),                                                  # no target, no -n
    (["127.0.0.1:9000"], "--connections"),                           # no -n
    (["127.0.0.1:9000", "-n", "0"], "--connections"),
    (["127.0.0.1:9000", "-n", "1Q"], "--connections"),
    (["127.0.0.1", "-n", "10"], "TARGET"),                           # no port
    (["127.0.0.1:70000", "-n", "10"], "TARGET"),
    (["127.0.0.1:9000", "-n", "10", "--source", "nope"], "--source"),
    (["127.0.0.1:9000", "-n", "10", "--source", "::1"], "--source"),  # family mismatch
    (["127.0.0.1:9000", "[::1]:9000", "-n", "10"], "targets"),        # mixed families
    (["127.0.0.1:9000", "-n", "10", "--message-size", "8"], "--message-size"),
    (["127.0.0.1:9000", "-n", "10", "--close", "slam"], "--close"),
    (["127.0.0.1:9000", "-n", "10", "--hold", "forever"], "--hold"),
    (["127.0.0.1:9000", "-n", "10", "--source", "10.0.0.0/8"], "--source"),  # too many
    (["127.0.0.1:9000", "-n", "10", "--cluster", "nonsense"], "--cluster"),
    (["127.0.0.1:9000", "-n", "10", "--cluster", "tcp://127.0.0.1:99999"], "--cluster"),
    (["127.0.0.1:9000", "-n", "10", "--per-machine"], "--per-machine"),  # without --cluster
])
def test_bad_input_exits_2_naming_the_option_and_starts_nothing(args, option, started):
    result = CliRunner().invoke(cli, ["load", *args])
    assert result.exit_code == 2, result.output
    assert option in error_line(result.output)
    assert started.nothing() == []


def test_sources_accept_lists_and_cidrs():
    assert parse_sources("127.0.0.2,127.1.0.0/30") == ("127.0.0.2", "127.1.0.1", "127.1.0.2")
    assert parse_sources("auto") is None


def test_help_teaches_targets_and_strategies():
    out = CliRunner().invoke(cli, ["load", "--help"]).output
    assert "HOST:FIRST-LAST" in out and "--port-strategy" in out and "Examples:" in out
