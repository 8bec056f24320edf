"""A pre-fork supervisor: forks workers, reaps them, replaces crashed ones, stops them all.

Modelled on gunicorn's arbiter: signal handlers do nothing but wake the loop (through
`signal.set_wakeup_fd`), and the loop decides. Workers are forked before any event loop or
thread exists in them and die with the supervisor (PR_SET_PDEATHSIG = SIGKILL, checked
against the race where the supervisor died before the flag was set). Every exit path of
`run` sends TERM, waits `grace` seconds, sends KILL and reaps, so no worker outlives it.

A worker that dies while the supervisor is running is logged with its exit cause and
replaced after a backoff that doubles (up to 5 s) while it keeps dying young.

`fork_child` is the one place tcpmax forks: the supervisor's workers, the background server
(`Server.start`), the experiments' namespace and helper processes all go through it, so every
child dies with its parent and leaves through os._exit with a code, whatever happens in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from tcpmax.engine.counters import Col, CounterTable, WorkerState

__all__ = ["Supervisor", "die_with_parent", "exit_cause", "fork_child", "worker_signals"]

PR_SET_PDEATHSIG = 1
BACKOFF_FIRST, BACKOFF_MAX, YOUNG = 0.1, 5.0, 10.0


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; exit if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)


def fork_child(target: Callable[[], int | None]) -> int:
    """Fork; in the child, die with this process, run `target` and leave with os._exit.

    The exit code is what `target` returns (None is 0), a SystemExit's code, or 1 with the
    traceback on stderr when it raises anything else (or returns a code outside 0-255).
    The child never returns into the caller's code (no second run of its `finally` blocks,
    no atexit handlers, no flushing of the parent's buffered files). Returns the child's
    pid, in the parent only.
    """
    parent = os.getpid()
    # A Ctrl-C landing inside os.fork() would be raised in an at-fork callback (logging
    # registers one), where Python prints and drops it: the run then went on as if never
    # interrupted (seen once in 25 Ctrl-Cs during `prove C12`). Blocked around the fork, the
    # signal waits and is raised when the parent unblocks it, here.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    pid = os.fork()
    if pid:
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        except KeyboardInterrupt:
            # Nobody holds this child's pid yet: stop it before passing the Ctrl-C on.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise
        return pid
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        die_with_parent(parent)
        result = target()
        code = 0 if result is None else result
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
        # Never let a bad code raise here: the exception would unwind into the caller's
        # code, in the child.
        os._exit(code if isinstance(code, int) and 0 <= code <= 255 else 1)


def worker_signals() -> int:
    """A worker's signal contract: Ctrl-C is the supervisor's to interpret (ignored here);
    SIGTERM wakes the worker's event loop through the returned fd (register it for EPOLLIN;
    it reads the signal numbers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    return wake_r


def exit_cause(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


@dataclass
class _Slot:
    pid: int = 0
    started: float = 0.0
    restart_at: float | None = None
    backoff: float = BACKOFF_FIRST


class Supervisor:
    """Runs `worker(slot)` in `n` forked processes until told to stop.

    `worker` must return when it receives SIGTERM (after cleaning up); its return ends the
    process with code 0, an exception with code 1.
    """

    def __init__(self, n: int, worker: Callable[[int], None], table: CounterTable, *,
                 grace: float = 5.0, restart: bool = True,
                 log: Callable[[str], None] | None = None) -> None:
        if n > table.rows:
            raise ValueError("more workers than counter rows")
        self.n = n
        self.worker = worker
        self.table = table
        self.grace = grace
        self.restart = restart
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.slots = [_Slot() for _ in range(n)]
        self.stopping = False
        self.stop_reason = ""
        self._kill_at: float | None = None

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        def child() -> None:
            # Undo the supervisor's signal set-up; the worker installs its own.
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            self.worker(index)

        pid = fork_child(child)
        slot = self.slots[index]
        slot.pid, slot.started, slot.restart_at = pid, time.monotonic(), None
        self.table.set(index, Col.PID, pid)

    def alive(self) -> list[int]:
        return [s.pid for s in self.slots if s.pid]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = next((i for i, s in enumerate(self.slots) if s.pid == pid), None)
            if index is None:
                continue
            slot = self.slots[index]
            slot.pid = 0
            t = self.table
            # The kernel closed whatever the worker held; count it as closed.
            t.set(index, Col.CLOSED, t.get(index, Col.CLOSED) + t.get(index, Col.OPEN))
            t.set(index, Col.OPEN, 0)
            t.set(index, Col.STATE, WorkerState.DEAD)
            if self.stopping or (not self.restart and os.WIFEXITED(status)
                                 and os.WEXITSTATUS(status) == 0):
                continue
            lived = time.monotonic() - slot.started
            self.log(f"worker {index} (pid {pid}) {exit_cause(status)} after {lived:.1f} s"
                     + ("; replacing it" if self.restart else ""))
            if self.restart:
                slot.backoff = BACKOFF_FIRST if lived > YOUNG else min(BACKOFF_MAX,
                                                                        slot.backoff * 2)
                slot.restart_at = time.monotonic() + slot.backoff
                t.set(index, Col.RESTARTS, t.get(index, Col.RESTARTS) + 1)

    def _signal_all(self, sig: int) -> None:
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def request_stop(self, reason: str) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            self._signal_all(signal.SIGTERM)
            self._kill_at = time.monotonic() + self.grace
        elif reason == "SIGINT":          # a second Ctrl-C: no more waiting
            self._signal_all(signal.SIGKILL)

    # -- the loop --------------------------------------------------------------------------
    def run(self, *, duration: float | None = None, tick: Callable[[], None] | None = None,
            tick_every: float = 1.0, extra: dict[int, Callable[[], None]] | None = None,
            ready: Callable[[], None] | None = None) -> str:
        """Fork the workers and supervise until stopped; returns why it stopped.

        `extra` maps further fds (a metrics listener) to a callback run when readable.
        """
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)
        old_handlers = {sig: signal.signal(sig, lambda s, f: None) for sig in handled}
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        for fd in extra or {}:
            poller.register(fd, select.POLLIN)
        deadline = None if duration is None else time.monotonic() + duration
        next_tick = time.monotonic() + tick_every
        try:
            for index in range(self.n):
                self._spawn(index)
            if ready is not None:
                ready()
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.request_stop("duration reached")
                if self.stopping and not self.alive():
                    return self.stop_reason
                if not self.restart and not self.alive():
                    return "finished"         # workers that end by themselves (load)
                if self._kill_at is not None and now >= self._kill_at:
                    self._signal_all(signal.SIGKILL)
                    self._kill_at = None
                if not self.stopping:
                    for index, slot in enumerate(self.slots):
                        if slot.restart_at is not None and now >= slot.restart_at:
                            self._spawn(index)
                wait = next_tick - now
                for t in (deadline, self._kill_at,
                          *(s.restart_at for s in self.slots)):
                    if t is not None:
                        wait = min(wait, t - now)
                for fd, _ in poller.poll(max(0, wait) * 1000):
                    if fd == wake_r:
                        # Stop requests first: a TERM sent to the whole process group makes
                        # workers exit at once, and their SIGCHLD must not read as a crash.
                        signums = os.read(wake_r, 256)
                        for signum in signums:
                            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                                self.request_stop(signal.Signals(signum).name)
                        if signal.SIGCHLD in signums:
                            self._reap()
                    elif extra is not None:
                        extra[fd]()
                self._reap()     # SIGCHLD coalesces; reaping is cheap and idempotent
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick_every
                    if tick is not None:
                        tick()
        finally:
            if self.alive():
                self.stopping = True
                self._signal_all(signal.SIGTERM)
                end = time.monotonic() + self.grace
                while self.alive() and time.monotonic() < end:
                    time.sleep(0.02)
                    self._reap()
                self._signal_all(signal.SIGKILL)
                while self.alive():
                    time.sleep(0.01)
                    self._reap()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
