"""Socket option values tcpmax sets in more than one place, spelled once.

`LINGER_RESET` is ``struct linger {l_onoff = 1, l_linger = 0}``: with it, close() sends RST
and frees the socket at once instead of the FIN handshake, so the closing side keeps no
TIME_WAIT entry and no port. Load teardown, the server's idle and stop closes, the memory
probe, the experiments and the tests all close this way unless they measure FIN itself.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["IP_BIND_ADDRESS_NO_PORT", "LINGER_RESET", "set_linger_reset"]

LINGER_RESET = struct.pack("ii", 1, 0)
# Python's socket module lacks it before 3.12; the value is Linux's (include/uapi/linux/in.h).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def set_linger_reset(sock: socket.socket) -> None:
    """Make `sock`'s close send RST (see the module docstring)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
