"""`tcpmax doctor` as a user runs it: JSON, text, targets and bad input."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tests.cli.conftest import error_line


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def doctor_json(*args):
    result = run("doctor", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_json_reports_what_proc_and_getrlimit_say():
    data = doctor_json()
    host = data["host"]
    assert data["schema"] == "tcpmax.doctor/1"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert (host["nofile_soft"], host["nofile_hard"]) == (soft, hard)
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert (host["port_range"]["low"], host["port_range"]["high"]) == (low, high)
    assert host["somaxconn"] == int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert host["file_max"] == int(Path("/proc/sys/fs/file-max").read_text())
    assert host["mem_total"] > 0 and host["mem_available"] > 0


def test_json_names_the_binding_limit_as_the_smallest_host_limit():
    data = doctor_json()
    for cap in data["capacity"].values():
        host_limits = [c for c in cap["constraints"]
                       if c["scope"] == "host" and c["applies"] and c["limit"] is not None]
        smallest = min(host_limits, key=lambda c: c["limit"])
        assert cap["binding_key"] == smallest["key"]
        assert cap["connections"] == smallest["limit"]


def test_a_million_on_a_20k_fd_host_names_the_fd_limit_processes_and_port_arithmetic(
        fake_proc):
    root = fake_proc(**{"sys/fs/file-max": "9000000"})
    data = doctor_json("--proc-root", str(root), "--target", "1000000")
    loop = data["assessments"]["loopback"]
    assert loop["first_wall"]["constraint"]["key"] == "process_fds"
    assert loop["processes"] == 51
    assert loop["source_ips"] == 36
    text = run("doctor", "--proc-root", str(root), "--target", "1M").output
    assert "tcpmax uses 51 processes" in text
    assert "28,232" in text and "36 source IPs" in text


def test_text_report_shows_limits_arithmetic_and_the_myth(fake_proc):
    text = run("doctor", "--proc-root", str(fake_proc())).output
    assert "32768-60999 (28,232 ports)" in text
    assert "holds at most" in text
    assert "The arithmetic" in text
    assert "65,536" in text


def test_an_unreadable_proc_tree_is_reported_as_unknown_not_a_traceback(fake_proc):
    root = fake_proc(**{"meminfo": None, "sys/net/ipv4/ip_local_port_range": None,
                        "self/limits": None})
    result = run("doctor", "--proc-root", str(root), "--target", "1M")
    assert result.exit_code == 0
    assert "unknown" in result.output
    data = doctor_json("--proc-root", str(root))
    assert data["host"]["mem_available"] is None
    assert "meminfo" in data["host"]["unknown"]


@pytest.mark.parametrize(("args", "option"), [
    (["--target", "1Q"], "--target"), (["--target", "-5"], "--target"),
    (["--target", "0"], "--target"), (["--bogus"], "--bogus"),
    (["--proc-root", "/nonexistent/proc"], "--proc-root"), (["--endpoints", "zero"], "--endpoints"),
])
def test_bad_input_exits_2_naming_the_option_and_starts_nothing(args, option, started):
    result = run("doctor", *args)
    assert result.exit_code == 2
    assert option in error_line(result.output)
    assert started.nothing() == []


def test_module_entry_point_runs_and_bad_input_has_no_traceback():
    out = subprocess.run([sys.executable, "-m", "tcpmax", "doctor", "--target", "1Q"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "'1Q' is not a count" in out.stderr


@pytest.mark.parametrize("command", ["doctor", "tune", "plan"])
def test_every_command_has_help_with_examples(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_every_host_field_in_the_json_is_documented():
    doc = (Path(__file__).parents[2] / "docs" / "json.md").read_text()
    host = doctor_json()["host"]
    for field in host:
        assert f"`{field}`" in doc, f"host field {field} is not documented in docs/json.md"


def _memory(data, role="server"):
    return next(c for c in data["capacity"][role]["constraints"] if c["key"] == "memory")


def test_tls_sizes_memory_with_the_tls_bytes_per_connection():
    plain, tls = doctor_json(), doctor_json("--tls")
    assert tls["costs"]["protocol"] == "tls"
    assert tls["costs"]["user_bytes_per_connection"] > 100 * plain["costs"][
        "user_bytes_per_connection"]
    assert _memory(tls)["limit"] < _memory(plain)["limit"]
    assert "for TLS" in _memory(tls)["arithmetic"]


def test_user_bytes_given_by_hand_win_over_the_protocol_default():
    data = doctor_json("--ws", "--user-bytes", "1234")
    assert data["costs"]["user_bytes_per_connection"] == 1234
    assert data["costs"]["protocol"] == "ws"


def test_user_bytes_and_a_protocol_measurement_together_exit_2(started):
    result = run("doctor", "--ws", "--measure", "--user-bytes", "500")
    assert result.exit_code == 2
    assert "--user-bytes" in error_line(result.output)


@pytest.mark.timeout(120)
def test_measure_with_ws_reports_both_sides_from_a_real_serve_and_load():
    data = doctor_json("--ws", "--measure")
    m = data["protocol_measurement"]
    assert m["protocol"] == "ws"
    assert m["connections"][0] < m["connections"][1]
    assert data["costs"]["user_bytes_per_connection"] == max(
        m["server_bytes_per_connection"], m["client_bytes_per_connection"])
    assert data["costs"]["user_source"].startswith("measured here")


@pytest.mark.timeout(180)
def test_measure_with_tls_finds_kilobytes_of_openssl_state_on_each_side():
    data = doctor_json("--tls", "--measure")
    m = data["protocol_measurement"]
    assert m["protocol"] == "tls"
    # OpenSSL's per-connection state: kilobytes, where a plain held connection costs bytes.
    assert m["server_bytes_per_connection"] > 2_000
    assert m["client_bytes_per_connection"] > 2_000
    assert _memory(data)["limit"] < _memory(doctor_json())["limit"]
