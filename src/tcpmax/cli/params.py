"""Click parameter types for the quantities tcpmax reads: counts (1M), sizes (64GiB),
durations (30s), port ranges (1024-65535). Each turns a `UnitError` into a usage error, so a
typo exits with code 2 and a message that shows a valid example."""

from __future__ import annotations

from typing import Any

import click

from tcpmax.model.facts import PortRange
from tcpmax.model.units import UnitError, parse_count, parse_duration, parse_size

__all__ = ["COUNT", "DURATION", "DURATION_OR_ZERO", "PORT_RANGE", "SIZE", "CountType"]


class CountType(click.ParamType[int, Any]):
    name = "COUNT"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_count(str(value), allow_zero=self.allow_zero)
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


class SizeType(click.ParamType[int, Any]):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


class DurationType(click.ParamType[float, Any]):
    name = "DURATION"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value), allow_zero=self.allow_zero)
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


class PortRangeType(click.ParamType[PortRange, Any]):
    name = "LOW-HIGH"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> PortRange:
        if isinstance(value, PortRange):
            return value
        low, sep, high = str(value).partition("-")
        try:
            return PortRange(int(low), int(high if sep else low))
        except ValueError:
            self.fail(f"{value!r} is not a port range: use LOW-HIGH within 0-65535, "
                      "e.g. 1024-65535", param, ctx)


COUNT = CountType()
SIZE = SizeType()
DURATION = DurationType()
DURATION_OR_ZERO = DurationType(allow_zero=True)
PORT_RANGE = PortRangeType()
