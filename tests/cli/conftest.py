"""Refused input must start nothing: `started` watches a CLI call made in this process.

While a test runs, it records every fork, subprocess, successful bind, listen and connect
(the fork and subprocess are refused outright, so a bug cannot leave a copy of pytest
running), and moves the working directory to an empty one. `started.nothing()` then lists
what did start, or left a trace: a child process, an open socket, a file written.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel import children_of


def socket_fds() -> set[int]:
    fds = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                fds.add(int(fd.name))
        except OSError:
            continue                          # the listing's own fd, already closed
    return fds


class Started:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.calls: list[str] = []
        self.children = children_of(os.getpid())
        self.sockets = socket_fds()

    def nothing(self) -> list[str]:
        """What started, or was left behind, since the test began: empty when nothing."""
        left = list(self.calls)
        left += [f"child process {pid}" for pid in children_of(os.getpid()) - self.children]
        left += [f"open socket fd {fd}" for fd in socket_fds() - self.sockets]
        left += [f"file {p.relative_to(self.workdir)}" for p in self.workdir.rglob("*")]
        return left


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Started]:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    watch = Started(workdir)

    def refuse(what: str) -> Any:
        def call(*args: object, **kwargs: object) -> Any:
            watch.calls.append(f"{what}{args[1:] if what == 'subprocess' else args}")
            raise OSError(f"{what} refused by the test: input should have been rejected")
        return call

    def record(name: str) -> Any:
        real = getattr(socket.socket, name)

        def call(self: socket.socket, *args: object) -> Any:
            result = real(self, *args)
            watch.calls.append(f"{name}{args}")
            return result
        return call

    monkeypatch.setattr(os, "fork", refuse("fork"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("subprocess"))
    for name in ("bind", "listen", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, record(name))
    yield watch


def error_line(output: str) -> str:
    """The line click prints for a usage error (`Error: ...`)."""
    return next(line for line in output.splitlines() if line.startswith("Error:"))
