"""`tcpmax load tls://` through a third-party TLS terminator: Debian's nginx (`stream` with
`ssl`) in front of `tcpmax serve`. Skipped where nginx or its stream module is missing;
.ci/run installs both."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from tcpmax.engine.loader import LoadRun
from tcpmax.engine.server import Server
from tcpmax.model.load import Endpoint, LoadConfig, TlsOptions
from tcpmax.model.serve import ServeConfig

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
pytestmark = pytest.mark.skipif(shutil.which("nginx") is None or not STREAM_MODULE.exists(),
                                reason="needs nginx and libnginx-mod-stream")

CONF = """\
load_module {module};
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
stream {{
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {cert};
    proxy_pass 127.0.0.1:{upstream};
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nginx_tls(workdir: Path, cert: str, upstream: int) -> Iterator[int]:
    """nginx terminating TLS on a free port toward `upstream`, in its own process group
    (killed whole when the block ends)."""
    port = _free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(CONF.format(module=STREAM_MODULE, dir=workdir, port=port, cert=cert,
                                upstream=upstream))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (workdir / "error.log").read_text(errors="replace")
                    raise RuntimeError(f"nginx did not start: {log}") from exc
                time.sleep(0.05)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_load_tls_through_nginx_reaches_serve_with_every_handshake_verified(tmp_path):
    ca = trustme.CA()
    cert, ca_file = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_file))
    held: dict[str, int] = {}
    with Server(ServeConfig(ports=(0,), max_connections=1000)) as server, \
            nginx_tls(tmp_path, str(cert), server.addresses[0][1]) as port:

        def at_peak(_t: float) -> float:
            # nginx opens its upstream connection after the handshake: wait for serve.
            deadline = time.monotonic() + 10
            while server.stats().open < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            held["serve"] = server.stats().open
            return time.monotonic()

        result = LoadRun(LoadConfig((Endpoint("127.0.0.1", port),), 200, hold=0.2,
                                    tls=TlsOptions(ca_file=str(ca_file)))).run(
            release_at=at_peak)
    assert result.reached and result.errors == []
    assert result.tls_handshakes == 200
    assert held["serve"] == 200
