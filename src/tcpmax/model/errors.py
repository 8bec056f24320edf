"""Every connection failure by name: what the kernel meant, and one line of advice.

`classify(errno)` never fails: an errno without an entry gets its symbolic name and generic
advice, so a report never shows a bare number.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass

__all__ = ["KNOWN", "ErrorClass", "classify", "classify_name", "tls_error_name"]


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


# TLS handshake failures, named by cause. OpenSSL's reason strings and X.509 verify codes are
# many; these are the ones a load test meets, the rest keep OpenSSL's own name.
for _c in (
    ErrorClass("TLS_NOT_TLS", "the server answered the TLS hello with something that is not "
               "TLS (a plain-TCP server on that port)",
               "check the port, or use a plain HOST:PORT target"),
    ErrorClass("TLS_UNEXPECTED_MESSAGE", "the server answered the TLS hello with a message "
               "out of place, such as the client's own hello echoed back (a plain-TCP echo "
               "server)", "check that the server speaks TLS on that port"),
    ErrorClass("TLS_HANDSHAKE_TIMEOUT", "no TLS handshake within the connect timeout (a "
               "plain-TCP server that waits for the client to speak, or an overloaded one)",
               "check that the server speaks TLS on that port; raise --connect-timeout"),
    ErrorClass("TLS_CLOSED_IN_HANDSHAKE", "the server closed the connection during the TLS "
               "handshake", "check the server's TLS settings (protocols, ciphers, SNI) and logs"),
    ErrorClass("TLS_CERT_WRONG_NAME", "the certificate is not valid for the name asked for "
               "(SNI, or the target address)", "use --sni NAME matching the certificate"),
    ErrorClass("TLS_CERT_UNTRUSTED", "the certificate is not signed by a trusted CA",
               "give the CA with --ca FILE (or --insecure for a test server)"),
    ErrorClass("TLS_CERT_EXPIRED", "the certificate has expired or is not yet valid",
               "renew the server's certificate, or check the clocks"),
    ErrorClass("TLS_CERT_INVALID", "the certificate failed verification",
               "check the server's certificate chain (openssl s_client -showcerts)"),
):
    KNOWN[_c.name] = _c

# WebSocket upgrade failures (ws://, wss://), named by cause; a refusal by status is
# WS_HTTP_<code> (see classify_name).
for _c in (
    ErrorClass("WS_BAD_ACCEPT", "the server said 101 but its Sec-WebSocket-Accept does not "
               "match our key (a proxy or server that does not implement RFC 6455 4.2.2)",
               "check what answers on that port: a caching proxy, or a broken WebSocket "
               "server"),
    ErrorClass("WS_NOT_HTTP", "the server answered the upgrade request with something that "
               "is not HTTP (a plain-TCP server, one that echoes the request back, or TLS)",
               "check the port; use wss:// for a TLS server, or a plain HOST:PORT target"),
    ErrorClass("WS_HANDSHAKE_TIMEOUT", "no answer to the upgrade request within the connect "
               "timeout (a plain-TCP server that waits, or an overloaded one)",
               "check that a WebSocket server listens there and the path; raise "
               "--connect-timeout"),
    ErrorClass("WS_CLOSED_IN_HANDSHAKE", "the server closed the connection before answering "
               "the upgrade request", "check the server's logs, path and limits"),
    ErrorClass("WS_PROTOCOL_ERROR", "the server broke the WebSocket framing rules after the "
               "upgrade (masked, reserved bits, oversized control frame)",
               "check the server: its frames do not follow RFC 6455 5.2"),
):
    KNOWN[_c.name] = _c

# --first-message / --expect failures: the server did not give the reply that proves it
# accepted the connection. The result carries a sample of what it sent instead.
for _c in (
    ErrorClass("UNEXPECTED_REPLY", "the server's reply does not start with the bytes "
               "--expect asks for (the sample shows what it sent)",
               "compare the sample with --expect: the server may want another first message "
               "(path, Host header, protocol version, credentials), or --expect may ask for "
               "more than the reply's first bytes (it must match from the first byte)"),
    ErrorClass("CLOSED_BEFORE_REPLY", "the server closed the connection before sending the "
               "reply --expect asks for (or before the first message was sent)",
               "the server did not accept this first message or protocol: check it, and the "
               "server's logs and limits"),
    ErrorClass("REPLY_TIMEOUT", "no reply starting with the --expect bytes within the "
               "connect timeout (the sample, if any, shows the part that came)",
               "check that --first-message is complete for the protocol (an HTTP request ends "
               "with \\r\\n\\r\\n) and that the server speaks first when --expect comes "
               "alone; or raise --connect-timeout for a slow server"),
):
    KNOWN[_c.name] = _c

_VERIFY_NAMES = {62: "TLS_CERT_WRONG_NAME", 64: "TLS_CERT_WRONG_NAME",
                 9: "TLS_CERT_EXPIRED", 10: "TLS_CERT_EXPIRED",
                 18: "TLS_CERT_UNTRUSTED", 19: "TLS_CERT_UNTRUSTED", 20: "TLS_CERT_UNTRUSTED",
                 21: "TLS_CERT_UNTRUSTED"}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "HTTP_REQUEST", "UNKNOWN_PROTOCOL"}


def tls_error_name(reason: str | None, verify_code: int | None = None) -> str:
    """A TLS handshake failure's name from OpenSSL's reason and, for a certificate, the X.509
    verify code: ``("CERTIFICATE_VERIFY_FAILED", 62)`` -> ``TLS_CERT_WRONG_NAME``, an alert
    ``TLSV1_ALERT_NO_APPLICATION_PROTOCOL`` -> ``TLS_ALERT_NO_APPLICATION_PROTOCOL``."""
    if verify_code is not None and verify_code > 0:
        return _VERIFY_NAMES.get(verify_code, "TLS_CERT_INVALID")
    reason = (reason or "").upper()
    if reason in _NOT_TLS:
        return "TLS_NOT_TLS"
    for prefix in ("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_"):
        if reason.startswith(prefix):
            return "TLS_ALERT_" + reason[len(prefix):]
    if reason in ("UNEXPECTED_EOF_WHILE_READING", "EOF", ""):
        return "TLS_CLOSED_IN_HANDSHAKE"
    return "TLS_" + reason


def classify_name(name: str) -> ErrorClass:
    """What a failure name in a result means: an errno name, a TLS name, or a number."""
    if name in KNOWN:
        return KNOWN[name]
    if name.startswith("TLS_ALERT_"):
        alert = name[len("TLS_ALERT_"):].lower().replace("_", " ")
        return ErrorClass(name, f"the server refused the TLS handshake with the alert "
                          f"'{alert}'", "check what the server requires (protocol versions, "
                          "ciphers, SNI, ALPN, client certificates)")
    if name.startswith("TLS_"):
        return ErrorClass(name, "the TLS handshake failed", "see the OpenSSL reason in the name")
    if name.startswith("WS_HTTP_"):
        status = name[len("WS_HTTP_"):]
        advice = {"400": "the server refused our request: check --header, --subprotocol "
                         "and the path",
                  "401": "add the credentials the server wants: --header 'Authorization: "
                         "...'",
                  "403": "the server forbids this client: check --header (Origin, "
                         "Authorization, cookies) and the path",
                  "404": "check the path in the URL (ws://HOST:PORT/PATH)",
                  "426": "the server wants another protocol version or TLS (wss://)",
                  }.get(status, "check the server's logs; the status says why it refused")
        return ErrorClass(name, f"the server refused the WebSocket upgrade with HTTP {status}",
                          advice)
    code = getattr(_errno, name, None)
    if isinstance(code, int):
        return classify(code)
    return classify(int(name)) if name.lstrip("-").isdigit() else \
        ErrorClass(name, "an unexpected error", "see errno(3)")


def classify(code: int) -> ErrorClass:
    name = _GAI_NAMES.get(code) or _errno.errorcode.get(code, f"errno {code}")
    return KNOWN.get(name, ErrorClass(name, "an unexpected error", "see errno(3)"))
