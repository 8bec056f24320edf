"""The doctor's report as data: host facts, capacity per role, theory, and the way forward.

`build_doctor_report` is pure: the CLI reads the host (and optionally measures), then renders
this object as tables or as JSON (`Schema.DOCTOR`, documented in docs/json.md).

Without a target, the "way forward" for each role is the fix for its binding limit, sized to
reach the next limit: raising a limit past the one behind it buys nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tcpmax.model.capacity import (
    Capacity,
    Costs,
    KernelMemoryMeasurement,
    ProtocolMemoryMeasurement,
    Role,
    TheoryCeiling,
    host_capacity,
    theory_ceilings,
)
from tcpmax.model.facts import HostFacts
from tcpmax.model.target import TargetAssessment, assess_target

__all__ = ["DoctorReport", "build_doctor_report"]


@dataclass(frozen=True)
class DoctorReport:
    """Everything `tcpmax doctor` shows, by role: capacity, and the walls below a goal."""

    host: HostFacts
    costs: Costs
    measurement: KernelMemoryMeasurement | None
    protocol_measurement: ProtocolMemoryMeasurement | None
    capacity: dict[Role, Capacity]
    theory: tuple[TheoryCeiling, ...]
    target: int | None
    assessments: dict[Role, TargetAssessment]  # at the target, or at the next limit


def build_doctor_report(facts: HostFacts, costs: Costs | None = None, *,
                        target: int | None = None, sources: int | None = None,
                        endpoints: int = 1,
                        measurement: KernelMemoryMeasurement | None = None,
                        protocol_measurement: ProtocolMemoryMeasurement | None = None,
                        ) -> DoctorReport:
    costs = costs or Costs()
    if measurement is not None:
        costs = replace(costs, kernel_bytes_per_socket=measurement.bytes_per_socket,
                        kernel_source=f"measured here: {measurement.method}")
    if protocol_measurement is not None:
        costs = replace(costs, protocol=protocol_measurement.protocol,
                        user_bytes_per_connection=protocol_measurement.per_side,
                        user_source=f"measured here: {protocol_measurement.method}")
    capacity: dict[Role, Capacity] = {}
    assessments: dict[Role, TargetAssessment] = {}
    for role in Role:
        # A client's sources default to the host's own; --sources applies to client roles.
        role_sources = None if role is Role.SERVER else sources
        cap = host_capacity(facts, role, costs, sources=role_sources, endpoints=endpoints)
        capacity[role] = cap
        goal = target if target is not None else cap.next_limit
        if goal is not None:
            assessments[role] = assess_target(facts, goal, role, costs,
                                                    sources=role_sources, endpoints=endpoints)
    return DoctorReport(facts, costs, measurement, protocol_measurement, capacity,
                        theory_ceilings(facts), target, assessments)
