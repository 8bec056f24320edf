"""What one `tcpmax load` worker reports when it finishes, and its bytes on the pipe.

A worker writes one `WorkerResult` up a pipe as it exits; the parent reads the pipe to its
end and decodes it. This module owns both directions, so the two sides cannot disagree.

Wire form: a 4-byte length (native order: both ends are the same machine and program), then
that many bytes of UTF-8 JSON. Histograms travel as base64 text of HdrHistogram's own
encoding, which the parent adds into one histogram per run.

Invariants:
- ``decode_worker_result(encode_worker_result(r)) == r`` for every record.
- A frame cut short (a worker killed while writing) decodes to None, never to a partial
  record; a complete frame whose content is wrong raises ValueError (a bug, not a crash).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WorkerResult", "decode_worker_result", "encode_worker_result"]

_LENGTH = struct.Struct("I")


@dataclass(frozen=True)
class WorkerResult:
    """One load worker's totals at the end of its run.

    Attributes:
        errors: failed connects by errno name (``"EADDRNOTAVAIL"``), or the number as text
            when the errno has no name.
        peak_open: the most connections it held at once.
        final_open: connections it held when the release time came (the run's hold).
        per_source: the most connections it held from each source IP.
        connect_hist: HdrHistogram encoding of connect latencies, in microseconds.
        msg_hist: the same for echo round trips, or None when no message came back.
        tls_hist: the same for TLS handshakes (after the TCP connect), or None without TLS.
        ws_hist: the same for WebSocket upgrades (request sent to 101 checked), or None.
        reply_hist: the same for expected replies (--first-message sent, or the connection
            ready, to the reply matching --expect), or None.
        samples: for failures named by what the server sent (UNEXPECTED_REPLY, ...), the
            first such reply, printable and bounded (model.first_message.show_bytes).
    """

    errors: Mapping[str, int]
    peak_open: int
    final_open: int
    per_source: Mapping[str, int]
    connect_hist: bytes
    msg_hist: bytes | None = None
    tls_hist: bytes | None = None
    ws_hist: bytes | None = None
    reply_hist: bytes | None = None
    samples: Mapping[str, str] = field(default_factory=dict)


def encode_worker_result(result: WorkerResult) -> bytes:
    """The frame a worker writes: length, then JSON."""
    body = json.dumps({
        "errors": dict(result.errors),
        "peak_open": result.peak_open,
        "final_open": result.final_open,
        "per_source": dict(result.per_source),
        "connect_hist": base64.b64encode(result.connect_hist).decode("ascii"),
        "msg_hist": _b64(result.msg_hist),
        "tls_hist": _b64(result.tls_hist),
        "ws_hist": _b64(result.ws_hist),
        "reply_hist": _b64(result.reply_hist),
        "samples": dict(result.samples),
    }).encode()
    return _LENGTH.pack(len(body)) + body


def decode_worker_result(data: bytes) -> WorkerResult | None:
    """The record in a worker's frame; None when the frame is missing or cut short.

    Raises:
        ValueError: a complete frame that is not a worker result.
    """
    if len(data) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack_from(data)
    body = data[_LENGTH.size:_LENGTH.size + size]
    if len(body) < size:
        return None
    try:
        raw = json.loads(body)
        return WorkerResult(
            errors=_counts(raw["errors"]),
            peak_open=_int(raw["peak_open"]),
            final_open=_int(raw["final_open"]),
            per_source=_counts(raw["per_source"]),
            connect_hist=base64.b64decode(raw["connect_hist"], validate=True),
            msg_hist=_unb64(raw["msg_hist"]),
            tls_hist=_unb64(raw.get("tls_hist")),
            ws_hist=_unb64(raw.get("ws_hist")),
            reply_hist=_unb64(raw.get("reply_hist")),
            samples=_texts(raw.get("samples", {})),
        )
    except (KeyError, TypeError, UnicodeDecodeError, binascii.Error,
            json.JSONDecodeError) as exc:
        raise ValueError(f"not a load worker's result: {exc!r}") from exc


def _b64(blob: bytes | None) -> str | None:
    return None if blob is None else base64.b64encode(blob).decode("ascii")


def _unb64(text: Any) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected a count, got {value!r}")
    return value


def _texts(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TypeError(f"expected texts by name, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError(f"expected counts by name, got {value!r}")
    return {str(k): _int(v) for k, v in value.items()}
