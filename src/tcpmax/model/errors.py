"""Every connection failure by name: what the kernel meant, and one line of advice.

`classify(errno)` never fails: an errno without an entry gets its symbolic name and generic
advice, so a report never shows a bare number.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass

__all__ = ["KNOWN", "ErrorClass", "classify"]


@dataclass(frozen=True)
class ErrorClass:
    name: str       # EADDRNOTAVAIL
    meaning: str
    advice: str


KNOWN: dict[str, ErrorClass] = {c.name: c for c in (
    ErrorClass("EADDRNOTAVAIL", "no free local port for this (source IP, endpoint) pair: "
               "the ephemeral port range is used up",
               "add source IPs (--source auto, or a CIDR), target more ports, or widen "
               "net.ipv4.ip_local_port_range"),
    ErrorClass("EMFILE", "this process reached its open-file limit (RLIMIT_NOFILE)",
               "use more workers (--workers) or raise the hard limit (LimitNOFILE)"),
    ErrorClass("ENFILE", "the host's file table is full (fs.file-max)",
               "raise fs.file-max: tcpmax tune --target N"),
    ErrorClass("ECONNREFUSED", "nothing listens there: the target answered the SYN with RST",
               "start the server, or check the host and port"),
    ErrorClass("ETIMEDOUT", "no answer to the SYN within the connect timeout: dropped by a "
               "firewall, a full listen backlog (ListenOverflows) or a full conntrack table",
               "check the server's backlog (somaxconn) and accept rate, firewall rules, "
               "nf_conntrack_max; or lower --rate"),
    ErrorClass("ECONNRESET", "the server reset the connection",
               "the server closed it: its limits, an idle timeout, or an overflowing queue"),
    ErrorClass("ENOBUFS", "the kernel is out of socket buffer memory (net.ipv4.tcp_mem)",
               "raise net.ipv4.tcp_mem or send less per connection"),
    ErrorClass("ENOMEM", "the kernel could not allocate memory for the socket",
               "free memory, or hold fewer connections per host (tcpmax plan)"),
    ErrorClass("EHOSTUNREACH", "no route to the target host",
               "check the address and routing (ip route get ADDR)"),
    ErrorClass("ENETUNREACH", "no route to the target network",
               "check the address and routing (ip route get ADDR)"),
    ErrorClass("EADDRINUSE", "the chosen source (IP, port) is already in use",
               "use --port-strategy kernel, or wait for TIME_WAIT sockets to expire"),
    ErrorClass("EPIPE", "the connection was closed while writing", "the server closed it"),
)}


# getaddrinfo-style codes are negative: the socket layer reports them when an address cannot
# be used with the socket's family (an IPv4 source for an IPv6 target).
_GAI_NAMES = {-9: "EAI_ADDRFAMILY", -2: "EAI_NONAME", -6: "EAI_FAMILY", -8: "EAI_SERVICE"}
KNOWN["EAI_ADDRFAMILY"] = ErrorClass(
    "EAI_ADDRFAMILY", "the source address is of another IP version than the target",
    "give source addresses of the target's IP version (--source)")


def classify(code: int) -> ErrorClass:
    name = _GAI_NAMES.get(code) or _errno.errorcode.get(code, f"errno {code}")
    return KNOWN.get(name, ErrorClass(name, "an unexpected error", "see errno(3)"))
