"""Turning model values into JSON-ready data: the one place that decides how dataclasses,
enums, tuples and sets look in every ``--json`` output.

Dataclass fields keep their names (a field with metadata ``{"json": False}`` is left out);
properties listed in `_EXTRA` are added because readers of the JSON should not have to
recompute them (a port range's size, usable ports).
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from tcpmax.model.capacity import Capacity
from tcpmax.model.facts import HostFacts, PortRange
from tcpmax.model.target import TargetAssessment

__all__ = ["to_jsonable"]

_EXTRA: dict[type, tuple[str, ...]] = {
    PortRange: ("size",),
    HostFacts: ("usable_ports", "loopback_sources"),
    Capacity: ("connections", "binding_key"),
    TargetAssessment: ("reachable", "first_wall"),
}


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name))
               for f in dataclasses.fields(value) if f.metadata.get("json", True)}
        for name in _EXTRA.get(type(value), ()):
            out[name] = to_jsonable(getattr(value, name))
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value
