"""Measuring what one held connection of a protocol (WebSocket, TLS) costs in user space,
for `tcpmax doctor --measure --tls/--ws` and `tcpmax plan --measure`.

It runs the real programs, not a model of them: a `tcpmax serve` (one worker) speaking the
protocol on a private loopback port, and `tcpmax load` runs into it, of `small` connections
(a warm-up), `small` again and then `large`, each held until the server has counted them all
and closed before the next. Per side, the figure is the slope

    (private memory holding `large` - private memory holding `small`) / (large - small)

of the server's worker and of the load's worker. The slope cancels what each process pays
once whatever it holds (the interpreter, OpenSSL's context and CA store), which a division
by one count would smear over the connections; the warm-up keeps the server's first
handshakes (pages of the handshake code and allocator arenas touched once) out of it.
What is left swings by about 300 B between runs (pages are 4 KiB and the allocator keeps
what it freed): enough to tell 10-35 KB of TLS from a few hundred bytes of WebSocket, not to
tell 50 B from 250 B.

Kernel memory is not measured here: an idle TLS or WebSocket socket queues nothing, so its
kernel cost is the plain socket's (`engine.memprobe`).

Invariant: the server and every load worker are stopped on every exit path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tcpmax.engine.loader import LoadRun
from tcpmax.engine.server import Server
from tcpmax.host.process import process_memory
from tcpmax.model.capacity import Protocol, ProtocolMemoryMeasurement
from tcpmax.model.load import Endpoint, LoadConfig, TlsOptions, WsOptions
from tcpmax.model.serve import Mode, ServeConfig, ServeTls

__all__ = ["default_counts", "measure_protocol_bytes"]

HOST = "127.0.0.1"


def _serve_config(protocol: Protocol, most: int) -> ServeConfig:
    ws = protocol in (Protocol.WS, Protocol.WSS)
    tls = protocol in (Protocol.TLS, Protocol.WSS)
    return ServeConfig(host=HOST, ports=(0,), mode=Mode.WS if ws else Mode.HOLD,
                       ws_then=Mode.HOLD, max_connections=most, workers=1, duration=600.0,
                       tls=ServeTls(self_signed=(HOST,)) if tls else None)


def _load_config(protocol: Protocol, port: int, count: int) -> LoadConfig:
    ws = protocol in (Protocol.WS, Protocol.WSS)
    tls = protocol in (Protocol.TLS, Protocol.WSS)
    return LoadConfig(endpoints=(Endpoint(HOST, port),), connections=count, workers=1,
                      hold=0.5, connect_timeout=30.0,
                      tls=TlsOptions(insecure=True) if tls else None,
                      ws=WsOptions(host=f"{HOST}:{port}", path="/probe") if ws else None)


def _one_load(server: Server, protocol: Protocol, port: int,
              count: int) -> tuple[int, int]:
    """Private bytes of (the server's worker, the load's worker) while `count` are held."""
    seen: dict[str, int] = {}

    def at_ramp_done(_ramp_done: float) -> float | None:
        # Called in the load's parent once its worker has opened everything: wait until the
        # server holds them too (its last accepts and handshakes), then read its memory.
        deadline = time.monotonic() + 30.0
        while server.stats().open < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)   # the last connections' first reads
        seen["server"] = process_memory(server.worker_pids()).private
        seen["open"] = server.stats().open
        return time.monotonic()

    result = LoadRun(_load_config(protocol, port, count)).run(release_at=at_ramp_done)
    if not result.reached or seen.get("open", 0) < count:
        errors = ", ".join(f"{e.name} x{e.count}" for e in result.errors) or "none"
        raise RuntimeError(f"the {protocol.label} probe held {result.peak_established:,} of "
                           f"{count:,} connections (errors: {errors})")
    return seen["server"], result.client_private_bytes


def default_counts(protocol: Protocol) -> tuple[int, int]:
    """(small, large) for a probe of a few seconds: TLS handshakes run at about a thousand a
    second on a small machine, and 10-35 KB per connection needs fewer to show."""
    if protocol in (Protocol.TLS, Protocol.WSS):
        return 500, 2000
    return 2000, 10_000


def measure_protocol_bytes(protocol: Protocol, small: int | None = None,
                           large: int | None = None,
                           on_step: Callable[[str], None] | None = None,
                           ) -> ProtocolMemoryMeasurement:
    """Measure user-space bytes per held idle `protocol` connection (see module doc)."""
    small_default, large_default = default_counts(protocol)
    small = small_default if small is None else small
    large = large_default if large is None else large
    if not 0 < small < large:
        raise ValueError("the probe needs 0 < small < large")
    server = Server(_serve_config(protocol, large + 100)).start()
    try:
        port = server.addresses[0][1]
        marks: list[tuple[int, int]] = []
        for step, count in enumerate((small, small, large)):
            if on_step is not None:
                on_step(f"{protocol.label}: holding {count:,} connections"
                        + (" (warm-up)" if step == 0 else ""))
            mark = _one_load(server, protocol, port, count)
            if step:
                marks.append(mark)
            deadline = time.monotonic() + 30.0
            while server.stats().open and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.stop()
    span = large - small
    (server_small, client_small), (server_large, client_large) = marks
    return ProtocolMemoryMeasurement(
        protocol=protocol, connections=(small, large),
        server_bytes_per_connection=max(0, (server_large - server_small) // span),
        client_bytes_per_connection=max(0, (client_large - client_small) // span),
        method=(f"tcpmax serve and tcpmax load over {protocol.label} on loopback, one "
                f"worker each: private memory holding {large:,} minus holding {small:,}, "
                f"/ {span:,}"))
