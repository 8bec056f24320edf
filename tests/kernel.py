"""What the kernel holds for one test, and nothing else: its sockets (by its own ports) and its
processes (by the pids and process groups it started).

Other agents run loads on this machine: a host-wide count (sockstat, `ss -s`, `pgrep -f`)
moves with their work, so tests count only what they own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def tcp_sockets_on(port: int, state: str = "all") -> int:
    """TCP sockets in `state` whose local or remote port is `port`: both ends of every
    loopback connection to a server listening there, and its listener (state `all`)."""
    out = subprocess.run(["ss", "-Htan", "state", state,
                          f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def time_wait_toward(port: int) -> int:
    """TIME_WAIT sockets on the connecting side toward one server port."""
    out = subprocess.run(["ss", "-Htan", "state", "time-wait", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid` (children, their children, ...)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue                      # the task ended while we looked
            todo.extend(kids - found)
            found |= kids
    return found


def live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are still running. Zombies do not count: a worker whose
    parent died first is reparented to init, which may take a second or two to reap it."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue                          # it ended while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(int(stat.parent.name))
    return live


def group_is_empty(pgid: int) -> bool:
    """No process is left running in the process group `pgid` (one the test created with
    start_new_session=True, so nobody else's process can be in it)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return live_members(pgid) == []
