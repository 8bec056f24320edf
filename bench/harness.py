"""Benchmark harness: an independent multi-process client and baseline servers to compare with.

Nothing here imports tcpmax's engine: the client and the baselines are the yardsticks, so
they must not share its code. Every process forked here dies with the benchmark
(PR_SET_PDEATHSIG) and every run is bounded in connections and time.

Client: P processes, each from its own loopback source IP, open connections with
non-blocking connect() completed through epoll (a window of connects in flight), report when
established, hold until released, then reset (SO_LINGER 0). In echo mode each connection
then runs a closed loop: send a 16-byte timestamped message, wait for its echo, repeat, with
latencies in an HDR histogram. With `websocket=True` each connection then sends a fixed
WebSocket upgrade request (written here, not by tcpmax's model) and counts as established
only once the answer starts with "HTTP/1.1 101".

Servers: "simplest" (W processes accepting from one shared listener with plain epoll, fds
kept in a list), asyncio and uvloop (W processes, SO_REUSEPORT listeners, a Protocol per
connection that holds or echoes).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram

RST = struct.pack("ii", 1, 0)
WS_REQUEST = (b"GET /bench HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
IP_BIND_ADDRESS_NO_PORT = 24


def _die_with_parent(parent: int) -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _max_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def fork(fn: Callable[[], None]) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _die_with_parent(parent)
            fn()
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids:
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def memory_of(pids: list[int]) -> dict[str, int]:
    """Sum of Rss, Pss and private (clean + dirty) bytes over `pids`, from smaps_rollup."""
    out = {"rss": 0, "pss": 0, "private": 0}
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                value = int(rest.split()[0]) * 1024 if rest.strip() else 0
                if key == "Rss":
                    out["rss"] += value
                elif key == "Pss":
                    out["pss"] += value
                elif key in ("Private_Clean", "Private_Dirty"):
                    out["private"] += value
    return out


def sockstat_inuse() -> int:
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            return int(line.split()[2])
    return 0


# -- the client --------------------------------------------------------------------------

def _client(address: tuple[str, int], n: int, source: str, window: int, ready_w: int,
            go_r: int, echo_seconds: float, result_w: int, websocket: bool = False) -> None:
    _max_nofile()
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    upgrading: set[int] = set()
    started = established = failed = 0
    in_flight = 0
    while established + failed < n:
        while in_flight < window and started < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
            rc = s.connect_ex(address)
            started += 1
            if rc not in (0, errno.EINPROGRESS):
                failed += 1
                s.close()
                continue
            socks[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLOUT)
            in_flight += 1
        for fd, _ev in ep.poll(1.0):
            s = socks[fd]
            if fd in upgrading:
                upgrading.discard(fd)
                in_flight -= 1
                try:
                    answer = os.read(fd, 4096)
                except OSError:
                    answer = b""
                if answer.startswith(b"HTTP/1.1 101 "):
                    established += 1
                    ep.modify(fd, 0)
                else:
                    failed += 1
                    ep.unregister(fd)
                    del socks[fd]
                    s.close()
                continue
            if websocket and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                os.write(fd, WS_REQUEST)      # ~170 bytes into an empty buffer: never short
                upgrading.add(fd)
                ep.modify(fd, select.EPOLLIN)
                continue
            in_flight -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                established += 1
                ep.modify(fd, 0)
            else:
                failed += 1
                ep.unregister(fd)
                del socks[fd]
                s.close()
    os.write(ready_w, struct.pack("ii", established, failed))
    os.read(go_r, 1)                                  # the start (echo) or release signal
    if echo_seconds > 0:
        hist = HdrHistogram(1, 60_000_000, 3)         # microseconds, up to a minute
        # WebSocket: the 16-byte probe goes in one masked binary frame (a client must mask)
        # and comes back in one unmasked frame: 2 header bytes, then the probe.
        message = _ws_probe if websocket else _tcp_probe
        skip = 2 if websocket else 0
        for fd in socks:
            ep.modify(fd, select.EPOLLIN)
            os.write(fd, message())
        end = time.monotonic() + echo_seconds
        count = 0
        while time.monotonic() < end:
            for fd, _ev in ep.poll(0.1):
                data = os.read(fd, 64)
                if len(data) < 16 + skip:
                    continue
                (sent,) = struct.unpack_from("q", data, skip)
                hist.record_value(max(1, (time.perf_counter_ns() - sent) // 1000))
                count += 1
                os.write(fd, message())
        blob = hist.encode()
        os.write(result_w, struct.pack("qi", count, len(blob)) + blob)
        os.read(go_r, 1)                              # release
    for s in socks.values():
        s.close()


def _tcp_probe() -> bytes:
    return struct.pack("qq", time.perf_counter_ns(), 0)


_WS_MASK = 0x5A17C3E9
_WS_MASK16 = int.from_bytes(_WS_MASK.to_bytes(4, "big") * 4, "big")


def _ws_probe() -> bytes:
    payload = int.from_bytes(struct.pack("qq", time.perf_counter_ns(), 0), "big")
    return (b"\x82\x90" + _WS_MASK.to_bytes(4, "big")
            + (payload ^ _WS_MASK16).to_bytes(16, "big"))


@dataclass
class ClientRun:
    pids: list[int]
    established: int
    failed: int
    ramp_seconds: float
    go_fds: list[int]
    result_fds: list[int]

    def start_echo(self) -> None:
        for w in self.go_fds:
            os.write(w, b"g")

    def echo_results(self) -> tuple[int, HdrHistogram]:
        total = HdrHistogram(1, 60_000_000, 3)
        count = 0
        for r in self.result_fds:
            head = _read_exact(r, 12)
            n, size = struct.unpack("qi", head)
            count += n
            total.decode_and_add(_read_exact(r, size))
        return count, total

    def release(self) -> None:
        for w in self.go_fds:
            with contextlib.suppress(OSError):
                os.write(w, b"r")
                os.close(w)
        for r in self.result_fds:
            os.close(r)
        kill_all(self.pids)


def _read_exact(fd: int, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = os.read(fd, size - len(buf))
        if not chunk:
            raise EOFError("client process ended early")
        buf += chunk
    return buf


def open_connections(address: tuple[str, int], n: int, *, per_process: int = 14_000,
                     per_source: int = 14_000, window: int = 256,
                     echo_seconds: float = 0.0, websocket: bool = False) -> ClientRun:
    """Open and hold `n` connections (upgraded to WebSocket with `websocket`); returns once
    every process reported."""
    per = min(per_process, per_source)
    shares = [per] * (n // per) + ([n % per] if n % per else [])
    pids, ready, go, results = [], [], [], []
    t0 = time.perf_counter()
    for i, share in enumerate(shares):
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        res_r, res_w = os.pipe()
        source = f"127.{1 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}"

        def child(share: int = share, source: str = source, ready_w: int = ready_w,
                  go_r: int = go_r, res_w: int = res_w) -> None:
            _client(address, share, source, window, ready_w, go_r, echo_seconds, res_w,
                    websocket)

        pids.append(fork(child))
        for fd in (ready_w, go_r, res_w):
            os.close(fd)
        ready.append(ready_r)
        go.append(go_w)
        results.append(res_r)
    established = failed = 0
    for r in ready:
        e, f = struct.unpack("ii", _read_exact(r, 8))
        established += e
        failed += f
        os.close(r)
    return ClientRun(pids, established, failed, time.perf_counter() - t0, go, results)


# -- baseline servers --------------------------------------------------------------------

def _simplest_worker(listener: socket.socket) -> None:
    _max_nofile()
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    held: list[int] = []
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        for _fd, _ev in ep.poll():
            while True:
                try:
                    fd, _ = listener._accept()  # type: ignore[attr-defined]
                except BlockingIOError:
                    break
                except OSError:
                    time.sleep(0.05)
                    break
                held.append(fd)


def _asyncio_worker(port: int, echo: bool, use_uvloop: bool) -> None:
    import asyncio

    _max_nofile()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if echo:
                self.transport.write(data)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", port, reuse_port=True,
                                          backlog=4096)
        async with server:
            await server.serve_forever()

    if use_uvloop:
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())


def _websockets_worker(port: int) -> None:
    """The `websockets` library's asyncio echo server, as its documentation writes one."""
    import asyncio
    import logging

    from websockets.asyncio.server import ServerConnection, serve

    # The bench ends every connection with an RST; websockets logs each as a traceback.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    _max_nofile()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        # Pings off: tcpmax serve sends none, so neither side pays for keepalives.
        async with serve(echo, "127.0.0.1", port, reuse_port=True, backlog=4096,
                         ping_interval=None, compression=None) as server:
            await server.serve_forever()

    asyncio.run(main())


@dataclass
class BaselineServer:
    kind: str
    port: int
    pids: list[int]

    def stop(self) -> None:
        kill_all(self.pids)


def start_baseline(kind: str, workers: int, *, echo: bool = False) -> BaselineServer:
    """kind: "simplest", "asyncio", "uvloop" or "websockets" (WebSocket echo)."""
    pids = []
    if kind == "simplest":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.listen(4096)
        listener.setblocking(False)
        pids = [fork(lambda: _simplest_worker(listener)) for _ in range(workers)]
        listener.close()
    else:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        if kind == "websockets":
            pids = [fork(lambda: _websockets_worker(port)) for _ in range(workers)]
        else:
            pids = [fork(lambda: _asyncio_worker(port, echo, kind == "uvloop"))
                    for _ in range(workers)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)      # let every worker's listener come up
    return BaselineServer(kind, port, pids)
