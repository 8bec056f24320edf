"""`tcpmax load --cluster`: render a load split over a Dask cluster (engine/cluster.py runs it).

Same summary as a single-machine run, plus one row per machine; the JSON document is
`tcpmax.load/1` with `cluster` and `machines[]` added. Exit codes: 0 when N were held at once
and no machine was lost, 1 otherwise, 2 when the run could not start (scheduler unreachable,
a worker with another version, a split that cannot reach N).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click
from rich.table import Table
from rich.text import Text

from tcpmax.cli.output import emit_json, stderr_console
from tcpmax.engine.cluster import ClusterError, ClusterProgress, ClusterRun, MachineResult
from tcpmax.model.load import LoadConfig
from tcpmax.model.schema import Schema
from tcpmax.model.units import format_count

__all__ = ["load_on_cluster"]


def _progress_lines(p: ClusterProgress, per_machine: bool) -> list[str]:
    errors = ", ".join(f"{k} {v:,}" for k, v in p.errors.items())
    lines = [f"{p.elapsed:6.1f} s  fleet {p.alive}/{len(p.machines)} machines  established "
             f"{format_count(p.established)} / {format_count(p.target)}  +{p.rate:,.0f}/s  "
             f"in flight {format_count(p.in_flight)}" + (f"  errors: {errors}" if errors else "")]
    if per_machine:
        for m in p.machines:
            state = f"LOST ({m.lost})" if m.lost else ("held" if m.ramp_done else "ramping")
            lines.append(f"         {m.address} ({m.host}): {format_count(m.established)} / "
                         f"{format_count(m.share)}  +{m.rate:,.0f}/s  {state}")
    return lines


def _machines_table(machines: list[MachineResult]) -> Table:
    t = Table(title="per machine", title_justify="left")
    for col in ("machine", "share (limit)", "peak", "held", "ramp", "status", "errors"):
        t.add_column(col)
    for m in machines:
        errors = ", ".join(f"{k} {v:,}" for k, v in m.errors.items()) or "-"
        t.add_row(f"{m.machine} ({m.host})",
                  f"{format_count(m.share)} (of {format_count(m.capacity)}, "
                  f"{m.binding_limit})",
                  format_count(m.peak_established), format_count(m.final_established),
                  "-" if m.ramp_rate is None else f"{m.ramp_rate:,.0f}/s",
                  Text(f"LOST: {m.lost_reason}", style="red") if m.status == "lost"
                  else m.status, errors)
    return t


def scheduler_address(text: str) -> str | None:
    """``tcp://HOST:PORT`` (or tls://) as given, or None when it is not one: refused before
    Dask sees it (its own errors for a bad address are a stack trace at exit)."""
    scheme, sep, rest = text.partition("://")
    host, colon, port = rest.rpartition(":")
    if (not sep or scheme not in ("tcp", "tls") or not colon or not host.strip("[]")
            or not port.isdigit() or not 1 <= int(port) <= 65535):
        return None
    return text


def load_on_cluster(cfg: LoadConfig, address: str, *, per_machine: bool, as_json: bool,
                    quiet: bool, fixed_message: bool) -> NoReturn:
    from tcpmax.cli.load import _summary

    err = stderr_console()
    if scheduler_address(address) is None:
        raise click.BadParameter(f"{address!r} is not a Dask scheduler address: give "
                                 "tcp://HOST:PORT (the scheduler listens on 8786 by default)",
                                 param_hint="--cluster")
    try:
        run = ClusterRun(cfg, address)
    except ClusterError as exc:
        err.print(Text(f"Error: {exc}", style="red"))
        sys.exit(2)
    try:
        split = ", ".join(f"{a} {format_count(s)} ({run.split.capacities[i].binding} "
                          f"{format_count(run.split.capacities[i].connections)})"
                          for i, (a, s) in enumerate(zip(run.addresses, run.split.shares,
                                                         strict=True)))
        err.print(f"tcpmax load: {format_count(cfg.connections)} connections to "
                  f"{', '.join(str(e) for e in cfg.endpoints[:4])} over "
                  f"{len(run.addresses)} machines of {address}: {split}", highlight=False)
        def show(p: ClusterProgress) -> None:
            for line in _progress_lines(p, per_machine):
                err.print(line, highlight=False)

        result, machines = run.run(on_progress=None if quiet else show,
                                   log=lambda msg: err.print(msg, highlight=False))
    finally:
        run.close()
    if as_json:
        emit_json(Schema.LOAD, result, cluster={"scheduler": address,
                                                "machines": len(machines),
                                                "lost": [m.machine for m in machines
                                                         if m.status == "lost"]},
                  machines=machines)
    else:
        err.print(_summary(result, fixed_message=fixed_message))
        err.print(_machines_table(machines))
    lost = any(m.status == "lost" for m in machines)
    sys.exit(0 if result.reached and not lost else 1)
