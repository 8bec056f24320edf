"""Servers that answer a connection's first bytes, for `--first-message` / `--expect` tests,
each in its own process and sharing no code with tcpmax:

    python -m tests.reply_peer http STATUS   # stdlib http.server, HTTP/1.1 keep-alive:
                                             # every request is answered with STATUS
    python -m tests.reply_peer banner TEXT   # speaks first: sends TEXT on accept, then holds
    python -m tests.reply_peer split TEXT    # the same in two pieces, the second 50 ms later
    python -m tests.reply_peer close         # closes every connection as soon as it is accepted
    python -m tests.reply_peer echo          # echoes through a 4 KiB receive buffer and a
                                             # 536-byte MSS, so a long first message takes
                                             # the client several writes

Prints its port on the first line of stdout, then serves until its stdin closes, which the
test that started it does on exit: it never outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _http(status: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"          # keep-alive: the load holds the connection

        def do_GET(self) -> None:
            body = f"status {status}\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 4096
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass        # the load resets its connections: no traceback for each

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()
    server.server_close()


def _raw(mode: str, banner: bytes = b"") -> None:
    listener = socket.socket()
    if mode == "echo":
        # Set before listen, so accepted sockets inherit them. A small MSS announced to the
        # client also keeps its send buffer small (the kernel sizes it from MSS x cwnd).
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(sys.stdin, selectors.EVENT_READ)
    held: dict[int, socket.socket] = {}
    second_half: list[socket.socket] = []       # split: connections owed the rest
    cut = len(banner) // 2
    while True:
        events = sel.select(0.05 if second_half else None)
        if not events:
            for conn in second_half:
                with contextlib.suppress(OSError):
                    conn.send(banner[cut:])
            second_half.clear()
        for key, _ in events:
            if key.fileobj is sys.stdin:
                if not os.read(sys.stdin.fileno(), 4096):
                    return
            elif key.fileobj is listener:
                try:
                    while True:
                        conn, _ = listener.accept()
                        if mode == "close":
                            conn.close()
                            continue
                        conn.setblocking(False)
                        if mode == "banner":
                            conn.send(banner)
                        elif mode == "split":
                            conn.send(banner[:cut])
                            second_half.append(conn)
                        held[conn.fileno()] = conn
                        sel.register(conn, selectors.EVENT_READ)
                except BlockingIOError:
                    pass
            else:
                conn = held[key.fd]
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    del held[key.fd]
                    conn.close()
                elif mode == "echo":
                    conn.setblocking(True)              # a test's few connections: simple
                    with contextlib.suppress(OSError):
                        conn.sendall(data)
                    conn.setblocking(False)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "http":
        _http(int(sys.argv[2]))
    else:
        _raw(mode, sys.argv[2].encode() if len(sys.argv) > 2 else b"")
