"""C6: the real walls are file descriptors: EMFILE per process, passed with more processes."""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from tcpmax.engine.server import Server
from tcpmax.engine.sockopts import set_linger_reset
from tcpmax.engine.supervisor import fork_child
from tcpmax.host.inspect import read_sysctl
from tcpmax.host.process import raise_nofile
from tcpmax.lab.common import Context, Outcome, Verdict, isolated
from tcpmax.lab.drive import drive
from tcpmax.model.serve import ServeConfig

CLAIM = ("The real limits are file descriptors and memory, not ports. The per-process limit "
         "(ulimit -n) stops a process with EMFILE; the system limit (fs.file-max) gives ENFILE.")
METHOD = ("One process raises its soft open-file limit to the hard limit and connects to "
          "tcpmax serve until the kernel refuses; then tcpmax load holds twice that many by "
          "spreading them over processes.")


def one_process(address: tuple[str, int]) -> tuple[int, str, int]:
    """Fork a process that connects until it fails; return (count, errno name, its limit)."""
    r, w = os.pipe()

    def connect_until_refused() -> None:
        os.close(r)
        limit = raise_nofile()
        held: list[socket.socket] = []
        name = "none"
        while len(held) < limit + 10:
            try:
                s = socket.socket()
            except OSError as exc:
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                break
            try:
                set_linger_reset(s)
                s.connect(address)
            except OSError as exc:
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                s.close()
                break
            held.append(s)
        os.write(w, f"{len(held)} {name} {limit}".encode())

    pid = fork_child(connect_until_refused)
    os.close(w)
    data = os.read(r, 100).decode().split()
    os.close(r)
    os.waitpid(pid, 0)
    return int(data[0]), data[1], int(data[2])


def measure() -> dict[str, Any]:
    hard = raise_nofile()       # the serve workers raise theirs to the same hard limit
    with Server(ServeConfig(ports=(0,), max_connections=hard + 2_000)) as server:
        count, name, limit = one_process(server.addresses[0])
    d = drive(2 * hard)
    r = d.result
    file_max = int(read_sysctl("fs.file-max"))
    return {"nofile_hard": limit, "single_process_count": count, "single_process_errno": name,
            "multi_requested": 2 * hard, "multi_peak": r.peak_established,
            "multi_workers": r.workers, "file_max": file_max,
            "errors": r.error_counts}


def judge(m: dict[str, Any]) -> tuple[Verdict, str]:
    stopped = m["single_process_errno"] == "EMFILE" and \
        m["nofile_hard"] - 64 <= m["single_process_count"] <= m["nofile_hard"]
    passed = m["multi_peak"] >= m["multi_requested"]
    if stopped and passed:
        return Verdict.CONFIRMED, (
            f"one process stopped at {m['single_process_count']:,} connections with EMFILE "
            f"(RLIMIT_NOFILE {m['nofile_hard']:,}); {m['multi_workers']} processes held "
            f"{m['multi_peak']:,}, with ports to spare")
    if not stopped:
        return Verdict.INCONCLUSIVE, (f"one process stopped at {m['single_process_count']:,} "
                                      f"with {m['single_process_errno']}")
    return Verdict.INCONCLUSIVE, f"spreading over processes reached {m['multi_peak']:,} only"


def run(ctx: Context) -> Outcome:
    m, isolation = isolated(ctx, measure)
    verdict, reason = judge(m)
    return Outcome("C6", CLAIM, METHOD, verdict, reason, isolation, 0.0, m, [
        f"one process, RLIMIT_NOFILE {m['nofile_hard']:,}: {m['single_process_count']:,} "
        f"connections, then {m['single_process_errno']}",
        f"tcpmax load, {m['multi_workers']} processes: {m['multi_peak']:,} of "
        f"{m['multi_requested']:,}",
        f"ENFILE (fs.file-max {m['file_max']:,}) is not provoked: it is host-wide, and the "
        "kernel lets CAP_SYS_ADMIN past it (see docs/benchmarks.md, section \"The stretch: "
        "toward 2,000,000\")"])
