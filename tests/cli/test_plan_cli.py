"""`tcpmax plan` from the command line."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tcpmax.model.capacity import (
    DEFAULT_KERNEL_BYTES_PER_SOCKET,
    DEFAULT_USER_BYTES_PER_CONNECTION,
    MAX_PROCESSES,
    per_process_connections,
)
from tests.cli.conftest import error_line


def run(*args):
    return CliRunner().invoke(cli, ["plan", *args], catch_exceptions=False)


def test_plan_for_10m_on_16_gib_machines_needs_three_servers():
    # 16 GiB x 80% / (3,400 + 100) B = 3,926,827 per server -> 3 servers for 10M
    result = run("--connections", "10M", "--memory", "16GiB", "--cores", "8",
                 "--kernel-bytes", "3400", "--user-bytes", "100", "--json")
    data = json.loads(result.output)
    assert data["schema"] == "tcpmax.plan/1"
    assert data["servers"]["machines"] == 3
    assert data["source_ips"] >= data["clients"]["machines"]


def test_text_plan_shows_machines_settings_and_source_ip_arithmetic():
    out = run("--connections", "10M", "--memory", "64GiB", "--cores", "16").output
    assert "Server machines" in out and "Client machines" in out
    assert "LimitNOFILE=1048576" in out
    assert "connections per source IP" in out


def test_defaults_come_from_this_host():
    # Without --memory, a server machine is this host: it holds (MemTotal x (1 - reserve)) /
    # (kernel + user bytes per connection), unless its open files bind first (they do not at
    # the default --nofile: about a million per process times MAX_PROCESSES). Ask for three
    # such machines' worth and one connection more: exactly four machines, and only if the
    # plan really used this host's memory.
    mem_total = next(int(line.split()[1]) * 1024
                     for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    by_memory = int(mem_total * (1 - 0.2)) // (DEFAULT_KERNEL_BYTES_PER_SOCKET
                                                + DEFAULT_USER_BYTES_PER_CONNECTION)
    by_fds = per_process_connections(1_048_576) * MAX_PROCESSES
    per_machine = min(by_memory, by_fds)
    result = run("--connections", str(3 * per_machine + 1), "--json")
    assert result.exit_code == 0, result.output
    servers = json.loads(result.output)["servers"]
    assert servers["capacity"] == per_machine
    assert servers["machines"] == 4


@pytest.mark.parametrize(("args", "option"), [
    (["--connections", "0"], "--connections"),
    (["--connections", "10M", "--memory", "lots"], "--memory"),
    (["--connections", "10M", "--port-range", "70000-80000"], "--port-range"),
    ([], "--connections"),
    (["--connections", "10M", "--reserve", "1.5"], "--reserve"),
])
def test_bad_input_exits_2_naming_the_option_and_starts_nothing(args, option, started):
    result = CliRunner().invoke(cli, ["plan", *args])
    assert result.exit_code == 2
    assert option in error_line(result.output)
    assert started.nothing() == []


def test_the_plan_ends_with_the_dask_commands_that_start_its_fleet():
    out = run("--connections", "10M", "--memory", "16GiB", "--cores", "8", "--vips", "1",
              "--scheduler-host", "10.0.0.2", "--target", "10.0.1.1:9000").output
    data = json.loads(run("--connections", "10M", "--memory", "16GiB", "--cores", "8",
                          "--vips", "1", "--json").output)
    per_server = data["servers"]["per_machine"]
    for line in ("dask scheduler --port 8786",
                 "dask worker tcp://10.0.0.2:8786 --nworkers 1 --nthreads 1",
                 f"tcpmax serve --host 0.0.0.0 --port 9000 --max-connections {per_server}",
                 "tcpmax load 10.0.1.1:9000 -n 10000000 --cluster tcp://10.0.0.2:8786"):
        assert f"\n       {line}\n" in out        # whole, unwrapped: it pastes as typed


def test_json_holds_the_deployment_with_placeholders_by_default():
    data = json.loads(run("--connections", "10M", "--memory", "16GiB", "--cores", "8",
                          "--json").output)
    deploy = data["deployment"]
    assert deploy["scheduler"] == "tcp://SCHEDULER_HOST:8786"
    workers = next(s for s in deploy["steps"] if s["where"] == "each client machine")
    assert workers["machines"] == data["clients"]["machines"]
    assert workers["commands"][-1] == ("dask worker tcp://SCHEDULER_HOST:8786 --nworkers 1 "
                                       "--nthreads 1")
    servers = " ".join(f"SERVER_{i}:9000" for i in range(1, data["servers"]["machines"] + 1))
    assert deploy["steps"][-1]["commands"] == [
        f"tcpmax load {servers} -n 10000000 --cluster tcp://SCHEDULER_HOST:8786"]


@pytest.mark.parametrize(("args", "option"), [
    (["--scheduler-host", "tcp://10.0.0.2:8786"], "--scheduler-host"),
    (["--target", "server1:9000"], "--target"),
    (["--port", "0"], "--port"),
    (["--listen-ports", "10", "--port", "65530"], "--port"),
])
def test_bad_deployment_options_exit_2_naming_the_option(args, option):
    result = CliRunner().invoke(cli, ["plan", "--connections", "10M", "--memory", "16GiB",
                                      "--cores", "8", *args])
    assert result.exit_code == 2
    assert option in error_line(result.output)


def test_tls_sizes_each_machine_by_the_tls_bytes_per_connection():
    base = ("--connections", "10M", "--memory", "16GiB", "--cores", "8", "--json")
    plain, tls = json.loads(run(*base).output), json.loads(run(*base, "--tls").output)
    assert tls["request"]["costs"]["protocol"] == "tls"
    assert tls["request"]["costs"]["user_bytes_per_connection"] == 36_000
    assert tls["servers"]["capacity"] < plain["servers"]["capacity"]
    assert tls["servers"]["machines"] > plain["servers"]["machines"]
    assert tls["deployment"]["steps"][-1]["commands"][0].startswith("tcpmax load tls://")
