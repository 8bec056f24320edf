"""C8: TCP and UDP are separate port spaces."""

from __future__ import annotations

import errno
import socket
from typing import Any

from tcpmax.lab.common import Context, Outcome, Verdict

CLAIM = ("TCP and UDP are separate port spaces: a TCP and a UDP socket can bind the same IP "
         "and port at the same time.")
METHOD = ("Bind a TCP socket to 127.0.0.1 on a free port, then a UDP socket to the same "
          "address and port; as a control, a second TCP socket on that port.")


def measure() -> dict[str, Any]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        port = tcp.getsockname()[1]
        udp_error = control_error = None
        try:
            udp.bind(("127.0.0.1", port))
        except OSError as exc:
            udp_error = errno.errorcode.get(exc.errno or 0)
        try:
            control.bind(("127.0.0.1", port))
        except OSError as exc:
            control_error = errno.errorcode.get(exc.errno or 0)
        return {"port": port, "udp_bound": udp_error is None, "udp_error": udp_error,
                "second_tcp_error": control_error}
    finally:
        for s in (tcp, udp, control):
            s.close()


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    if m["udp_bound"] and m["second_tcp_error"]:
        return Verdict.CONFIRMED, (f"TCP and UDP both hold 127.0.0.1:{m['port']}, while a "
                                   f"second TCP bind got {m['second_tcp_error']}")
    if not m["udp_bound"]:
        return Verdict.REFUTED, f"UDP could not bind the TCP socket's port: {m['udp_error']}"
    return Verdict.INCONCLUSIVE, "the control (a second TCP bind) did not fail: port not held?"


def run(ctx: Context) -> Outcome:
    m = measure()
    verdict, reason = judge(m)
    return Outcome("C8", CLAIM, METHOD, verdict, reason, "host loopback", 0.0, m, [
        f"TCP bound 127.0.0.1:{m['port']}; UDP on the same: "
        f"{'bound' if m['udp_bound'] else m['udp_error']}",
        f"control, a second TCP socket on it: {m['second_tcp_error']}"])
