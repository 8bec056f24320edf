"""One process as the kernel accounts it: this process's open-file limit, and the threads and
memory of any pid.

Memory comes from two per-process files with different costs. ``status`` (VmRSS, Threads) is
kept as counters by the kernel: cheap enough to read on every metrics scrape.
``smaps_rollup`` sums every mapping and is the only one that tells a worker's private pages
from those it still shares with its parent after fork: read it when that split matters.

A pid that exits while it is being read counts as nothing: callers sum over workers that come
and go, and a vanished worker holds no memory.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tcpmax.host.procfs import LIVE_PROC

__all__ = ["ProcessMemory", "parse_smaps_rollup", "process_memory", "raise_nofile",
           "read_status", "rss_bytes", "running", "thread_count"]

Pid = int | str          # a number, or "self"


def raise_nofile() -> int:
    """Raise this process's soft open-file limit to its hard limit; return the new soft limit.

    Raising the soft limit needs no privilege; the hard limit is the ceiling (raising that needs
    CAP_SYS_RESOURCE, which tcpmax never assumes)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def running(pid: int, proc_root: Path = LIVE_PROC) -> bool:
    """Whether `pid` runs; a zombie does not (it has stopped, and init reaps lazily)."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which may hold spaces and parentheses.
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_status(pid: Pid = "self", proc_root: Path = LIVE_PROC) -> dict[str, str]:
    """A process's ``status`` file, by field name (values as the kernel writes them)."""
    out = {}
    for line in (Path(proc_root) / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _kib(value: str) -> int:
    return int(value.split()[0]) * 1024


def rss_bytes(pids: Iterable[Pid], proc_root: Path = LIVE_PROC) -> int:
    """Resident memory of `pids` summed (pages shared between them count in each)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            total += _kib(read_status(pid, proc_root)["VmRSS"])
    return total


def thread_count(pid: Pid, proc_root: Path = LIVE_PROC) -> int:
    """Threads of one process; 0 when it is gone."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(read_status(pid, proc_root)["Threads"])
    return 0


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """The ``kB`` fields of an smaps_rollup file, in bytes, by name (Rss, Private_Dirty...)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if len(words) == 2 and words[1] == "kB":
            out[key] = int(words[0]) * 1024
    return out


@dataclass(frozen=True)
class ProcessMemory:
    rss: int         # resident bytes, shared pages included
    private: int     # resident bytes no other process maps: what the processes cost


def process_memory(pids: Iterable[Pid], proc_root: Path = LIVE_PROC) -> ProcessMemory:
    """Resident and private memory of `pids` summed, from smaps_rollup."""
    rss = private = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            fields = parse_smaps_rollup(
                (Path(proc_root) / str(pid) / "smaps_rollup").read_text())
            rss += fields.get("Rss", 0)
            private += fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return ProcessMemory(rss, private)
