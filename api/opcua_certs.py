"""Write self-signed OPC UA application certificates for tests, the demo and trying things out.

    cert, key = write_certificate("certs", "client", application_uri="urn:linetwin:opcua-client")
    demo_certificates("certs")   # server-cert.der, server-key.pem, client-cert.der, client-key.pem

Certificates are DER (`.der`), keys unencrypted PEM (`.pem`), RSA 2048, SHA-256 signatures, with
the application URI and host names in the subject alternative names as OPC UA asks
(OPC 10000-6 6.2.2). A plant uses certificates from its own authority, not these.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from linetwin.api.opcua_errors import OpcUaError

SERVER_URI = "urn:linetwin:opcua-plant"
"""Application URI of the emulator's server certificate."""
CLIENT_URI = "urn:linetwin:opcua-client"
"""Application URI of the connector's certificate (the mapping's default)."""


def write_certificate(
    folder: str | Path,
    name: str,
    *,
    application_uri: str,
    server: bool = False,
    hostnames: tuple[str, ...] = (),
    days: int = 365,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write `NAME-cert.der` and `NAME-key.pem` into `folder`; return their paths.

    `server` makes a server certificate (server and client authentication), else a client one.
    The subject alternative names hold `application_uri`, this host's name, `localhost`,
    `127.0.0.1` and `hostnames`. An existing pair is kept unless `overwrite`.
    """
    from asyncua.crypto.cert_gen import (
        dump_private_key_as_pem,
        generate_private_key,
        generate_self_signed_app_certificate,
    )

    out = Path(folder)
    cert_path, key_path = out / f"{name}-cert.der", out / f"{name}-key.pem"
    if cert_path.exists() and key_path.exists() and not overwrite:
        return cert_path, key_path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OpcUaError(f"cannot create the certificate folder {out}: {exc}") from exc
    names = dict.fromkeys([socket.gethostname(), "localhost", *hostnames])
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt += [x509.DNSName(h) for h in names]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
    key = generate_private_key()
    cert = generate_self_signed_app_certificate(
        key, f"linetwin {name}", {"organizationName": "linetwin"}, alt, extended=usage, days=days
    )
    key_path.write_bytes(dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert_path, key_path


def demo_certificates(folder: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write the emulator's and the connector's pairs into `folder` (the example mapping's names).

    Returns `{"server_certificate", "server_private_key", "certificate", "private_key"}`.
    """
    server_cert, server_key = write_certificate(
        folder, "server", application_uri=SERVER_URI, server=True, overwrite=overwrite
    )
    cert, key = write_certificate(folder, "client", application_uri=CLIENT_URI, overwrite=overwrite)
    return {
        "server_certificate": server_cert,
        "server_private_key": server_key,
        "certificate": cert,
        "private_key": key,
    }
