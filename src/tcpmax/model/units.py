"""Parsing and formatting of the quantities users type and read: counts, byte sizes, durations.

Invariants:
- A parser either returns a value >= 0 (or > 0 where zero makes no sense) or raises
  `UnitError` whose message says what was wrong and shows a valid example. Callers turn
  `UnitError` into a usage error (exit code 2); it is always the user's input at fault.
- Counts use decimal suffixes (k = 10^3, M = 10^6, G = 10^9) because "1M connections"
  means a million. Sizes accept both binary (KiB, GiB) and decimal (KB, GB) units; a bare
  K/M/G/T means binary, as in `free` and `ulimit`.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "UnitError",
    "format_bytes",
    "format_count",
    "parse_count",
    "parse_duration",
    "parse_size",
]


class UnitError(ValueError):
    """The user typed a quantity tcpmax cannot read."""


_COUNT_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9}
_COUNT_RE = re.compile(r"^\s*(?P<num>\d[\d_,]*(?:\.\d+)?|\.\d+)(?:[eE](?P<exp>\d+))?\s*"
                       r"(?P<suffix>[a-zA-Z]*)\s*$")


def parse_count(text: str, *, allow_zero: bool = False) -> int:
    """Read a whole count such as ``100000``, ``100_000``, ``100k``, ``1M``, ``2.5M`` or ``1e6``."""
    match = _COUNT_RE.match(text)
    example = "use a whole number with an optional suffix k, M or G (e.g. 100k, 1M, 10M)"
    if text.strip().startswith("-"):
        raise UnitError(f"{text!r} is negative: a count must be positive")
    if match is None or match["suffix"] not in _COUNT_SUFFIX:
        raise UnitError(f"{text!r} is not a count: {example}")
    number = float(match["num"].replace("_", "").replace(",", ""))
    if match["exp"] is not None:
        number *= 10 ** int(match["exp"])
    value = number * _COUNT_SUFFIX[match["suffix"]]
    if not math.isfinite(value) or value != int(value):
        raise UnitError(f"{text!r} is not a whole number: {example}")
    if value == 0 and not allow_zero:
        raise UnitError(f"{text!r} is zero: a count must be at least 1")
    return int(value)


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 2**10, "kib": 2**10, "kb": 10**3,
    "m": 2**20, "mib": 2**20, "mb": 10**6,
    "g": 2**30, "gib": 2**30, "gb": 10**9,
    "t": 2**40, "tib": 2**40, "tb": 10**12,
}
_SIZE_RE = re.compile(r"^\s*(?P<num>\d[\d_]*(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Read a byte size such as ``64GiB``, ``64G`` (binary), ``64GB`` (decimal) or ``4096``."""
    match = _SIZE_RE.match(text)
    unit = match["unit"].lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise UnitError(f"{text!r} is not a size: use a number with a unit such as "
                        "512MiB, 64GiB, 64G or 64GB")
    value = float(match["num"].replace("_", "")) * _SIZE_UNITS[unit]
    if value <= 0:
        raise UnitError(f"{text!r} is zero: a size must be positive")
    return int(value)


_DURATION_UNITS = {"": 1.0, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-z]*)\s*$")


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Read a duration in seconds from ``500ms``, ``30s``, ``30``, ``5m`` or ``1h``."""
    match = _DURATION_RE.match(text.lower())
    if match is None or match["unit"] not in _DURATION_UNITS:
        raise UnitError(f"{text!r} is not a duration: use a number with ms, s, m or h "
                        "(e.g. 500ms, 30s, 5m)")
    value = float(match["num"]) * _DURATION_UNITS[match["unit"]]
    if value == 0 and not allow_zero:
        raise UnitError(f"{text!r} is zero: a duration must be positive")
    return value


def format_count(value: int | None) -> str:
    """``1234567`` -> ``1,234,567``; None (unknown) -> ``unknown``."""
    return "unknown" if value is None else f"{value:,}"


def format_bytes(value: float | None) -> str:
    """Binary units with three significant figures: ``3481`` -> ``3.40 KiB``."""
    if value is None:
        return "unknown"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(size)} B"
            return f"{size:.3g} {unit}" if abs(size) >= 100 else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
