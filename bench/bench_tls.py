"""What a TLS connection costs, measured: `tcpmax load tls://` through Debian's nginx
terminating TLS (`stream` with `ssl`) in front of `tcpmax serve`, the same TLS load straight
into `tcpmax serve --tls` (same certificate), and the same load in plain TCP straight into
the plain server, in one invocation.

    python bench/bench_tls.py --connections 5k --rounds 3

Needs Debian's `nginx` and `libnginx-mod-stream`, and `trustme` (the [test] extra) for a
throwaway certificate. Loopback only; nginx runs from a temporary directory with its own
configuration and is stopped at the end, whatever happens.

Reported per held connection, at the hold:
- client user space: `tcpmax load`'s private memory over its workers (plain and TLS);
- nginx user space: the growth of its workers' private memory (TLS on the client side, plain
  TCP toward the server);
- `serve --tls` user space: the growth of its workers' private memory from their start, as
  nginx's is from its start. With `--warmup N`, N connections are opened and closed first
  and the growth is counted from there (`warmup_bytes` says what the warm-up kept: pages
  copied once per forked worker, and the heap's high-water mark of handshakes in flight);
- kernel: Slab growth over the ramp, every socket on the host included (client, nginx's two,
  the server's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

from tcpmax.engine.loader import LoadRun
from tcpmax.engine.server import Server
from tcpmax.host.process import process_memory
from tcpmax.model.load import Endpoint, LoadConfig, TlsOptions
from tcpmax.model.serve import ServeConfig, ServeTls
from tcpmax.model.units import parse_count

NGINX_CONF = """\
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {workers};
worker_rlimit_nofile 19000;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 18000; }}
stream {{
  server {{
    listen 127.0.0.1:{port} ssl reuseport backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {cert};
    proxy_pass 127.0.0.1:{upstream};
  }}
}}
"""


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_workers(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def serve_tls_round(n: int, cert: Path, ca_file: Path, warmup: int) -> dict[str, object]:
    """One fresh `tcpmax serve --tls` held `n` TLS connections: its private growth per
    connection at the hold, and what the load saw."""
    cfg = ServeConfig(ports=(0,), max_connections=n + warmup + 1000,
                      tls=ServeTls(cert_file=str(cert)))
    with Server(cfg) as server:
        target = (Endpoint(*server.addresses[0]),)
        tls_opts = TlsOptions(ca_file=str(ca_file))
        start = process_memory(server.worker_pids()).private
        if warmup:
            LoadRun(LoadConfig(target, warmup, hold=0.2, tls=tls_opts,
                               connect_timeout=30)).run()
            deadline = time.monotonic() + 30
            while server.stats().open and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
        before = process_memory(server.worker_pids()).private
        seen: dict[str, int] = {}

        def at_hold(progress: object) -> None:
            if getattr(progress, "established", 0) >= n and "serve" not in seen:
                time.sleep(0.5)         # the last handshakes' server side finishes
                seen["serve"] = process_memory(server.worker_pids()).private
                seen["open"] = server.stats().open

        result = LoadRun(LoadConfig(target, n, hold=3.0, tls=tls_opts, connect_timeout=30)
                         ).run(on_progress=at_hold, progress_every=0.5)
        stats = server.stats()
    growth = seen.get("serve", before) - before
    return {"held": result.peak_established, "server_open_at_hold": seen.get("open"),
            "errors": result.error_counts,
            "serve_private_per_conn": round(growth / n, 1),
            "warmup_bytes": before - start, "serve_workers": len(server.worker_pids()),
            "client_private_per_conn": round(result.client_private_bytes / n, 1),
            "kernel_per_conn": round((result.kernel_memory_delta_bytes or 0) / n, 1),
            "server_tls_handshakes": stats.tls_handshakes,
            "server_tls_failures": {k: v for k, v in stats.tls_handshake_failures.items() if v},
            "server_handshake_mean_us": stats.tls_handshake_mean_us,
            "tls_handshake_p50_us": (result.tls_handshake_latency_us or {}).get("p50"),
            "tls_handshake_rate": result.tls_handshake_rate, "ramp_rate": result.ramp_rate}


def growth_per_conn(record: dict[str, object]) -> float:
    value = record["serve_private_per_conn"]
    assert isinstance(value, float)
    return value


def run(n: int, rounds: int, warmup: int = 0) -> None:
    if shutil.which("nginx") is None:
        sys.exit("needs Debian's nginx and libnginx-mod-stream (apt-get install nginx "
                 "libnginx-mod-stream)")
    work = Path(tempfile.mkdtemp(prefix="tcpmax-bench-tls-"))
    ca = trustme.CA()
    cert = work / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca_file = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # Each TLS connection takes two nginx fds; 19,000 per worker leaves room for n.
    workers = max(2, -(-2 * n // 15_000))
    plain_rows, tls_rows, serve_rows = [], [], []
    with Server(ServeConfig(ports=(0,), max_connections=2 * n + 10_000)) as server:
        upstream = server.addresses[0][1]
        port = free_port()
        (work / "nginx.conf").write_text(NGINX_CONF.format(
            workers=workers, dir=work, port=port, cert=cert, upstream=upstream))
        for r in range(rounds):
            plain = LoadRun(LoadConfig((Endpoint(*server.addresses[0]),), n, hold=1.0)).run()
            plain_rows.append(plain.client_private_bytes / n)
            emit({"bench": "tls", "round": r, "kind": "plain", "connections": n,
                  "held": plain.peak_established,
                  "client_private_per_conn": round(plain.client_private_bytes / n, 1),
                  "kernel_per_conn": round((plain.kernel_memory_delta_bytes or 0) / n, 1),
                  "ramp_rate": plain.ramp_rate})
            time.sleep(1.0)
            # A fresh nginx each round: it keeps freed memory in its pools, so a second
            # round in the same nginx would grow by less than a connection costs.
            nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-g",
                                      "daemon off;"], stdin=subprocess.DEVNULL,
                                     start_new_session=True)
            try:
                time.sleep(1.0)
                if nginx.poll() is not None:
                    sys.exit(f"nginx did not start: {(work / 'error.log').read_text()}")
                before = process_memory(nginx_workers(nginx.pid)).private
                cfg = LoadConfig((Endpoint("127.0.0.1", port),), n, hold=3.0,
                                 tls=TlsOptions(ca_file=str(ca_file)), connect_timeout=30)
                seen: dict[str, int] = {}

                def at_hold(progress: object, seen: dict[str, int] = seen,
                            master: int = nginx.pid) -> None:
                    if getattr(progress, "established", 0) >= n and "nginx" not in seen:
                        seen["nginx"] = process_memory(nginx_workers(master)).private

                tls = LoadRun(cfg).run(on_progress=at_hold, progress_every=0.5)
            finally:
                os.killpg(nginx.pid, signal.SIGTERM)
                try:
                    nginx.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(nginx.pid, signal.SIGKILL)
                    nginx.wait()
            nginx_growth = seen.get("nginx", before) - before
            tls_rows.append((tls.client_private_bytes / n, nginx_growth / n))
            time.sleep(1.0)
            direct = serve_tls_round(n, cert, ca_file, warmup)
            serve_rows.append(growth_per_conn(direct))
            emit({"bench": "tls", "round": r, "kind": "tls into serve --tls",
                  "connections": n, **direct})
            emit({"bench": "tls", "round": r, "kind": "tls via nginx", "connections": n,
                  "held": tls.peak_established, "errors": tls.error_counts,
                  "client_private_per_conn": round(tls.client_private_bytes / n, 1),
                  "nginx_private_per_conn": round(nginx_growth / n, 1),
                  "kernel_per_conn": round((tls.kernel_memory_delta_bytes or 0) / n, 1),
                  "tls_handshake_p50_us": (tls.tls_handshake_latency_us or {}).get("p50"),
                  "tls_handshake_rate": tls.tls_handshake_rate,
                  "ramp_rate": tls.ramp_rate})
            time.sleep(1.0)
    shutil.rmtree(work, ignore_errors=True)
    emit({"bench": "tls", "summary": True, "connections": n,
          "median_client_private_per_conn_plain": round(statistics.median(plain_rows), 1),
          "median_client_private_per_conn_tls": round(statistics.median(
              t[0] for t in tls_rows), 1),
          "median_nginx_private_per_conn": round(statistics.median(t[1] for t in tls_rows), 1),
          "median_serve_tls_private_per_conn": round(statistics.median(serve_rows), 1),
          "nginx_workers": workers})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", default="5k", type=parse_count)
    p.add_argument("--rounds", default=3, type=int)
    p.add_argument("--warmup", default=0, type=int,
                   help="serve --tls: connections opened and closed before measuring")
    args = p.parse_args()
    run(args.connections, args.rounds, args.warmup)


if __name__ == "__main__":
    main()
