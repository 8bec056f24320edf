"""`tcpmax tune`: the settings a target needs; printed by default, applied or reverted as root."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from tcpmax.cli.output import emit_json, stdout_console
from tcpmax.cli.params import COUNT, ENDPOINTS, SOURCES
from tcpmax.host.inspect import LIVE_PROC, proc_tree_problem, read_host
from tcpmax.host.tune import (
    LIMITS_FILE,
    SYSCTL_FILE,
    TuneError,
    TunePaths,
    apply_changes,
    limits_conf,
    revert_changes,
    sysctl_conf,
    systemd_dropin,
)
from tcpmax.model.capacity import Role
from tcpmax.model.schema import Schema
from tcpmax.model.target import assess_target
from tcpmax.model.units import format_count

__all__ = ["tune"]


DEFAULT_STATE_DIR = Path("/var/lib/tcpmax")


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise click.UsageError(f"{what} changes kernel settings and needs root: run it with "
                               "sudo, or leave it out to print the changes")


@click.command()
@click.option("--target", type=COUNT, metavar="N",
              help="Connections to prepare for (100k, 1M). Required unless --revert.")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.LOOPBACK.value,
              show_default=True,
              help="server: accepts; client: connects out; loopback: both ends on this host.")
@click.option("--sources", type=SOURCES, metavar="N", help="Source IPs a client uses.")
@click.option("--endpoints", type=ENDPOINTS, default=1, show_default=True, metavar="N",
              help="Server (IP, port) endpoints a client connects to.")
@click.option("--apply", "do_apply", is_flag=True,
              help="Write the sysctls now (root), saving the previous values for --revert.")
@click.option("--persist", is_flag=True,
              help=f"With --apply, also write /{SYSCTL_FILE} and /{LIMITS_FILE} so the "
                   "settings survive a reboot.")
@click.option("--revert", is_flag=True, help="Restore what --apply changed (root).")
@click.option("--namespaced-only", is_flag=True,
              help="Only the sysctls that belong to a network namespace (somaxconn, port "
                   "range, ...): safe inside a container or `ip netns exec`.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_STATE_DIR, show_default=True,
              help="Where the backup of previous values is kept.")
@click.option("--proc-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=LIVE_PROC, show_default=True,
              help="Read (and with --apply, write) the sysctls of a copy of the proc tree "
                   "(from another machine) instead of this one's.")
@click.option("--json", "as_json", is_flag=True, help="Print what would change (or changed) "
                                                      "as JSON.")
def tune(target: int | None, role: str, sources: int | None, endpoints: int, do_apply: bool,
         persist: bool, revert: bool, namespaced_only: bool, state_dir: Path,
         proc_root: Path, as_json: bool) -> None:
    """Print, apply or revert the kernel settings a connection target needs.

    By default nothing changes: it prints a sysctl.d file and the open-file limits
    (limits.conf and systemd) for the target. --apply writes the sysctls to the running
    kernel after saving the old values; --revert puts them back.

    \b
    Examples:
      tcpmax tune --target 1M
      sudo tcpmax tune --target 1M --apply
      sudo tcpmax tune --revert
      ip netns exec lab tcpmax tune --target 1M --apply --namespaced-only
    """
    out = stdout_console()
    problem = proc_tree_problem(proc_root)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--proc-root")
    paths = TunePaths(proc_root=proc_root, state_dir=state_dir)
    if revert:
        if do_apply or target is not None:
            raise click.UsageError("--revert takes no --target or --apply")
        _require_root("--revert")
        try:
            restored = revert_changes(paths)
        except TuneError as exc:
            raise click.UsageError(str(exc)) from exc
        if as_json:
            emit_json(Schema.TUNE, reverted=dict(restored))
        else:
            for name, value in restored:
                out.print(f"restored {name} = {value}")
        return
    if target is None:
        raise click.UsageError("--target N is required (e.g. --target 1M), or use --revert")
    if persist and not do_apply:
        raise click.UsageError("--persist goes with --apply")
    if do_apply:
        _require_root("--apply")
    facts = read_host(proc_root)
    assessment = assess_target(facts, target, Role(role), sources=sources, endpoints=endpoints)
    changes = [c for c in assessment.sysctls if c.namespaced or not namespaced_only]
    nofile = assessment.nofile_single_process
    header = f"tcpmax tune --target {target} --role {role}"
    if do_apply:
        try:
            done = apply_changes(changes, paths, persist=persist, nofile=nofile,
                                 header=header)
        except TuneError as exc:
            raise click.UsageError(str(exc)) from exc
        if as_json:
            emit_json(Schema.TUNE, target=target, role=role,
                      applied=[{"name": n, "previous": p, "value": v} for n, p, v in done])
            return
        if not done:
            out.print("nothing to change: the current settings already fit the target")
        for name, previous, value in done:
            out.print(f"{name}: {previous} -> {value}")
        if done:
            undo = "tcpmax tune --revert"
            if state_dir != DEFAULT_STATE_DIR:
                undo += f" --state-dir {shlex.quote(str(state_dir))}"
            if proc_root != LIVE_PROC:
                undo += f" --proc-root {shlex.quote(str(proc_root))}"
            # One unwrapped line: it is meant to be copied and pasted.
            out.print(f"previous values saved in {paths.backup}; undo with: {undo}",
                      soft_wrap=True)
        return
    if as_json:
        emit_json(Schema.TUNE, target=target, role=role,
                  sysctls=[{"name": c.name, "current": c.current, "value": c.value,
                            "reason": c.reason, "namespaced": c.namespaced} for c in changes],
                  nofile=nofile, processes=assessment.processes,
                  source_ips=assessment.source_ips)
        return
    out.print(f"# /{SYSCTL_FILE}   (apply: sudo tcpmax tune --target {target} --role {role} "
              "--apply)")
    out.print(sysctl_conf(changes, header) if changes else
              "# nothing to change: the current sysctls already fit the target\n")
    out.print(f"# /{LIMITS_FILE}   (open files for one process holding "
              f"{format_count(target)} connections)")
    out.print(limits_conf(nofile))
    out.print("# systemd unit drop-in (systemctl edit SERVICE)")
    out.print(systemd_dropin(nofile))
    if assessment.processes and assessment.processes > 1:
        out.print(f"# tcpmax itself needs none of the limits above: it uses "
                  f"{assessment.processes} processes of at most "
                  f"{format_count(assessment.capacity.per_process)} connections each.")
