"""`tcpmax serve` from the command line: a bounded run, and bad input refused up front."""

import json
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from tcpmax.cli import cli
from tests.cli.conftest import error_line


def test_a_bounded_run_serves_then_stops_by_itself_and_reports_json():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax", "serve", "--port", str(port),
                             "--mode", "echo", "--duration", "3s", "--json", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        conn.sendall(b"ping")
        assert conn.recv(10) == b"ping"
        conn.close()
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["accepted"] == 1 and data["bytes_in"] == 4 and data["stopped"] == \
        "duration reached"


def test_ws_mode_upgrades_a_websockets_client_and_reports_it_in_json():
    from websockets.sync.client import connect
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax", "serve", "--port", str(port),
                             "--mode", "ws", "--ws-then", "echo", "--workers", "1",
                             "--max-connections", "100", "--duration", "3s", "--json",
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}/", open_timeout=2)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        with ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "ping"
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert (data["ws_upgraded"], data["ws_frames_in"]) == (1, 2)   # the message, the close


def test_sigterm_stops_it_with_exit_0_and_no_worker_left():
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax", "serve", "--port", "0",
                             "--quiet", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    pids = [w["pid"] for w in json.loads(out)["per_worker"]]
    time.sleep(0.2)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            import os
            os.kill(pid, 0)


@pytest.mark.parametrize(("args", "option"), [
    (["--port", "99999"], "--port"), (["--ports", "9000-8000"], "--ports"),
    (["--ports", "a-b"], "--ports"), (["--port", "9000", "--ports", "9000-9001"], "--ports"),
    (["--host", "not-an-ip"], "--host"), (["--metrics", "nowhere"], "--metrics"),
    (["--max-connections", "0"], "--max-connections"), (["--mode", "shout"], "--mode"),
    (["--idle-timeout", "soon"], "--idle-timeout"), (["--workers", "0"], "--workers"),
    (["--ws-then", "echo"], "--ws-then"), (["--mode", "echo", "--ws-then", "echo"], "--ws-then"),
    (["--mode", "ws", "--ws-then", "shout"], "--ws-then"),
    (["--mode", "ws", "--handshake-timeout", "0s"], "--handshake-timeout"),
    (["--mode", "ws", "--ws-max-frame", "10"], "--ws-max-frame"),
    (["--mode", "ws", "--push-interval", "2s"], "--push-interval"),
])
def test_bad_input_exits_2_naming_the_option_before_anything_starts(args, option, started):
    result = CliRunner().invoke(cli, ["serve", *args])
    assert result.exit_code == 2, result.output
    assert option in error_line(result.output)
    assert started.nothing() == []


def test_a_port_in_use_is_named_and_exits_2_starting_nothing(started):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    started.calls.clear()                   # the test's own listener is not serve's
    started.sockets.add(taken.fileno())
    try:
        result = CliRunner().invoke(cli, ["serve", "--port", str(port)])
        assert result.exit_code == 2
        message = error_line(result.output)
        assert "in use" in message and str(port) in message
        assert started.nothing() == []
    finally:
        taken.close()


@pytest.fixture(scope="module")
def bad_pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files a user may pass by mistake, by what is wrong with them."""
    import trustme
    root = tmp_path_factory.mktemp("bad-pems")
    issued = trustme.CA().issue_cert("127.0.0.1")
    paths = {name: str(root / f"{name}.pem") for name in
             ("cert", "key", "other_key", "not_pem", "combined", "encrypted_key")}
    for blob in issued.cert_chain_pems[:1]:
        blob.write_to_path(paths["cert"])
    issued.private_key_pem.write_to_path(paths["key"])
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(paths["other_key"])
    issued.private_key_and_cert_chain_pem.write_to_path(paths["combined"])
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    with open(paths["encrypted_key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret")))
    with open(paths["not_pem"], "w") as f:
        f.write("hello, I am not a certificate\n")
    return paths


@pytest.mark.parametrize(("argv", "says"), [
    (["--tls", "{missing}"], "cannot read"),
    (["--tls", "{not_pem}", "--tls-key", "{key}"], "no PEM certificate"),
    (["--tls", "{key}"], "no PEM certificate"),
    (["--tls", "{cert}"], "--tls-key"),                         # no key in it, none given
    (["--tls", "{cert}", "--tls-key", "{other_key}"], "does not belong"),
    (["--tls", "{cert}", "--tls-key", "{missing}"], "cannot read"),
    (["--tls", "{cert}", "--tls-key", "{encrypted_key}"], "encrypted"),   # no prompt, no hang
    (["--tls", "{combined}", "--tls-cert-out", "x.pem"], "--tls-cert-out"),
    (["--tls-key", "{key}"], "--tls-key"),
    (["--tls", "self-signed", "--tls-key", "{key}"], "--tls-key"),
    (["--tls", "self-signed", "--tls-cert-out", "/nonexistent/dir/ca.pem"], "--tls-cert-out"),
    (["--tls", "self-signed", "--handshake-timeout", "0s"], "--handshake-timeout"),
])
def test_bad_tls_input_exits_2_naming_the_problem_before_anything_starts(argv, says,
                                                                         bad_pems, started):
    paths = {**bad_pems, "missing": bad_pems["cert"] + ".missing"}
    result = CliRunner().invoke(cli, ["serve", "--port", "0",
                                      *(a.format(**paths) for a in argv)])
    assert result.exit_code == 2, result.output
    assert says in error_line(result.output)
    assert started.nothing() == []


def test_self_signed_writes_the_pem_a_verifying_client_trusts_and_reports_it_in_json(
        tmp_path):
    import ssl
    cert_out = tmp_path / "ca.pem"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen([sys.executable, "-m", "tcpmax", "serve", "--port", str(port),
                             "--mode", "echo", "--tls", "self-signed", "--tls-cert-out",
                             str(cert_out), "--workers", "1", "--max-connections", "100",
                             "--duration", "3s", "--json", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(cert_out))
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            assert tls.recv(10) == b"ping"
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["tls_handshakes"] == 1
    assert set(data["tls"]["names"]) == {"localhost", "127.0.0.1", "::1"}
    assert data["tls"]["cert_out"] == str(cert_out)
    assert f"--ca {cert_out}" in err and data["tls"]["sha256"] in err
