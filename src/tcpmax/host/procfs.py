"""Paths into the kernel's proc filesystem, and the one way tcpmax reads or writes a sysctl.

Invariants:
- A sysctl is named, never addressed by path: ``net.core.somaxconn``, not a file name. A name
  must match `SYSCTL_NAME` (lower-case words joined by dots, at least two), and the file it
  names must resolve inside ``<proc_root>/sys``; anything else is refused with ValueError
  before a file is opened. A name read from a backup file or typed by a user therefore cannot
  reach any other file, whatever it contains (``..``, slashes, NUL, symlinks).
- Every function takes the proc root, so tests and `doctor --proc-root` read a copied tree.

The net.* sysctls belong to the caller's network namespace: a process inside a namespace reads
and writes that namespace's values, not the host's.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["LIVE_PROC", "SYSCTL_NAME", "read_sysctl", "sysctl_path", "write_sysctl"]

LIVE_PROC = Path("/proc")
SYSCTL_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_-]+)+")


def sysctl_path(name: str, proc_root: Path = LIVE_PROC) -> Path:
    """``net.core.somaxconn`` -> ``<proc_root>/sys/net/core/somaxconn``; ValueError for a
    string that is not a sysctl name or would lead outside ``<proc_root>/sys``."""
    if not SYSCTL_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a sysctl name (expected words joined by dots, "
                         "like net.core.somaxconn)")
    base = Path(proc_root) / "sys"
    path = base / name.replace(".", "/")
    if not path.resolve().is_relative_to(base.resolve()):
        raise ValueError(f"sysctl {name!r} resolves outside {base}")
    return path


def read_sysctl(name: str, proc_root: Path = LIVE_PROC) -> str:
    return sysctl_path(name, proc_root).read_text().strip()


def write_sysctl(name: str, value: str, proc_root: Path = LIVE_PROC) -> None:
    """Set one sysctl (root). Callers own the scope: on the host only through `tcpmax tune`,
    which backs the old value up; experiments only inside a network namespace they created."""
    sysctl_path(name, proc_root).write_text(value + "\n")
