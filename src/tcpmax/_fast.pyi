# Types of the optional C module (src/tcpmax/_fast.c); engine/native.py is its only importer.
from array import array

from typing_extensions import Buffer

OPEN_RESET: int
OPEN_EXPLICIT: int
CONNECTING: int
ESTABLISHED: int
SUB_BITS: int

def open_batch(epfd: int, family: int, src: str, dst: str, dport: int, n: int,
               ports: Buffer | None, first: int, flags: int, state: bytearray,
               started: array[float], source_of: array[int], src_index: int,
               now: float) -> tuple[int, list[int]]: ...
def poll_connects(epfd: int, maxevents: int, timeout: float, state: bytearray,
                  started: array[float], counts: array[int], source_of: array[int],
                  by_source: array[int], peak_by_source: array[int]
                  ) -> tuple[int, list[tuple[int, int]]]: ...
def accept_batch(lfd: int, epfd: int, max_n: int, nonblocking: bool, held: bytearray,
                 mark: int) -> tuple[int, int, int]: ...
