"""Every command, driven with generated argument vectors: it answers 0, 1 or 2, never with a
traceback, and leaves nothing running.

The vectors mix valid values, values out of range, malformed text and junk tokens. What the
generator may produce is bounded so that no run is long or touches anything outside the test:
loads go to closed loopback ports with at most a few connections, serve runs for well under a
second, tune never gets --apply or --revert, doctor never --measure.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpmax.cli import main

NUMBERS = ["1", "0", "-1", "10", "1k", "1M", "2.5M", "1e400", "9" * 400, "1.5", "abc", "",
           "1e6", "1_000", "0x10", "nan", "inf", "1G", "100G", "65", "64", "20000", "1e9"]
SIZES = ["64GiB", "1", "0", "9" * 320, "1.5KiB", "-1G", "1TB", "12XB", "", "nan"]
DURATIONS = ["1s", "0", "0s", "100ms", "-1s", "1e400", "100000000000000000000", "5 parsecs",
             "2d", "367d", "0.001ms", "", "nan"]
PORT_RANGES = ["1024-65535", "0-100", "70000-1", "5-4", "1-1", "x", "", "99999999999999-1"]
ADDRESSES = ["127.0.0.1:0", "[::1]:0", "::1", "x:1", "127.0.0.1:99999", "[fd00::1", "", ":"]
JUNK = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               max_size=12)
# No ':' for load: "name:port" would make load resolve a name, and a lookup leaves the machine.
JUNK_NO_NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                               blacklist_characters="\0:"), max_size=12)
# Options whose free-form values could make a run long or large: curated values only.
BOUNDING = {"-n", "--hold", "--duration", "--max-connections", "--workers", "--rate",
            "--message-rate", "--connect-timeout", "--idle-timeout", "--status-every",
            # A free-form --report would be a valid file name: prove would write it.
            "--report",
            # Likewise a free-form --tls-cert-out: serve would write the certificate there.
            "--tls-cert-out"}


def _option(name: str, values: list[str],
            junk: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    value = st.sampled_from(values) if name in BOUNDING else st.one_of(st.sampled_from(values),
                                                                        junk)
    return value.map(lambda v: [name, v])


def _argv(command: str, options: dict[str, list[str]], flags: list[str],
          positional: st.SearchStrategy[list[str]] | None = None) -> st.SearchStrategy[list[str]]:
    junk = JUNK_NO_NAMES if command == "load" else JUNK
    parts = [_option(name, values, junk) for name, values in options.items()]
    parts += [st.just([flag]) for flag in flags]
    parts.append(junk.map(lambda v: [v]))
    chosen = st.lists(st.one_of(parts), max_size=5).map(lambda xs: [a for x in xs for a in x])
    head = positional if positional is not None else st.just([])
    return st.tuples(head, chosen).map(lambda t: [command, *t[0], *t[1]])


PAPER = st.one_of(
    _argv("doctor", {"--target": NUMBERS, "--sources": NUMBERS, "--endpoints": NUMBERS,
                     "--kernel-bytes": NUMBERS, "--user-bytes": NUMBERS,
                     "--proc-root": ["/tmp", "/nonexistent", "/proc", "/etc/hostname", ""]},
          ["--json", "-h"]),
    _argv("plan", {"--connections": NUMBERS, "--memory": SIZES, "--cores": NUMBERS,
                   "--nofile": NUMBERS, "--client-memory": SIZES, "--client-cores": NUMBERS,
                   "--reserve": ["0.2", "1", "-1", "x", "nan"], "--port-range": PORT_RANGES,
                   "--listen-ports": NUMBERS, "--vips": NUMBERS, "--kernel-bytes": NUMBERS,
                   "--user-bytes": NUMBERS, "--port": NUMBERS,
                   "--scheduler-host": ["10.0.0.2", "[fd00::2]", "tcp://x:1", "a b", ""],
                   "--target": [*ADDRESSES, "10.0.0.5:9000-9009", "VIP:9000"]},
          ["--json", "-h"]),
    _argv("tune", {"--target": NUMBERS, "--role": ["server", "client", "loopback", "x"],
                   "--sources": NUMBERS, "--endpoints": NUMBERS},
          ["--json", "--namespaced-only", "--persist", "-h"]),
)


def _run_in_process(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    out = io.StringIO()
    code = 0
    old = sys.argv
    sys.argv = ["tcpmax", *argv]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    return code, err.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=PAPER)
def test_doctor_plan_and_tune_answer_any_arguments_with_0_1_or_2_and_no_traceback(argv):
    code, stderr = _run_in_process(argv)
    assert code in (0, 1, 2), (argv, code, stderr)
    assert "Traceback" not in stderr, (argv, stderr)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:       # bound, never listening: connects get RST
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LOAD_TARGETS = st.sampled_from(["127.0.0.1:{p}", "[::1]:{p}", "127.0.0.1:{p}-{p}", "localhost:{p}",
                                "127.0.0.1", "ws://127.0.0.1:{p}", "127.0.0.1:0", ""])
SMALL = ["1", "3", "0", "-1", "1e400", "9" * 400, "x", ""]
RATES = ["0", "100", "-1", "1e400", "x", ""]
SHORT = ["0", "100ms", "200ms", "-1s", "1e400", "100000000000000000000", "x", ""]

PROCESSES = st.one_of(
    _argv("load", {"-n": SMALL, "--hold": SHORT, "--connect-timeout": ["200ms", "0", "1h", "x"],
                   "--rate": RATES, "--message": ["hi", ""], "--message-rate": RATES,
                   "--message-size": ["16", "15", "70000", "x"],
                   "--source": ["auto", "127.0.0.2", "::1", "10.1.2.3", "127.0.0.0/30", "x", ""],
                   "--close": ["reset", "graceful", "x"],
                   "--port-strategy": ["auto", "kernel", "explicit", "x"],
                   "--workers": ["1", "2", "0", "600", "x"],
                   "--first-message": ["GET / HTTP/1.1\\r\\n\\r\\n", "\\q", "", "@",
                                       "@/nonexistent", "@/proc/self/status", "\\x0"],
                   "--expect": ["HTTP/1.1 200", "\\x20\\x02", "", "\\", "@."]},
          ["--json", "--quiet", "-h"],
          positional=LOAD_TARGETS.map(lambda t: [t])),
    _argv("serve", {"--port": ["0", "-1", "70000", "x"], "--ports": PORT_RANGES,
                    "--host": ["127.0.0.1", "::1", "198.18.0.9", "x", "127.0.0.300"],
                    "--mode": ["hold", "echo", "push", "x"],
                    "--max-connections": SMALL, "--backlog": [*SMALL, "1e12"],
                    "--idle-timeout": SHORT, "--duration": SHORT,
                    "--push-interval": SHORT, "--message-size": ["0", "70000", "x"],
                    "--metrics": ADDRESSES, "--workers": ["1", "0", "600", "x"],
                    "--drain-timeout": SHORT, "--status-every": SHORT,
                    "--tls": ["self-signed", "/nonexistent.pem", "/etc/hostname", ""],
                    "--tls-key": ["/nonexistent.pem", "/etc/hostname"],
                    "--tls-cert-out": ["ca.pem", "/nonexistent/ca.pem", "/proc/ca.pem"],
                    "--handshake-timeout": SHORT},
          ["--json", "--quiet", "--drain", "-h"]),
    _argv("prove", {"--report": ["/nonexistent/r.html", "/proc/r.html", "/sys/r.html", ""]},
          ["--json", "-h"],
          positional=st.sampled_from(["C1", "C99", "x", "c8", ""]).map(lambda c: [c])),
)


# The package as installed for the tests (editable or not), found from a new working dir.
_SRC = str(Path(__import__("tcpmax").__file__).resolve().parents[1])


def _bounded(argv: list[str], port: int) -> list[str]:
    argv = [a.replace("{p}", str(port)) for a in argv]
    if argv[0] == "serve":
        # Always bounded in time and never on a fixed port another test may own.
        if "--duration" not in argv:
            argv += ["--duration", "300ms"]
        if "--port" not in argv and "--ports" not in argv:
            argv += ["--port", "0"]
        if "--max-connections" not in argv:
            argv += ["--max-connections", "10"]
    if argv[0] == "load" and "--hold" not in argv:
        argv += ["--hold", "0"]
    return argv


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=PROCESSES)
def test_serve_load_and_prove_answer_any_arguments_cleanly_and_leave_nothing_running(argv):
    argv = _bounded(argv, _closed_port())
    # In a directory of its own: whatever a run writes by a relative name goes away with it.
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen([sys.executable, "-c", "from tcpmax.cli import main; main()",
                                 *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                cwd=cwd, env={**os.environ, "PYTHONPATH": _SRC})
        try:
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode in (0, 1, 2), (argv, proc.returncode, stderr)
    assert "Traceback" not in stderr, (argv, stderr)
    assert _group_gone(proc.pid), f"{argv}: processes of the run are still alive"


def _group_gone(pgid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    return False


@pytest.mark.parametrize("argv", [["load", "127.0.0.1:9", "-n", "1", "--hold", "0"]])
def test_the_generator_bounds_a_load_to_a_closed_port(argv):
    port = _closed_port()
    assert _bounded([*argv[:1], "127.0.0.1:{p}", *argv[2:]], port)[1] == f"127.0.0.1:{port}"
