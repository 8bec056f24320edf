"""`tcpmax load` as a library against servers it did not write: what it opens and names."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

from tcpmax.engine.counters import Col
from tcpmax.engine.loader import LoadRun
from tcpmax.host.inspect import read_sockstat
from tcpmax.model.load import CloseMode, Endpoint, LoadConfig, PortStrategy
from tests.conftest import needs_netns
from tests.servers import plain_server


def load(address, n, **kw):
    kw.setdefault("hold", 0.5)
    run = LoadRun(LoadConfig((Endpoint(*address),), n, **kw))
    return run, run.run()


def time_wait_toward(port):
    """TIME_WAIT sockets on this side toward one server port: immune to other tests' sockets
    expiring meanwhile."""
    out = subprocess.run(["ss", "-Htan", "state", "time-wait", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_holds_100k_connections_to_one_port_of_a_plain_server_confirmed_by_sockstat():
    with plain_server() as address:
        before = read_sockstat().tcp_inuse
        seen = []
        run = LoadRun(LoadConfig((Endpoint(*address),), 100_000, hold=1.0))

        def watch(progress):
            seen.append(read_sockstat().tcp_inuse - before)

        result = run.run(on_progress=watch, progress_every=0.5)
        assert result.reached and result.peak_established == 100_000
        assert result.errors == []
        assert max(seen) >= 2 * 100_000 - 200     # both ends on this host


def test_a_dead_target_is_named_econnrefused_at_once():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    started = time.monotonic()
    _, result = load(("127.0.0.1", port), 50, hold=0)
    assert time.monotonic() - started < 5
    assert not result.reached
    assert result.error_counts == {"ECONNREFUSED": 50}
    assert "start the server" in result.errors[0].advice


def test_a_target_that_drops_syns_is_named_etimedout_within_the_timeout():
    # A listener that never accepts and whose accept queue is full drops every new SYN.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(2):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(listener.getsockname())
        fillers.append(f)
    time.sleep(0.3)
    try:
        started = time.monotonic()
        _, result = load(listener.getsockname(), 20, hold=0, connect_timeout=1.0)
        elapsed = time.monotonic() - started
        assert [e.name for e in result.errors] == ["ETIMEDOUT"]
        assert result.errors[0].count >= 18       # a retry may slip into the queue
        assert elapsed < 6
    finally:
        for f in fillers:
            f.close()
        listener.close()


def test_the_default_reset_close_leaves_no_time_wait_and_no_process():
    with plain_server() as address:
        run, result = load(address, 5_000)
        assert result.reached
        time.sleep(0.3)
        assert time_wait_toward(address[1]) == 0
        pids = [run.table.get(i, Col.PID) for i in range(run.plan.workers)]
        assert pids and not any(alive(p) for p in pids)


def test_a_graceful_close_leaves_time_wait_on_this_side():
    with plain_server() as address:
        _, result = load(address, 2_000, close=CloseMode.GRACEFUL)
        assert result.reached
        time.sleep(1.0)
        # Nearly all end in TIME_WAIT here; a few percent vanish early on this kernel
        # (1,871-1,994 of 2,000 seen, with no socket left in another state): cause not pinned.
        assert time_wait_toward(address[1]) >= 1_800


def test_explicit_ports_are_bound_from_the_range_and_all_connect():
    with plain_server() as address:
        run, result = load(address, 3_000, sources=("127.0.0.3",),
                           port_strategy=PortStrategy.EXPLICIT)
        assert run.plan.strategy is PortStrategy.EXPLICIT
        assert result.reached and result.errors == []
        assert result.per_source == {"127.0.0.3": 3_000}


def test_echo_probes_measure_message_latency():
    with plain_server(echo=True) as address:
        _, result = load(address, 200, hold=1.5, message_rate=2_000)
        assert result.messages_sent > 500
        assert result.message_latency_us is not None
        assert result.message_latency_us["count"] == result.messages_received > 0
        assert 0 < result.message_latency_us["p50"] < 1_000_000


def _ns(name, *cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", name, *cmd], **kw)


@needs_netns
def test_one_source_toward_one_endpoint_stops_at_the_port_range_with_eaddrnotavail():
    ns = f"tcpmax-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    server = None
    try:
        _ns(ns, "ip", "link", "set", "lo", "up", check=True)
        _ns(ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40999", check=True)
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tcpmax",
                                   "serve", "--port", "9000", "--quiet", "--duration", "60s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        one = _ns(ns, sys.executable, "-m", "tcpmax", "load", "127.0.0.1:9000", "-n", "1500",
                  "--source", "127.0.0.2", "--hold", "0", "--json", "--quiet",
                  capture_output=True, text=True)
        assert one.returncode == 1                     # target not reached
        r = json.loads(one.stdout)
        assert r["peak_established"] == 1000           # exactly the narrowed range
        assert [(e["name"], e["count"]) for e in r["errors"]] == [("EADDRNOTAVAIL", 500)]
        assert "add source IPs" in r["errors"][0]["advice"]
        auto = _ns(ns, sys.executable, "-m", "tcpmax", "load", "127.0.0.1:9000", "-n", "1500",
                   "--hold", "0", "--json", "--quiet", capture_output=True, text=True)
        assert auto.returncode == 0, auto.stderr
        assert json.loads(auto.stdout)["peak_established"] == 1500
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(20)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_sigint_stops_a_long_load_reports_what_it_measured_and_leaves_nothing():
    with plain_server() as address:
        proc = subprocess.Popen([sys.executable, "-m", "tcpmax", "load",
                                 f"{address[0]}:{address[1]}", "-n", "100k", "--rate", "2k",
                                 "--json", "--quiet"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, err
        r = json.loads(out)
        assert r["stopped_by"] == "SIGINT" and not r["reached"]
        assert 0 < r["peak_established"] < 100_000
        left = subprocess.run(["pgrep", "-f", "tcpmax load"], capture_output=True, text=True)
        assert left.stdout.strip() == ""


def test_rate_paces_new_connections():
    with plain_server() as address:
        started = time.monotonic()
        _, result = load(address, 600, hold=0, rate=1_000)
        elapsed = time.monotonic() - started
        assert result.reached
        assert result.ramp_seconds >= 0.45          # 600 at 1,000/s, less the first burst
        assert elapsed < 10


def test_auto_sources_toward_a_routed_address_are_that_interfaces_addresses():
    from tcpmax.engine.loader import route_sources

    assert route_sources("127.0.0.1")[0].startswith("127.")
