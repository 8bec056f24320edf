"""Throwaway certificates: `serve --tls self-signed` and the TLS memory probe of `doctor`.

A self-signed certificate for the names a test or demo uses (localhost, the loopback
addresses, whatever host the user serves on). It is made in memory with `cryptography` and
written only to a private temporary directory, because `ssl.SSLContext.load_cert_chain`
reads files, not bytes; the files are removed as soon as the context holds them.

It proves nothing about identity: clients must trust it explicitly (`--ca` with the PEM,
or `--insecure`). The key is P-256: the handshake cost a gateway usually pays, and the
cheapest key to make (milliseconds, where RSA-2048 takes up to a second).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass

from tcpmax.model.serve import LOOPBACK_NAMES

__all__ = ["SelfSigned", "self_signed", "server_context"]

DEFAULT_NAMES = LOOPBACK_NAMES
# Long enough for any run (a run is capped at a year), short enough to be visibly throwaway.
VALIDITY = datetime.timedelta(days=400)


@dataclass(frozen=True)
class SelfSigned:
    cert_pem: bytes
    key_pem: bytes


def self_signed(names: tuple[str, ...] = DEFAULT_NAMES) -> SelfSigned:
    """A certificate valid for `names` (DNS names or IP addresses), signed by its own key."""
    # Imported here: only TLS servers and the probe pay for loading cryptography.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tcpmax self-signed")])
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A little slack before now: the client's clock may be slightly behind.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return SelfSigned(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def server_context(pair: SelfSigned) -> ssl.SSLContext:
    """A server context holding `pair`; no file is left behind."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="tcpmax-cert-") as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        # The key file is private from its first byte (the directory is 0700 already).
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pair.key_pem)
        with open(cert_path, "wb") as f:
            f.write(pair.cert_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx
