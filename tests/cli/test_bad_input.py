"""The inputs a new user got wrong, one by one: each exits 2 with a message that names the
option and its limit, and nothing starts (no process left, no port bound, no file written)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.cli.test_any_input import _run_in_process

BIG = "9" * 400


def nothing_runs_in_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    os.killpg(pgid, signal.SIGKILL)
    return False


def spawn(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", "from tcpmax.cli import main; main()", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _out, err = proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while not nothing_runs_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert nothing_runs_in_group(proc.pid), "a process of the run is still alive"
    return proc.returncode, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("argv", "option", "limit"), [
    (["plan", "--connections", "1e400"], "--connections", "at most 1,000,000,000,000"),
    (["plan", "--connections", BIG], "--connections", "at most 1,000,000,000,000"),
    (["plan", "--connections", "10M", "--memory", "9" * 320], "--memory", "at most"),
    (["plan", "--connections", "10M", "--nofile", "5"], "--nofile", "at least 65"),
    (["plan", "--connections", "10M", "--nofile", "3G"], "--nofile", "at most 2,147,483,584"),
    (["plan", "--connections", "10M", "--port-range", "0-1000"], "--port-range", "1-65535"),
    (["doctor", "--target", "1e400"], "--target", "at most 1,000,000,000"),
    (["tune", "--target", BIG], "--target", "at most 1,000,000,000"),
])
def test_numbers_out_of_range_exit_2_naming_the_option_and_its_limit(argv, option, limit):
    code, err = _run_in_process(argv)
    assert code == 2
    assert option in err and limit in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "option", "limit"), [
    (["-n", "1e400"], "--connections", "at most 1,000,000,000"),
    (["-n", "10", "--hold", "100000000000000000000"], "--hold", "at most 7d"),
    (["-n", "10", "--rate", "1e400"], "--rate", "at most 1,000,000,000"),
    (["-n", "10", "--connect-timeout", "1h"], "--connect-timeout", "at most 10m"),
])
def test_load_with_a_number_out_of_range_exits_2_before_connecting(argv, option, limit):
    code, err = finish(spawn("load", f"127.0.0.1:{free_port()}", *argv))
    assert code == 2 and option in err and limit in err


@pytest.mark.parametrize(("argv", "option"), [
    (["--backlog", "1e12"], "--backlog"),
    (["--duration", "400d"], "--duration"),
    (["--max-connections", BIG], "--max-connections"),
])
def test_serve_with_a_number_out_of_range_exits_2_and_binds_nothing(argv, option):
    port = free_port()
    code, err = finish(spawn("serve", "--port", str(port), *argv))
    assert code == 2 and option in err
    with socket.socket() as s:           # the port is still free: nothing listened
        s.bind(("127.0.0.1", port))


def test_a_source_that_is_not_an_address_of_this_host_is_refused_before_connecting():
    code, err = finish(spawn("load", f"127.0.0.1:{free_port()}", "-n", "5",
                             "--source", "198.18.0.77", "--hold", "0"))
    assert code == 2
    assert "--source 198.18.0.77 is not an address of this host" in err


def test_a_source_of_the_other_ip_version_is_refused():
    code, err = finish(spawn("load", f"127.0.0.1:{free_port()}", "-n", "5", "--source", "::1"))
    assert code == 2 and "--source ::1 is not IPv4" in err


def test_an_ipv6_loopback_target_with_auto_sources_names_the_refusal():
    code, err = finish(spawn("load", f"[::1]:{free_port()}", "-n", "5", "--hold", "0"))
    assert code == 1
    assert "ECONNREFUSED x 5" in err and "-9" not in err


def test_a_message_without_a_rate_is_refused_as_doing_nothing():
    code, err = finish(spawn("load", f"127.0.0.1:{free_port()}", "-n", "1", "--message", "hi"))
    assert code == 2 and "--message is only sent at --message-rate" in err


def test_an_empty_message_is_refused():
    code, err = finish(spawn("load", f"127.0.0.1:{free_port()}", "-n", "1", "--message", "",
                             "--message-rate", "1"))
    assert code == 2 and "--message is empty" in err


def test_serve_refuses_push_options_outside_push_mode():
    code, err = finish(spawn("serve", "--port", "0", "--push-interval", "2s"))
    assert code == 2 and "--push-interval does nothing without --mode push" in err


def test_the_busy_port_in_a_ports_range_is_named():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        low = max(1024, port - 2)
        code, err = finish(spawn("serve", "--ports", f"{low}-{low + 4}", "--duration", "1s"))
    assert code == 2
    assert f"127.0.0.1:{port} (in {low}-{low + 4})" in err and "--ports" in err


def test_metrics_listen_on_ipv6_loopback():
    code, err = finish(spawn("serve", "--port", "0", "--metrics", "[::1]:0", "--duration",
                             "300ms", "--quiet"))
    assert code == 0
    assert "metrics: http://[::1]:" in err


def test_an_address_in_brackets_is_printed_as_typed_not_as_markup():
    code, err = finish(spawn("load", "[fd00::1]:x", "-n", "1"))
    assert code == 2 and "[fd00::1]:x" in err


def test_a_report_path_that_cannot_be_written_is_refused_before_any_experiment(tmp_path):
    code, err = _run_in_process(["prove", "C1", "--report", "/proc/report.html"])
    assert code == 2 and "--report" in err and "cannot write /proc/report.html" in err
    assert "claim(s)" not in err          # refused before the run was announced


def test_doctor_refuses_a_proc_root_that_is_not_a_proc_tree(tmp_path):
    code, err = _run_in_process(["doctor", "--proc-root", str(tmp_path)])
    assert code == 2 and "--proc-root" in err and "not a /proc tree" in err


@pytest.mark.parametrize("sink", ["full", "closed-pipe"])
@pytest.mark.parametrize("argv", [["doctor"], ["plan", "--connections", "10M"],
                                  ["tune", "--target", "1M", "--json"], ["--help"]])
def test_a_full_or_closed_stdout_ends_cleanly(argv, sink):
    cmd = [sys.executable, "-c", "from tcpmax.cli import main; main()", *argv]
    if sink == "full":
        with open("/dev/full", "w") as full:
            proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=30)
        assert proc.returncode == 1 and "cannot write the output" in proc.stderr
    else:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout is not None
        p.stdout.close()                  # the reader is gone before the first byte
        _out, stderr = p.communicate(timeout=30)
        assert p.returncode in (0, 1) and "Traceback" not in stderr


@pytest.mark.parametrize(("target", "words"), [
    ("gopher://127.0.0.1:{p}", "unknown scheme 'gopher'"),
    ("ws://", "no host"),
    ("wss:///chat", "no host"),
    ("ws://127.0.0.1:99999/chat", "99999"),
    ("ws://127.0.0.1:/chat", "is not a port"),
])
def test_a_target_load_cannot_use_is_refused_before_anything_starts(target, words):
    code, err = finish(spawn("load", target.format(p=free_port()), "-n", "1"))
    assert code == 2 and words in err and "TARGET" in err


def test_plain_and_tls_targets_in_one_run_are_refused():
    port = free_port()
    code, err = finish(spawn("load", f"127.0.0.1:{port}", f"tls://127.0.0.1:{port}", "-n", "2"))
    assert code == 2 and "mix plain TCP and tls://" in err


@pytest.mark.parametrize("option", [["--insecure"], ["--sni", "x.test"], ["--alpn", "h2"]])
def test_tls_options_without_a_tls_target_are_refused(option):
    code, err = finish(spawn("load", f"127.0.0.1:{free_port()}", "-n", "1", *option))
    assert code == 2 and f"{option[0]} does nothing without a tls:// or wss:// target" in err


@pytest.mark.parametrize("option", [["--header", "Origin: x"], ["--subprotocol", "chat"],
                                    ["--binary"]])
def test_websocket_options_without_a_ws_target_are_refused(option):
    code, err = finish(spawn("load", f"127.0.0.1:{free_port()}", "-n", "1", *option))
    assert code == 2 and f"{option[0]} does nothing without a ws:// or wss:// target" in err


@pytest.mark.parametrize(("option", "words"), [
    (["--header", "no colon here"], "'Name: value'"),
    (["--subprotocol", "a,b"], "one token"),
])
def test_a_malformed_websocket_option_is_refused(option, words):
    code, err = finish(spawn("load", f"ws://127.0.0.1:{free_port()}/", "-n", "1", *option))
    assert code == 2 and words in err


def test_ws_targets_with_different_paths_are_refused():
    port = free_port()
    code, err = finish(spawn("load", f"ws://127.0.0.1:{port}/a", f"ws://127.0.0.1:{port}/b",
                             "-n", "2"))
    assert code == 2 and "one path per run" in err


def test_ws_and_wss_targets_in_one_run_are_refused():
    port = free_port()
    code, err = finish(spawn("load", f"ws://127.0.0.1:{port}/", f"wss://127.0.0.1:{port}/",
                             "-n", "2", "--insecure"))
    assert code == 2 and "mix ws:// and wss://" in err


@pytest.mark.parametrize("ca", ["/nonexistent/ca.pem", "not-a-cert"])
def test_wss_with_a_bad_ca_path_is_refused_before_anything_starts(ca, tmp_path):
    if ca == "not-a-cert":
        ca = str(tmp_path / "ca.pem")
        (tmp_path / "ca.pem").write_text("not a certificate\n")
    code, err = finish(spawn("load", f"wss://127.0.0.1:{free_port()}/chat", "-n", "1",
                             "--ca", ca))
    assert code == 2 and "--ca" in err


def test_a_missing_ca_file_is_refused_naming_the_option():
    code, err = finish(spawn("load", f"tls://127.0.0.1:{free_port()}", "-n", "1",
                             "--ca", "/nonexistent/ca.pem"))
    assert code == 2 and "--ca" in err and "does not exist" in err


def test_a_ca_file_that_holds_no_certificate_is_refused(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    code, err = finish(spawn("load", f"tls://127.0.0.1:{free_port()}", "-n", "1",
                             "--ca", str(bogus)))
    assert code == 2 and "cannot load certificates" in err


def test_insecure_and_ca_together_are_refused(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x\n")
    code, err = finish(spawn("load", f"tls://127.0.0.1:{free_port()}", "-n", "1",
                             "--ca", str(ca), "--insecure"))
    assert code == 2 and "--insecure checks no certificate" in err


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--first-message", "", "the text is empty"),
    ("--expect", "HTTP/1.1 \\q", "unknown escape \\q at character 10"),
    ("--first-message", "\\x4", "two hex digits"),
    ("--first-message", "@/nonexistent/request.bin", "cannot read '/nonexistent/request.bin'"),
    ("--expect", "@", "give a file after @"),
    ("--first-message", "@{tmp}", "Is a directory"),
    ("--first-message", "@{tmp}/empty.bin", "is empty"),
    ("--expect", "@{tmp}/big.bin", "longer than 65,536 bytes"),
])
def test_a_first_message_or_expect_that_cannot_be_sent_is_refused(option, value, words,
                                                                  tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "big.bin").write_bytes(b"x" * 65537)
    code, err = finish(spawn("load", f"127.0.0.1:{free_port()}", "-n", "1",
                             option, value.format(tmp=tmp_path)))
    assert code == 2 and option in err and words in err


@pytest.mark.parametrize("option", ["--first-message", "--expect"])
def test_a_first_message_or_expect_with_a_websocket_target_is_refused(option):
    code, err = finish(spawn("load", f"ws://127.0.0.1:{free_port()}/", "-n", "1",
                             option, "hello"))
    assert code == 2
    assert f"{option} does not go with ws:// or wss://" in err and "--message" in err
