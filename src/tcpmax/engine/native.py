"""Which path the hot loops take: the optional C module (tcpmax._fast) or pure Python.

The C module does the plain connect and accept system calls a batch at a time; it is built
at install when a compiler is there (setup.py) and is otherwise absent, with the same
behaviour from the Python paths it replaces. TCPMAX_NATIVE=0 in the environment forces
Python (the benchmarks compare both in one run; the tests run both). Only plain TCP takes
the C path: TLS, WebSocket and opening exchanges keep their Python state machines.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from types import ModuleType

__all__ = ["connect_path", "fast", "numeric"]


def _load() -> ModuleType | None:
    if os.environ.get("TCPMAX_NATIVE", "1") == "0":
        return None
    try:
        from tcpmax import _fast
    except ImportError:
        return None
    return _fast


# Read by the workers when they start (after fork), so a test may set it to None first.
fast: ModuleType | None = _load()


def numeric(family: int, *hosts: str) -> bool:
    """True when every host is a numeric address of `family` (what the C path parses)."""
    for host in hosts:
        try:
            socket.inet_pton(family, host)
        except OSError:
            return False
    return True


def connect_path(plain: bool, family: int, hosts: Iterable[str]) -> str:
    """"c" when the C module runs a load's connects (plain TCP between numeric addresses,
    the module built and not turned off), else "python". Read when the workers start."""
    return "c" if fast is not None and plain and numeric(family, *hosts) else "python"
