"""tcpmax: find, prove and push the real limit of concurrent TCP connections on Linux.

The public API, for tests, `prove` and other programs:

- `read_host()` reads this host's limits into `HostFacts`;
- `host_capacity()` computes how many connections it holds per `Role`, and why (each
  `Constraint` named by a `ConstraintKey`, counted per `Scope`);
- `assess_target()` lists the walls below a target with the fix for each;
- `plan_fleet()` sizes servers, clients and source IPs for a target on paper;
- `Server` runs `tcpmax serve` in the background from a `ServeConfig`;
- `LoadRun` runs `tcpmax load` from a `LoadConfig` and returns a `LoadResult`;
- `to_jsonable()` and `Schema` give any of these results the form `--json` prints.

The engine (`Server`, `LoadRun`, ...) is imported on first use, so reading the host and
planning stay light.

Example:
    >>> import tcpmax
    >>> facts = tcpmax.read_host()
    >>> tcpmax.host_capacity(facts, tcpmax.Role.LOOPBACK).connections  # doctest: +SKIP
    1331200
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tcpmax.host.inspect import read_host
from tcpmax.model.capacity import (
    Capacity,
    Constraint,
    ConstraintKey,
    Costs,
    Role,
    Scope,
    host_capacity,
)
from tcpmax.model.facts import HostFacts
from tcpmax.model.load import Endpoint, LoadConfig
from tcpmax.model.plan import FleetPlan, MachineSpec, PlanRequest, plan_fleet
from tcpmax.model.schema import Schema, to_jsonable
from tcpmax.model.serve import ServeConfig
from tcpmax.model.target import TargetAssessment, assess_target

if TYPE_CHECKING:
    from tcpmax.engine.loader import LoadResult, LoadRun
    from tcpmax.engine.server import Server

__version__ = "0.1.0"

__all__ = [
    "Capacity",
    "Constraint",
    "ConstraintKey",
    "Costs",
    "Endpoint",
    "FleetPlan",
    "HostFacts",
    "LoadConfig",
    "LoadResult",
    "LoadRun",
    "MachineSpec",
    "PlanRequest",
    "Role",
    "Schema",
    "Scope",
    "ServeConfig",
    "Server",
    "TargetAssessment",
    "__version__",
    "assess_target",
    "host_capacity",
    "plan_fleet",
    "read_host",
    "to_jsonable",
]

# Names whose modules fork, hold shared memory or pull in hdrh/prometheus: loaded when used.
_LAZY = {
    "LoadResult": "tcpmax.engine.loader",
    "LoadRun": "tcpmax.engine.loader",
    "Server": "tcpmax.engine.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tcpmax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
