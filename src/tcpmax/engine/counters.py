"""Live counters in shared memory: one row of unsigned 64-bit cells per worker process.

The table is an anonymous MAP_SHARED mapping created before any fork, so every worker and the
supervisor see the same bytes without messages or locks. Each cell has exactly one writer
(the worker owning the row, or the supervisor while that worker is dead), and aligned 8-byte
stores are atomic on the machines we run on, so readers see each value whole; a snapshot
across cells may mix instants a few microseconds apart, which totals tolerate.

Workers keep hot counts in local variables and store them here a few times a second, so the
hot loop pays for plain integer additions only.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Sequence
from enum import IntEnum

__all__ = ["ACCEPT_ERRNOS", "LOAD_ERRNOS", "Col", "CounterTable", "WorkerState"]

# Accept failures counted by name; anything else lands in ACCEPT_OTHER.
ACCEPT_ERRNOS = ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "ECONNABORTED")


class Col(IntEnum):
    PID = 0
    STATE = 1            # WorkerState
    HEARTBEAT_MS = 2     # CLOCK_MONOTONIC milliseconds of the last store
    OPEN = 3
    ACCEPTED = 4
    CLOSED = 5
    BYTES_IN = 6
    BYTES_OUT = 7
    PUSHED = 8           # messages written by push mode
    PUSH_SKIPPED = 9     # push messages dropped because the socket buffer was full
    BACKPRESSURE = 10    # echo writes that could not complete at once
    IDLE_CLOSED = 11
    ACCEPT_EMFILE = 12
    ACCEPT_ENFILE = 13
    ACCEPT_ENOBUFS = 14
    ACCEPT_ENOMEM = 15
    ACCEPT_ECONNABORTED = 16
    ACCEPT_OTHER = 17
    ACCEPT_PAUSES = 18   # times the worker stopped polling listeners after an error
    RESTARTS = 19        # times this row's worker was replaced (written by the supervisor)
    CONNECTED = 20       # load: connections established (cumulative)
    CONNECT_ERRORS = 21  # load: failed connection attempts (cumulative)
    ATTEMPTED = 22       # load: connect() calls made
    IN_FLIGHT = 23       # load: connects started, not yet answered
    MSG_SENT = 24
    MSG_RECV = 25
    PEER_CLOSED = 26     # load: established connections the server closed or reset
    RAMP_DONE_MS = 27    # load: CLOCK_MONOTONIC ms when this worker made its last attempt
    ERR_EADDRNOTAVAIL = 28
    ERR_EMFILE = 29
    ERR_ENFILE = 30
    ERR_ECONNREFUSED = 31
    ERR_ETIMEDOUT = 32
    ERR_ECONNRESET = 33
    ERR_ENOBUFS = 34
    ERR_ENOMEM = 35
    ERR_EHOSTUNREACH = 36
    ERR_ENETUNREACH = 37
    ERR_EADDRINUSE = 38
    ERR_OTHER = 39
    WS_UPGRADED = 40     # serve ws: upgrades answered 101
    WS_FRAMES_IN = 41
    WS_FRAMES_OUT = 42
    WS_PROTOCOL_ERRORS = 43  # connections closed (1002/1009) for breaking the framing rules
    WS_FAIL_MALFORMED = 44   # upgrade refusals and drops, one per model.ws.HandshakeFailure
    WS_FAIL_NO_UPGRADE = 45
    WS_FAIL_BAD_VERSION = 46
    WS_FAIL_BAD_KEY = 47
    WS_FAIL_TOO_LARGE = 48
    WS_FAIL_TIMEOUT = 49
    WS_FAIL_ABANDONED = 50
    MEM_FLOOR = 51           # serve: set by the supervisor while MemAvailable < --min-free
    # serve --tls, numbered from the top of the row to leave 52-55 to others.
    TLS_HANDSHAKES = 56      # server-side handshakes completed
    TLS_HANDSHAKE_US = 57    # their summed duration, accept to done, in microseconds
    TLS_FAIL_NOT_TLS = 58    # one per model.serve.TLS_FAILURES
    TLS_FAIL_CLOSED_IN_HANDSHAKE = 59
    TLS_FAIL_HANDSHAKE_TIMEOUT = 60
    TLS_FAIL_ALERT = 61
    TLS_FAIL_OTHER = 62


N_COLS = 64              # room to grow without changing the row size users may rely on
LOAD_ERRNOS = tuple(c.name[4:] for c in Col if c.name.startswith("ERR_") and c.name != "ERR_OTHER")


class WorkerState(IntEnum):
    EMPTY = 0
    RUNNING = 1
    FULL = 2             # at its connection budget: not polling the listeners
    PAUSED = 3           # accept error: listeners paused briefly
    STOPPING = 4
    DEAD = 5


class CounterTable:
    """`rows` x `N_COLS` uint64 cells in shared memory."""

    def __init__(self, rows: int) -> None:
        if rows < 1:
            raise ValueError("a counter table needs at least one row")
        self.rows = rows
        self._map = mmap.mmap(-1, rows * N_COLS * 8, flags=mmap.MAP_SHARED)
        self.cells = memoryview(self._map).cast("Q")

    def row(self, index: int) -> memoryview:
        """A writable view of one row: ``row[Col.OPEN] = n``."""
        return self.cells[index * N_COLS:(index + 1) * N_COLS]

    def get(self, index: int, col: Col) -> int:
        return int(self.cells[index * N_COLS + col])

    def set(self, index: int, col: Col, value: int) -> None:
        self.cells[index * N_COLS + col] = value

    def snapshot(self) -> list[list[int]]:
        return [list(self.row(i)) for i in range(self.rows)]

    @staticmethod
    def total(snapshot: Iterable[Sequence[int]], col: Col) -> int:
        return sum(r[col] for r in snapshot)
