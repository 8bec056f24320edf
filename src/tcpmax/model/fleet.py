"""The fleet lab on paper: names, addresses and the balancer's rules for N clients, M servers
and one load balancer, as namespaces on this machine. Pure data; lab/fleet.py builds it.

Invariants:
- Every address is in the RFC 2544 benchmarking range 198.18.0.0/15, which nothing on the
  internet uses. The range is cut into `SLOTS` blocks of 2,048 addresses (a /21), one per
  fleet, so fleets that exist at once never share an address or a route in the host
  namespace.
- Inside a slot (base B): the front subnet B/22 holds the host namespace (B+1), the
  balancer's front leg (B+2) and the clients (from B+257); the back subnet B+1024/24 holds the
  balancer's back leg (B+1025) and the servers (from B+1034); the VIP is B+1537, a /32 owned
  by the balancer. No plan contains a default route: a client routes only the VIP via the
  balancer, a server only the front subnet via the balancer, and the balancer knows only its
  two connected subnets.
- Interface names fit Linux's 15 characters whatever the fleet is called: host-side links
  are named from the slot (tmf7-front, tmf7-c12), namespaces from the fleet name and the
  creating pid (tcpmax-fleet-lab-4242-s0), so a sweep can tell a killed run's leftovers.
- `plan_fleet` refuses bad input with ValueError naming the option before anything exists.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "FLEET_NET",
    "MAX_CLIENTS",
    "MAX_IPS_PER_CLIENT",
    "MAX_SERVERS",
    "NAME_PATTERN",
    "NETNS_PREFIX",
    "SLOTS",
    "FleetPlan",
    "Host",
    "Role",
    "check_name",
    "netns_owner",
    "nft_ruleset",
    "plan_fleet",
]

FLEET_NET = ipaddress.IPv4Network("198.18.0.0/15")
SLOT_SIZE = 2048
SLOTS = FLEET_NET.num_addresses // SLOT_SIZE          # 64 fleets at once
_FRONT_PREFIX, _BACK_PREFIX = 22, 24
_CLIENT_FIRST, _CLIENT_LAST = 257, 1022               # offsets in the front /22
_BACK_OFFSET, _SERVER_FIRST = 1024, 10                # back /24; servers from its .10
_VIP_OFFSET = 1537
MAX_CLIENTS = 250
MAX_SERVERS = 240                                     # .10-.249 of the back /24
MAX_IPS_PER_CLIENT = 16
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,23}")
NETNS_PREFIX = "tcpmax-fleet-"
NFT_TABLE = "tcpmax_fleet"
_NETNS = re.compile(rf"{NETNS_PREFIX}(?P<name>[a-z0-9-]+)-(?P<pid>\d+)-(?P<host>c\d+|s\d+|lb)")


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"
    BALANCER = "balancer"


@dataclass(frozen=True)
class Host:
    """One namespace: its links (host side -> name inside), addresses and routes."""

    role: Role
    index: int
    netns: str
    links: tuple[tuple[str, str, str], ...]      # (host-side veth, bridge, name inside)
    addresses: tuple[tuple[str, str], ...]       # (interface inside, address/prefix)
    routes: tuple[tuple[str, str], ...]          # (destination, via)

    @property
    def label(self) -> str:
        return "lb" if self.role is Role.BALANCER else f"{self.role.value[0]}{self.index}"

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(a.partition("/")[0] for _, a in self.addresses)


@dataclass(frozen=True)
class FleetPlan:
    """Everything a fleet is made of, named and addressed; lab/fleet.py creates exactly this."""

    name: str
    slot: int
    creator_pid: int
    port: int
    bridges: tuple[str, str]                     # (front, back)
    host_address: str                            # on the front bridge, e.g. 198.18.0.1/22
    vip: str
    front_net: str
    back_net: str
    balancer: Host
    clients: tuple[Host, ...]
    servers: tuple[Host, ...]

    @property
    def host_routes(self) -> tuple[tuple[str, str | None], ...]:
        """The host namespace's routes into the fleet, all through the front bridge: the
        whole address block on-link (an unknown address there fails on the bridge instead of
        following the default route out of the machine), and the VIP and the back subnet via
        the balancer, so a load from the host namespace reaches the VIP through the
        balancer like any client's."""
        block = ipaddress.ip_network(self.front_net).supernet(new_prefix=32 - (SLOT_SIZE - 1)
                                                              .bit_length())
        lb_front = next(a for dev, a in self.balancer.addresses if dev == "front")
        via = lb_front.split("/")[0]
        return ((str(block), None), (f"{self.vip}/32", via), (self.back_net, via))

    @property
    def hosts(self) -> tuple[Host, ...]:
        return (self.balancer, *self.clients, *self.servers)

    @property
    def host_links(self) -> tuple[str, ...]:
        """Every link this fleet adds to the host namespace: bridges, then veth ends."""
        return (*self.bridges, *(link for h in self.hosts for link, _, _ in h.links))


def check_name(name: str) -> str:
    """The fleet name, or ValueError saying what a name may contain."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"--name {name!r}: use 1-24 lower-case letters, digits and '-', "
                         "starting with a letter or digit")
    return name


def netns_owner(netns: str) -> tuple[str, int] | None:
    """(fleet name, creating pid) of a fleet namespace's name; None for any other name."""
    m = _NETNS.fullmatch(netns)
    return None if m is None else (m["name"], int(m["pid"]))


def plan_fleet(name: str, *, clients: int, servers: int, slot: int, creator_pid: int,
               ips_per_client: int = 2, port: int = 9000) -> FleetPlan:
    """Name and address a fleet of `clients` + `servers` + one balancer in `slot`.

    Raises:
        ValueError: a count out of range (naming --clients, --servers or --ips), a bad name,
            a slot outside 0..SLOTS-1 or a port outside 1-65535.
    """
    check_name(name)
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"--clients {clients}: a fleet has 1 to {MAX_CLIENTS} client hosts")
    if not 1 <= servers <= MAX_SERVERS:
        raise ValueError(f"--servers {servers}: a fleet has 1 to {MAX_SERVERS} server hosts")
    if not 1 <= ips_per_client <= MAX_IPS_PER_CLIENT:
        raise ValueError(f"--ips {ips_per_client}: 1 to {MAX_IPS_PER_CLIENT} source "
                         "addresses per client host")
    room = _CLIENT_LAST - _CLIENT_FIRST + 1
    if clients * ips_per_client > room:
        raise ValueError(f"--clients {clients} x --ips {ips_per_client} = "
                         f"{clients * ips_per_client} client addresses; a fleet's front "
                         f"subnet has room for {room}")
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot {slot}: 0 to {SLOTS - 1}")
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: 1-65535")

    base = int(FLEET_NET.network_address) + slot * SLOT_SIZE

    def ip(offset: int) -> str:
        return str(ipaddress.IPv4Address(base + offset))

    front_net = f"{ip(0)}/{_FRONT_PREFIX}"
    back_net = f"{ip(_BACK_OFFSET)}/{_BACK_PREFIX}"
    front_br, back_br = f"tmf{slot}-front", f"tmf{slot}-back"
    lb_front, lb_back, vip = ip(2), ip(_BACK_OFFSET + 1), ip(_VIP_OFFSET)

    def netns(label: str) -> str:
        return f"{NETNS_PREFIX}{name}-{creator_pid}-{label}"

    balancer = Host(
        Role.BALANCER, 0, netns("lb"),
        links=((f"tmf{slot}-lbf", front_br, "front"), (f"tmf{slot}-lbb", back_br, "back")),
        addresses=(("front", f"{lb_front}/{_FRONT_PREFIX}"),
                   ("back", f"{lb_back}/{_BACK_PREFIX}"), ("lo", f"{vip}/32")),
        routes=())
    client_hosts = tuple(
        Host(Role.CLIENT, i, netns(f"c{i}"),
             links=((f"tmf{slot}-c{i}", front_br, "eth0"),),
             addresses=tuple(("eth0", f"{ip(_CLIENT_FIRST + i * ips_per_client + j)}/"
                                      f"{_FRONT_PREFIX}") for j in range(ips_per_client)),
             routes=((f"{vip}/32", lb_front),))
        for i in range(clients))
    server_hosts = tuple(
        Host(Role.SERVER, i, netns(f"s{i}"),
             links=((f"tmf{slot}-s{i}", back_br, "eth0"),),
             addresses=(("eth0", f"{ip(_BACK_OFFSET + _SERVER_FIRST + i)}/{_BACK_PREFIX}"),),
             routes=((front_net, lb_back),))
        for i in range(servers))
    return FleetPlan(name=name, slot=slot, creator_pid=creator_pid, port=port,
                     bridges=(front_br, back_br), host_address=f"{ip(1)}/{_FRONT_PREFIX}",
                     vip=vip, front_net=front_net, back_net=back_net, balancer=balancer,
                     clients=client_hosts, servers=server_hosts)


def nft_ruleset(plan: FleetPlan) -> str:
    """The balancer's nftables table: new connections to VIP:port go round-robin to the
    servers (DNAT, like LVS in NAT mode); conntrack maps every later packet and the replies.

    `numgen inc` counts per new connection only, because a nat chain sees only the first
    packet of each connection; the port is kept.
    """
    targets = ", ".join(f"{i} : {s.ips[0]}" for i, s in enumerate(plan.servers))
    return (
        f"table ip {NFT_TABLE} {{\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        f"\t\tip daddr {plan.vip} tcp dport {plan.port} "
        f"dnat to numgen inc mod {len(plan.servers)} map {{ {targets} }}\n"
        "\t}\n"
        "}\n")
