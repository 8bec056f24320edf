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

import re
from decimal import Decimal

__all__ = [
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_MAX_SIZE",
    "UnitError",
    "format_bytes",
    "format_count",
    "parse_count",
    "parse_duration",
    "parse_size",
    "shown",
]


class UnitError(ValueError):
    """The user typed a quantity tcpmax cannot read."""


_COUNT_SUFFIX = {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9,
                 "t": 10**12, "T": 10**12}
_COUNT_RE = re.compile(r"^\s*(?P<num>\d[\d_,]*(?:\.\d+)?|\.\d+)(?:[eE](?P<exp>\d+))?\s*"
                       r"(?P<suffix>[a-zA-Z]*)\s*$")
# Beyond these nothing tcpmax takes makes sense, and a bigger exponent would only make
# Decimal arithmetic slow: 1e400 is refused by its size, not computed.
_MAX_DIGITS = 64
DEFAULT_MAX_COUNT = 10**15
DEFAULT_MAX_SIZE = 2**60           # 1 EiB: more memory than any machine has
DEFAULT_MAX_SECONDS = 366 * 86400  # a year: every run tcpmax starts is bounded


def _exact(num: str, exp: str | None) -> Decimal:
    """The typed number, exactly: counts must never pass through a float."""
    digits = num.replace("_", "").replace(",", "")
    if len(digits) > _MAX_DIGITS or (exp is not None and len(exp) > 3):
        raise UnitError("too long")
    value = Decimal(digits)
    return value.scaleb(int(exp)) if exp is not None else value


def shown(text: str, limit: int = 24) -> str:
    """The user's text for an error message: quoted, and cut if it is very long."""
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _too_large(text: str, maximum: int, unit: str = "") -> UnitError:
    return UnitError(f"{shown(text)} is too large: at most {maximum:,}{unit}")


def parse_count(text: str, *, allow_zero: bool = False,
                maximum: int = DEFAULT_MAX_COUNT) -> int:
    """Read a whole count such as ``100000``, ``100_000``, ``100k``, ``1M``, ``2.5M`` or ``1e6``.

    The value is computed exactly (no float) and must not exceed `maximum`.
    """
    match = _COUNT_RE.match(text)
    example = "use a whole number with an optional suffix k, M, G or T (e.g. 100k, 1M, 10M)"
    if text.strip().startswith("-"):
        raise UnitError(f"{shown(text)} is negative: a count must be positive")
    if match is None or match["suffix"] not in _COUNT_SUFFIX:
        raise UnitError(f"{shown(text)} is not a count: {example}")
    try:
        value = _exact(match["num"], match["exp"]) * _COUNT_SUFFIX[match["suffix"]]
    except UnitError:
        raise _too_large(text, maximum) from None
    if value > maximum:
        raise _too_large(text, maximum)
    if value != value.to_integral_value():
        raise UnitError(f"{shown(text)} is not a whole number: {example}")
    if value == 0 and not allow_zero:
        raise UnitError(f"{shown(text)} is zero: a count must be at least 1")
    return int(value)


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 2**10, "kib": 2**10, "kb": 10**3,
    "m": 2**20, "mib": 2**20, "mb": 10**6,
    "g": 2**30, "gib": 2**30, "gb": 10**9,
    "t": 2**40, "tib": 2**40, "tb": 10**12,
}
_SIZE_RE = re.compile(r"^\s*(?P<num>\d[\d_]*(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-zA-Z]*)\s*$")


def parse_size(text: str, *, maximum: int = DEFAULT_MAX_SIZE) -> int:
    """Read a byte size such as ``64GiB``, ``64G`` (binary), ``64GB`` (decimal) or ``4096``."""
    match = _SIZE_RE.match(text)
    unit = match["unit"].lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise UnitError(f"{shown(text)} is not a size: use a number with a unit such as "
                        "512MiB, 64GiB, 64G or 64GB")
    try:
        value = _exact(match["num"], None) * _SIZE_UNITS[unit]
    except UnitError:
        raise _too_large(text, maximum, " bytes") from None
    if value > maximum:
        raise _too_large(text, maximum, " bytes")
    if int(value) <= 0:
        raise UnitError(f"{shown(text)} is zero: a size must be positive")
    return int(value)


_DURATION_UNITS: dict[str, Decimal | int] = {
    "": 1, "ms": Decimal("0.001"), "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400,
}
_DURATION_RE = re.compile(r"^\s*(?P<num>\d[\d_]*(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-z]*)\s*$")


def parse_duration(text: str, *, allow_zero: bool = False,
                   maximum: float = DEFAULT_MAX_SECONDS) -> float:
    """Read a duration in seconds from ``500ms``, ``30s``, ``30``, ``5m``, ``1h`` or ``1d``."""
    match = _DURATION_RE.match(text.lower())
    if match is None or match["unit"] not in _DURATION_UNITS:
        raise UnitError(f"{shown(text)} is not a duration: use a number with ms, s, m, h or d "
                        "(e.g. 500ms, 30s, 5m)")
    limit = f"{shown(text)} is too long: at most {_format_seconds(maximum)}"
    try:
        value = _exact(match["num"], None) * _DURATION_UNITS[match["unit"]]
    except UnitError:
        raise UnitError(limit) from None
    if value > Decimal(str(maximum)):
        raise UnitError(limit)
    if value == 0 and not allow_zero:
        raise UnitError(f"{shown(text)} is zero: a duration must be positive")
    return float(value)


def _format_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size):,}{unit}"
    return f"{seconds:g}s"


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
