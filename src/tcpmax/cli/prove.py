"""`tcpmax prove`: each claim about TCP connection limits, as an experiment with a verdict."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich import box
from rich.table import Table
from rich.text import Text

from tcpmax.cli.output import emit_json, stderr_console, stdout_console
from tcpmax.lab.common import Outcome, Verdict
from tcpmax.model.schema import Schema

__all__ = ["prove"]

_STYLE = {Verdict.CONFIRMED: "green", Verdict.REFUTED: "bold red",
          Verdict.INCONCLUSIVE: "yellow", Verdict.SKIPPED: "dim"}


def _unwritable(path: Path) -> str | None:
    """Why the report could not be written to `path`, found before a minute of experiments
    rather than after; None if it can. Tries the real thing: permissions, a read-only or full
    file system, and kernel pseudo-file systems all answer differently than os.access predicts."""
    if not path.parent.is_dir():
        return f"directory {path.parent} does not exist"
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | (0 if existed else os.O_CREAT | os.O_EXCL),
                     0o644)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    if not existed:
        path.unlink()
    return None


def _table(outcomes: list[Outcome]) -> Table:
    t = Table(title="tcpmax prove: verdicts", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("claim")
    t.add_column("verdict")
    t.add_column("why (measured)")
    t.add_column("time", justify="right")
    for o in outcomes:
        t.add_row(o.id, Text(o.verdict.value, style=_STYLE[o.verdict]), o.reason,
                  f"{o.seconds:.1f} s")
    return t


@click.command()
@click.argument("claims", nargs=-1, metavar="[CLAIM]...")
@click.option("--scale", is_flag=True,
              help="C2 holds 1,000,000 connections on one port instead of 100,000 "
                   "(about a minute and 8 GB more).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the full report (schema tcpmax.prove/1) as JSON on stdout.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a self-contained HTML report (verdicts, evidence, plots) here.")
def prove(claims: tuple[str, ...], scale: bool, as_json: bool,
          report_path: Path | None) -> None:
    """Run the claims about TCP connection limits as experiments on this machine.

    Each claim (C1-C12, see `tcpmax prove --help` and docs) is measured here and gets a
    verdict computed from the numbers: CONFIRMED, REFUTED, INCONCLUSIVE, or SKIPPED with the
    reason. As root, experiments that change sysctls run in private network namespaces that
    are removed afterwards, even on Ctrl-C; the host's settings are never touched. Not
    root, they run on the host's loopback with safe parameters.

    \b
    Claims:
      C1  a connection is its 4-tuple         C7  memory per connection
      C2  one port holds > 65,535             C8  TCP and UDP port spaces are separate
      C3  one source IP: the port range       C9  listen backlog under a burst
      C4  one local port, many endpoints      C10 epoll against a thread per connection
      C5  more source IPs multiply it         C11 TIME_WAIT and port exhaustion
      C6  EMFILE per process, not ports       C12 beyond one machine (fleet lab, plan)

    \b
    Examples:
      tcpmax prove --report report.html
      tcpmax prove C3 C6
      tcpmax prove C2 --scale --json
    Exit code: 0 unless a claim was REFUTED (1); 2 on bad input; 130 when interrupted.
    """
    from tcpmax.lab.runner import normalize_ids
    from tcpmax.lab.runner import prove as run_prove

    try:
        ids = normalize_ids(claims)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="CLAIM") from None
    if report_path is not None:
        problem = _unwritable(report_path)
        if problem is not None:
            raise click.BadParameter(f"cannot write {report_path}: {problem}",
                                     param_hint="--report")
    err = stderr_console()
    err.print(f"tcpmax prove: {len(ids)} claim(s): {' '.join(ids)}", highlight=False)
    status = err.status("")

    def started(cid: str) -> None:
        status.update(f"{cid}: measuring...")
        status.start()

    def done(o: Outcome) -> None:
        status.stop()
        err.print(Text.assemble(f"{o.id:>4}  ", (f"{o.verdict.value:<12}", _STYLE[o.verdict]),
                                f" {o.seconds:5.1f} s  {o.reason}"))

    try:
        report = run_prove(ids, connections=1_000_000 if scale else 100_000,
                           on_start=started, on_done=done)
    except KeyboardInterrupt:
        status.stop()
        err.print("interrupted: namespaces and processes cleaned up")
        sys.exit(130)
    if report_path is not None:
        from tcpmax.lab.report import render_html

        report_path.write_text(render_html(report))
        err.print(f"report: {report_path}", highlight=False)
    if as_json:
        emit_json(Schema.PROVE, report)
    else:
        stdout_console().print(_table(report.outcomes))
    sys.exit(1 if report.counts()[Verdict.REFUTED.value] else 0)
