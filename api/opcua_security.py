"""Secure the connector's client: user and password, Basic256Sha256, the trusted server.

With Basic256Sha256 the server's endpoints are fetched first (unsecured discovery, as OPC UA
allows) and the connection goes on only if the server offers the mapping's mode with exactly the
certificate `security.server_certificate` names; certificate files are checked to exist.

`classify(exc, mapping)` is the one place asyncua's failures are translated: a kind (`auth`,
`certificate`, `connection`, `config`) and a message naming the endpoint, the user or the
certificate file concerned, and what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from linetwin.api.opcua_errors import OpcUaCertificateError, OpcUaError, OpcUaMappingError
from linetwin.api.opcua_mapping import OpcUaMapping


async def secure(client: Any, mapping: OpcUaMapping, environ: Mapping[str, str] | None) -> None:
    """Set `client`'s user, password and security from `mapping` (see the module doc)."""
    from asyncua import ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
    from asyncua.crypto.uacrypto import der_from_x509, load_certificate

    sec = mapping.security
    if sec.username is not None:
        client.set_user(sec.username)
        password = sec.password(environ)
        if password is not None:
            client.set_password(password)
    if sec.policy == "None":
        return
    assert sec.certificate and sec.private_key and sec.server_certificate
    for key, path in (
        ("certificate", sec.certificate),
        ("private_key", sec.private_key),
        ("server_certificate", sec.server_certificate),
    ):
        if not path.is_file():
            raise OpcUaMappingError(
                f"{mapping.source}: key 'security.{key}' = '{path}': no such file"
            )
    trusted = der_from_x509(await load_certificate(str(sec.server_certificate)))
    await check_server_certificate(client, mapping, trusted)
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(sec.certificate),
        private_key=str(sec.private_key),
        server_certificate=str(sec.server_certificate),
        mode=getattr(ua.MessageSecurityMode, sec.mode),
    )
    source = mapping.source

    async def validate(cert: Any, _description: Any) -> None:
        if der_from_x509(cert) != trusted:
            raise OpcUaCertificateError(
                f"{source}: the server's certificate is not the one "
                f"security.server_certificate names ({sec.server_certificate})"
            )

    client.certificate_validator = validate


async def check_server_certificate(client: Any, mapping: OpcUaMapping, trusted: bytes) -> None:
    """Ask the server for its endpoints (unsecured discovery, as OPC UA allows) and refuse
    to go on unless it offers Basic256Sha256 in the mapping's mode with the certificate we trust:
    a server with another certificate could not even read our secured requests."""
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    mode = mapping.security.mode
    endpoints = await client.connect_and_get_server_endpoints()
    uri = SecurityPolicyBasic256Sha256.URI
    offered = [ep for ep in endpoints if ep.SecurityPolicyUri == uri]
    if not any(ep.SecurityMode.name == mode for ep in offered):
        raise OpcUaCertificateError(
            f"{mapping.endpoint}: the server offers no Basic256Sha256 endpoint in "
            f"mode {mode} (security.mode in {mapping.source})"
        )
    if not any((ep.ServerCertificate or b"")[: len(trusted)] == trusted for ep in offered):
        sec = mapping.security
        raise OpcUaCertificateError(
            f"{mapping.endpoint}: the server's certificate is not the one "
            f"security.server_certificate names ({sec.server_certificate}): refusing to "
            "connect (replace that file with the server's certificate if it changed)"
        )


_AUTH = {
    "BadUserAccessDenied",
    "BadIdentityTokenRejected",
    "BadIdentityTokenInvalid",
    "BadUserSignatureInvalid",
}
_CERT_PREFIX = (
    "BadCertificate",
    "BadSecurityChecksFailed",
    "BadSecurityPolicyRejected",
    "BadNonceInvalid",
    "BadApplicationSignatureInvalid",
)


def _status_name(exc: BaseException) -> str | None:
    from asyncua import ua

    code = getattr(exc, "code", None)
    if isinstance(exc, ua.UaStatusCodeError) and code is not None:
        return ua.StatusCode(code).name
    return None


def classify(exc: BaseException, mapping: OpcUaMapping) -> tuple[str, str]:
    """Return `(kind, message)` for an exception raised while connecting or reading."""
    where = mapping.endpoint
    sec = mapping.security
    if isinstance(exc, OpcUaMappingError):
        return "config", str(exc)
    if isinstance(exc, OpcUaCertificateError):
        return "certificate", str(exc)
    if isinstance(exc, OpcUaError):
        return "connection", str(exc)
    name = _status_name(exc)
    if name in _AUTH:
        return "auth", (
            f"{where}: the server refused user {sec.username!r} ({name}): check "
            f"the user name and the password in ${sec.password_env}"
        )
    if name is not None and name.startswith(_CERT_PREFIX):
        return "certificate", (
            f"{where}: the server does not trust our certificate ({name}): add "
            f"{sec.certificate} to its trusted certificates, or check the mapping's "
            f"security.server_certificate ({sec.server_certificate})"
        )
    text = str(exc)
    if "certificate" in text.lower():
        return "certificate", (
            f"{where}: {text} (security.server_certificate = {sec.server_certificate})"
        )
    if name is not None:
        return "connection", f"{where}: the server answered {name}"
    if isinstance(exc, TimeoutError):
        return "connection", f"{where}: no answer within {mapping.timeout_s} s"
    if isinstance(exc, OSError):
        return "connection", f"{where}: {exc.strerror or exc!r}"
    return "connection", f"{where}: {_describe(exc)}"


def _describe(exc: Any) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
