"""The errors of the OPC UA mapping, connector and emulator server (`OpcUaError` and below).

`api.opcua_security.classify` turns asyncua's failures into these kinds.
"""

from __future__ import annotations

from linetwin.api.errors import ApiError


class OpcUaError(ApiError):
    """Base of the OPC UA connector's and emulator server's errors."""


class OpcUaMappingError(OpcUaError, ValueError):
    """A mapping file that breaks the documented format: names file, key and value."""


class OpcUaConnectionError(OpcUaError, ConnectionError):
    """The server cannot be reached, or the connection broke."""


class OpcUaAuthError(OpcUaError, PermissionError):
    """The server refused the user name or password."""


class OpcUaCertificateError(OpcUaError, PermissionError):
    """A certificate is not trusted: ours by the server, or the server's by the mapping."""
