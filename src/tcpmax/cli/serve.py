"""`tcpmax serve`: hold, echo or push to connections with pre-forked epoll workers."""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tcpmax.cli.output import emit_json, stderr_console
from tcpmax.cli.params import BACKLOG, COUNT, DURATION, INTERVAL, SIZE, refuse_unused
from tcpmax.engine.certs import DEFAULT_NAMES
from tcpmax.engine.serve_tls import ServerTls, TlsServerError, load_server_tls
from tcpmax.engine.server import ListenError, ServeRun, open_listeners
from tcpmax.model.schema import Schema
from tcpmax.model.serve import Mode, ServeConfig, ServeTls
from tcpmax.model.units import format_bytes, format_count, shown

__all__ = ["parse_address", "parse_ports", "serve"]


def parse_ports(text: str, option: str | None = None) -> tuple[int, ...]:
    low, sep, high = text.partition("-")
    if not (low.strip().isdigit() and (high.strip().isdigit() or not sep)) \
            or max(len(low), len(high)) > 6:
        raise click.BadParameter(f"{shown(text)} is not a port or a range like 9000-9009",
                                 param_hint=option)
    first, last = int(low), int(high if sep else low)
    if not 1 <= first <= last <= 65535:
        raise click.BadParameter(f"{shown(text)}: ports are 1-65535, low before high",
                                 param_hint=option)
    if last - first >= 1000:
        raise click.BadParameter(f"{shown(text)}: at most 1000 ports", param_hint=option)
    return tuple(range(first, last + 1))


def parse_address(text: str, option: str = "--metrics") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{shown(text)} is not HOST:PORT (e.g. 127.0.0.1:9100 or "
                                 "[::1]:9100)", param_hint=option)
    host = host.strip("[]") or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise click.BadParameter(f"{shown(host)} is not an IP address",
                                 param_hint=option) from None
    return host, int(port)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Status:
    """The live status line: what is held, how fast it grows, what it costs."""

    def __init__(self, run: ServeRun, console: Console, every: float) -> None:
        self.run = run
        self.console = console
        self.every = every
        self.last_print = 0.0
        self.last_accepted = 0
        self.last_time = time.monotonic()

    def line(self) -> str:
        snap = self.run.snapshot()
        now = time.monotonic()
        rate = (snap["accepted"] - self.last_accepted) / max(1e-6, now - self.last_time)
        self.last_accepted, self.last_time = snap["accepted"], now
        errors = ", ".join(f"{k} {v:,}" for k, v in snap["accept_errors"].items() if v)
        kernel = snap["kernel"]
        kern = ("" if kernel is None else
                f" | kernel: {format_count(kernel['tcp_inuse'])} TCP sockets, "
                f"{format_bytes(kernel['tcp_mem_bytes'])} buffers")
        return (f"holding {format_count(snap['open'])} | +{rate:,.0f}/s | workers "
                f"{snap['workers_alive']}/{snap['workers']} | RSS "
                f"{format_bytes(snap['rss_bytes'])}{kern}"
                + (f" | accept errors: {errors}" if errors else "")
                + (" | MEMORY FLOOR: accepting nothing" if snap["memory_floor"]["active"]
                   else "")
                + ("" if snap["tls"] is None else
                   f" | TLS {format_count(snap['tls_handshakes'])} handshakes, "
                   f"{format_count(sum(snap['tls_handshake_failures'].values()))} failed"))

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_print >= self.every:
            self.last_print = now
            self.console.print(self.line(), highlight=False)


def _summary(run: ServeRun, reason: str, elapsed: float) -> Table:
    s = run.stats()
    t = Table(title=f"tcpmax serve stopped ({reason}) after {elapsed:.1f} s", show_header=False,
              title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    for name, value in (("accepted", s.accepted), ("closed", s.closed),
                        ("bytes in", s.bytes_in), ("bytes out", s.bytes_out),
                        ("pushed", s.pushed), ("push skipped (buffer full)", s.push_skipped),
                        ("echo backpressure events", s.backpressure),
                        ("closed idle", s.idle_closed), ("worker restarts", s.restarts)):
        t.add_row(name, format_count(value))
    t.add_row("memory floor (--min-free) reached", f"{format_count(run.floor_reached)} time(s)"
              f" (floor {format_bytes(run.min_free)})")
    for name, value in s.accept_errors.items():
        if value:
            t.add_row(f"accept {name}", format_count(value))
    if run.cfg.mode is Mode.WS:
        for name, value in (("WebSocket upgrades", s.ws_upgraded),
                            ("frames in", s.ws_frames_in), ("frames out", s.ws_frames_out),
                            ("protocol errors (closed)", s.ws_protocol_errors)):
            t.add_row(name, format_count(value))
        for name, value in s.ws_handshake_failures.items():
            if value:
                t.add_row(f"handshake failed: {name}", format_count(value))
    if run.tls is not None:
        t.add_row("TLS handshakes", format_count(s.tls_handshakes))
        if s.tls_handshake_mean_us is not None:
            t.add_row("TLS handshake, mean (accept to done)",
                      f"{s.tls_handshake_mean_us / 1000:,.2f} ms")
        for name, value in s.tls_handshake_failures.items():
            if value:
                t.add_row(f"TLS handshake failed: {name}", format_count(value))
    return t


def _tls_config(tls: str | None, tls_key: str | None, host: str) -> ServeTls | None:
    if tls is None:
        refuse_unused("--tls", "tls_key", "tls_cert_out")
        return None
    if tls == "self-signed":
        refuse_unused("--tls CERT (a certificate file)", "tls_key")
        extra = () if ipaddress.ip_address(host).is_unspecified else (host,)
        return ServeTls(self_signed=tuple(dict.fromkeys((*DEFAULT_NAMES, *extra))))
    refuse_unused("--tls self-signed", "tls_cert_out")
    return ServeTls(cert_file=tls, key_file=tls_key)


def _show_tls(err: Console, tls: ServerTls, where: str, out: Path) -> None:
    """Say what a client needs to trust the certificate, as the next command to type."""
    if not tls.names:
        err.print(f"TLS: certificate SHA-256 {tls.sha256}", highlight=False, emoji=False,
                  soft_wrap=True)
        return
    err.print(f"TLS: self-signed certificate for {', '.join(tls.names)}\n"
              f"  SHA-256 {tls.sha256}\n  trust it with: tcpmax load tls://{where} --ca {out}",
              highlight=False, emoji=False, soft_wrap=True)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Listening on all interfaces (0.0.0.0, ::) is an "
                   "explicit choice.")
@click.option("--port", "port", type=click.IntRange(0, 65535), default=None,
              help="Port to listen on [default: 9000].")
@click.option("--ports", "port_range", metavar="FIRST-LAST",
              help="Listen on a range of ports (clients get one full port range per port).")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default="hold",
              show_default=True,
              help="hold: keep connections, discard input; echo: send back every byte; "
                   "push: send a timestamped line to every connection each --push-interval; "
                   "ws: answer the WebSocket upgrade, then do --ws-then.")
@click.option("--ws-then", type=click.Choice([Mode.HOLD.value, Mode.ECHO.value,
                                              Mode.PUSH.value]),
              default="hold", show_default=True,
              help="ws: after the upgrade, hold (answer pings, discard data), echo data "
                   "frames, or push a timestamped text frame each --push-interval.")
@click.option("--handshake-timeout", type=INTERVAL, default="10s", show_default=True,
              help="ws, --tls: drop (RST) a client whose TLS handshake or upgrade request is "
                   "not complete by then. Plain ws defers accept until the request arrives: a "
                   "client that never speaks is accepted after about a second, then timed.")
@click.option("--ws-max-frame", type=click.IntRange(125, 16 * 1024 * 1024), default=65536,
              show_default=True, metavar="BYTES",
              help="ws: refuse larger frames with close code 1009.")
@click.option("--tls", "tls", metavar="CERT|self-signed",
              help="Speak TLS on every connection (any --mode; ws becomes wss). CERT is a PEM "
                   "file with the certificate chain, and the private key too unless "
                   "--tls-key names it (an option takes a fixed number of values, so the key "
                   "has its own). 'self-signed' makes a throwaway certificate for localhost, "
                   "127.0.0.1, ::1 and --host, and prints how a client trusts it.")
@click.option("--tls-key", type=click.Path(dir_okay=False), metavar="KEY",
              help="--tls CERT: the PEM private key, when CERT does not hold it.")
@click.option("--tls-cert-out", type=click.Path(dir_okay=False, writable=True),
              metavar="FILE",
              help="--tls self-signed: write the certificate (never the key) to FILE for "
                   "clients' --ca, and keep it [default: a temporary file removed at exit].")
@click.option("--max-connections", type=COUNT, default=100_000, show_default=True,
              metavar="N", help="Most connections held at once; sets the worker count "
                                "(from the open-file limit) and each worker's share.")
@click.option("--workers", type=click.IntRange(1, 512), default=None,
              help="Worker processes [default: enough for --max-connections, at least one "
                   "per core].")
@click.option("--backlog", type=BACKLOG, default=None, metavar="N",
              help="Listen backlog [default: as deep as the kernel allows, net.core.somaxconn].")
@click.option("--idle-timeout", type=DURATION, default=None,
              help="Close (RST) connections silent for this long, e.g. 5m.")
@click.option("--duration", type=DURATION, default=None,
              help="Stop by itself after this long, e.g. 10m [default: until Ctrl-C].")
@click.option("--drain", is_flag=True,
              help="On stop, wait up to --drain-timeout for clients to close instead of "
                   "resetting the connections.")
@click.option("--drain-timeout", type=INTERVAL, default="10s", show_default=True)
@click.option("--push-interval", type=INTERVAL, default="1s", show_default=True,
              help="push: time between two messages to every connection.")
@click.option("--message-size", type=click.IntRange(0, 65536), default=0,
              help="push: pad each line to this many bytes.")
@click.option("--min-free", type=SIZE, default=None, metavar="SIZE",
              help="Accept nothing while MemAvailable is below this (connections held stay); "
                   "accepting resumes a tenth above it [default: 1/32 of RAM, at least "
                   "256MiB].")
@click.option("--metrics", "metrics", metavar="HOST:PORT",
              help="Serve Prometheus text at /metrics and JSON at /stats, e.g. 127.0.0.1:9100.")
@click.option("--status-every", type=INTERVAL, default="1s", show_default=True,
              help="How often the status line is printed on stderr.")
@click.option("--quiet", is_flag=True, help="No status line.")
@click.option("--json", "as_json", is_flag=True,
              help="At exit, print the final counters as JSON on stdout.")
def serve(host: str, port: int | None, port_range: str | None, mode: str,
          ws_then: str, handshake_timeout: float, ws_max_frame: int,
          tls: str | None, tls_key: str | None, tls_cert_out: str | None,
          max_connections: int, workers: int | None, backlog: int | None,
          idle_timeout: float | None, duration: float | None, drain: bool,
          drain_timeout: float, push_interval: float, message_size: int,
          min_free: int | None, metrics: str | None, status_every: float, quiet: bool,
          as_json: bool) -> None:
    """Hold, echo or push to up to a million connections with near-zero memory per connection.

    A supervisor forks worker processes (as many as the open-file limit requires, at least
    one per core) that share the listening sockets; each runs an epoll loop over raw file
    descriptors. Stop with Ctrl-C or SIGTERM: it stops accepting, resets (or with --drain,
    waits for) the connections, and exits 0.

    \b
    Examples:
      tcpmax serve --port 9000
      tcpmax serve --ports 9000-9009 --max-connections 1M --metrics 127.0.0.1:9100
      tcpmax serve --mode echo --duration 5m
      tcpmax serve --mode push --push-interval 5s --message-size 64
      tcpmax serve --mode ws --ws-then echo
      tcpmax serve --mode echo --tls self-signed --tls-cert-out ca.pem
      tcpmax serve --mode ws --tls server.pem --tls-key server.key
    """
    err = stderr_console()
    pushing = mode == Mode.PUSH or (mode == Mode.WS and ws_then == Mode.PUSH)
    if not pushing:
        refuse_unused("--mode push or --ws-then push", "push_interval", "message_size")
    if mode != Mode.WS:
        refuse_unused("--mode ws", "ws_then", "ws_max_frame")
        if tls is None:
            refuse_unused("--mode ws or --tls", "handshake_timeout")
    if not drain:
        refuse_unused("--drain", "drain_timeout")
    if port is not None and port_range is not None:
        raise click.UsageError("use --port or --ports, not both")
    ports = parse_ports(port_range, "--ports") if port_range else (9000 if port is None else port,)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise click.BadParameter(f"{host!r} is not an IP address", param_hint="--host") from None
    tls_cfg = _tls_config(tls, tls_key, host)
    if tls_cert_out is not None and not os.access(Path(tls_cert_out).parent, os.W_OK):
        raise click.BadParameter(f"cannot write {shown(tls_cert_out)}: its directory is not "
                                 "writable", param_hint="--tls-cert-out")
    server_tls: ServerTls | None = None
    if tls_cfg is not None:
        try:        # refused before anything is bound; a certificate made once, here
            server_tls = load_server_tls(tls_cfg)
        except TlsServerError as exc:
            raise click.BadParameter(str(exc), param_hint="--tls") from None
    # A self-signed certificate is written out before the port opens: a client that connects
    # as soon as it can already finds the file to trust.
    cert_out: Path | None = None
    if server_tls is not None and server_tls.names:
        if tls_cert_out is not None:
            cert_out = Path(tls_cert_out)
        else:       # removed however the command ends, even refused later (port in use)
            tmp = tempfile.mkdtemp(prefix="tcpmax-serve-")
            click.get_current_context().call_on_close(lambda: shutil.rmtree(tmp, True))
            cert_out = Path(tmp) / "cert.pem"
        try:
            cert_out.write_bytes(server_tls.cert_pem)
        except OSError as exc:
            raise click.BadParameter(f"cannot write {shown(str(cert_out))}: {exc.strerror}",
                                     param_hint="--tls-cert-out") from exc
    try:
        cfg = ServeConfig(host=host, ports=ports, mode=Mode(mode),
                          max_connections=max_connections, backlog=backlog,
                          idle_timeout=idle_timeout, duration=duration, drain=drain,
                          drain_timeout=drain_timeout, push_interval=push_interval,
                          message_size=message_size, workers=workers,
                          ws_then=Mode(ws_then), handshake_timeout=handshake_timeout,
                          ws_max_frame=ws_max_frame,
                          metrics=parse_address(metrics) if metrics else None,
                          min_free=min_free, tls=tls_cfg)
        listeners, infos = open_listeners(cfg)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except ListenError as exc:
        option = "--host" if exc.errno == errno.EADDRNOTAVAIL else \
            ("--ports" if port_range else "--port")
        hint = {errno.EADDRINUSE: f"another program listens there; pick another {option}",
                errno.EADDRNOTAVAIL: "that address is not on this host",
                errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE"}
        raise click.BadParameter(
            f"cannot listen on {_hostport(host, exc.port)}"
            + (f" (in {port_range})" if len(ports) > 1 else "")
            + f": {exc.strerror} ({hint.get(exc.errno or 0, 'see the error')})",
            param_hint=option) from exc
    try:
        run = ServeRun(cfg, listeners, infos, server_tls)
    except ValueError as exc:
        for s in listeners:
            s.close()
        raise click.UsageError(str(exc)) from exc
    except OSError as exc:
        for s in listeners:
            s.close()
        raise click.UsageError(f"--metrics {metrics}: {exc.strerror}") from exc
    if ipaddress.ip_address(host).is_unspecified:
        err.print(Text(f"listening on ALL interfaces ({host}): reachable from the network",
                       style="bold yellow"))
    where = ", ".join(_hostport(i.host, i.port) for i in infos)
    err.print(f"tcpmax serve ({mode}) on {where}: {run.plan.workers} workers x "
              f"{format_count(run.plan.budget)} connections (open-file limit allows "
              f"{format_count(run.plan.fd_budget)} each)", highlight=False)
    for info in infos[:1]:
        if info.clamped:
            err.print(f"backlog {info.backlog_requested:,} clamped by the kernel to "
                      f"{info.backlog_effective:,} (net.core.somaxconn)", highlight=False)
    if run.metrics is not None:
        host_m, port_m = run.metrics.address
        err.print(f"metrics: http://{_hostport(host_m, port_m)}/metrics and /stats",
                  highlight=False, emoji=False, soft_wrap=True)
    if run.tls is not None:
        first = infos[0]
        near = "127.0.0.1" if ipaddress.ip_address(first.host).is_unspecified else first.host
        _show_tls(err, run.tls, _hostport(near, first.port), cert_out or Path())
    status = _Status(run, err, status_every)
    started = time.monotonic()
    reason = run.run(tick=None if quiet else status.tick,
                     log=lambda msg: err.print(msg, highlight=False))
    elapsed = time.monotonic() - started
    if as_json:
        snap = run.snapshot()
        if snap["tls"] is not None:
            snap["tls"]["cert_out"] = tls_cert_out    # None: it was a temporary file
        emit_json(Schema.SERVE_STATS, snap, stopped=reason, elapsed_s=round(elapsed, 3))
    else:
        err.print(_summary(run, reason, elapsed))
