"""The OPC UA connector's errors, and the one place asyncua's failures are translated.

`classify(exc, mapping)` turns whatever a connection attempt raised into a kind (`auth`,
`certificate`, `connection`, `config`) and a message that names the endpoint, the user or the
certificate file concerned, and what to do about it.
"""

from __future__ import annotations

from typing import Any

from linetwin.api.opcua_mapping import OpcUaError, OpcUaMapping, OpcUaMappingError


class OpcUaConnectionError(OpcUaError, ConnectionError):
    """The server cannot be reached, or the connection broke."""


class OpcUaAuthError(OpcUaError, PermissionError):
    """The server refused the user name or password."""


class OpcUaCertificateError(OpcUaError, PermissionError):
    """A certificate is not trusted: ours by the server, or the server's by the mapping."""


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
