"""Running tcpmax serve and tcpmax load together for an experiment, in the current namespace.

The server listens on a port outside the ephemeral range when it can (so it takes no port a
client could use), and both are stopped before returning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tcpmax.engine.loader import LoadProgress, LoadResult, LoadRun
from tcpmax.engine.server import Server
from tcpmax.host.inspect import read_port_range
from tcpmax.model.load import CloseMode, Endpoint, LoadConfig, PortStrategy
from tcpmax.model.serve import ServeConfig

__all__ = ["Drive", "drive", "port_range", "server_port"]


def port_range() -> tuple[int, int]:
    """This namespace's ephemeral port range, (low, high)."""
    r = read_port_range()
    return r.low, r.high


def server_port() -> int:
    """A port below the ephemeral range (9000 unless the range starts lower), else 0."""
    low, _ = port_range()
    return 9000 if low > 9010 else 0


@dataclass
class Drive:
    result: LoadResult
    server: Server
    address: tuple[str, int]


def drive(n: int, *, sources: tuple[str, ...] | None = None, ports: int = 1,
          strategy: PortStrategy = PortStrategy.AUTO, close: CloseMode = CloseMode.RESET,
          hold: float = 0.0, connect_timeout: float = 5.0,
          on_progress: Callable[[LoadProgress, Server], None] | None = None,
          progress_every: float = 0.5,
          on_ready: Callable[[Server], None] | None = None) -> Drive:
    base = server_port()
    cfg = ServeConfig(ports=tuple(range(base, base + ports)) if base else (0,),
                      max_connections=n + 1_000)
    server = Server(cfg).start(timeout=60)
    try:
        if on_ready is not None:
            on_ready(server)
        endpoints = tuple(Endpoint(h, p) for h, p in server.addresses)
        load = LoadRun(LoadConfig(endpoints, n, sources=sources, port_strategy=strategy,
                                  close=close, hold=hold, connect_timeout=connect_timeout))
        callback = None if on_progress is None else (lambda p: on_progress(p, server))
        result = load.run(on_progress=callback, progress_every=progress_every)
        return Drive(result, server, server.addresses[0])
    finally:
        server.stop(timeout=60)
