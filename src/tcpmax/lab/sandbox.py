"""Private network namespaces for experiments: sysctls changed there never touch the host.

`in_namespace(fn, sysctls)` creates a named namespace (`ip netns add`), forks a child that
enters it with setns(2), brings loopback up, writes the sysctls, runs `fn()` and sends its
JSON-able result back over a pipe. Whatever happens (exception, Ctrl-C in the parent, a child
that dies), the parent deletes the namespace before returning. `run_in(name, fn)` does the
same in a namespace that already exists (a fleet host's), and leaves it in place.

Namespace names carry the creating pid (tcpmax-prove-PID-N), so `sweep_stale()` can delete the
ones left by a run that was killed outright (SIGKILL leaves no chance to clean up).

The net.* sysctls and the kernel's sockstat and netstat counters are per network namespace:
inside, an experiment reads counters that only its own sockets move. Sysctl names are checked
(tcpmax.host.procfs) before the namespace is made, so none can write outside the sysctl tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcpmax.engine.supervisor import fork_child
from tcpmax.host.procfs import sysctl_path, write_sysctl

__all__ = ["SandboxError", "can_sandbox", "in_namespace", "run_in", "sweep_stale"]

CLONE_NEWNET = 0x40000000
PREFIX = "tcpmax-prove-"
_counter = itertools.count()


class SandboxError(RuntimeError):
    pass


def can_sandbox() -> tuple[bool, str]:
    """Whether this process can make network namespaces, and if not, why."""
    if os.geteuid() != 0:
        return False, "not root: network namespaces and their sysctls need root"
    if shutil.which("ip") is None:
        return False, "iproute2's `ip` is not installed"
    return True, ""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def sweep_stale() -> list[str]:
    """Delete tcpmax-prove-* namespaces whose creating process is gone."""
    removed: list[str] = []
    run_dir = Path("/var/run/netns")
    if not run_dir.is_dir():
        return removed
    for entry in run_dir.iterdir():
        m = re.fullmatch(rf"{PREFIX}(\d+)-\d+", entry.name)
        if m is None:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue                       # its owner is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", entry.name)
            removed.append(entry.name)
    return removed


def _enter(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_namespace(fn: Callable[[], Any], sysctls: dict[str, str] | None = None,
                 timeout: float = 300.0) -> Any:
    """Run `fn` in a fresh network namespace with `sysctls` set there; return its result."""
    for key in sysctls or {}:
        sysctl_path(key)            # ValueError for a name that is not a sysctl's
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        raise SandboxError(f"cannot create network namespace {name}: {exc}") from exc

    def setup_then_fn() -> Any:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        for key, value in (sysctls or {}).items():
            write_sysctl(key, value)
        return fn()

    try:
        return run_in(name, setup_then_fn)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            _ip("netns", "del", name)


def run_in(name: str, fn: Callable[[], Any]) -> Any:
    """Run `fn` in a forked child inside the existing named namespace `name`; return its
    JSON-able result, or raise SandboxError with the child's error. The caller's own
    namespace is never changed: setns happens in the child only."""
    r, w = os.pipe()

    def child() -> int:
        # Every outcome, failure included, goes up the pipe as JSON: the parent raises it.
        os.close(r)
        code = 1
        try:
            _enter(name)
            payload = {"ok": True, "result": fn()}
            code = 0
        except BaseException as exc:
            payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()}
        view = memoryview(json.dumps(payload).encode())
        while view:
            view = view[os.write(w, view):]
        return code

    pid = -1
    try:
        pid = fork_child(child)
        os.close(w)
        w = -1
        chunks = []
        while chunk := os.read(r, 1 << 20):
            chunks.append(chunk)
        os.waitpid(pid, 0)
        pid = -1
        if not chunks:
            raise SandboxError("the experiment process died without a result")
        payload = json.loads(b"".join(chunks))
        if not payload["ok"]:
            raise SandboxError(payload["error"] + "\n" + payload.get("traceback", ""))
        return payload["result"]
    finally:
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for fd in (r, w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
