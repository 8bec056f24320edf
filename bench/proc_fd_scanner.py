"""Does something on this host list every process's /proc/PID/fd? Holding sockets should not
grow proc_inode_cache by itself; an outside scanner (a monitoring agent) makes the kernel
build an inode and a dentry for each fd it lists, ~0.9 KB per socket that slab growth then
charges to the sockets (docs/benchmarks.md, "Kernel memory per socket at scale").

    python bench/proc_fd_scanner.py --pairs 4000

Opens the pairs on loopback (no tcpmax involved), never reads /proc/self/fd itself, and
prints the growth of four slab caches after 0.5, 3.5 and 13.5 s. Reads /proc/slabinfo:
run as root.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import time

CACHES = ("proc_inode_cache", "sock_inode_cache", "dentry", "TCP")


def active_objects() -> dict[str, int]:
    out = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] in CACHES:
                out[fields[0]] = int(fields[1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4000)
    pairs = ap.parse_args().pairs
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pairs = min(pairs, (hard - 64) // 2)
    before = active_objects()
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    held: list[socket.socket] = []
    try:
        for _ in range(pairs):
            held.append(socket.create_connection(listener.getsockname()))
            held.append(listener.accept()[0])
        start = time.monotonic()
        for wait in (0.5, 3.0, 10.0):
            time.sleep(wait)
            now = active_objects()
            print(json.dumps({"seconds": round(time.monotonic() - start, 1),
                              "sockets": len(held),
                              "growth": {k: now.get(k, 0) - before.get(k, 0) for k in CACHES}}))
    finally:
        for s in held:
            s.close()
        listener.close()


if __name__ == "__main__":
    main()
