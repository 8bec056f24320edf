"""`tcpmax prove` as a user runs it: choices, JSON, bad input, Ctrl-C, not root."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tests.cli.conftest import error_line
from tests.kernel import group_is_empty


def tcpmax(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tcpmax", *args], capture_output=True,
                          text=True, timeout=300, **kw)


def test_chosen_claims_run_and_report_computed_verdicts_as_json():
    out = tcpmax("prove", "c1", "C8", "C12", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["schema"] == "tcpmax.prove/1"
    assert [o["id"] for o in report["outcomes"]] == ["C1", "C8", "C12"]
    for o in report["outcomes"]:
        assert o["verdict"] == "CONFIRMED" and o["reason"] and o["evidence"]


@pytest.mark.parametrize(("args", "option"), [
    (["C13"], "CLAIM"), (["X"], "CLAIM"), (["C1", "--report", "/nonexistent/r.html"], "--report"),
    (["--bogus"], "--bogus"),
])
def test_bad_input_exits_2_naming_the_option_and_starts_nothing(args, option, started):
    result = CliRunner().invoke(cli, ["prove", *args])
    assert result.exit_code == 2
    assert option in error_line(result.output)
    assert started.nothing() == []


def net_sysctls():
    names = ["ip_local_port_range", "tcp_tw_reuse", "tcp_max_syn_backlog"]
    return {n: Path(f"/proc/sys/net/ipv4/{n}").read_text() for n in names} | {
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text()}


def namespaces_of(pid):
    """Sandboxes made by the `prove` process `pid` (their names carry it); other agents'
    runs make theirs meanwhile."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith(f"tcpmax-prove-{pid}-")]


@pytest.mark.root
def test_ctrl_c_midway_leaves_no_namespace_no_process_and_host_sysctls_unchanged():
    before = net_sysctls()
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax", "prove", "C2", "C3", "C11"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while not namespaces_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert namespaces_of(proc.pid), "prove never entered a namespace"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)          # what a terminal's Ctrl-C does
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    time.sleep(0.5)
    assert namespaces_of(proc.pid) == []
    assert net_sysctls() == before
    # prove and every process it forked were alone in the session it started in.
    assert group_is_empty(proc.pid)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to drop to an unprivileged user")
def test_not_root_it_runs_on_loopback_and_says_why_it_is_not_isolated():
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-m", "tcpmax", "prove", "C1", "C8", "C9", "C12",
                          "--json"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["host"]["root"] is False
    assert "not root" in report["isolation"]
    c9 = next(o for o in report["outcomes"] if o["id"] == "C9")
    assert c9["isolation"].startswith("host loopback")
    assert all(o["verdict"] in ("CONFIRMED", "SKIPPED") for o in report["outcomes"])


@pytest.mark.root
def test_as_root_every_experiment_runs_and_the_key_measurements_hold(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax", "prove", "--json", "--report",
                             str(tmp_path / "r.html")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    assert out, err
    report = json.loads(out)
    verdicts = {o["id"]: o["verdict"] for o in report["outcomes"]}
    assert len(verdicts) == 12
    assert "SKIPPED" not in verdicts.values() and "REFUTED" not in verdicts.values(), verdicts
    m = {o["id"]: o["measurements"] for o in report["outcomes"]}
    assert m["C2"]["ss_established_on_port"] > 65_535
    assert m["C3"]["peak"] == m["C3"]["expected"]
    assert m["C3"]["errors"] == {"EADDRNOTAVAIL": m["C3"]["requested"] - m["C3"]["peak"]}
    assert m["C6"]["single_process_errno"] == "EMFILE"
    # C7's figure is the growth of /proc/meminfo's Slab, one number for the whole machine:
    # other agents' loads move it by more than its 16,000 sockets do, so only its verdict
    # (kilobytes per socket) is checked here; tests/engine/test_memprobe.py measures the
    # same probe against its own memory cgroup.
    assert len(m["C7"]["kernel_samples"]) == 3
    assert (tmp_path / "r.html").stat().st_size > 10_000
    assert namespaces_of(proc.pid) == []
