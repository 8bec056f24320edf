"""C1: a TCP connection is its 4-tuple; change one element and another connection coexists."""

from __future__ import annotations

import errno
import socket
from typing import Any

from tcpmax.engine.sockopts import set_linger_reset
from tcpmax.lab.common import Context, Outcome, Verdict, listener

CLAIM = ("A TCP connection is identified by the 4-tuple (local IP, local port, remote IP, "
         "remote port); with the protocol it is a 5-tuple.")
METHOD = ("Bind two client sockets to the same local IP:port (SO_REUSEADDR) and connect them to "
          "two listeners that differ only in port; then try a third socket with the first one's "
          "exact 4-tuple.")


def _client(local: tuple[str, int]) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    set_linger_reset(s)
    s.bind(local)
    return s


def measure() -> dict[str, Any]:
    l1, l2 = listener(), listener()
    held: list[socket.socket] = [l1, l2]
    try:
        a = _client(("127.0.0.2", 0))
        held.append(a)
        a.connect(l1.getsockname())
        local = a.getsockname()
        b = _client(local)
        held.append(b)
        b.connect(l2.getsockname())
        c = _client(local)
        held.append(c)
        duplicate_errno = None
        try:
            c.connect(l1.getsockname())
        except OSError as exc:
            duplicate_errno = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return {
            "first": f"{local[0]}:{local[1]} -> {l1.getsockname()[0]}:{l1.getsockname()[1]}",
            "second": f"{local[0]}:{local[1]} -> {l2.getsockname()[0]}:{l2.getsockname()[1]}",
            "both_established": b.getpeername() == l2.getsockname()
            and a.getpeername() == l1.getsockname(),
            "duplicate_errno": duplicate_errno,
        }
    finally:
        for s in held:
            s.close()


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    if m["both_established"] and m["duplicate_errno"]:
        return Verdict.CONFIRMED, (
            f"the same local address {m['first'].split(' ')[0]} carried two connections that "
            f"differ only in remote port; the identical 4-tuple was refused with "
            f"{m['duplicate_errno']}")
    if m["duplicate_errno"] is None:
        return Verdict.REFUTED, "a second connection with an identical 4-tuple was accepted"
    return Verdict.INCONCLUSIVE, "the two differing connections did not both establish"


def run(ctx: Context) -> Outcome:
    m = measure()
    verdict, reason = judge(m)
    return Outcome("C1", CLAIM, METHOD, verdict, reason, "host loopback", 0.0, m, [
        f"connection 1: {m['first']}", f"connection 2: {m['second']}",
        f"identical 4-tuple again: {m['duplicate_errno'] or 'accepted'}"])
