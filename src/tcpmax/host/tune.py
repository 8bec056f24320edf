"""Changing the host for `tcpmax tune`: write sysctls, remember what they were, put them back.

`apply_changes` writes each sysctl under /proc/sys after saving its previous value in a JSON
backup; applying twice keeps the first previous value, so one `revert_changes` always returns
to the state before the first apply. With `persist`, it also writes a sysctl.d file and a
limits.d file (their previous contents are saved too). A failed write rolls back what this
call already wrote and raises `TuneError`.

/proc/sys/net belongs to the caller's network namespace. The backup records that namespace
and `revert_changes` refuses to restore it from another one: restoring a namespace's values
onto the host is exactly the accident this guards against.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpmax.host.inspect import LIVE_PROC, sysctl_path
from tcpmax.model.target import SysctlChange

__all__ = [
    "TuneError",
    "TunePaths",
    "apply_changes",
    "limits_conf",
    "revert_changes",
    "sysctl_conf",
    "systemd_dropin",
]

SYSCTL_FILE = Path("etc/sysctl.d/90-tcpmax.conf")
LIMITS_FILE = Path("etc/security/limits.d/90-tcpmax.conf")
BACKUP_NAME = "tune-backup.json"


class TuneError(RuntimeError):
    """A change could not be made or undone; the message says which and why."""


@dataclass(frozen=True)
class TunePaths:
    proc_root: Path = LIVE_PROC
    etc_root: Path = Path("/")          # parent of etc/ for the persistent files
    state_dir: Path = Path("/var/lib/tcpmax")

    @property
    def backup(self) -> Path:
        return self.state_dir / BACKUP_NAME


def sysctl_conf(changes: Iterable[SysctlChange], header: str) -> str:
    lines = [f"# {header}", "# Written by tcpmax tune; `tcpmax tune --revert` removes it."]
    for c in changes:
        lines.append(f"# {c.reason}")
        lines.append(c.line.replace("\t", " "))
    return "\n".join(lines) + "\n"


def limits_conf(nofile: int) -> str:
    return ("# Written by tcpmax tune: open files per process for login sessions.\n"
            f"*    soft    nofile    {nofile}\n*    hard    nofile    {nofile}\n"
            f"root soft    nofile    {nofile}\nroot hard    nofile    {nofile}\n")


def systemd_dropin(nofile: int) -> str:
    return f"[Service]\nLimitNOFILE={nofile}\n"


def _netns_id(proc_root: Path) -> int | None:
    try:
        return os.stat(proc_root / "self" / "ns" / "net").st_ino
    except OSError:
        return None


def _load(paths: TunePaths) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(paths.backup.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise TuneError(f"cannot read the tune backup {paths.backup}: {exc}") from exc
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k, {}), dict) for k in ("sysctls", "files")):
        raise TuneError(f"the tune backup {paths.backup} is damaged: not what tune writes")
    return data


def _save(paths: TunePaths, data: dict[str, Any]) -> None:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.backup.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, paths.backup)


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value + "\n")
    except OSError as exc:
        raise TuneError(f"cannot write {path}: {exc.strerror or exc}") from exc


def apply_changes(changes: Iterable[SysctlChange], paths: TunePaths = TunePaths(), *,
                  persist: bool = False, nofile: int | None = None,
                  header: str = "tcpmax tune") -> list[tuple[str, str, str]]:
    """Apply `changes`; return (name, previous, new) for each sysctl written."""
    changes = list(changes)
    data = _load(paths)
    netns = _netns_id(paths.proc_root)
    if data and data.get("netns") != netns:
        raise TuneError(f"{paths.backup} holds values saved in another network namespace; "
                        "revert there first (or remove the file if that namespace is gone)")
    saved: dict[str, str] = data.setdefault("sysctls", {})
    files: dict[str, str | None] = data.setdefault("files", {})
    data["netns"] = netns
    data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    done: list[tuple[str, str, str]] = []
    try:
        for c in changes:
            path = sysctl_path(c.name, paths.proc_root)
            try:
                previous = path.read_text().strip()
            except OSError as exc:
                raise TuneError(f"cannot read {c.name} ({path}): "
                                f"{exc.strerror or exc}") from exc
            saved.setdefault(c.name, previous)
            _write(path, c.value)
            done.append((c.name, previous, c.value))
        if persist:
            wanted = {SYSCTL_FILE: sysctl_conf(changes, header)}
            if nofile is not None:
                wanted[LIMITS_FILE] = limits_conf(nofile)
            for rel, text in wanted.items():
                target = paths.etc_root / rel
                if str(rel) not in files:
                    files[str(rel)] = target.read_text() if target.exists() else None
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    except BaseException:
        for name, previous, _new in reversed(done):
            sysctl_path(name, paths.proc_root).write_text(previous + "\n")
        raise
    _save(paths, data)
    return done


def revert_changes(paths: TunePaths = TunePaths()) -> list[tuple[str, str]]:
    """Restore every saved value and file; return (name, restored value) per sysctl."""
    data = _load(paths)
    if not data:
        raise TuneError(f"nothing to revert: no backup at {paths.backup}")
    if data.get("netns") != _netns_id(paths.proc_root):
        raise TuneError(f"{paths.backup} was saved in another network namespace; run "
                        "--revert inside that namespace")
    sysctls, files = data.get("sysctls", {}), data.get("files", {})
    # The backup is a file on disk: check every entry before writing anything.
    for name, value in sysctls.items():
        try:
            sysctl_path(name, paths.proc_root)
        except ValueError as exc:
            raise TuneError(f"{paths.backup} is damaged: {exc}; nothing was restored") from exc
        if not isinstance(value, str):
            raise TuneError(f"{paths.backup} is damaged: the value of {name} is not text; "
                            "nothing was restored")
    for rel, text in files.items():
        if rel not in (str(SYSCTL_FILE), str(LIMITS_FILE)) or not isinstance(text, str | None):
            raise TuneError(f"{paths.backup} is damaged: it names the file {rel!r}, which "
                            "tune never writes; nothing was restored")
    restored = []
    for name, value in sysctls.items():
        _write(sysctl_path(name, paths.proc_root), value)
        restored.append((name, value))
    for rel, text in files.items():
        target = paths.etc_root / rel
        if text is None:
            target.unlink(missing_ok=True)
        else:
            target.write_text(text)
    paths.backup.unlink()
    return restored
