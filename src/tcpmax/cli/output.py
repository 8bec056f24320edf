"""Where command output goes: reports to stdout (plain and 120 columns wide when piped),
machine output as one JSON document on stdout, progress and status on stderr.

Consoles never read markup: addresses such as ``[fd00::1]`` and any other text a user typed
are printed as typed (styles come from `rich.text.Text`, never from ``[bold]`` strings).
Every command's ``--json`` goes through `emit_json`, so every document is built by
`tcpmax.model.schema.document`: one serializer, schema names in one place."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from tcpmax.model.schema import Schema, document

__all__ = ["emit_json", "stderr_console", "stdout_console"]


def stdout_console() -> Console:
    """Colours on a terminal; plain and wide when piped, so a saved report keeps its tables
    readable."""
    probe = Console(highlight=False, markup=False)
    return probe if probe.is_terminal else Console(highlight=False, markup=False, width=120)


def stderr_console() -> Console:
    probe = Console(stderr=True, highlight=False, markup=False)
    return probe if probe.is_terminal else Console(stderr=True, highlight=False, markup=False,
                                                   width=120)


def emit_json(schema: Schema, *parts: object, **fields: object) -> None:
    """One JSON document on stdout and nothing else there (see `document` for the parts)."""
    data: dict[str, Any] = document(schema, *parts, **fields)
    click.echo(json.dumps(data, indent=2))
