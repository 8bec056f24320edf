"""The WebSocket side of a load worker: upgrade requests, judging the answers, and frames.

Only `ws://` and `wss://` runs create a `WsClient`; plain and TLS runs never touch it.

State per connection, and when it goes away:
- during the upgrade, the key sent and the bytes of the answer so far (`pending`, a dict
  keyed by fd), bounded by `MAX_HEAD`: dropped as soon as the answer is judged;
- after the upgrade, nothing but a frame cut in two by a read (`partial`, present only
  while a frame is incomplete) and the fragmentation state, one byte per fd in a flat array.

Costs that would grow with the ramp are paid once per run instead: the request is built by
h11 once, with a placeholder key swapped per connection (keys are all 24 bytes); an answer
whose shape (its head with the accept value blanked) passed h11 and `check_response` once
only has its accept value compared afterwards, as `model.ws.parse_upgrade` does for requests.
"""

from __future__ import annotations

import random

from tcpmax.engine.opening import OpeningFailure
from tcpmax.model.first_message import SAMPLE_BYTES
from tcpmax.model.load import WsOptions
from tcpmax.model.ws import (
    MAX_HEAD,
    Frame,
    HandshakeError,
    HandshakeFailure,
    Opcode,
    accept_key,
    check_response,
    close_payload,
    decode_frames,
    encode_frame,
    make_key,
    next_message_state,
    upgrade_request,
)

__all__ = ["MAX_PAYLOAD", "PROBE_MIN", "WsClient", "WsFailure", "probe_sent_ns"]

MAX_PAYLOAD = 1 << 24        # a larger frame from the server is a protocol error here
PROBE_MIN = 16               # a probe payload starts with its send time, 16 hex digits
_BLANK = b"AAAAAAAAAAAAAAAAAAAAAA=="
_ACCEPT_LINE = b"\r\nsec-websocket-accept:"
_SHAPES_MAX = 64


class WsFailure(OpeningFailure):
    """An upgrade that failed; `name` is its counter (WS_HTTP_403, WS_NOT_HTTP, ...)."""


def probe_sent_ns(payload: bytes) -> int:
    """The send time a probe carries, 0 when the payload is not one of ours.

    Probes travel as text (hex digits) so a text frame stays valid UTF-8 for any server."""
    try:
        return int(payload[:PROBE_MIN], 16)
    except ValueError:
        return 0


class WsClient:
    """The WebSocket state of one worker's connections (an `engine.opening.Opening`)."""

    awaits_reply = True

    def __init__(self, options: WsOptions, fd_limit: int) -> None:
        extra = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in options.headers]
        if options.subprotocol is not None:
            extra.append((b"Sec-WebSocket-Protocol", options.subprotocol.encode("latin-1")))
        self.template = upgrade_request(options.host.encode("idna"), options.path.encode(),
                                        _BLANK, tuple(extra))
        self.opcode = Opcode.BINARY if options.binary else Opcode.TEXT
        self.pending: dict[int, tuple[bytes, bytes]] = {}   # fd -> (key, answer so far)
        self.partial: dict[int, bytes] = {}                 # fd -> an incomplete frame
        self.message_state = bytearray(fd_limit)            # 0, or the opcode in progress
        self.shapes: set[bytes] = set()
        self._rand = random.Random()

    def request(self, fd: int) -> bytes:
        """The upgrade request for a connection just opened; remembers its key."""
        key = make_key(self._rand.randbytes(16))
        self.pending[fd] = (key, b"")
        return self.template.replace(_BLANK, key, 1)

    def answer(self, fd: int, data: bytes) -> bytes | None:
        """Feed the server's answer: None while its head is incomplete, else the bytes after
        it (frames the server sent at once). Frees the connection's upgrade state when done.

        Raises:
            WsFailure: a refusal by status, a bad accept key, an answer that is not HTTP.
        """
        key, seen = self.pending[fd]
        seen += data
        end = seen.find(b"\r\n\r\n")
        if end < 0:
            if len(seen) >= MAX_HEAD or not (b"HTTP/1.1 "[:len(seen)] == seen[:9]
                                             or b"HTTP/1.0 "[:len(seen)] == seen[:9]):
                del self.pending[fd]
                raise WsFailure("WS_NOT_HTTP", seen[:SAMPLE_BYTES + 1])
            self.pending[fd] = (key, seen)
            return None
        del self.pending[fd]
        head = seen[:end + 4]
        at = head.lower().find(_ACCEPT_LINE)
        if at >= 0 and head.startswith(b"HTTP/1.1 101 "):
            start = at + len(_ACCEPT_LINE)
            stop = head.find(b"\r\n", start)
            shape = head[:start] + head[stop:]
            if shape in self.shapes:
                if head[start:stop].strip(b" \t") != accept_key(key):
                    raise WsFailure("WS_BAD_ACCEPT")
                return seen[end + 4:]
        else:
            shape = b""
        try:
            status, rest = check_response(seen, key)
        except HandshakeError as exc:
            if exc.cause is HandshakeFailure.BAD_KEY:
                raise WsFailure("WS_BAD_ACCEPT") from None
            raise WsFailure("WS_NOT_HTTP", seen[:SAMPLE_BYTES + 1]) from None
        if status != 101:
            raise WsFailure(f"WS_HTTP_{status}")
        if shape:
            if len(self.shapes) >= _SHAPES_MAX:
                self.shapes.clear()
            self.shapes.add(shape)
        return rest

    def frames(self, fd: int, data: bytes) -> list[Frame]:
        """The whole frames in `data`, after any piece of a frame kept from the last read.

        Raises:
            FrameError: the server broke RFC 6455 framing.
        """
        kept = self.partial.pop(fd, None)
        if kept is not None:
            data = kept + data
        frames, used = decode_frames(data, masked=False, max_payload=MAX_PAYLOAD)
        if used < len(data):
            self.partial[fd] = data[used:]
        state = self.message_state[fd]
        for f in frames:
            state = next_message_state(state, f)
        self.message_state[fd] = state
        return frames

    def closed(self, fd: int) -> WsFailure:
        self.pending.pop(fd, None)
        return WsFailure("WS_CLOSED_IN_HANDSHAKE")

    def timed_out(self, fd: int) -> WsFailure:
        self.pending.pop(fd, None)
        return WsFailure("WS_HANDSHAKE_TIMEOUT")

    def forget(self, fd: int) -> None:
        """The connection is gone: drop what was kept for it."""
        self.pending.pop(fd, None)
        self.partial.pop(fd, None)
        self.message_state[fd] = 0

    def pong(self, payload: bytes) -> bytes:
        return encode_frame(Opcode.PONG, payload, mask=self._rand.randbytes(4))

    def close_frame(self, code: int = 1000) -> bytes:
        return encode_frame(Opcode.CLOSE, close_payload(code), mask=self._rand.randbytes(4))

    def message(self, payload: bytes) -> bytes:
        return encode_frame(self.opcode, payload, mask=self._rand.randbytes(4))

    def probe(self, now_ns: int, pad: bytes) -> bytes:
        return self.message(b"%016x" % now_ns + pad)
