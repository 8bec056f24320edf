"""Click parameter types for the quantities tcpmax reads: counts (1M), sizes (64GiB),
durations (30s), port ranges (1024-65535). Each has a maximum (model/limits.py) and turns a
`UnitError` into a usage error, so a typo or an impossible value exits with code 2 and a
message that names the option and shows a valid example."""

from __future__ import annotations

import math
from typing import Any

import click
from click.core import ParameterSource

from tcpmax.model.capacity import FD_RESERVE_PER_PROCESS
from tcpmax.model.facts import PortRange
from tcpmax.model.limits import (
    MAX_BACKLOG,
    MAX_BYTES_PER_CONNECTION,
    MAX_CONNECT_TIMEOUT,
    MAX_CPUS,
    MAX_ENDPOINTS,
    MAX_FLEET_CONNECTIONS,
    MAX_HOLD,
    MAX_HOST_CONNECTIONS,
    MAX_INTERVAL,
    MAX_RATE,
    MAX_RUN,
    MAX_SOURCES,
    MAX_VIPS,
    NR_OPEN_MAX,
)
from tcpmax.model.units import (
    DEFAULT_MAX_SIZE,
    UnitError,
    parse_count,
    parse_duration,
    parse_size,
    shown,
)

__all__ = [
    "BACKLOG", "BYTES_PER_CONNECTION", "CONNECT_TIMEOUT", "COUNT", "CPUS", "DURATION",
    "DURATION_OR_ZERO", "ENDPOINTS", "FLEET_COUNT", "HOLD", "INTERVAL", "LISTEN_PORTS",
    "NOFILE", "PORT_RANGE", "RATE", "RESERVE", "SIZE", "SOURCES", "VIPS", "CountType",
    "DurationType", "FractionType", "SizeType",
    "given",
    "refuse_unused",
]


class CountType(click.ParamType[int, Any]):
    name = "COUNT"

    def __init__(self, allow_zero: bool = False, maximum: int = MAX_HOST_CONNECTIONS,
                 minimum: int = 0, why_minimum: str = "") -> None:
        self.allow_zero = allow_zero
        self.maximum = maximum
        self.minimum = minimum
        self.why_minimum = why_minimum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        text = str(value)
        try:
            count = parse_count(text, allow_zero=self.allow_zero, maximum=self.maximum)
        except UnitError as exc:
            self.fail(str(exc), param, ctx)
        if count < self.minimum and not (self.allow_zero and count == 0):
            self.fail(f"{shown(text)} is too small: at least {self.minimum:,}"
                      + (f" ({self.why_minimum})" if self.why_minimum else ""), param, ctx)
        return count


class SizeType(click.ParamType[int, Any]):
    name = "SIZE"

    def __init__(self, maximum: int = DEFAULT_MAX_SIZE) -> None:
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        try:
            return parse_size(str(value), maximum=self.maximum)
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


class DurationType(click.ParamType[float, Any]):
    name = "DURATION"

    def __init__(self, allow_zero: bool = False, maximum: float = MAX_RUN) -> None:
        self.allow_zero = allow_zero
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            value = repr(value)
        try:
            return parse_duration(str(value), allow_zero=self.allow_zero, maximum=self.maximum)
        except UnitError as exc:
            self.fail(str(exc), param, ctx)


class FractionType(click.ParamType[float, Any]):
    """A fraction in [low, high]; nan and inf are refused (a float compare would let nan in)."""

    name = "FRACTION"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(str(value))
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and self.low <= number <= self.high):
            self.fail(f"{shown(str(value))} is not a fraction from {self.low:g} to "
                      f"{self.high:g} (e.g. 0.2)", param, ctx)
        return number


class PortRangeType(click.ParamType[PortRange, Any]):
    name = "LOW-HIGH"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> PortRange:
        if isinstance(value, PortRange):
            return value
        low, sep, high = str(value).partition("-")
        problem = (f"{shown(str(value))} is not a port range: use LOW-HIGH within 1-65535, "
                   "low before high, e.g. 1024-65535")
        if not (low.strip().isdigit() and (high.strip().isdigit() or not sep)) \
                or len(low.strip()) > 5 or len(high.strip()) > 5:
            self.fail(problem, param, ctx)
        try:
            port_range = PortRange(int(low), int(high if sep else low))
        except ValueError:
            self.fail(problem, param, ctx)
        if port_range.low < 1:    # the kernel refuses port 0 in ip_local_port_range
            self.fail(problem, param, ctx)
        return port_range


def given(*names: str) -> list[str]:
    """Which of these options the user typed (not defaults), as --option names."""
    ctx = click.get_current_context()
    return [f"--{n.replace('_', '-')}" for n in names
            if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]


def refuse_unused(needs: str, *names: str) -> None:
    """Exit 2 when an option was typed that does nothing without another: better than a run
    that silently ignores what the user asked for."""
    typed = given(*names)
    if typed:
        raise click.UsageError(f"{', '.join(typed)} {'does' if len(typed) == 1 else 'do'} "
                               f"nothing without {needs}")


COUNT = CountType()
BYTES_PER_CONNECTION = CountType(maximum=MAX_BYTES_PER_CONNECTION)
FLEET_COUNT = CountType(maximum=MAX_FLEET_CONNECTIONS)
RATE = CountType(allow_zero=True, maximum=MAX_RATE)
BACKLOG = CountType(maximum=MAX_BACKLOG)
CPUS = CountType(maximum=MAX_CPUS)
NOFILE = CountType(minimum=FD_RESERVE_PER_PROCESS + 1, maximum=NR_OPEN_MAX,
                   why_minimum=f"each process keeps {FD_RESERVE_PER_PROCESS} open files for "
                               "itself")
LISTEN_PORTS = CountType(maximum=65535)
VIPS = CountType(maximum=MAX_VIPS)
SOURCES = CountType(maximum=MAX_SOURCES)
ENDPOINTS = CountType(maximum=MAX_ENDPOINTS)
CONNECT_TIMEOUT = DurationType(maximum=MAX_CONNECT_TIMEOUT)
HOLD = DurationType(allow_zero=True, maximum=MAX_HOLD)
INTERVAL = DurationType(maximum=MAX_INTERVAL)
SIZE = SizeType()
DURATION = DurationType()
DURATION_OR_ZERO = DurationType(allow_zero=True)
PORT_RANGE = PortRangeType()
RESERVE = FractionType(0.0, 0.95)
