"""The names of tcpmax's JSON documents and the one serializer that produces them.

Every ``--json`` output (and `tcpmax serve`'s /stats) is built by `document`: a `schema`
field naming its shape first, then the result turned into JSON-ready data by `to_jsonable`.
docs/json.md describes each schema; a field is never renamed or removed without bumping the
major number.

How values look:
- a dataclass is an object of its fields, in order, minus those with metadata
  ``{"json": False}``, plus the properties it names in ``__json_extra__`` (derived figures a
  reader should not have to recompute, such as a port range's size);
- an enum is its value, a path its text, a tuple or list an array, a set a sorted array, a
  mapping an object with text keys; None, booleans, numbers and text stay as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum, StrEnum
from pathlib import PurePath
from typing import Any

__all__ = ["Schema", "document", "to_jsonable"]


class Schema(StrEnum):
    """The name and major version of each JSON document tcpmax writes."""

    DOCTOR = "tcpmax.doctor/1"
    TUNE = "tcpmax.tune/1"
    PLAN = "tcpmax.plan/1"
    LOAD = "tcpmax.load/1"
    PROVE = "tcpmax.prove/1"
    SERVE_STATS = "tcpmax.serve.stats/1"   # serve --json and the /stats endpoint
    FLEET = "tcpmax.fleet/1"               # fleet up --json and fleet status --json


def to_jsonable(value: Any) -> Any:
    """`value` as data `json.dumps` accepts: dicts, lists, text, numbers, booleans, None.

    Raises:
        TypeError: for a value of no kind listed in the module docstring, rather than let
            `json.dumps` fail later or a repr slip into a document.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name))
               for f in dataclasses.fields(value) if f.metadata.get("json", True)}
        for name in getattr(value, "__json_extra__", ()):
            out[name] = to_jsonable(getattr(value, name))
        return out
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    raise TypeError(f"tcpmax has no JSON form for {type(value).__name__}: {value!r}")


def document(schema: Schema, *parts: object, **fields: object) -> dict[str, Any]:
    """One JSON document: ``{"schema": ...}``, then each part's fields, then `fields`.

    A part is a dataclass or a mapping. A part that already names a schema (a document
    embedded in a larger one, such as /stats inside serve's result) must name the same one.

    Example:
        >>> document(Schema.TUNE, {"target": 1000}, role="server")
        {'schema': 'tcpmax.tune/1', 'target': 1000, 'role': 'server'}
    """
    out: dict[str, Any] = {"schema": schema.value}
    for part in (*parts, fields):
        data = to_jsonable(part)
        if not isinstance(data, dict):
            raise TypeError(f"a document part must be an object, not {type(part).__name__}")
        named = data.pop("schema", schema.value)
        if named != schema.value:
            raise ValueError(f"a {named} part cannot go into a {schema.value} document")
        out.update(data)
    return out
