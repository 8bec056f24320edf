"""tcpmax: find, prove and push the real limit of concurrent TCP connections on Linux.

The public API, for tests, `prove` and other programs:

- `read_host()` reads this host's limits into `HostFacts`;
- `host_capacity()` computes how many connections it holds per `Role`, and why;
- `assess_target()` lists the walls below a target with the fix for each;
- `plan_fleet()` sizes servers, clients and source IPs for a target on paper.
"""

from tcpmax.host.inspect import read_host
from tcpmax.model.capacity import Capacity, Constraint, Costs, Role, host_capacity
from tcpmax.model.facts import HostFacts
from tcpmax.model.plan import FleetPlan, MachineSpec, PlanRequest, plan_fleet
from tcpmax.model.target import TargetAssessment, assess_target

__version__ = "0.1.0"

__all__ = [
    "Capacity",
    "Constraint",
    "Costs",
    "FleetPlan",
    "HostFacts",
    "MachineSpec",
    "PlanRequest",
    "Role",
    "TargetAssessment",
    "__version__",
    "assess_target",
    "host_capacity",
    "plan_fleet",
    "read_host",
]
