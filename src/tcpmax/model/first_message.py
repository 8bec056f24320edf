"""The first message a load sends and the reply it expects (`--first-message`, `--expect`):
the option's text as bytes, the judgement of a reply, and a printable sample of one.

Other protocols prove that a server accepted a connection the way the WebSocket upgrade does:
an HTTP request answered by ``HTTP/1.1 200``, an MQTT CONNECT answered by a CONNACK
(``\\x20\\x02\\x00\\x00``), a server that speaks first (an SMTP or SSH banner). The option text
is C-style: ``\\r \\n \\t \\0 \\xHH \\NNN`` (octal) and the other C escapes, so any bytes can be
typed; the CLI reads ``@FILE`` itself (this module does no I/O).

Invariants:
- the expected reply is a prefix: a reply matches when its first ``len(expect)`` bytes are
  exactly ``expect`` (what tcpkali-style users expect of ``HTTP/1.1 200``); the bytes after it
  belong to the connection, not to the judgement;
- a reply is refused as soon as one byte differs, without waiting for the rest;
- ``parse_escapes(show_bytes(b, limit=len(b))) == b`` for all bytes ``b``: a sample shown
  in a result can be pasted back as an option value.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["MAX_FIRST_MESSAGE", "SAMPLE_BYTES", "EscapeError", "Verdict", "judge",
           "parse_escapes", "show_bytes"]

MAX_FIRST_MESSAGE = 65536    # bytes of --first-message or --expect: a request, not a payload
SAMPLE_BYTES = 64            # bytes of an unexpected reply kept to show

_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39,
           '"': 34, "?": 63, "e": 27}
_SHOWN = {10: "\\n", 13: "\\r", 9: "\\t", 92: "\\\\", 0: "\\0"}


class EscapeError(ValueError):
    """Option text with an escape this module does not know; the message says where."""


def parse_escapes(text: str) -> bytes:
    """``GET / HTTP/1.1\\r\\n\\r\\n`` -> its bytes. Characters outside ASCII are sent as UTF-8.

    Escapes: ``\\a \\b \\e \\f \\n \\r \\t \\v \\\\ \\' \\" \\?``, ``\\xHH`` (exactly two hex
    digits), ``\\NNN`` (one to three octal digits, so ``\\0`` is a zero byte).

    Raises:
        EscapeError: an unknown escape, ``\\x`` without two hex digits, an octal value above
            255, or a backslash at the end.
    """
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            j = text.find("\\", i)
            j = n if j < 0 else j
            try:
                out += text[i:j].encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as exc:
                raise EscapeError(f"character {i + exc.start + 1} cannot be encoded "
                                  "as UTF-8") from None
            i = j
            continue
        if i + 1 >= n:
            raise EscapeError("a backslash at the end: write \\\\ for a backslash")
        e = text[i + 1]
        if e in _SIMPLE:
            out.append(_SIMPLE[e])
            i += 2
        elif e == "x":
            digits = text[i + 2:i + 4]
            if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise EscapeError(f"\\x at character {i + 1} needs two hex digits (\\x0d)")
            out.append(int(digits, 16))
            i += 4
        elif e in "01234567":
            j = i + 1
            while j < n and j < i + 4 and text[j] in "01234567":
                j += 1
            value = int(text[i + 1:j], 8)
            if value > 255:
                raise EscapeError(f"\\{text[i + 1:j]} at character {i + 1} is above \\377 "
                                  "(one byte)")
            out.append(value)
            i = j
        else:
            raise EscapeError(f"unknown escape \\{e} at character {i + 1}: use \\r \\n \\t "
                              "\\0 \\xHH \\NNN or \\\\")
    return bytes(out)


def show_bytes(data: bytes, limit: int = SAMPLE_BYTES) -> str:
    """The first `limit` bytes as printable text in the escapes `parse_escapes` reads, with
    ``...`` after when some were left out: ``HTTP/1.1 404 Not Found\\r\\n...``."""
    parts = []
    for b in data[:limit]:
        if b in _SHOWN:
            parts.append(_SHOWN[b])
        elif 32 <= b < 127:
            parts.append(chr(b))
        else:
            parts.append(f"\\x{b:02x}")
    # "\0" followed by an octal digit would read back as one octal escape: spell it out.
    text = "".join(parts)
    if "\\0" in text:
        text = "".join(("\\x00" if p == "\\0" and k + 1 < len(parts)
                        and parts[k + 1][:1] in "01234567" else p)
                       for k, p in enumerate(parts))
    return text + ("..." if len(data) > limit else "")


class Verdict(Enum):
    MATCH = "match"              # the reply starts with the expected bytes
    NEED_MORE = "need more"      # every byte so far agrees; fewer than expected came
    MISMATCH = "mismatch"        # a byte differs: the reply is not the expected one


def judge(expect: bytes, seen: bytes) -> Verdict:
    """Whether the bytes received so far (`seen`) start with `expect`."""
    k = min(len(seen), len(expect))
    if seen[:k] != expect[:k]:
        return Verdict.MISMATCH
    return Verdict.MATCH if len(seen) >= len(expect) else Verdict.NEED_MORE
