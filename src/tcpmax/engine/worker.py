"""What every worker process does around its hot loop, whichever its kind (serve or load).

A worker's loop is its own and stays inline (no per-event calls); what it does before the
loop and how it publishes its counts are the same for every kind, and live here:

- `worker_prologue`: claim the counter row (its PID cell), take the signal contract
  (supervisor.worker_signals: SIGTERM arrives as a byte on a wake-up fd), lift the open-file
  limit to the hard limit, and create the epoll instance with the wake-up fd registered. The
  returned fd limit sizes the flat per-fd arrays.
- `flush_counters`: store the loop's local counts into the row with a heartbeat, a few times a
  second (counters.py explains why counts live in locals between flushes).
- `pop_expired`: the handshakes (TLS, WebSocket) whose deadline has passed.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterable
from typing import NamedTuple

from tcpmax.engine.counters import Col, CounterTable
from tcpmax.engine.supervisor import worker_signals
from tcpmax.host.process import raise_nofile

__all__ = ["FLUSH_EVERY", "WorkerStart", "flush_counters", "pop_expired", "worker_prologue"]

FLUSH_EVERY = 0.1        # seconds between stores of the local counts into shared memory


class WorkerStart(NamedTuple):
    row: memoryview      # this worker's counter row
    wake_r: int          # readable when a signal arrived; reads give the signal numbers
    fd_limit: int        # every fd this process can get is below this
    ep: select.epoll     # with wake_r registered for EPOLLIN


def worker_prologue(table: CounterTable, slot: int, expected_fds: int) -> WorkerStart:
    """Set a freshly forked worker up for its loop (see the module docstring).

    `expected_fds` is how many fds the worker expects to watch (a hint to the kernel)."""
    row = table.row(slot)
    row[Col.PID] = os.getpid()
    wake_r = worker_signals()
    fd_limit = max(2, raise_nofile())
    ep = select.epoll(min(expected_fds, 65536) + 16)
    ep.register(wake_r, select.EPOLLIN)
    return WorkerStart(row, wake_r, fd_limit, ep)


def flush_counters(row: memoryview, now: float, counts: Iterable[tuple[Col, int]]) -> None:
    """Store `counts` in the row and stamp the heartbeat (CLOCK_MONOTONIC ms of `now`)."""
    for col, value in counts:
        row[col] = value
    row[Col.HEARTBEAT_MS] = int(now * 1000)


def pop_expired(deadlines: dict[int, float], now: float) -> list[int]:
    """Remove and return the fds whose deadline is past. `deadlines` is filled in accept
    order with one timeout for all, so it is sorted by deadline: the scan stops at the first
    fd still in time."""
    late: list[int] = []
    for fd, deadline in deadlines.items():
        if deadline > now:
            break
        late.append(fd)
    for fd in late:
        del deadlines[fd]
    return late
