"""`tcpmax load`: open and hold connections from many source IPs, every failure named."""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from tcpmax.cli.output import emit_json, stderr_console
from tcpmax.cli.params import CONNECT_TIMEOUT, COUNT, HOLD, RATE, SIZE, refuse_unused
from tcpmax.engine.loader import LoadError, LoadProgress, LoadResult, LoadRun
from tcpmax.model.first_message import MAX_FIRST_MESSAGE, EscapeError, parse_escapes
from tcpmax.model.load import (
    CloseMode,
    Endpoint,
    LoadConfig,
    PortStrategy,
    TlsOptions,
    WsOptions,
    parse_target,
)
from tcpmax.model.schema import Schema
from tcpmax.model.units import format_bytes, format_count, shown

__all__ = ["load", "parse_sources", "resolve_targets"]

MAX_SOURCES = 1 << 20


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*\.?")


SCHEMES = ("tcp", "tls", "ws", "wss")
WS_PORTS = {"ws": 80, "wss": 443}


def split_scheme(texts: tuple[str, ...]) -> tuple[str, tuple[str, ...], str | None]:
    """(scheme, targets without it, the first host name typed) for ``tls://HOST:PORT``,
    ``ws[s]://HOST[:PORT][/PATH]`` (the path is `ws_path`'s) and plain ``HOST:PORT`` (tcp);
    every target of one run speaks the same protocol."""
    schemes: set[str] = set()
    bare: list[str] = []
    for text in texts:
        scheme, slashes, rest = text.partition("://")
        if not slashes:
            scheme, rest = "tcp", text
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise click.BadParameter(f"{shown(text)}: unknown scheme {shown(scheme)}: use "
                                     "HOST:PORT (plain TCP), tls://, ws:// or wss://",
                                     param_hint="TARGET")
        if scheme in WS_PORTS:
            rest = rest.partition("/")[0]
            if not rest:
                raise click.BadParameter(f"{shown(text)}: no host: give "
                                         f"{scheme}://HOST:PORT/PATH", param_hint="TARGET")
            if not re.search(r"(:[0-9-]*)$", rest.rpartition("]")[2]):
                rest += f":{WS_PORTS[scheme]}"
        schemes.add(scheme)
        bare.append(rest.rstrip("/"))
    if len(schemes) > 1:
        shown_schemes = sorted("plain TCP" if x == "tcp" else f"{x}://" for x in schemes)
        raise click.BadParameter(f"the targets mix {' and '.join(shown_schemes)}: one "
                                 "protocol per run", param_hint="TARGET")
    name = next((h for h in (t.rpartition(":")[0] for t in bare) if _HOSTNAME.fullmatch(h)
                 and not _is_ip(h)), None)
    return (schemes.pop() if schemes else "tcp"), tuple(bare), name


def ws_path(texts: tuple[str, ...]) -> str:
    """The request path of ws:// targets (``/`` when none), the same for every target."""
    paths = {"/" + t.partition("://")[2].partition("/")[2] for t in texts}
    if len(paths) > 1:
        raise click.BadParameter("the targets ask for different paths: one path per run",
                                 param_hint="TARGET")
    return paths.pop()


def parse_headers(texts: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``--header 'Name: value'`` options as pairs."""
    out = []
    for text in texts:
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            raise click.BadParameter(f"{shown(text)}: give 'Name: value'",
                                     param_hint="--header")
        out.append((name.strip(), value.strip()))
    return tuple(out)


class OpeningBytes(click.ParamType[bytes, Any]):
    """``--first-message`` / ``--expect``: text with C escapes, or ``@FILE`` for a file's bytes;
    never empty, at most MAX_FIRST_MESSAGE bytes. Read while the options are parsed, so a bad
    value exits 2 before anything starts."""

    name = "TEXT|@FILE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> bytes:
        if isinstance(value, bytes):
            return value
        text = str(value)
        if text.startswith("@"):
            path = text[1:]
            if not path:
                self.fail("give a file after @ (@request.bin)", param, ctx)
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_FIRST_MESSAGE + 1)
            except (OSError, ValueError) as exc:
                self.fail(f"cannot read {shown(path)}: "
                          f"{getattr(exc, 'strerror', None) or exc}", param, ctx)
            where = shown(path)
        else:
            try:
                data = parse_escapes(text)
            except EscapeError as exc:
                self.fail(str(exc), param, ctx)
            where = "the text"
        if not data:
            self.fail(f"{where} is empty: give the bytes to send or to expect", param, ctx)
        if len(data) > MAX_FIRST_MESSAGE:
            self.fail(f"{where} is longer than {MAX_FIRST_MESSAGE:,} bytes", param, ctx)
        return data


OPENING_BYTES = OpeningBytes()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def resolve_targets(texts: tuple[str, ...]) -> tuple[Endpoint, ...]:
    """HOST:PORT targets as endpoints; a name is resolved only once the text is well formed."""
    endpoints: list[Endpoint] = []
    for text in texts:
        if "://" in text:
            raise click.BadParameter(f"{shown(text)}: give HOST:PORT (the scheme goes first)",
                                     param_hint="TARGET")
        host, sep, ports = text.rpartition(":")
        bare = host.strip("[]")
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            if not sep or not bare or not ports:
                raise click.BadParameter(f"{shown(text)} is not HOST:PORT or HOST:FIRST-LAST",
                                         param_hint="TARGET") from None
            if not _HOSTNAME.fullmatch(bare):
                raise click.BadParameter(f"{shown(bare)} is neither an IP address nor a host "
                                         "name", param_hint="TARGET") from None
            try:
                parse_target(f"127.0.0.1:{ports}")     # the ports first: no lookup for a typo
            except ValueError as exc:
                raise click.BadParameter(str(exc).replace("127.0.0.1", bare),
                                         param_hint="TARGET") from None
            try:
                bare = str(socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)[0][4][0])
            except OSError:
                raise click.BadParameter(f"cannot resolve {host!r}",
                                         param_hint="TARGET") from None
            text = f"[{bare}]:{ports}" if ":" in bare else f"{bare}:{ports}"
        try:
            endpoints.extend(parse_target(text))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGET") from None
    return tuple(dict.fromkeys(endpoints))


def parse_sources(text: str) -> tuple[str, ...] | None:
    """``auto`` -> None; else comma-separated addresses and CIDRs."""
    if text == "auto":
        return None
    out: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            if "/" in part:
                net = ipaddress.ip_network(part, strict=False)
                if net.num_addresses > MAX_SOURCES:
                    raise click.BadParameter(f"{part}: at most {MAX_SOURCES:,} addresses",
                                             param_hint="--source")
                hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
                out.extend(str(h) for h in hosts)
            else:
                out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise click.BadParameter(f"{part!r} is not an address or CIDR",
                                     param_hint="--source") from None
    if not out:
        raise click.BadParameter("no address given", param_hint="--source")
    return tuple(dict.fromkeys(out))


def _progress_line(p: LoadProgress) -> str:
    errors = ", ".join(f"{k} {v:,}" for k, v in p.errors.items())
    return (f"{p.elapsed:6.1f} s  established {format_count(p.established)} / "
            f"{format_count(p.target)}  +{p.rate:,.0f}/s  in flight {format_count(p.in_flight)}"
            + (f"  errors: {errors}" if errors else ""))


def _summary(r: LoadResult, fixed_message: bool = False) -> Table:
    verdict = "reached" if r.reached else "NOT reached"
    t = Table(title=f"tcpmax load: target {format_count(r.requested)} {verdict} "
                    f"({r.stopped_by})", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("value")
    lat = r.connect_latency_us
    rows = [
        ("peak established", format_count(r.peak_established)),
        ("held at release", format_count(r.final_established)),
        ("time to peak", f"{r.time_to_peak_seconds:.2f} s ({r.ramp_rate:,.0f} connections/s)"),
        ("connect latency", (f"p50 {lat['p50']:,} us, p99 {lat['p99']:,} us, "
                             f"max {lat['max']:,} us") if lat else "none established"),
    ]
    if r.tls_handshake_latency_us:
        h = r.tls_handshake_latency_us
        rows.append(("TLS handshake", f"p50 {h['p50']:,} us, p99 {h['p99']:,} us; "
                                      f"{format_count(r.tls_handshakes)} at "
                                      f"{r.tls_handshake_rate:,.0f}/s"))
    if r.ws_handshake_latency_us:
        w = r.ws_handshake_latency_us
        rows.append(("WebSocket upgrade", f"p50 {w['p50']:,} us, p99 {w['p99']:,} us; "
                                          f"{format_count(r.ws_handshakes)} at "
                                          f"{r.ws_handshake_rate:,.0f}/s"))
    if r.reply_latency_us:
        e = r.reply_latency_us
        rows.append(("expected reply", f"p50 {e['p50']:,} us, p99 {e['p99']:,} us; "
                                       f"{format_count(r.replies)} matched"))
    if r.message_latency_us:
        m = r.message_latency_us
        rows.append(("message latency", f"p50 {m['p50']:,} us, p99 {m['p99']:,} us "
                                        f"({format_count(m['count'])} replies)"))
    rows += [
        # A fixed --message has no framing to count replies by (only probes carry one):
        # its replies show in the bytes received.
        ("messages sent / received", f"{format_count(r.messages_sent)} / "
                                     + ("- (see bytes)" if fixed_message else
                                        format_count(r.messages_received))),
        ("bytes sent / received", f"{format_bytes(r.bytes_sent)} / "
                                  f"{format_bytes(r.bytes_received)}"),
        ("closed by the server", format_count(r.peer_closed)),
        ("workers / sources / strategy", f"{r.workers} / {format_count(r.sources)} / "
                                         f"{r.strategy}"),
        ("client memory (RSS, private)", f"{format_bytes(r.client_rss_bytes)}, "
                                         f"{format_bytes(r.client_private_bytes)}"),
        ("kernel memory used", format_bytes(r.kernel_memory_delta_bytes)),
        ("TIME_WAIT before / after", f"{r.time_wait_before} / {r.time_wait_after}"),
        ("memory floor (--min-free)",
         f"{format_bytes(r.min_free_bytes)} of MemAvailable kept"
         if r.mem_available_at_floor_bytes is None else
         f"reached: MemAvailable {format_bytes(r.mem_available_at_floor_bytes)} < "
         f"{format_bytes(r.min_free_bytes)}, so no new connections were opened"),
    ]
    for row in rows:
        t.add_row(*row)
    for err in r.errors:
        t.add_row(Text(f"{err.name} x {err.count:,}", style="red"),
                  f"{err.meaning}. Advice: {err.advice}")
        if err.sample:
            t.add_row("  the server sent", err.sample)
    return t


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.option("--connections", "-n", type=COUNT, required=True, metavar="N",
              help="Connections to open and hold (100k, 1M).")
@click.option("--source", "source", default="auto", show_default=True,
              help="Source addresses: 'auto' (loopback targets: spread over 127.0.0.0/8; "
                   "others: the addresses of the interface that routes there), or a list of "
                   "addresses and CIDRs: 127.0.0.2,127.1.0.0/24.")
@click.option("--rate", type=RATE, default=0, show_default=True, metavar="R",
              help="New connections per second in all; 0 = as fast as the kernel allows.")
@click.option("--connect-timeout", type=CONNECT_TIMEOUT, default="5s", show_default=True,
              help="Give up on a connect unanswered this long (named ETIMEDOUT).")
@click.option("--hold", type=HOLD, default="10s", show_default=True,
              help="Hold the connections this long after the ramp, then close.")
@click.option("--message", default=None,
              help="Send this text on connections (see --message-rate).")
@click.option("--message-rate", type=RATE, default=0, show_default=True,
              metavar="R",
              help="Messages per second in all, spread over the connections. Without "
                   "--message they are timestamped probes: an echo server's replies give "
                   "message latency.")
@click.option("--message-size", type=click.IntRange(16, 65536), default=16, show_default=True,
              help="Probe size in bytes.")
@click.option("--close", "close", type=click.Choice([c.value for c in CloseMode]),
              default="reset", show_default=True,
              help="reset: RST, leaves no TIME_WAIT; graceful: FIN, leaves TIME_WAIT here.")
@click.option("--port-strategy", type=click.Choice([s.value for s in PortStrategy]),
              default="auto", show_default=True,
              help="kernel: connect() picks source ports (fast below half the range); "
                   "explicit: tcpmax picks and binds them; auto: kernel while each (source "
                   "IP, endpoint) stays under half its range.")
@click.option("--workers", type=click.IntRange(1, 512), default=None,
              help="Worker processes [default: from the open-file limit, at least one per "
                   "core].")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="tls:// targets: trust the CAs in this PEM file instead of the "
                                 "system's.")
@click.option("--insecure", is_flag=True,
              help="tls:// targets: check no certificate (a test server's self-signed one).")
@click.option("--sni", default=None, metavar="NAME",
              help="tls:// targets: the server name to send and to check the certificate "
                   "against [default: the host name typed, else the address].")
@click.option("--alpn", default=None, metavar="P1,P2",
              help="tls:// targets: application protocols to offer (e.g. h2,http/1.1).")
@click.option("--header", "header", multiple=True, metavar="'NAME: VALUE'",
              help="ws:// targets: add this header to the upgrade request (repeatable).")
@click.option("--subprotocol", default=None, metavar="NAME",
              help="ws:// targets: offer this subprotocol (Sec-WebSocket-Protocol).")
@click.option("--binary", is_flag=True,
              help="ws:// targets: send messages as binary frames [default: text].")
@click.option("--first-message", type=OPENING_BYTES, default=None,
              help="Send these bytes once on each connection as soon as it is ready (TCP "
                   "connected; TLS done for tls://), e.g. an HTTP request or an MQTT "
                   "CONNECT. C escapes (\\r \\n \\t \\0 \\xHH \\NNN \\\\), or @FILE "
                   "for a file's bytes; at most 64 KiB. Not with ws:// or wss://: the upgrade "
                   "request is their first message (send frames with --message).")
@click.option("--expect", type=OPENING_BYTES, default=None,
              help="Count a connection as established only when the server's reply starts "
                   "with these bytes (same syntax), within --connect-timeout; the time to it "
                   "is reported. Alone, it waits for a server that speaks first (SMTP, SSH "
                   "banners). Failures: UNEXPECTED_REPLY (with a sample of the reply), "
                   "CLOSED_BEFORE_REPLY, REPLY_TIMEOUT. Later bytes are read and dropped.")
@click.option("--min-free", type=SIZE, default=None, metavar="SIZE",
              help="Stop opening new connections when MemAvailable falls below this; the "
                   "ones open are held and closed as usual, and the result says 'memory "
                   "floor' [default: 1/32 of RAM, at least 256MiB].")
@click.option("--cluster", default=None, metavar="tcp://HOST:8786",
              help="Run on every worker of this Dask scheduler (one worker per load machine), "
                   "N split by each machine's limits, all started and released together "
                   "(pip install 'tcpmax[cluster]').")
@click.option("--per-machine", is_flag=True,
              help="--cluster: a progress line for each machine under the fleet's.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def load(targets: tuple[str, ...], connections: int, source: str, rate: int,
         connect_timeout: float, hold: float, message: str | None, message_rate: int,
         message_size: int, close: str, port_strategy: str, workers: int | None,
         ca: Path | None, insecure: bool, sni: str | None, alpn: str | None,
         header: tuple[str, ...], subprotocol: str | None, binary: bool,
         first_message: bytes | None, expect: bytes | None, min_free: int | None,
         cluster: str | None, per_machine: bool, as_json: bool,
         quiet: bool) -> None:
    """Open and hold N connections to TARGET(s), and name every failure.

    TARGET is HOST:PORT, HOST:FIRST-LAST (a port range) or several of them; tls://HOST:PORT
    completes a TLS handshake on every connection (--ca, --insecure, --sni, --alpn) and
    times it; ws://HOST:PORT/PATH completes a WebSocket upgrade (--header, --subprotocol),
    answers pings and sends messages as frames; wss:// is both. Connections
    are spread over worker processes (the open-file limit decides how many) and over
    (source IP, endpoint) pairs, since each pair has only one ephemeral port range.
    Exit code 0 when N connections were held at once, 1 when not, 2 on bad input.

    \b
    Examples:
      tcpmax load 127.0.0.1:9000 -n 100k
      tcpmax load 127.0.0.1:9000-9009 -n 1M --hold 30s
      tcpmax load 127.0.0.1:9000 -n 40k --source 127.0.0.2      # one source IP: port wall
      tcpmax load 127.0.0.1:9000 -n 10k --message-rate 5k --hold 20s   # echo latency
      tcpmax load tls://localhost:9443 -n 10k --ca ca.pem          # TLS, handshakes timed
      tcpmax load ws://127.0.0.1:9000/chat -n 20k --message-rate 2k  # WebSocket echo
      tcpmax load 127.0.0.1:8080 -n 10k --expect 'HTTP/1.1 200' \\
          --first-message 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'  # HTTP: each one answered
      tcpmax load 127.0.0.1:2525 -n 5k --expect '220 '     # a server that speaks first
      tcpmax load 10.0.0.5:9000 -n 3M --cluster tcp://10.0.0.2:8786  # over a Dask cluster
    """
    err = stderr_console()
    if message is not None:
        refuse_unused("timestamped probes (leave out --message)", "message_size")
    elif message_rate == 0:
        refuse_unused("--message-rate", "message_size")
    scheme, plain, typed_name = split_scheme(targets)
    tls = ws = None
    if scheme in ("ws", "wss"):
        if first_message is not None or expect is not None:
            raise click.UsageError(
                f"{'--first-message' if first_message is not None else '--expect'} does not go "
                "with ws:// or wss://: the upgrade request is their first message and its "
                "101 the expected reply (checked strictly); send frames with --message")
        try:
            ws = WsOptions(host=targets[0].partition("://")[2].partition("/")[0],
                           path=ws_path(targets), headers=parse_headers(header),
                           subprotocol=subprotocol, binary=binary)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    else:
        refuse_unused("a ws:// or wss:// target", "header", "subprotocol", "binary")
    if scheme in ("tls", "wss"):
        try:
            tls = TlsOptions(server_name=sni or typed_name,
                             alpn=tuple(p.strip() for p in alpn.split(",")) if alpn else (),
                             ca_file=str(ca) if ca is not None else None, insecure=insecure)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    else:
        refuse_unused("a tls:// or wss:// target", "ca", "insecure", "sni", "alpn")
    endpoints = resolve_targets(plain)
    sources = parse_sources(source)
    try:
        cfg = LoadConfig(endpoints=endpoints, connections=connections, sources=sources,
                         rate=float(rate), connect_timeout=connect_timeout, hold=hold,
                         message=message.encode() if message is not None else None,
                         message_rate=float(message_rate), message_size=message_size,
                         close=CloseMode(close), port_strategy=PortStrategy(port_strategy),
                         workers=workers, min_free=min_free, tls=tls, ws=ws,
                         first_message=first_message, expect=expect)
        if cluster is not None:
            from tcpmax.cli.load_cluster import load_on_cluster
            load_on_cluster(cfg, cluster, per_machine=per_machine, as_json=as_json,
                            quiet=quiet, fixed_message=message is not None)
        elif per_machine:
            refuse_unused("--cluster", "per_machine")
        run = LoadRun(cfg)
    except (ValueError, LoadError) as exc:
        raise click.UsageError(str(exc)) from exc
    plan = run.plan
    err.print(f"tcpmax load: {format_count(connections)} connections to "
              f"{', '.join(str(e) for e in endpoints[:4])}{' ...' if len(endpoints) > 4 else ''}"
              f" from {format_count(len(plan.sources))} source IP(s), {plan.workers} workers, "
              f"{plan.strategy} port allocation ({format_count(plan.per_pair)} per pair of "
              f"{format_count(plan.usable_ports)} ports)", highlight=False)
    for warning in plan.warnings:
        err.print(Text(f"warning: {warning}", style="yellow"))
    result = run.run(on_progress=None if quiet else
                     (lambda p: err.print(_progress_line(p), highlight=False)),
                     log=lambda msg: err.print(msg, highlight=False))
    if as_json:
        emit_json(Schema.LOAD, result)
    else:
        err.print(_summary(result, fixed_message=message is not None and ws is None))
    sys.exit(0 if result.reached else 1)
