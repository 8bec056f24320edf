"""`tcpmax load` from the command line: bad input is refused before anything starts, and a
WebSocket run reads as a user would type it."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tcpmax.cli.load import parse_sources
from tests.cli.conftest import error_line
from tests.servers import reply_server, ws_server


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
    assert "ws://HOST:PORT/PATH" in out and "--subprotocol" in out
    assert "--first-message" in out and "starts" in out and "speaks first" in out


def _tcpmax(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from tcpmax.cli import main; main()", *argv],
                          capture_output=True, text=True, timeout=60)


def test_a_websocket_gateway_test_in_one_command():
    with ws_server("--echo") as ((host, port), seen):
        done = _tcpmax("load", f"ws://{host}:{port}/chat", "-n", "20", "--hold", "1s",
                       "--message-rate", "200", "--header", "Origin: http://o.test",
                       "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ws_handshakes"] == 20 and result["errors"] == []
    assert result["message_latency_us"]["count"] > 0
    assert seen["paths"] == ["/chat"] and seen["headers"]["Origin"] == "http://o.test"


def test_a_refused_upgrade_is_named_in_the_summary_and_exits_1():
    with ws_server("--refuse", "403") as ((host, port), _seen):
        done = _tcpmax("load", f"ws://{host}:{port}/", "-n", "5", "--hold", "0s", "--quiet")
    assert done.returncode == 1
    assert "WS_HTTP_403 x 5" in done.stderr and "HTTP 403" in done.stderr


HTTP_GET = "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"


def test_an_http_server_answering_every_connection_in_one_command():
    with reply_server("http", "200") as (host, port):
        done = _tcpmax("load", f"{host}:{port}", "-n", "20", "--hold", "0s",
                       "--first-message", HTTP_GET, "--expect", "HTTP/1.1 200",
                       "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["errors"] == [] and result["replies"] == 20
    assert result["reply_latency_us"]["count"] == 20 and "reply" in result["histograms"]


def test_an_unexpected_reply_shows_what_the_server_sent_and_exits_1():
    with reply_server("http", "404") as (host, port):
        done = _tcpmax("load", f"{host}:{port}", "-n", "5", "--hold", "0s", "--quiet",
                       "--first-message", HTTP_GET, "--expect", "HTTP/1.1 200")
    assert done.returncode == 1
    assert "UNEXPECTED_REPLY x 5" in done.stderr
    sent = next(line for line in done.stderr.splitlines() if "the server sent" in line)
    assert "HTTP/1.1 404 " in sent


def test_an_unexpected_reply_carries_its_sample_in_json():
    with reply_server("http", "404") as (host, port):
        done = _tcpmax("load", f"{host}:{port}", "-n", "5", "--hold", "0s", "--json",
                       "--quiet", "--first-message", HTTP_GET, "--expect", "HTTP/1.1 200")
    error = json.loads(done.stdout)["errors"][0]
    assert error["name"] == "UNEXPECTED_REPLY" and error["sample"].startswith("HTTP/1.1 404")


def test_the_summary_times_the_expected_reply():
    with reply_server("banner", "SSH-2.0-test\r\n") as (host, port):
        done = _tcpmax("load", f"{host}:{port}", "-n", "5", "--hold", "0s", "--quiet",
                       "--expect", "SSH-2.0-")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stderr.splitlines() if "expected reply" in line)
    assert "p50" in row and "5 matched" in row
