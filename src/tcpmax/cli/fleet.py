"""`tcpmax fleet`: a lab of client, server and load-balancer "machines" on this one
(network namespaces, two bridges, nftables DNAT); the work is in tcpmax.lab.fleet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from tcpmax.cli.output import emit_json, stderr_console, stdout_console
from tcpmax.cli.params import COUNT, DURATION
from tcpmax.model.fleet import MAX_CLIENTS, MAX_IPS_PER_CLIENT, MAX_SERVERS, check_name
from tcpmax.model.schema import Schema
from tcpmax.model.units import format_count

__all__ = ["fleet"]

_STATE_DIR = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default="/run/tcpmax",
    show_default=True, help="Where fleet state files (fleet-NAME.json) and server logs live.")


def _name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--name {value!r}: "),
                                 ctx=ctx, param=param) from None


def _need_root() -> None:
    from tcpmax.lab.fleet import can_fleet

    ok, why = can_fleet()
    if not ok:
        raise click.ClickException(f"a fleet needs root, iproute2 and nftables: {why}")


@click.group()
def fleet() -> None:
    """A lab of several machines on this one: client, server and load-balancer hosts.

    Each host is a network namespace; clients and the balancer share a front bridge, the
    balancer and the servers a back bridge. The balancer owns a VIP and spreads new
    connections over the servers with nftables DNAT (round robin), like LVS in NAT mode.
    Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking); nothing routes out of the
    machine. Needs root, iproute2 and nftables.

    \b
    Example:
      tcpmax fleet up --clients 3 --servers 3
      ip netns exec tcpmax-fleet-lab-PID-c0 tcpmax load VIP:9000 -n 20k --hold 10s
      tcpmax fleet status
      tcpmax fleet down
    """


@fleet.command()
@click.option("--clients", type=click.IntRange(1, MAX_CLIENTS), default=3, show_default=True,
              help="Client hosts (namespaces with addresses, to run loads from).")
@click.option("--servers", type=click.IntRange(1, MAX_SERVERS), default=3, show_default=True,
              help="Server hosts, each running `tcpmax serve`.")
@click.option("--ips", type=click.IntRange(1, MAX_IPS_PER_CLIENT), default=2,
              show_default=True, help="Source addresses per client host.")
@click.option("--name", default="lab", show_default=True, callback=_name,
              help="The fleet's name (lower-case letters, digits, '-').")
@click.option("--port", type=click.IntRange(1, 65535), default=9000, show_default=True,
              help="The port served behind the VIP.")
@click.option("--ttl", type=DURATION, default="1h", show_default=True,
              help="The servers stop by themselves after this long; a later sweep then "
                   "removes the fleet.")
@click.option("--server-connections", type=COUNT, default=20_000, show_default=True,
              metavar="N", help="Each server's --max-connections.")
@click.option("--dask", is_flag=True,
              help="Also start a Dask scheduler on the host namespace's fleet address and "
                   "one Dask worker in each client host, so `tcpmax load --cluster "
                   "SCHEDULER` drives every client host as one (needs tcpmax[cluster]).")
@_STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the fleet's status as JSON.")
def up(clients: int, servers: int, ips: int, name: str, port: int, ttl: float,
       server_connections: int, dask: bool, state_dir: Path, as_json: bool) -> None:
    """Build a fleet and start its servers (and with --dask, a Dask cluster of its clients).

    \b
    Examples:
      sudo tcpmax fleet up --clients 3 --servers 3 --ttl 1h
      sudo tcpmax fleet up --dask   # then: tcpmax load VIP:9000 -n 30k --cluster SCHED
    """
    from tcpmax.lab.fleet import (
        FleetExists,
        FleetSpec,
        dask_binary,
        fleet_status,
        fleet_up,
        list_fleets,
    )

    if name in list_fleets(state_dir):
        raise click.BadParameter(f"a fleet named {name!r} is already up (`tcpmax fleet "
                                 f"down --name {name}` first)", param_hint="--name")
    if dask and dask_binary() is None:
        raise click.BadParameter("needs Dask distributed: pip install 'tcpmax[cluster]'",
                                 param_hint="--dask")
    _need_root()
    err = stderr_console()
    spec = FleetSpec(name=name, clients=clients, servers=servers, ips_per_client=ips,
                     port=port, ttl=ttl, server_connections=server_connections,
                     state_dir=state_dir, dask=dask)
    started = time.monotonic()
    try:
        fleet_up(spec, log=lambda msg: err.print(msg, highlight=False))
    except FleetExists as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:        # FleetError: everything made was removed already
        raise click.ClickException(f"fleet up failed (nothing left behind): {exc}") from None
    elapsed = time.monotonic() - started
    status = fleet_status(state_dir, name, with_stats=False)
    if as_json:
        emit_json(Schema.FLEET, {"fleets": status}, up_seconds=round(elapsed, 3))
    else:
        _render(status)
        if status[0].get("scheduler"):
            err.print(f"fleet {name!r} up in {elapsed:.1f} s; load it from all client hosts "
                      f"at once: `tcpmax load {status[0]['target']} -n 30k --hold 10s "
                      f"--cluster {status[0]['scheduler']}`", highlight=False)
        else:
            err.print(f"fleet {name!r} up in {elapsed:.1f} s; load it from a client, e.g. "
                      f"`ip netns exec {status[0]['hosts'][1]['netns']} tcpmax load "
                      f"{status[0]['target']} -n 10k --hold 10s`", highlight=False)


@fleet.command()
@click.option("--name", default=None, callback=_name, help="Only this fleet.")
@_STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(name: str | None, state_dir: Path, as_json: bool) -> None:
    """Show each fleet: hosts, addresses, VIP, servers and the balancer's conntrack."""
    from tcpmax.lab.fleet import fleet_status

    _need_root()
    fleets = fleet_status(state_dir, name)
    if as_json:
        emit_json(Schema.FLEET, {"fleets": fleets})
        return
    if not fleets:
        stderr_console().print("no fleet is up" + (f" named {name!r}" if name else ""),
                               highlight=False)
        return
    _render(fleets)


@fleet.command()
@click.option("--name", default="lab", show_default=True, callback=_name,
              help="The fleet to remove.")
@_STATE_DIR
def down(name: str, state_dir: Path) -> None:
    """Remove a fleet: its processes, namespaces, links and nftables table. Also sweeps
    fleets left by killed runs and fleets past their ttl. Safe to repeat."""
    from tcpmax.lab.fleet import fleet_down

    _need_root()
    started = time.monotonic()
    found = fleet_down(name, state_dir)
    stderr_console().print(
        (f"fleet {name!r} removed" if found else f"no fleet named {name!r} (nothing to do)")
        + f" in {time.monotonic() - started:.1f} s", highlight=False)


def _render(fleets: list[dict[str, Any]]) -> None:
    out = stdout_console()
    for f in fleets:
        ct = f["conntrack"]
        conntrack = ("unknown" if ct is None else
                     f"{format_count(ct['count'])} of nf_conntrack_max "
                     f"{format_count(ct['max'])} (kernel-wide)")
        t = Table(title=f"fleet {f['name']}: VIP {f['target']}, balancer conntrack "
                        f"{conntrack}; host namespace {f['host_address']}; servers stop in "
                        f"{f['expires_in_s']:.0f} s", title_justify="left")
        for col in ("host", "namespace", "addresses", "process", "held / accepted"):
            t.add_column(col)
        for h in f["hosts"]:
            proc = ("" if "pid" not in h else
                    f"serve pid {h['pid']}" + ("" if h["serving"] else " (stopped)"))
            held = ("" if "accepted" not in h else
                    f"{format_count(h['open'] or 0)} / {format_count(h['accepted'] or 0)}")
            t.add_row(h["host"] + ("" if h["present"] else " (missing)"), h["netns"],
                      ", ".join(h["addresses"]), proc, held)
        out.print(t)
