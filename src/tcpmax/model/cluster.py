"""How a load of N connections is split over the machines of a cluster: pure arithmetic.

Each machine reports its own facts (`MachineFacts`, read on that machine by the reader
`doctor` uses); `machine_capacity` turns them into three ceilings, and `split_load` gives
each machine a share in proportion to the lowest of them. A split that cannot reach N
names, per machine, the ceiling that stops it, before anything starts.

Invariants:
- the shares sum to N exactly when the split is feasible, and no share exceeds its
  machine's capacity;
- a machine with no capacity gets no share; the order of the shares is the order of the
  machines given.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcpmax.model.load import loopback_sources, sources_needed

__all__ = ["Capacity", "ClusterSplit", "MachineFacts", "loopback_blocks", "machine_capacity",
           "split_load"]


@dataclass(frozen=True)
class MachineFacts:
    """What one load machine can give a run, as it reported it.

    Attributes:
        name: the Dask worker address (or its name), shown in every message.
        fd_budget: open files one process may spend on connections (hard limit minus the
            reserve every process keeps).
        processes: load processes tcpmax may fork there.
        usable_ports: ephemeral ports in its range, minus reserved ones.
        sources: source addresses it can connect from toward the targets.
        memory: bytes it may spend (MemAvailable minus the memory floor).
        bytes_per_connection: kernel plus user bytes one held client connection costs.
    """

    name: str
    fd_budget: int
    processes: int
    usable_ports: int
    sources: int
    memory: int
    bytes_per_connection: int


@dataclass(frozen=True)
class Capacity:
    """One machine's three ceilings (connections) and the one that binds."""

    open_files: int        # fd budget x processes
    ports: int             # usable ports x sources x endpoints
    memory: int            # memory / bytes per connection

    @property
    def connections(self) -> int:
        return min(self.open_files, self.ports, self.memory)

    @property
    def binding(self) -> str:
        """The name of the lowest ceiling, as messages say it."""
        named = {"open files": self.open_files, "ports": self.ports, "memory": self.memory}
        return min(named, key=lambda k: named[k])


def machine_capacity(m: MachineFacts, endpoints: int) -> Capacity:
    """The connections `m` can hold toward `endpoints` target endpoints, by each limit."""
    if endpoints < 1:
        raise ValueError("a load needs at least one endpoint")
    return Capacity(open_files=max(0, m.fd_budget) * max(0, m.processes),
                    ports=max(0, m.usable_ports) * max(0, m.sources) * endpoints,
                    memory=max(0, m.memory) // max(1, m.bytes_per_connection))


@dataclass(frozen=True)
class ClusterSplit:
    """Shares per machine (same order as given) and, when N does not fit, why."""

    requested: int
    shares: tuple[int, ...]
    capacities: tuple[Capacity, ...]
    problems: tuple[str, ...]          # empty when the split reaches `requested`

    @property
    def feasible(self) -> bool:
        return not self.problems


def split_load(connections: int, machines: list[MachineFacts] | tuple[MachineFacts, ...],
               endpoints: int) -> ClusterSplit:
    """Split `connections` over `machines` in proportion to each one's capacity.

    Largest remainders settle the rounding, so the shares sum to N exactly; the first machine
    wins a tie. When the total capacity is below N, each machine takes all it can and
    `problems` names every machine and the limit it runs out of.
    """
    if connections < 1:
        raise ValueError("a load needs at least one connection")
    if not machines:
        raise ValueError("the cluster has no workers: start `dask worker tcp://HOST:8786` "
                         "on each load machine")
    caps = tuple(machine_capacity(m, endpoints) for m in machines)
    total = sum(c.connections for c in caps)
    if total < connections:
        problems = [f"the cluster holds at most {total:,} of {connections:,} connections"]
        problems += [f"{m.name} runs out of {c.binding} at {c.connections:,}"
                     for m, c in zip(machines, caps, strict=True)]
        return ClusterSplit(connections, tuple(c.connections for c in caps), caps,
                            tuple(problems))
    exact = [connections * c.connections / total for c in caps]
    shares = [int(x) for x in exact]
    order = sorted(range(len(caps)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: connections - sum(shares)]:
        shares[i] += 1
    return ClusterSplit(connections, tuple(shares), caps, ())


def loopback_blocks(shares: tuple[int, ...] | list[int], endpoints: int,
                    usable_ports: tuple[int, ...] | list[int]) -> tuple[tuple[str, ...], ...]:
    """Disjoint loopback source addresses for each shard of a loopback run.

    Shards that share one kernel (several Dask workers on one host, as in tests and the
    fleet lab's host namespace) would otherwise all start at 127.1.0.1 and share its port
    range toward each endpoint: EADDRNOTAVAIL at 28,232 in all instead of per shard. Each
    shard gets the addresses `tcpmax load` would pick for its own share, taken one after the
    other from 127.0.0.0/8; a shard with no share gets none.
    """
    needs = [sources_needed(s, endpoints, p) if s > 0 else 0
             for s, p in zip(shares, usable_ports, strict=True)]
    pool = loopback_sources(max(1, sum(needs)))
    out: list[tuple[str, ...]] = []
    at = 0
    for need in needs:
        out.append(pool[at:at + need])
        at += need
    return tuple(out)
