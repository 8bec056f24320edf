"""The metrics endpoint of a supervisor: Prometheus text at /metrics, JSON at /stats.

It runs inside the supervisor's own poll loop (no thread: the supervisor forks replacement
workers, and forking a threaded process is asking for a deadlock). Each readable event serves
one request with a short socket timeout, so a stuck client delays supervision by at most
that timeout. Exposition is prometheus_client's, from a collector that reads the shared
counters at scrape time.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["MetricsServer", "ServeCollector"]


class ServeCollector(Collector):
    """Turns a stats dict (see `ServeRun.stats`) into Prometheus metric families."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        gauges = {
            "tcpmax_serve_open_connections": ("Connections held now", s["open"]),
            "tcpmax_serve_workers": ("Worker processes configured", s["workers"]),
            "tcpmax_serve_workers_alive": ("Worker processes running", s["workers_alive"]),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "tcpmax_serve_accepted": ("Connections accepted", s["accepted"]),
            "tcpmax_serve_closed": ("Connections closed", s["closed"]),
            "tcpmax_serve_received_bytes": ("Bytes read from clients", s["bytes_in"]),
            "tcpmax_serve_sent_bytes": ("Bytes written to clients", s["bytes_out"]),
            "tcpmax_serve_pushed_messages": ("Push messages written", s["pushed"]),
            "tcpmax_serve_push_skipped_messages": (
                "Push messages dropped: socket buffer full", s["push_skipped"]),
            "tcpmax_serve_idle_closed": ("Connections closed by --idle-timeout",
                                         s["idle_closed"]),
            "tcpmax_serve_worker_restarts": ("Workers replaced after dying", s["restarts"]),
            "tcpmax_serve_ws_upgrades": ("WebSocket upgrades answered 101",
                                         s.get("ws_upgraded", 0)),
            "tcpmax_serve_ws_received_frames": ("WebSocket frames read",
                                                s.get("ws_frames_in", 0)),
            "tcpmax_serve_ws_sent_frames": ("WebSocket frames written",
                                            s.get("ws_frames_out", 0)),
            "tcpmax_serve_ws_protocol_errors": (
                "WebSocket connections closed for breaking the framing rules",
                s.get("ws_protocol_errors", 0)),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        if s.get("tls") is not None:
            yield CounterMetricFamily("tcpmax_serve_tls_handshakes",
                                      "TLS handshakes completed", value=s["tls_handshakes"])
            tls_failed = CounterMetricFamily("tcpmax_serve_tls_handshake_failures",
                                             "TLS handshakes failed, by name",
                                             labels=["name"])
            for name, value in s["tls_handshake_failures"].items():
                tls_failed.add_metric([name], value)
            yield tls_failed
            if s.get("tls_handshake_mean_us") is not None:
                yield GaugeMetricFamily("tcpmax_serve_tls_handshake_mean_seconds",
                                        "Mean TLS handshake time, accept to done",
                                        value=s["tls_handshake_mean_us"] / 1e6)
        errors = CounterMetricFamily("tcpmax_serve_accept_errors",
                                     "accept() failures by errno", labels=["errno"])
        for errno_name, value in s["accept_errors"].items():
            errors.add_metric([errno_name], value)
        yield errors
        failures = CounterMetricFamily("tcpmax_serve_ws_handshake_failures",
                                       "WebSocket upgrades refused or dropped, by cause",
                                       labels=["cause"])
        for cause, value in s.get("ws_handshake_failures", {}).items():
            failures.add_metric([cause], value)
        yield failures
        if s.get("kernel") is not None:
            k = s["kernel"]
            yield GaugeMetricFamily("tcpmax_host_tcp_sockets_inuse",
                                    "TCP sockets in use (the kernel's sockstat)",
                                    value=k["tcp_inuse"])
            yield GaugeMetricFamily("tcpmax_host_tcp_memory_bytes",
                                    "TCP buffer memory (sockstat mem x page size)",
                                    value=k["tcp_mem_bytes"])
        floor = s.get("memory_floor")
        if floor is not None:
            yield GaugeMetricFamily("tcpmax_serve_memory_floor_active",
                                    "1 while MemAvailable is under --min-free: no accepts",
                                    value=int(floor["active"]))
        if s.get("rss_bytes") is not None:
            yield GaugeMetricFamily("tcpmax_serve_rss_bytes",
                                    "Resident memory of all worker processes",
                                    value=s["rss_bytes"])


class _HTTPServerV6(HTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """A one-request-at-a-time HTTP server polled by the supervisor loop."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ServeCollector(snapshot))

        class Handler(BaseHTTPRequestHandler):
            timeout = 2.0

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body = generate_latest(registry)
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
                elif self.path.split("?")[0] == "/stats":
                    body = json.dumps(snapshot(), indent=2).encode()
                    ctype = "application/json"
                else:
                    self.send_error(404, "try /metrics or /stats")
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _HTTPServerV6 if ":" in host else HTTPServer
        self.httpd = server((host, port), Handler)
        self.httpd.timeout = 2.0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def fileno(self) -> int:
        return self.httpd.fileno()

    def handle(self) -> None:
        self.httpd.handle_request()

    def close(self) -> None:
        self.httpd.server_close()
