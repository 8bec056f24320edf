"""The fleet lab: several "machines" on this one, as network namespaces behind a real kernel
load balancer. Builds, inspects and removes what `tcpmax.model.fleet.plan_fleet` names.

Topology (two bridges, the balancer in between, as LVS in NAT mode is cabled):

    host ns (198.18.B.1) -- [front bridge] -- clients c0..cN     (front /22)
                                 |
                           balancer "lb": VIP on lo, nftables DNAT, ip_forward=1
                                 |
                            [back bridge] -- servers s0..sM      (back /24)

Two bridges rather than one because NAT mode needs the replies to pass the balancer: on one
shared segment a server would answer a client directly (same L2), from its own address, and
the client would reset a reply that does not come from the VIP. With the servers alone on
the back bridge and a route to the front subnet via the balancer, every reply goes back
through its conntrack entry and leaves with the VIP as source. Clients reach the VIP only by
a route via the balancer's front leg. The host namespace gets an address on the front bridge
(so a Dask scheduler there reaches the client hosts later), and nothing else: no namespace
has a default route, no bridge has an uplink, and forwarding is enabled only inside the
balancer's namespace. The nftables table lives in the balancer's namespace only; the host's
ruleset is never touched.

Each server host runs `tcpmax serve` started with `ip netns exec`, bounded by the fleet's
ttl (`--duration`), so a forgotten fleet stops serving by itself; the state file records its
pid. The servers outlive `fleet up` by design, so they are started detached (not its
children). Only processes found inside the fleet's namespaces are ever stopped, so a recorded
pid the kernel has since given to another program is never signalled.

A fleet's state file (STATE_DIR/fleet-NAME.json) is written before anything is created
and removed after everything is gone, so `down` and `sweep` always know what to remove:
processes (every one inside the fleet's namespaces: the servers, and anything a user started
there), then namespaces (which take their veth ends, addresses, routes and nftables table
with them), then bridges. Each front bridge's alias names its state file, so a sweep from
any state directory sees every fleet on the machine. A sweep removes fleets whose `fleet up`
died before finishing (the creating pid is in every namespace name and in the state file),
fleets past their ttl, and fleet namespaces and bridges that no live fleet claims.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcpmax.engine.supervisor import fork_child
from tcpmax.host.inspect import listening_ports, read_conntrack
from tcpmax.host.process import running
from tcpmax.host.procfs import write_sysctl
from tcpmax.lab.sandbox import SandboxError, can_sandbox, run_in
from tcpmax.model.fleet import (
    SLOTS,
    FleetPlan,
    Host,
    check_name,
    netns_owner,
    nft_ruleset,
    plan_fleet,
)

__all__ = ["DEFAULT_STATE_DIR", "FleetError", "FleetExists", "FleetSpec", "can_fleet",
           "fleet_down", "fleet_status", "fleet_up", "list_fleets", "sweep"]

DEFAULT_STATE_DIR = Path("/run/tcpmax")
NETNS_DIR = Path("/var/run/netns")
METRICS_PORT = 9100
STATE_VERSION = 1
_READY_TIMEOUT = 30.0
_FRONT = re.compile(r"tmf\d+-front")
_BRIDGE = re.compile(r"tmf(\d+)-(?:front|back)")
_TERM_GRACE = 3.0


class FleetError(RuntimeError):
    """Building or removing a fleet failed; the message says which step."""


class FleetExists(FleetError):
    """A fleet of that name is already up."""


@dataclass(frozen=True)
class FleetSpec:
    """What `fleet up` is asked for (checked by `plan_fleet` before anything exists)."""

    name: str = "lab"
    clients: int = 3
    servers: int = 3
    ips_per_client: int = 2
    port: int = 9000
    ttl: float = 3600.0
    server_connections: int = 20_000
    state_dir: Path = field(default=DEFAULT_STATE_DIR)
    dask: bool = False     # a Dask scheduler on the host's fleet address, a worker per client


def can_fleet() -> tuple[bool, str]:
    """Whether this process can build a fleet, and if not, why."""
    ok, why = can_sandbox()
    if not ok:
        return ok, why
    if shutil.which("nft") is None:
        return False, ("nftables' `nft` is not installed (Debian: apt-get install -y "
                       "nftables)")
    return True, ""


# ---------------------------------------------------------------- state files and locking

def _state_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"fleet-{name}.json"


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up`'s name and slot choice, or one sweep, at a time (flock: dies with its holder)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / ".fleet.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = _state_path(state_dir, state["name"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)            # a reader never sees half a file


def _read_states(state_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not state_dir.is_dir():
        return out
    for path in sorted(state_dir.glob("fleet-*.json")):
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
            if isinstance(state, dict) and state.get("version") == STATE_VERSION:
                out.append(state)
    return out


def _plan_of(state: dict[str, Any]) -> FleetPlan:
    return plan_fleet(state["name"], clients=state["clients"], servers=state["servers"],
                      slot=state["slot"], creator_pid=state["creator_pid"],
                      ips_per_client=state["ips_per_client"], port=state["port"])


def list_fleets(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    return [s["name"] for s in _read_states(state_dir)]


# ---------------------------------------------------------------- small system helpers

def _batch(lines: list[str], netns: str | None = None, force: bool = False) -> None:
    """Run `ip` commands in one process (fast: one netlink socket for all of them)."""
    if not lines:
        return
    cmd = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else []),
           "-batch", "-"]
    proc = subprocess.run(cmd, input="\n".join(lines) + "\n", text=True, capture_output=True,
                          timeout=60, check=False)
    if proc.returncode != 0 and not force:
        raise FleetError(f"ip {'in ' + netns if netns else 'in the host namespace'}: "
                         f"{proc.stderr.strip() or proc.returncode}")


def _netns_inode(netns: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / netns).st_ino
    except OSError:
        return None


def _pid_netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _pids_in(netns: str) -> list[int]:
    """Every process whose network namespace is `netns` (what `ip netns pids` does)."""
    inode = _netns_inode(netns)
    if inode is None:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _pid_netns_inode(int(entry.name)) == inode:
            pids.append(int(entry.name))
    return pids


def _stop(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL after a grace period for those still there."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _TERM_GRACE
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _host_links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


# ---------------------------------------------------------------- teardown

def _teardown(plan: FleetPlan) -> None:
    """Remove every part of `plan` that exists; safe to call on a half-built fleet."""
    netnses = [h.netns for h in plan.hosts]
    # Processes first: a namespace with a process in it outlives `ip netns del`. Only
    # processes inside this fleet's namespaces are stopped (ours: the servers, or a load a
    # user ran there); the recorded pids are among them.
    victims = [pid for ns in netnses for pid in _pids_in(ns) if pid != os.getpid()]
    if victims:
        _stop(victims)
    present = {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.is_dir() else set()
    _batch([f"netns del {ns}" for ns in netnses if ns in present], force=True)
    links = _host_links()
    # The veth ends went with their namespaces; the bridges are ours to delete.
    _batch([f"link del {link}" for link in plan.host_links if link in links], force=True)


def _scheduler_pid(state: dict[str, Any]) -> int | None:
    """The recorded scheduler's pid if that process is still it (a pid can be reused)."""
    pid = state.get("scheduler_pid")
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    address = state.get("scheduler", "").rpartition(":")[2].encode()
    return pid if b"scheduler" in cmdline and address in cmdline else None


def _remove(state_dir: Path, state: dict[str, Any]) -> None:
    # The scheduler runs in the host namespace, where no namespace sweep reaches it.
    pid = _scheduler_pid(state)
    if pid is not None:
        _stop([pid])
    _teardown(_plan_of(state))
    with contextlib.suppress(FileNotFoundError):
        _state_path(state_dir, state["name"]).unlink()
    with contextlib.suppress(FileNotFoundError):
        (state_dir / f"fleet-{state['name']}.log").unlink()


def _stale(state: dict[str, Any], now: float) -> bool:
    if now >= state["expires_at"]:
        return True
    return not state["complete"] and not running(state["creator_pid"])


def _known_states(state_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Fleets of this state directory, and of any other one a front bridge names.

    Each fleet's front bridge carries its state file's path as its alias, so a sweep from
    any state directory (a test's, the default one) knows every live fleet on the machine
    and never takes another directory's fleet for an orphan."""
    found = {(state_dir / f"fleet-{s['name']}.json").resolve(): s
             for s in _read_states(state_dir)}
    for link in Path("/sys/class/net").iterdir():
        if not _FRONT.fullmatch(link.name):
            continue
        with contextlib.suppress(OSError, ValueError):
            path = Path((link / "ifalias").read_text().strip()).resolve()
            if path not in found and path.name.startswith("fleet-"):
                state = json.loads(path.read_text())
                if isinstance(state, dict) and state.get("version") == STATE_VERSION:
                    found[path] = state
    return list(found.items())


def sweep(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Remove fleets whose `fleet up` was killed before finishing and fleets past their ttl
    (from this state directory or any other a fleet's bridge names), then fleet namespaces
    and bridges no live fleet claims whose creating process is gone. Returns the names of
    what was removed."""
    removed: list[str] = []
    with _locked(state_dir):
        now = time.time()
        live = []
        for path, state in _known_states(state_dir):
            if _stale(state, now):
                _remove(path.parent, state)
                removed.append(state["name"])
            else:
                live.append(_plan_of(state))
        claimed = {h.netns for plan in live for h in plan.hosts}
        orphans = []
        if NETNS_DIR.is_dir():
            for entry in NETNS_DIR.iterdir():
                owner = netns_owner(entry.name)
                if owner and entry.name not in claimed and not running(owner[1]):
                    orphans.append(entry.name)
        if orphans:
            _stop([pid for ns in orphans for pid in _pids_in(ns)])
            _batch([f"netns del {ns}" for ns in orphans], force=True)
            removed += orphans
        slots = {plan.slot for plan in live}
        # A bridge no live fleet's slot claims, whose state file is gone (or that never got
        # its alias) is a leftover.
        bridges = [name for name in _host_links()
                   if (m := _BRIDGE.fullmatch(name)) and int(m[1]) not in slots
                   and not ((alias := _alias(name)) and Path(alias).exists())]
        _batch([f"link del {name}" for name in bridges], force=True)
        removed += bridges
    return removed


def _alias(link: str) -> str:
    try:
        return (Path("/sys/class/net") / link / "ifalias").read_text().strip()
    except OSError:
        return ""


def fleet_down(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> bool:
    """Remove fleet `name` and everything it made; False if there was no such fleet.
    Idempotent: a second call finds nothing and returns False."""
    check_name(name)
    found = False
    with _locked(state_dir):
        for path, state in _known_states(state_dir):
            if state["name"] == name and path.parent == state_dir.resolve():
                _remove(state_dir, state)
                found = True
    sweep(state_dir)
    return found


# ---------------------------------------------------------------- build

def _free_slot(states: list[dict[str, Any]]) -> int:
    used = {s["slot"] for s in states}
    links = _host_links()
    for slot in range(SLOTS):
        # A bridge of that slot from another state directory is someone else's fleet.
        if slot not in used and f"tmf{slot}-front" not in links:
            return slot
    raise FleetError(f"all {SLOTS} fleet address blocks are in use; `tcpmax fleet down` one")


def _host_commands(plan: FleetPlan, state_file: Path) -> list[str]:
    front, back = plan.bridges
    lines = []
    for br in (front, back):
        # The alias names the state file (see `_known_states`).
        lines += [f"link add {br} type bridge",
                  f"link set {br} alias {json.dumps(str(state_file.resolve()))}",
                  f"link set {br} addrgenmode none", f"link set {br} up"]
    lines.append(f"addr add {plan.host_address} dev {front}")
    # Routes tied to the bridge: they go with it on `fleet down`, and nothing addressed to
    # the fleet's block ever takes the host's default route out of the machine.
    lines += [f"route add {dest} dev {front}" if via is None else
              f"route add {dest} via {via} dev {front}" for dest, via in plan.host_routes]
    for host in plan.hosts:
        for outside, bridge, inside in host.links:
            lines += [f"link add {outside} type veth peer name {inside} netns {host.netns}",
                      f"link set {outside} addrgenmode none master {bridge} up"]
    return lines


def _netns_commands(host: Host) -> list[str]:
    lines = ["link set lo up"]
    lines += [f"link set {inside} addrgenmode none up" for _, _, inside in host.links]
    lines += [f"addr add {addr} dev {dev}" for dev, addr in host.addresses]
    lines += [f"route add {dest} via {via}" for dest, via in host.routes]
    return lines


def _serve_command(host: Host, spec: FleetSpec) -> list[str]:
    ip = host.ips[0]
    return ["ip", "netns", "exec", host.netns, sys.executable, "-m", "tcpmax", "serve",
            "--host", ip, "--port", str(spec.port),
            "--max-connections", str(spec.server_connections),
            "--duration", f"{math.ceil(spec.ttl)}s", "--metrics", f"{ip}:{METRICS_PORT}", "--quiet"]


DASK_BASE_PORT = 8786     # the scheduler of the fleet in slot k listens on 8786 + k


def dask_binary() -> Path | None:
    """The `dask` command of this Python's environment (the [cluster] extra), if any."""
    candidate = Path(sys.executable).parent / "dask"
    return candidate if candidate.exists() else None


def _dask_commands(plan: FleetPlan, spec: FleetSpec,
                   dask: Path) -> tuple[str, list[str], dict[str, list[str]]]:
    """The scheduler's address and command (host namespace) and each client's worker
    command (in its namespace); both stop by themselves at the fleet's ttl."""
    host = plan.host_address.partition("/")[0]
    port = DASK_BASE_PORT + plan.slot
    address = f"tcp://{host}:{port}"
    ttl = ["timeout", f"{math.ceil(spec.ttl)}s"]
    scheduler = [*ttl, str(dask), "scheduler", "--host", host, "--port", str(port),
                 "--no-dashboard"]
    workers = {h.label: ["ip", "netns", "exec", h.netns, *ttl, str(dask), "worker", address,
                         "--nworkers", "1", "--nthreads", "1", "--no-nanny",
                         "--no-dashboard", "--name", h.label]
               for h in plan.clients}
    return address, scheduler, workers


def _start_dask(plan: FleetPlan, spec: FleetSpec, state: dict[str, Any], logfile: Path,
                say: Callable[[str], None]) -> None:
    dask = dask_binary()
    if dask is None:
        raise FleetError("--dask needs Dask distributed: pip install 'tcpmax[cluster]'")
    address, scheduler, workers = _dask_commands(plan, spec, dask)
    state["scheduler"] = address
    with logfile.open("ab") as out:
        state["scheduler_pid"] = _spawn_detached(scheduler, out.fileno())
        _write_state(spec.state_dir, state)
        state["worker_pids"] = {label: _spawn_detached(argv, out.fileno())
                                for label, argv in workers.items()}
    _write_state(spec.state_dir, state)
    # Each worker logs one "Registered to" line once the scheduler has it.
    deadline = time.monotonic() + _READY_TIMEOUT
    while logfile.read_text(errors="replace").count("Registered to") < len(workers):
        if not running(state["scheduler_pid"]):
            raise FleetError("the Dask scheduler exited: "
                             + " | ".join(logfile.read_text(errors="replace")
                                          .strip().splitlines()[-5:]))
        if time.monotonic() > deadline:
            raise FleetError(f"Dask workers not registered after {_READY_TIMEOUT:.0f} s "
                             f"(see {logfile})")
        time.sleep(0.1)
    say(f"Dask scheduler {address}, one worker per client host")


def _spawn_detached(argv: list[str], log_fd: int) -> int:
    """Start `argv` as a grandchild in its own session and return its pid.

    The servers outlive `fleet up` by design (until `fleet down` or their ttl), so they must
    not be this process's children: an intermediate child starts them and exits at once, and
    the kernel hands them to init, which reaps them whoever stops them later."""
    r, w = os.pipe()

    def intermediate() -> int:
        os.close(r)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                start_new_session=True)
        os.write(w, str(proc.pid).encode())
        return 0

    try:
        child = fork_child(intermediate)
        os.close(w)
        w = -1
        data = b""
        while chunk := os.read(r, 64):
            data += chunk
        os.waitpid(child, 0)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    if not data:
        raise FleetError(f"could not start {' '.join(argv[4:7])}")
    return int(data)


def _enable_forwarding() -> None:
    # Inside the balancer's namespace only (per-namespace sysctl): it routes between its
    # two legs; the host's own ip_forward is never read or written here.
    write_sysctl("net.ipv4.ip_forward", "1")


def fleet_up(spec: FleetSpec, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the fleet `spec` asks for and start its servers; return its state record.

    Raises:
        ValueError: bad counts or name (nothing created).
        FleetExists: a fleet of that name exists (nothing created).
        FleetError: a step failed; everything made so far is removed first.
    """
    say = log or (lambda _msg: None)
    check_name(spec.name)
    # Plan once with a placeholder slot so bad counts fail before any file or lock exists.
    plan_fleet(spec.name, clients=spec.clients, servers=spec.servers, slot=0,
               creator_pid=os.getpid(), ips_per_client=spec.ips_per_client, port=spec.port)
    if not spec.ttl > 0:
        raise ValueError("--ttl must be positive")
    if any(s["name"] == spec.name for s in _read_states(spec.state_dir)):
        raise FleetExists(f"a fleet named {spec.name!r} is already up "
                          f"(`tcpmax fleet down --name {spec.name}` first)")
    sweep(spec.state_dir)
    with _locked(spec.state_dir):
        states = _read_states(spec.state_dir)
        if any(s["name"] == spec.name for s in states):
            raise FleetExists(f"a fleet named {spec.name!r} is already up")
        slot = _free_slot(states)
        plan = plan_fleet(spec.name, clients=spec.clients, servers=spec.servers, slot=slot,
                          creator_pid=os.getpid(), ips_per_client=spec.ips_per_client,
                          port=spec.port)
        now = time.time()
        state: dict[str, Any] = {
            "version": STATE_VERSION, "name": spec.name, "slot": slot,
            "creator_pid": plan.creator_pid, "clients": spec.clients,
            "servers": spec.servers, "ips_per_client": spec.ips_per_client,
            "port": spec.port, "ttl_s": spec.ttl, "server_connections": spec.server_connections,
            "created_at": now, "expires_at": now + spec.ttl, "complete": False,
            "server_pids": {}}
        # Written before anything exists: a run killed at any later point leaves a record
        # the sweep can remove everything by.
        _write_state(spec.state_dir, state)
    try:
        _build(plan, spec, state, say)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            _remove(spec.state_dir, state)
        if isinstance(exc, Exception) and not isinstance(exc, FleetError):
            raise FleetError(f"{type(exc).__name__}: {exc}") from exc
        raise
    return state


def _build(plan: FleetPlan, spec: FleetSpec, state: dict[str, Any],
           say: Callable[[str], None]) -> None:
    started = time.monotonic()
    _batch([f"netns add {h.netns}" for h in plan.hosts])
    _batch(_host_commands(plan, _state_path(spec.state_dir, spec.name)))
    for host in plan.hosts:
        _batch(_netns_commands(host), netns=host.netns)
    try:
        run_in(plan.balancer.netns, _enable_forwarding)
    except SandboxError as exc:
        raise FleetError(f"enabling forwarding in the balancer: {exc}") from exc
    proc = subprocess.run(["ip", "netns", "exec", plan.balancer.netns, "nft", "-f", "-"],
                          input=nft_ruleset(plan), text=True, capture_output=True,
                          timeout=30, check=False)
    if proc.returncode != 0:
        raise FleetError(f"nft in the balancer: {proc.stderr.strip()}")
    say(f"network of {len(plan.hosts)} hosts built in {time.monotonic() - started:.1f} s")
    logfile = spec.state_dir / f"fleet-{spec.name}.log"
    with logfile.open("ab") as out:
        pids = {h.label: _spawn_detached(_serve_command(h, spec), out.fileno())
                for h in plan.servers}
    state["server_pids"] = pids
    _write_state(spec.state_dir, state)
    deadline = time.monotonic() + _READY_TIMEOUT
    waiting = dict(pids)
    while waiting:
        for label, pid in list(waiting.items()):
            if not running(pid):
                tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
                raise FleetError(f"server {label} exited: " + " | ".join(tail))
            if {spec.port, METRICS_PORT} <= listening_ports(pid):
                del waiting[label]
        if time.monotonic() > deadline:
            raise FleetError(f"servers {', '.join(waiting)} not listening after "
                             f"{_READY_TIMEOUT:.0f} s (see {logfile})")
        time.sleep(0.05)
    if spec.dask:
        _start_dask(plan, spec, state, logfile, say)
    state["complete"] = True
    _write_state(spec.state_dir, state)
    say(f"fleet {spec.name!r} up in {time.monotonic() - started:.1f} s")


# ---------------------------------------------------------------- status

def _server_stats(host_ip: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{host_ip}:{METRICS_PORT}/stats", timeout=3) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def server_stats(netns: str, ip: str) -> dict[str, Any] | None:
    """A fleet server's /stats, fetched from inside its namespace; None if it does not
    answer (stopped at its ttl, or killed)."""
    try:
        result: dict[str, Any] = run_in(netns, lambda: _server_stats(ip))
    except SandboxError:
        return None
    return result


def balancer_conntrack(netns: str) -> tuple[int, int] | None:
    """(entries in the balancer's conntrack table, the kernel-wide nf_conntrack_max)."""
    try:
        got = run_in(netns, read_conntrack)
    except SandboxError:
        return None
    return None if got is None else (int(got[0]), int(got[1]))


def fleet_status(state_dir: Path = DEFAULT_STATE_DIR, name: str | None = None,
                 with_stats: bool = True) -> list[dict[str, Any]]:
    """Every fleet on this machine (or the one named): hosts, addresses, VIP, processes, the
    servers' counters and the balancer's conntrack count against nf_conntrack_max. Fleets
    of other state directories are found through their bridges' aliases."""
    out = []
    now = time.time()
    present = {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.is_dir() else set()
    for path, state in _known_states(state_dir):
        if name is not None and state["name"] != name:
            continue
        plan = _plan_of(state)
        hosts = []
        for h in plan.hosts:
            entry: dict[str, Any] = {"host": h.label, "role": h.role.value, "netns": h.netns,
                                     "addresses": list(h.ips), "present": h.netns in present}
            worker = state.get("worker_pids", {}).get(h.label)
            if worker is not None:
                inode = _netns_inode(h.netns)
                entry["worker_pid"] = worker
                entry["working"] = inode is not None and _pid_netns_inode(worker) == inode
            pid = state["server_pids"].get(h.label)
            if pid is not None:
                inode = _netns_inode(h.netns)
                alive = inode is not None and _pid_netns_inode(pid) == inode
                entry["pid"] = pid
                entry["serving"] = alive
                stats = server_stats(h.netns, h.ips[0]) if alive and with_stats else None
                if stats is not None:
                    entry["accepted"] = stats.get("accepted")
                    entry["open"] = stats.get("open")
            hosts.append(entry)
        conntrack = (balancer_conntrack(plan.balancer.netns)
                     if plan.balancer.netns in present else None)
        out.append({
            "name": plan.name, "slot": plan.slot, "vip": plan.vip, "port": plan.port,
            "target": f"{plan.vip}:{plan.port}", "host_address": plan.host_address,
            "front_net": plan.front_net, "back_net": plan.back_net,
            "bridges": list(plan.bridges), "complete": state["complete"],
            "scheduler": state.get("scheduler"),
            "scheduler_running": _scheduler_pid(state) is not None,
            "creator_pid": plan.creator_pid, "state_file": str(path),
            "expires_in_s": round(max(0.0, state["expires_at"] - now), 1),
            "conntrack": None if conntrack is None else
            {"count": conntrack[0], "max": conntrack[1]},
            "hosts": hosts})
    return out
