"""The HTTP service: runtime, FastAPI app, storage, keys and roles, audit, metrics, web page,
and the polling client for control systems.

`Runtime(settings, spec, model)` runs the line, its controller and storage; `create_app(runtime)`
serves it; `SetpointPoller` follows the published setpoints from a control system. Names are
imported on first use (the polling client needs neither torch nor FastAPI).
"""

from linetwin import lazy_exports

_EXPORTS = {
    "ApiError": "errors",
    "AuditLog": "audit",
    "KeyStore": "keys",
    "PolledDecision": "client",
    "Role": "keys",
    "Runtime": "runtime",
    "SetpointPoller": "client",
    "Settings": "settings",
    "Storage": "storage",
    "create_app": "app",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
