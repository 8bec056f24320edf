"""The opening exchange of a load worker's connections: what a connection sends once it is
ready (TCP connected, TLS done) and the reply that makes it count as established.

Two kinds share the worker's one state for it (OPENING in engine/load_worker.py): the
WebSocket upgrade (engine/ws_client.py: a request per connection, a 101 checked strictly)
and `--first-message` / `--expect` (`ReplyClient` here: fixed bytes, a reply that must start
with the expected bytes). Either answers the same questions: what to send, whether a reply
is complete, good or bad, and the name of each way it fails.

State per connection lives only until the reply is judged: the bytes of a reply cut short
by a read (`pending`, keyed by fd, bounded by the expected length). A reply that matches in
one read, the usual case, leaves no trace at all.
"""

from __future__ import annotations

from typing import Protocol

from tcpmax.model.first_message import SAMPLE_BYTES, Verdict, judge

__all__ = ["Opening", "OpeningFailure", "ReplyClient"]


class OpeningFailure(Exception):
    """An opening exchange that failed: `name` is its counter (UNEXPECTED_REPLY, WS_HTTP_403,
    ...), `sample` the first bytes the server sent, when they say why."""

    def __init__(self, name: str, sample: bytes | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.sample = sample


class Opening(Protocol):
    """What the worker asks of an opening exchange."""

    awaits_reply: bool      # False: the connection is established once the request is sent

    def request(self, fd: int) -> bytes:
        """The bytes to send first (may be empty: a server that speaks first)."""

    def answer(self, fd: int, data: bytes) -> bytes | None:
        """Feed the reply: None while it is incomplete, else the bytes after it.

        Raises:
            OpeningFailure: the reply says the server did not accept the connection.
        """

    def closed(self, fd: int) -> OpeningFailure:
        """The failure for a server that closed before its reply was complete."""

    def timed_out(self, fd: int) -> OpeningFailure:
        """The failure for a reply not complete within the connect timeout."""

    def forget(self, fd: int) -> None:
        """The connection is gone: drop what was kept for it."""


class ReplyClient:
    """`--first-message` and `--expect` for one worker's connections."""

    def __init__(self, first_message: bytes | None, expect: bytes | None) -> None:
        self.message = first_message or b""
        self.expect = expect or b""
        self.awaits_reply = expect is not None
        self.pending: dict[int, bytes] = {}      # fd -> a reply that agrees so far, cut short

    def request(self, fd: int) -> bytes:
        return self.message

    def answer(self, fd: int, data: bytes) -> bytes | None:
        kept = self.pending.pop(fd, None)
        seen = data if kept is None else kept + data
        verdict = judge(self.expect, seen)
        if verdict is Verdict.MATCH:
            return seen[len(self.expect):]
        if verdict is Verdict.MISMATCH:
            raise OpeningFailure("UNEXPECTED_REPLY", seen[:SAMPLE_BYTES + 1])
        self.pending[fd] = seen
        return None

    def closed(self, fd: int) -> OpeningFailure:
        seen = self.pending.pop(fd, None)
        return OpeningFailure("CLOSED_BEFORE_REPLY", seen[:SAMPLE_BYTES + 1] if seen else None)

    def timed_out(self, fd: int) -> OpeningFailure:
        seen = self.pending.pop(fd, None)
        return OpeningFailure("REPLY_TIMEOUT", seen[:SAMPLE_BYTES + 1] if seen else None)

    def forget(self, fd: int) -> None:
        self.pending.pop(fd, None)
